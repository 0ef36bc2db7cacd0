//! Which routes a Compose file declares, as pure code: a default domain for every service with a port,
//! the `berth.routing.port_<N>: domain[/path][, …]` labels (Alibaba Cloud's convention, on the
//! service or under `deploy.labels`) and the service's `x-berth: {routes: [{port, domain, path}]}`
//! extension. Mistakes are errors at the label or entry, so a bad route never reaches a router.

use std::collections::BTreeSet;

use crate::applications::compose::Diagnostics;
use crate::applications::compose::model::{Project, Service};

/// The label prefix naming a routed target port.
pub const LABEL_PREFIX: &str = "berth.routing.port_";

/// A route a revision asks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Declared {
    pub service: String,
    pub port: u16,
    pub domain: String,
    pub path_prefix: String,
    /// `true` for the domain Berth gives the service under the apps domain.
    pub default: bool,
}

/// Where a tenant's default domains live.
pub struct Names<'a> {
    pub application: &'a str,
    pub tenant_slug: &'a str,
    pub apps_domain: &'a str,
}

impl Names<'_> {
    /// `<service>.<application>.<tenant slug>.<apps domain>`; a service name that is not a DNS label
    /// (Compose allows `_` and `.`) is made into one.
    pub fn default_domain(&self, service: &str) -> String {
        let label: String =
            service.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let label = label.trim_matches('-');
        let label = if label.is_empty() { "service" } else { label };
        format!("{label}.{}.{}.{}", self.application, self.tenant_slug, self.apps_domain)
    }
}

/// The routes of a project, sorted; label mistakes are added to `diags` as errors.
pub fn routes(project: &Project, names: &Names<'_>, diags: &mut Diagnostics) -> Vec<Declared> {
    let mut out = BTreeSet::new();
    for (name, svc) in &project.services {
        let labelled = labelled_routes(name, svc, names, diags);
        // The default domain goes to the lowest port a route names, else to the lowest TCP port written.
        let primary = labelled
            .iter()
            .map(|r| r.port)
            .chain(svc.routes.iter().map(|r| r.port))
            .min()
            .or_else(|| tcp_targets(svc).into_iter().min());
        if let Some(port) = primary {
            let domain = names.default_domain(name);
            out.insert(Declared { service: name.clone(), port, domain, path_prefix: "/".into(), default: true });
        }
        out.extend(labelled);
        out.extend(extension_routes(name, svc, names, diags));
    }
    let mut seen = BTreeSet::new();
    let mut routes = Vec::new();
    for r in out {
        if !seen.insert((r.domain.clone(), r.path_prefix.clone())) {
            diags.error(
                &format!("services.{}", r.service),
                project.services[&r.service].spot.line,
                project.services[&r.service].spot.column,
                format!("`{}{}` is routed twice in this file", r.domain, r.path_prefix),
            );
            continue;
        }
        routes.push(r);
    }
    routes
}

