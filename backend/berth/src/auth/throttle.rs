//! Throttling of credential guessing: login, token refresh and (later) the registry's token endpoint.
//!
//! Counts live in `auth_throttle`, shared by every Berth process. Each attempt is counted *before* the
//! credential is checked, under row locks, so parallel guesses cannot slip through between a check and
//! its count; a success takes its count back. Past a key's free allowance, every further attempt locks
//! the key for twice as long as the last (1 s, 2 s, 4 s, ... up to the configured maximum), and a
//! locked key is answered 429 with `Retry-After` without looking at the password.
//!
//! Three keys, so that an attacker cannot lock a real user out from elsewhere:
//! - the account at this address: the tight limit, which is what slows a guesser down;
//! - the address on its own: stops one address from spraying guesses over many accounts;
//! - the account from everywhere: a looser ceiling against guessing from many addresses. While it is
//!   exceeded, only addresses that have failed on this account are refused: the real user, coming from
//!   an address with no failures, still logs in.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use clap::Args;
use ipnet::IpNet;
use sqlx::PgPool;

use crate::error::{ApiError, ApiResult};

/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Args)]
pub struct ThrottleConfig {
    /// Failed logins allowed for one account from one address before each further attempt waits.
    #[arg(long, env = "BERTH_LOGIN_FREE_ATTEMPTS", default_value_t = 5)]
    pub login_free_attempts: u32,

    /// Failed attempts allowed from one address (over all accounts, and for token refresh) before each
    /// further attempt waits.
    #[arg(long, env = "BERTH_ADDRESS_FREE_ATTEMPTS", default_value_t = 20)]
    pub address_free_attempts: u32,

    /// Failed logins allowed for one account from all addresses together; past it, addresses that have
    /// failed on the account wait, others may still try.
    #[arg(long, env = "BERTH_ACCOUNT_FREE_ATTEMPTS", default_value_t = 50)]
    pub account_free_attempts: u32,

    /// The longest a throttled key waits, in seconds.
    #[arg(long, env = "BERTH_THROTTLE_MAX_LOCK", default_value_t = 900)]
    pub max_lock_secs: u32,

    /// Reverse proxies (comma-separated CIDRs) whose `X-Forwarded-For` names the client. Without this,
    /// the connection's peer address is the client's address.
    #[arg(long, env = "BERTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            login_free_attempts: 5,
            address_free_attempts: 20,
            account_free_attempts: 50,
            max_lock_secs: 900,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The client's address: the connection's peer, or what a trusted proxy says it forwarded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// From the peer address and the `X-Forwarded-For` header: the right-most address that is not a
    /// trusted proxy (the left-most entries are the client's to invent).
    pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> ClientAddr {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer) {
            return ClientAddr(peer);
        }
        let hops = forwarded_for.unwrap_or_default().split(',').rev().filter_map(|h| h.trim().parse::<IpAddr>().ok());
        for hop in hops {
            if !is_trusted(&hop) {
                return ClientAddr(hop);
            }
        }
        ClientAddr(peer)
    }
}

impl FromRequestParts<crate::state::AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &crate::state::AppState) -> Result<Self, Self::Rejection> {
        // Servers built without connection info (none in Berth) count every caller as one address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(ClientAddr::resolve(peer, forwarded, &state.security.throttle.trusted_proxies))
    }
}

/// What is being attempted, and by whom.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// A password for the account with this e-mail.
    Login { email: String, addr: IpAddr },
    /// A refresh token (no account is known until it matches).
    Refresh { addr: IpAddr },
    /// An API token given as a password to the registry's token endpoint.
    ApiToken { addr: IpAddr },
}

struct Key {
    name: String,
    free: u32,
    /// Refuses only callers that have failed on this account themselves (the account-wide ceiling).
    only_if_failed_here: bool,
}

impl Attempt {
    fn keys(&self, cfg: &ThrottleConfig) -> Vec<Key> {
        let mut keys = match self {
            Attempt::Login { email, addr } => {
                let email = email.trim().to_lowercase();
                vec![
                    Key { name: format!("pair:{email}|{addr}"), free: cfg.login_free_attempts, only_if_failed_here: false },
                    Key { name: format!("addr:login:{addr}"), free: cfg.address_free_attempts, only_if_failed_here: false },
                    Key { name: format!("account:{email}"), free: cfg.account_free_attempts, only_if_failed_here: true },
                ]
            }
            Attempt::Refresh { addr } => {
                vec![Key { name: format!("addr:refresh:{addr}"), free: cfg.address_free_attempts, only_if_failed_here: false }]
            }
            Attempt::ApiToken { addr } => {
                vec![Key { name: format!("addr:token:{addr}"), free: cfg.address_free_attempts, only_if_failed_here: false }]
            }
        };
        // Rows are locked in key order, so concurrent attempts never deadlock.
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }

