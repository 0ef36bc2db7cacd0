//! Berth as the registry's token server (Docker Registry v2 token authentication).
//!
//! `docker login` and every push or pull send the user's credentials (e-mail and password, or any user
//! name with an API token as the password) to `GET /token?service=…&scope=…`; Berth answers with a short
//! JWT granting, per requested scope, only what the caller's role allows inside its own tenant's
//! namespace (`<tenant-slug>/…`). The registry checks the JWT against the signing key's certificate.
//!
//! What distribution 2.8 insists on (verified in its source): `aud` is a JSON string, not an array;
//! the `kid` header is libtrust's key id (see [`super::keys::libtrust_key_id`]); ES256 signatures are
//! raw r‖s (which is what JWS specifies and `jsonwebtoken` produces); no `refresh_token` in the answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use berth_types::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The `service` and `issuer` names in the registry's config and in every token.
pub const SERVICE: &str = "berth-registry";
pub const ISSUER: &str = "berth";

/// How long a registry token lives. The engine asks again for each push or pull session.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);

/// One grant in a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    pub fn repository(name: &str, actions: &[&str]) -> Self {
        Access { kind: "repository".into(), name: name.into(), actions: actions.iter().map(|a| (*a).to_owned()).collect() }
    }

    pub fn catalog() -> Self {
        Access { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

/// Signs registry tokens with the platform's token key (ES256, `kid` in libtrust's form).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
}

impl Signer {
    pub fn new(key_pem: &str) -> anyhow::Result<Self> {
        let kid = super::keys::libtrust_key_id(&super::keys::public_key_der(key_pem)?);
        let key = EncodingKey::from_ec_der(&super::keys::private_key_der(key_pem).context("reading the token signing key")?);
        Ok(Signer { key, kid })
    }

    pub fn mint(&self, subject: &str, access: Vec<Access>, ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims = Claims {
            iss: ISSUER,
            sub: subject,
            aud: SERVICE,
            exp: now + ttl.as_secs(),
            // Clocks of the registry and Berth are the same clock here, but a little slack costs nothing.
            nbf: now.saturating_sub(10),
            iat: now,
            jti: crate::crypto::random_token(16),
            access,
        };
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// A requested scope, `repository:<name>:<actions>` (or `registry:catalog:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses one scope. Names are checked against the Docker reference grammar for repository paths
    /// (lowercase components separated by `/`), so nothing odd reaches a grant.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| format!("malformed scope `{s}`: expected `type:name:actions`"))?;
        let (name, actions) =
            rest.rsplit_once(':').ok_or_else(|| format!("malformed scope `{s}`: expected `type:name:actions`"))?;
        let kind_ok = matches!(kind, "repository" | "registry" | "repository(plugin)");
        if !kind_ok {
            return Err(format!("malformed scope `{s}`: unknown resource type `{kind}`"));
        }
        if kind != "registry" && !valid_repository(name) {
            return Err(format!("malformed scope `{s}`: `{name}` is not a repository name"));
        }
        let actions: Vec<String> = actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect();
        if actions.is_empty() || actions.iter().any(|a| !matches!(a.as_str(), "pull" | "push" | "delete" | "*")) {
            return Err(format!("malformed scope `{s}`: actions must be pull, push, delete or *"));
        }
        Ok(Scope { kind: kind.to_owned(), name: name.to_owned(), actions })
    }
}

/// A repository path as Docker's reference grammar allows it (without a registry host).
pub fn valid_repository(name: &str) -> bool {
    name.len() <= 255
        && !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-'))
                && !c.contains("..")
        })
}

/// What a caller may do in its own namespace, by role: viewers pull; developers and above also push
/// and delete.
pub fn allowed_actions(role: Role) -> &'static [&'static str] {
    if role.at_least(Role::Developer) { &["pull", "push", "delete"] } else { &["pull"] }
}

/// The grant for one requested scope: the requested actions the caller's role allows, and only inside
/// its tenant's namespace (`<slug>/<something>`). Everything else (another tenant's namespace, the bare
/// top level, the registry-wide catalog) grants nothing — the registry then answers "denied".
pub fn grant(slug: Option<&str>, role: Role, scope: &Scope) -> Option<Access> {
    let slug = slug?;
    if scope.kind != "repository" {
        return None;
    }
    let (namespace, rest) = scope.name.split_once('/')?;
    if namespace != slug || rest.is_empty() {
        return None;
    }
    let allowed = allowed_actions(role);
    let mut actions: Vec<&str> = Vec::new();
    for requested in &scope.actions {
        let requested = requested.as_str();
        let single = [requested];
        let wanted: &[&str] = if requested == "*" { &["pull", "push", "delete"] } else { &single };
        for a in wanted {
            if allowed.contains(a) && !actions.contains(a) {
                actions.push(a);
            }
        }
    }
    (!actions.is_empty()).then(|| Access::repository(&scope.name, &actions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    #[test]
    fn scopes_parse_and_bad_ones_are_refused() {
        assert_eq!(scope("repository:acme/web:pull,push").actions, ["pull", "push"]);
        assert_eq!(scope("registry:catalog:*").name, "catalog");
        for bad in [
            "repository",
            "repository:acme/web",
            "repository:Acme/web:pull",
            "repository:acme//web:pull",
            "repository:acme/web:steal",
            "bucket:x:pull",
            "repository:acme/web:",
            "repository:../x:pull",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn grants_stay_inside_the_tenant_namespace_and_role() {
        let dev = grant(Some("acme"), Role::Developer, &scope("repository:acme/web:pull,push")).unwrap();
        assert_eq!(dev.actions, ["pull", "push"]);
        let viewer = grant(Some("acme"), Role::Viewer, &scope("repository:acme/web:pull,push")).unwrap();
        assert_eq!(viewer.actions, ["pull"]);
        assert!(grant(Some("acme"), Role::Viewer, &scope("repository:acme/web:push")).is_none());
        assert!(grant(Some("acme"), Role::Owner, &scope("repository:other/web:pull")).is_none());
        assert!(grant(Some("acme"), Role::Owner, &scope("repository:acmeco/web:pull")).is_none());
        assert!(grant(Some("acme"), Role::Owner, &scope("repository:web:pull")).is_none());
        assert!(grant(Some("acme"), Role::Owner, &scope("registry:catalog:*")).is_none());
        assert!(grant(None, Role::PlatformAdmin, &scope("repository:acme/web:pull")).is_none());
        assert_eq!(
            grant(Some("acme"), Role::Admin, &scope("repository:acme/a/b:*")).unwrap().actions,
            ["pull", "push", "delete"]
        );
    }
}
