//! Distributed Application Bundles (`.dab`): the JSON `docker-compose bundle` wrote and the
//! experimental `docker deploy` read (docker/cli `cli/compose/bundlefile`). Converted to the Compose
//! file that deploys the same services, so a bundle becomes an ordinary template.

use serde_json::Value;

/// A JSON string is a YAML double-quoted scalar; `$` is doubled so interpolation leaves it alone.
fn quote(s: &str) -> String {
    serde_json::to_string(&s.replace('$', "$$")).unwrap_or_default()
}

fn strings(v: &Value, path: &str) -> Result<Vec<String>, (String, String)> {
    let items = v.as_array().ok_or_else(|| (path.to_owned(), "must be a list of strings".to_owned()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, s)| s.as_str().map(str::to_owned).ok_or_else(|| (format!("{path}[{i}]"), "must be a string".to_owned())))
        .collect()
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "))
}

/// The Compose text for a bundle, or the path and reason of what is wrong with it.
pub fn to_compose(bundle: &Value) -> Result<String, (String, String)> {
    let err = |path: &str, message: &str| (path.to_owned(), message.to_owned());
    let top = bundle.as_object().ok_or_else(|| err("", "must be an object"))?;
    for key in top.keys() {
        if key != "Version" && key != "Services" {
            return Err(err(key, "unknown key (a bundle has Version and Services)"));
        }
    }
    match top.get("Version").and_then(Value::as_str) {
        Some("0.1") => {}
        _ => return Err(err("Version", "must be \"0.1\"")),
    }
    let services = top.get("Services").and_then(Value::as_object).ok_or_else(|| err("Services", "must be an object"))?;
    if services.is_empty() {
        return Err(err("Services", "declares no services"));
    }
    let mut out = String::from("version: \"3.8\"\nservices:\n");
    let mut networks = std::collections::BTreeSet::new();
    for (name, svc) in services {
        let path = format!("Services.{name}");
        let svc = svc.as_object().ok_or_else(|| err(&path, "must be an object"))?;
        out.push_str(&format!("  {}:\n", quote(name)));
        let image = svc.get("Image").and_then(Value::as_str).ok_or_else(|| err(&format!("{path}.Image"), "is required"))?;
        out.push_str(&format!("    image: {}\n", quote(image)));
        for (key, value) in svc {
            let p = format!("{path}.{key}");
            match key.as_str() {
                "Image" => {}
                "Command" => out.push_str(&format!("    entrypoint: {}\n", list(&strings(value, &p)?))),
                "Args" => out.push_str(&format!("    command: {}\n", list(&strings(value, &p)?))),
                "Env" => out.push_str(&format!("    environment: {}\n", list(&strings(value, &p)?))),
                "Labels" => {
                    let labels = value.as_object().ok_or_else(|| err(&p, "must be an object of strings"))?;
                    let mut pairs = Vec::new();
                    for (k, v) in labels {
                        let v = v.as_str().ok_or_else(|| err(&format!("{p}.{k}"), "must be a string"))?;
                        pairs.push(format!("{}: {}", quote(k), quote(v)));
                    }
                    out.push_str(&format!("    labels: {{{}}}\n", pairs.join(", ")));
                }
                "Ports" => {
                    let ports = value.as_array().ok_or_else(|| err(&p, "must be a list"))?;
                    let mut specs = Vec::new();
                    for (i, port) in ports.iter().enumerate() {
                        let pp = format!("{p}[{i}]");
                        let number = port.get("Port").and_then(Value::as_u64).filter(|n| (1..=65535).contains(n));
                        let number = number.ok_or_else(|| err(&format!("{pp}.Port"), "must be a port number"))?;
                        let protocol = port.get("Protocol").and_then(Value::as_str).unwrap_or("tcp").to_ascii_lowercase();
                        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
                            return Err(err(&format!("{pp}.Protocol"), "must be tcp, udp or sctp"));
                        }
                        specs.push(format!("{number}/{protocol}"));
                    }
                    out.push_str(&format!("    ports: {}\n", list(&specs)));
                }
                "WorkingDir" | "User" => {
                    if let Some(s) = value.as_str() {
                        let compose_key = if key == "User" { "user" } else { "working_dir" };
                        out.push_str(&format!("    {compose_key}: {}\n", quote(s)));
                    } else if !value.is_null() {
                        return Err(err(&p, "must be a string"));
                    }
                }
                "Networks" => {
                    let names = strings(value, &p)?;
                    out.push_str(&format!("    networks: {}\n", list(&names)));
                    networks.extend(names.into_iter().filter(|n| n != "default"));
                }
                _ => return Err(err(&p, "unknown key")),
            }
        }
    }
    if !networks.is_empty() {
        out.push_str("networks:\n");
        for n in networks {
            out.push_str(&format!("  {}: {{}}\n", quote(&n)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::applications::compose::{Input, load, policy::Policy};

    #[test]
    fn a_bundle_becomes_the_same_services() {
        let bundle = json!({"Version": "0.1", "Services": {"web": {
            "Image": "nginx@sha256:00", "Command": ["nginx"], "Args": ["-g", "daemon off;"], "Env": ["A=$1"],
            "Labels": {"tier": "web"}, "Ports": [{"Protocol": "tcp", "Port": 80}], "WorkingDir": "/srv", "Networks": ["front"]
        }}});
        let text = to_compose(&bundle).unwrap();
        let empty = BTreeMap::new();
        let loaded = load(&Input { text: &text, files: &empty, variables: &empty }, &Policy::default()).unwrap();
        let web = &loaded.project.services["web"];
        assert_eq!(web.image, "nginx@sha256:00");
        assert_eq!(web.entrypoint.as_deref(), Some(&["nginx".to_owned()][..]));
        assert_eq!(web.command.as_ref().unwrap()[1], "daemon off;");
        assert_eq!(web.environment["A"].as_deref(), Some("$1"));
        assert_eq!((web.ports[0].target, web.ports[0].mode.as_str()), (80, "ingress"));
        assert!(loaded.project.networks.contains_key("front"));
        assert_eq!(
            to_compose(&json!({"Version": "0.1", "Services": {"x": {"Image": "a", "Privileged": true}}})).unwrap_err().0,
            "Services.x.Privileged"
        );
        assert_eq!(to_compose(&json!({"Version": "2"})).unwrap_err().0, "Version");
    }
}