    /// The key whose row a success removes: the account at this address.
    fn pair(&self) -> Option<String> {
        match self {
            Attempt::Login { email, addr } => Some(format!("pair:{}|{addr}", email.trim().to_lowercase())),
            Attempt::Refresh { .. } | Attempt::ApiToken { .. } => None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    failures: i32,
    /// Seconds until the key's lock ends; `None` or ≤ 0 when unlocked.
    locked_for: Option<f64>,
}

/// Counts an attempt, or refuses it with 429 while one of its keys is locked. Call before checking the
/// credential; call [`succeeded`] when it was right.
pub async fn attempt(db: &PgPool, cfg: &ThrottleConfig, attempt: &Attempt) -> ApiResult<()> {
    let keys = attempt.keys(cfg);
    let names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    let window = WINDOW.as_secs_f64();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO auth_throttle (key, failures, last_failure_at)
         SELECT k, 0, now() FROM unnest($1::text[]) AS k ORDER BY k
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&names)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT key,
                CASE WHEN last_failure_at < now() - make_interval(secs => $2) THEN 0 ELSE failures END AS failures,
                extract(epoch FROM locked_until - now())::float8 AS locked_for
           FROM auth_throttle WHERE key = ANY($1) ORDER BY key FOR UPDATE",
    )
    .bind(&names)
    .bind(window)
    .fetch_all(&mut *tx)
    .await?;
    let failures_of = |name: &str| rows.iter().find(|r| r.key == name).map_or(0, |r| r.failures);
    let pair_failures = attempt.pair().map_or(0, |p| failures_of(&p));
    let mut wait: f64 = 0.0;
    for key in &keys {
        let Some(row) = rows.iter().find(|r| r.key == key.name) else { continue };
        let locked_for = row.locked_for.unwrap_or(0.0);
        if locked_for > 0.0 && (!key.only_if_failed_here || pair_failures > 0) {
            wait = wait.max(locked_for);
        }
    }
    if wait > 0.0 {
        tx.rollback().await?;
        return Err(too_many(wait.ceil() as u64));
    }
    let frees: Vec<i32> = keys.iter().map(|k| k.free as i32).collect();
    sqlx::query(
        "UPDATE auth_throttle t
            SET failures = n.failures, last_failure_at = now(),
                locked_until = CASE WHEN n.failures > n.free
                                    THEN now() + make_interval(secs => least($3, 2 ^ least(n.failures - n.free - 1, 30)))
                               END
           FROM (SELECT k.key, k.free,
                        CASE WHEN t2.last_failure_at < now() - make_interval(secs => $4) THEN 1 ELSE t2.failures + 1 END AS failures
                   FROM unnest($1::text[], $2::int[]) AS k(key, free)
                   JOIN auth_throttle t2 ON t2.key = k.key) AS n
          WHERE t.key = n.key",
    )
    .bind(&names)
    .bind(&frees)
    .bind(f64::from(cfg.max_lock_secs))
    .bind(window)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes back the count of a successful attempt: the pair starts afresh, the address and the account
/// keep their other failures.
pub async fn succeeded(db: &PgPool, attempt: &Attempt, cfg: &ThrottleConfig) -> ApiResult<()> {
    let names: Vec<String> = attempt.keys(cfg).into_iter().map(|k| k.name).collect();
    let pair = attempt.pair();
    sqlx::query(
        "UPDATE auth_throttle SET failures = greatest(failures - 1, 0)
          WHERE key = ANY($1) AND key IS DISTINCT FROM $2",
    )
    .bind(&names)
    .bind(&pair)
    .execute(db)
    .await?;
    if let Some(pair) = pair {
        sqlx::query("DELETE FROM auth_throttle WHERE key = $1").bind(pair).execute(db).await?;
    }
    // Forgotten failures are kept no longer than needed.
    sqlx::query(
        "DELETE FROM auth_throttle WHERE last_failure_at < now() - interval '1 day' AND coalesce(locked_until < now(), true)",
    )
    .execute(db)
    .await?;
    Ok(())
}

fn too_many(retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-attempts",
        format!("too many failed attempts; try again in {retry_after} s"),
    )
    .with_retry_after(retry_after.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwarded_for_it() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ClientAddr::resolve(peer, Some("198.51.100.1"), &trusted).0, peer, "untrusted peers cannot claim others");
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            ClientAddr::resolve(proxy, Some("203.0.113.9, 198.51.100.1, 10.2.2.2"), &trusted).0,
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "the right-most untrusted hop, not what the client wrote first"
        );
        assert_eq!(ClientAddr::resolve(proxy, None, &trusted).0, proxy);
    }

    #[test]
    fn keys_are_sorted_and_lowercase() {
        let a = Attempt::Login { email: " Ann@X.test ".into(), addr: "127.0.0.1".parse().unwrap() };
        let names: Vec<String> = a.keys(&ThrottleConfig::default()).into_iter().map(|k| k.name).collect();
        assert_eq!(names, ["account:ann@x.test", "addr:login:127.0.0.1", "pair:ann@x.test|127.0.0.1"]);
        assert_eq!(a.pair().unwrap(), "pair:ann@x.test|127.0.0.1");
    }
}
