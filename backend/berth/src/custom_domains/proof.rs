//! The DNS proof of a custom domain: the tenant publishes a TXT record `_berth-challenge.<domain>`
//! holding its claim's token, and Berth looks it up through the resolver the operator chose
//! (`BERTH_DNS_RESOLVER`). Nothing is fetched from the domain itself, so a claim cannot make Berth
//! open connections to addresses a tenant picks.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, ResolverBuilder};

/// The name of the TXT record that proves `domain`.
pub fn record_name(domain: &str) -> String {
    format!("_berth-challenge.{domain}")
}

/// The value the TXT record must hold for a claim's token.
pub fn record_value(token: &str) -> String {
    format!("berth-domain-verification={token}")
}

/// A fresh claim token: unguessable, so no record made for another claim can match it.
pub fn new_token() -> String {
    crate::crypto::random_token(24)
}

/// Where TXT records are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsResolver {
    /// The host's own (`/etc/resolv.conf`).
    System,
    /// These servers only, over UDP then TCP.
    Servers(Vec<SocketAddr>),
    /// No lookups: tenants cannot prove domains themselves (only platform admins grant them).
    Off,
}

impl DnsResolver {
    /// Reads `BERTH_DNS_RESOLVER`: `system`, `off`, or `ip:port[,ip:port…]`.
    pub fn parse(text: &str) -> anyhow::Result<DnsResolver> {
        match text.trim() {
            "system" | "" => Ok(DnsResolver::System),
            "off" => Ok(DnsResolver::Off),
            list => list
                .split(',')
                .map(|s| s.trim().parse::<SocketAddr>())
                .collect::<Result<Vec<_>, _>>()
                .map(DnsResolver::Servers)
                .map_err(|_| {
                    anyhow::anyhow!(
                        "BERTH_DNS_RESOLVER `{text}`: give `system`, `off` or addresses with ports, e.g. 10.0.0.53:53"
                    )
                }),
        }
    }

    fn builder(&self) -> Result<ResolverBuilder<TokioRuntimeProvider>, String> {
        match self {
            DnsResolver::Off => Err("domain proofs by DNS are turned off on this Berth (BERTH_DNS_RESOLVER=off); ask a platform admin to grant the domain".into()),
            DnsResolver::System => Resolver::builder_tokio().map_err(|e| format!("reading the host's resolver configuration: {e}")),
            DnsResolver::Servers(addrs) => {
                let servers = addrs
                    .iter()
                    .map(|a| {
                        let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                        (udp.port, tcp.port) = (a.port(), a.port());
                        NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                Ok(Resolver::builder_with_config(ResolverConfig::from_parts(None, vec![], servers), TokioRuntimeProvider::default()))
            }
        }
    }

    /// The TXT records at `name` (each one's strings joined, as DNS defines a TXT value), empty when
    /// there are none; `Err` says why the lookup itself failed.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        let mut builder = self.builder()?;
        let opts = builder.options_mut();
        // A record just published must be seen on the next check: nothing is cached between checks
        // (each builds its own resolver), and one slow server does not hold the API call for long.
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        let resolver = builder.build().map_err(|e| format!("starting the resolver: {e}"))?;
        // Fully qualified: the host's search domains must not be appended.
        match resolver.txt_lookup(format!("{name}.")).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part)).collect::<String>()),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(format!("looking up TXT {name}: {e}")),
        }
    }
}

/// Whether `records` prove the claim of `token`, or what the tenant should fix.
pub fn check(records: &[String], name: &str, token: &str) -> Result<(), String> {
    let want = record_value(token);
    if records.iter().any(|r| r.trim() == want) {
        return Ok(());
    }
    if records.is_empty() {
        Err(format!("no TXT record at {name} yet (DNS changes can take a few minutes to be seen)"))
    } else {
        Err(format!("the TXT records at {name} do not hold `{want}` (found: {})", records.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_are_read_from_one_setting() {
        assert_eq!(DnsResolver::parse("system").unwrap(), DnsResolver::System);
        assert_eq!(DnsResolver::parse(" off ").unwrap(), DnsResolver::Off);
        assert_eq!(
            DnsResolver::parse("127.0.0.1:5353, [::1]:53").unwrap(),
            DnsResolver::Servers(vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()])
        );
        let err = DnsResolver::parse("127.0.0.1").unwrap_err();
        assert!(err.to_string().contains("BERTH_DNS_RESOLVER `127.0.0.1`"), "{err}");
    }

    #[test]
    fn only_the_claims_own_value_proves_it() {
        let name = record_name("shop.example");
        assert_eq!(name, "_berth-challenge.shop.example");
        assert!(check(&[record_value("abc")], &name, "abc").is_ok());
        assert!(check(&["v=spf1 -all".into(), record_value("abc")], &name, "abc").is_ok());
        let err = check(&[record_value("abd")], &name, "abc").unwrap_err();
        assert!(err.contains("do not hold `berth-domain-verification=abc`") && err.contains("found: "), "{err}");
        assert!(check(&[], &name, "abc").unwrap_err().contains("no TXT record at _berth-challenge.shop.example"));
    }

    #[tokio::test]
    async fn a_turned_off_resolver_says_so() {
        let err = DnsResolver::Off.txt("_berth-challenge.shop.example").await.unwrap_err();
        assert!(err.contains("BERTH_DNS_RESOLVER=off"), "{err}");
    }
}