/// The target ports a service exposes to routes: its TCP `ports` targets and its labelled ports. Each
/// gets a host-mode port on every task ([`super::ports`]), so any of them can be routed (by the file
/// or through the API) without another deploy.
pub fn exposed_ports(svc: &Service) -> BTreeSet<u16> {
    svc.labels
        .keys()
        .chain(svc.deploy.labels.keys())
        .filter_map(|k| k.strip_prefix(LABEL_PREFIX)?.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .chain(tcp_targets(svc))
        .chain(svc.routes.iter().map(|r| r.port))
        .collect()
}

/// The routes of the service's `x-berth.routes` entries, each judged like a label's.
fn extension_routes(name: &str, svc: &Service, names: &Names<'_>, diags: &mut Diagnostics) -> Vec<Declared> {
    let mut out = Vec::new();
    for r in &svc.routes {
        let checked = custom_domain(&r.domain, names.apps_domain)
            .and_then(|domain| Ok((domain, check_path(r.path.as_deref().unwrap_or("/"))?)));
        match checked {
            Ok((domain, path_prefix)) => {
                out.push(Declared { service: name.to_owned(), port: r.port, domain, path_prefix, default: false })
            }
            Err(why) => diags.error(&r.spot.path, r.spot.line, r.spot.column, format!("`{}`: {why}", r.domain)),
        }
    }
    out
}

fn tcp_targets(svc: &Service) -> Vec<u16> {
    svc.ports
        .iter()
        .filter(|p| p.protocol.is_empty() || p.protocol == "tcp")
        .filter_map(|p| u16::try_from(p.target).ok())
        .filter(|p| *p > 0)
        .collect()
}

fn labelled_routes(name: &str, svc: &Service, names: &Names<'_>, diags: &mut Diagnostics) -> Vec<Declared> {
    let mut out = Vec::new();
    let labels = svc.labels.iter().map(|l| ("labels", l)).chain(svc.deploy.labels.iter().map(|l| ("deploy.labels", l)));
    for (section, (key, value)) in labels {
        let Some(port) = key.strip_prefix(LABEL_PREFIX) else { continue };
        let path = format!("services.{name}.{section}.{key}");
        let mut error = |message: String| diags.error(&path, svc.spot.line, svc.spot.column, message);
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                error(format!("`{port}` is not a port: write `{LABEL_PREFIX}<1–65535>`"));
                continue;
            }
        };
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_entry(entry, names.apps_domain) {
                Ok((domain, path_prefix)) => {
                    out.push(Declared { service: name.to_owned(), port, domain, path_prefix, default: false })
                }
                Err(why) => error(format!("`{entry}`: {why}")),
            }
        }
    }
    out
}

/// `domain[/path]`, optionally after `http://` or `https://` (as Alibaba's labels write it).
pub fn parse_entry(entry: &str, apps_domain: &str) -> Result<(String, String), String> {
    let rest = entry.strip_prefix("http://").or_else(|| entry.strip_prefix("https://")).unwrap_or(entry);
    let (domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((custom_domain(domain, apps_domain)?, check_path(path)?))
}

/// A domain a tenant may name (labels, `x-berth`, the API, grants): lowercased, a domain name, and
/// not under the apps domain.
pub fn custom_domain(domain: &str, apps_domain: &str) -> Result<String, String> {
    let domain = domain.trim().to_ascii_lowercase();
    check_domain(&domain)?;
    custom_domain_allowed(&domain, apps_domain)?;
    Ok(domain)
}

/// A host name: dot-separated DNS labels, at least two, at most 253 characters.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels: Vec<&str> = domain.split('.').collect();
    if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
        return Err("not a domain name: dot-separated labels of lowercase letters, digits and dashes".into());
    }
    if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Err("not a domain name: an IP address cannot be routed by name".into());
    }
    Ok(())
}

