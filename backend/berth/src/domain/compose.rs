//! Compose templates: syntax and the shape Swarm needs, variables, and the services (with replicas and
//! reservations) a deploy would create. Full Compose semantics — every key translated to Swarm specs as
//! `docker stack deploy` does — belong to the applications work; this module is the part the API needs
//! to validate input and enforce quotas.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::error::ApiError;

/// The largest Compose document accepted, in bytes.
pub const MAX_COMPOSE_BYTES: usize = 256 * 1024;

/// A service as a deploy would create it, with what quotas count.
#[derive(Debug, Clone, PartialEq)]
pub struct ServicePlan {
    pub name: String,
    pub image: String,
    pub replicas: i32,
    pub cpu_reservation: f64,
    pub memory_reservation_mb: i64,
}

/// Checks a template: valid YAML (errors carry line and column), a `services` mapping whose entries each
/// name an `image`. Variables are left as they are: a template is validated before it is filled in.
pub fn validate(field: &str, text: &str) -> Result<Vec<String>, ApiError> {
    if text.len() > MAX_COMPOSE_BYTES {
        return Err(ApiError::invalid_field(field, format!("must be at most {MAX_COMPOSE_BYTES} bytes")));
    }
    let doc = parse(text)?;
    let services = services_of(&doc)?;
    let mut names = Vec::new();
    for (name, svc) in services {
        let svc = svc.as_mapping().ok_or_else(|| invalid(format!("service `{name}` must be a mapping")))?;
        match svc.get("image") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                return Err(invalid(format!("service `{name}` needs an `image` (Swarm cannot build images)")));
            }
        }
        names.push(name);
    }
    Ok(names)
}

fn parse(text: &str) -> Result<Value, ApiError> {
    serde_yaml::from_str::<Value>(text).map_err(|e| {
        let mut err = ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-compose",
            format!("the Compose file is not valid YAML: {e}"),
        );
        if let Some(loc) = e.location() {
            err = err.with_location(loc.line() as u64, loc.column() as u64);
        }
        err
    })
}

fn invalid(detail: String) -> ApiError {
    ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose", detail)
}

fn services_of(doc: &Value) -> Result<Vec<(String, &Value)>, ApiError> {
    let top = doc.as_mapping().ok_or_else(|| invalid("the Compose file must be a mapping with `services`".into()))?;
    let services = top
        .get("services")
        .and_then(Value::as_mapping)
        .ok_or_else(|| invalid("the Compose file needs a `services` mapping".into()))?;
    if services.is_empty() {
        return Err(invalid("the Compose file declares no services".into()));
    }
    let mut out = Vec::new();
    for (k, v) in services {
        let name = k.as_str().ok_or_else(|| invalid("service names must be strings".into()))?;
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(invalid(format!("service name `{name}` must be letters, digits, `-`, `_` or `.`, at most 63")));
        }
        out.push((name.to_owned(), v));
    }
    Ok(out)
}

/// Variables the text uses, with their defaults: `${A}` → A: None, `${A:-x}` / `${A-x}` → A: Some(x).
/// `$$` is a literal dollar, as in Compose.
pub fn variables(text: &str) -> BTreeMap<String, Option<String>> {
    let mut vars = BTreeMap::new();
    for_each_reference(text, |name, default| {
        let entry = vars.entry(name.to_owned()).or_insert(None);
        if entry.is_none() {
            *entry = default.map(str::to_owned);
        }
        String::new()
    });
    vars
}