/// A path prefix: starts with `/`, no query, no fragment, no spaces, at most 256 characters; a
/// trailing `/` is dropped (except for `/` itself) so `/api` and `/api/` are one prefix.
pub fn check_path(path: &str) -> Result<String, String> {
    let ok = path.starts_with('/')
        && path.len() <= 256
        && path.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\' | b'"' | b'\''));
    if !ok {
        return Err("a path prefix starts with `/` and has no spaces, `?`, `#`, `%`, quotes or backslashes".into());
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".into() } else { trimmed.to_owned() })
}

/// Names under the apps domain are Berth's to give (each service's default domain); a tenant cannot
/// claim one.
fn custom_domain_allowed(domain: &str, apps_domain: &str) -> Result<(), String> {
    if domain == apps_domain || domain.ends_with(&format!(".{apps_domain}")) {
        return Err(format!("names under `{apps_domain}` are given by Berth (each service's default domain)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::applications::compose::{Input, load, policy::Policy};

    fn declared(text: &str) -> (Vec<Declared>, Vec<String>) {
        let empty = BTreeMap::new();
        let loaded = load(&Input { text, files: &empty, variables: &empty }, &Policy::default()).unwrap();
        let names = Names { application: "shop", tenant_slug: "acme", apps_domain: "apps.localhost" };
        let mut diags = Diagnostics::default();
        let routes = routes(&loaded.project, &names, &mut diags);
        (routes, diags.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect())
    }

    #[test]
    fn a_service_with_a_port_gets_its_default_domain() {
        let (routes, errors) = declared(
            "services:\n  web_app:\n    image: x\n    ports: [{target: 8080, mode: host}, '9090:90']\n  worker:\n    image: x\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            routes,
            [Declared {
                service: "web_app".into(),
                port: 90,
                domain: "web-app.shop.acme.apps.localhost".into(),
                path_prefix: "/".into(),
                default: true
            }]
        );
    }

    #[test]
    fn labels_add_domains_and_paths_and_choose_the_default_port() {
        let text = "services:\n  web:\n    image: x\n    ports: ['80']\n    labels:\n      berth.routing.port_8080: 'http://WWW.Example.com/api/, example.org'\n    deploy:\n      labels: {berth.routing.port_9000: admin.example.com}\n";
        let (routes, errors) = declared(text);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<(u16, &str, &str, bool)> =
            routes.iter().map(|r| (r.port, r.domain.as_str(), r.path_prefix.as_str(), r.default)).collect();
        assert_eq!(
            got,
            [
                (8080, "example.org", "/", false),
                (8080, "web.shop.acme.apps.localhost", "/", true),
                (8080, "www.example.com", "/api", false),
                (9000, "admin.example.com", "/", false),
            ]
        );
    }

    #[test]
    fn bad_labels_are_errors_at_the_label() {
        let text = "services:\n  web:\n    image: x\n    labels:\n      berth.routing.port_http: a.example.com\n      berth.routing.port_80: 'bad_domain.com, 10.0.0.1, x.example.com/a b, y.apps.localhost'\n";
        let (_, errors) = declared(text);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[0].contains("services.web.labels.berth.routing.port_80: `bad_domain.com`: not a domain name"),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("`10.0.0.1`: not a domain name: an IP address")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("given by Berth")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("`http` is not a port")), "{errors:?}");
    }

    #[test]
    fn the_berth_extension_declares_routes_and_its_mistakes_are_errors_at_the_entry() {
        let text = "services:\n  api:\n    image: x\n    x-berth:\n      routes:\n        - {port: 9000, domain: API.example.com, path: /v1/}\n        - {port: 9000, domain: example.org}\n";
        let (routes, errors) = declared(text);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<(u16, &str, &str, bool)> =
            routes.iter().map(|r| (r.port, r.domain.as_str(), r.path_prefix.as_str(), r.default)).collect();
        assert_eq!(
            got,
            [
                (9000, "api.example.com", "/v1", false),
                (9000, "api.shop.acme.apps.localhost", "/", true),
                (9000, "example.org", "/", false)
            ]
        );

        let bad = "services:\n  api:\n    image: x\n    x-berth:\n      routes:\n        - {port: 0, domain: a.example.com}\n        - {domain: b.example.com}\n        - {port: 80, domain: 'c example'}\n        - {port: 80, domain: d.example.com, weight: 3}\n      other: 1\n";
        let empty = BTreeMap::new();
        let errors = match load(&Input { text: bad, files: &empty, variables: &empty }, &Policy::default()) {
            Err(errors) => errors.iter().map(|e| format!("{} (line {}): {}", e.path, e.line, e.message)).collect::<Vec<_>>(),
            Ok(loaded) => {
                let names = Names { application: "shop", tenant_slug: "acme", apps_domain: "apps.localhost" };
                let mut diags = Diagnostics::default();
                super::routes(&loaded.project, &names, &mut diags);
                diags.errors.iter().map(|e| format!("{} (line {}): {}", e.path, e.line, e.message)).collect()
            }
        };
        let joined = errors.join("\n");
        assert!(joined.contains("services.api.x-berth.routes[0].port (line 6): must be a port number"), "{joined}");
        assert!(joined.contains("services.api.x-berth.routes[1] (line 7): needs `port`"), "{joined}");
        assert!(joined.contains("services.api.x-berth.routes[3].weight (line 9): unknown key"), "{joined}");
        assert!(joined.contains("services.api.x-berth.other (line 10): unknown key"), "{joined}");
    }

    #[test]
    fn one_domain_and_path_is_routed_once() {
        let text = "services:\n  a:\n    image: x\n    labels: {berth.routing.port_80: www.example.com}\n  b:\n    image: x\n    labels: {berth.routing.port_80: www.example.com}\n";
        let (_, errors) = declared(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("routed twice"), "{errors:?}");
    }
}