/// Replaces every variable reference with its value, or its default; a variable with neither is a 422.
pub fn interpolate(text: &str, values: &BTreeMap<String, String>) -> Result<String, ApiError> {
    let mut missing = Vec::new();
    let out = for_each_reference(text, |name, default| match (values.get(name), default) {
        (Some(v), _) => v.clone(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => {
            missing.push(name.to_owned());
            String::new()
        }
    });
    if let Some(name) = missing.first() {
        return Err(ApiError::invalid_field(&format!("variables.{name}"), "the template needs a value for this variable"));
    }
    Ok(out)
}

/// Walks `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}` and `${NAME:?message}` references,
/// replacing each with what `f` returns; `$$` becomes `$`.
fn for_each_reference(text: &str, mut f: impl FnMut(&str, Option<&str>) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let inner = &body[..end];
                    let (name, default) = if let Some((n, d)) = inner.split_once(":-") {
                        (n, Some(d))
                    } else if let Some((n, _)) = inner.split_once(":?") {
                        (n, None)
                    } else if let Some((n, d)) = inner.split_once('-') {
                        (n, Some(d))
                    } else {
                        (inner, None)
                    };
                    out.push_str(&f(name, default));
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&f(&after[..len], None));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

/// The services a deploy of the (interpolated) text creates. `nodes` is the cluster's node count, which
/// is what a `mode: global` service runs.
pub fn plan(text: &str, nodes: i32) -> Result<Vec<ServicePlan>, ApiError> {
    validate("compose", text)?;
    let doc = parse(text)?;
    let mut plans = Vec::new();
    for (name, svc) in services_of(&doc)? {
        let image = svc.get("image").and_then(Value::as_str).unwrap_or_default().to_owned();
        let deploy = svc.get("deploy");
        let global = deploy.and_then(|d| d.get("mode")).and_then(Value::as_str) == Some("global");
        let replicas = match deploy.and_then(|d| d.get("replicas")) {
            _ if global => nodes,
            None => 1,
            Some(v) => v
                .as_i64()
                .filter(|n| (0..=1000).contains(n))
                .ok_or_else(|| invalid(format!("service `{name}`: deploy.replicas must be a whole number 0–1000")))?
                as i32,
        };
        let reservations = deploy.and_then(|d| d.get("resources")).and_then(|r| r.get("reservations"));
        let cpu_reservation = match reservations.and_then(|r| r.get("cpus")) {
            None => 0.0,
            Some(v) => parse_cpus(v)
                .ok_or_else(|| invalid(format!("service `{name}`: reservations.cpus must be a number of CPUs like 0.5")))?,
        };
        let memory_reservation_mb = match reservations.and_then(|r| r.get("memory")) {
            None => 0,
            Some(v) => parse_memory_mb(v)
                .ok_or_else(|| invalid(format!("service `{name}`: reservations.memory must be a size like 512M or 1G")))?,
        };
        plans.push(ServicePlan { name, image, replicas, cpu_reservation, memory_reservation_mb });
    }
    Ok(plans)
}

fn parse_cpus(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n)
}

/// Compose sizes: a byte count, or a number with b/k/m/g suffix (case-insensitive, optional trailing b).
/// Rounded up to whole MiB.
fn parse_memory_mb(v: &Value) -> Option<i64> {
    let bytes: f64 = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            let s = s.strip_suffix('b').unwrap_or(&s);
            let (num, mult) = match s.chars().last()? {
                'k' => (&s[..s.len() - 1], 1024.0),
                'm' => (&s[..s.len() - 1], 1024.0 * 1024.0),
                'g' => (&s[..s.len() - 1], 1024.0 * 1024.0 * 1024.0),
                _ => (s, 1.0),
            };
            num.trim().parse::<f64>().ok()? * mult
        }
        _ => return None,
    };
    (bytes.is_finite() && bytes >= 0.0).then(|| (bytes / (1024.0 * 1024.0)).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = validate("compose", "services:\n  web:\n    image: [unclosed\n").unwrap_err();
        assert_eq!(e.kind, "invalid-compose");
        let (line, col) = e.location.expect("location");
        assert!(line >= 3, "line {line}");
        assert!(col >= 1);
    }

    #[test]
    fn services_need_images() {
        assert!(validate("c", "services:\n  web:\n    build: .\n").is_err());
        assert!(validate("c", "version: '3'\n").is_err());
        assert_eq!(validate("c", "services:\n  web:\n    image: nginx\n").unwrap(), vec!["web"]);
    }

    #[test]
    fn variables_and_interpolation() {
        let text = "services:\n  web:\n    image: ${IMAGE:-busybox}:$TAG\n    environment: [\"A=$$HOME\", \"B=${B-x}\"]\n";
        let vars = variables(text);
        assert_eq!(vars.get("IMAGE"), Some(&Some("busybox".to_owned())));
        assert_eq!(vars.get("TAG"), Some(&None));
        assert_eq!(vars.get("B"), Some(&Some("x".to_owned())));
        assert!(!vars.contains_key("HOME"));
        let err = interpolate(text, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.errors[0].field, "variables.TAG");
        let out = interpolate(text, &BTreeMap::from([("TAG".to_owned(), "1.2".to_owned())])).unwrap();
        assert!(out.contains("image: busybox:1.2"));
        assert!(out.contains("A=$HOME"));
    }

    #[test]
    fn plans_count_replicas_and_reservations() {
        let text = "services:
  web:
    image: web
    deploy:
      replicas: 3
      resources: {reservations: {cpus: '0.5', memory: 256M}}
  agent:
    image: agent
    deploy: {mode: global, resources: {reservations: {memory: 1g}}}
  once:
    image: x
";
        let p = plan(text, 4).unwrap();
        assert_eq!(
            p[0],
            ServicePlan {
                name: "web".into(),
                image: "web".into(),
                replicas: 3,
                cpu_reservation: 0.5,
                memory_reservation_mb: 256
            }
        );
        assert_eq!((p[1].replicas, p[1].memory_reservation_mb), (4, 1024));
        assert_eq!((p[2].replicas, p[2].cpu_reservation), (1, 0.0));
        assert!(plan("services:\n  a:\n    image: a\n    deploy: {replicas: -1}\n", 1).is_err());
    }
}
