//! The interpolated YAML tree → a typed [`Project`], as the CLI's loader reads Compose 3.9, with every
//! error collected (path, line, column) and the CLI's warnings for keys Swarm ignores.
//!
//! Where Berth has no local disk, the template's own files stand in: `env_file` and secret/config
//! `file:` name one of them, relative to the template. Secrets and configs may also give `content:`
//! inline (the Compose Specification's key).

use std::collections::{BTreeMap, BTreeSet};

use super::model::*;
use super::read::{self, Fields, fields, join};
use super::yaml::{Node, Value};
use super::{Diagnostics, Input};

/// Service keys the CLI refuses outright.
const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "`extends` is not supported"),
    ("volume_driver", "define the volume under the top-level `volumes` with its driver instead"),
    ("volumes_from", "share a volume by defining it under the top-level `volumes` and mounting it in each service"),
    ("cpu_quota", "set resource limits under `deploy.resources`"),
    ("cpu_shares", "set resource limits under `deploy.resources`"),
    ("cpuset", "set resource limits under `deploy.resources`"),
    ("mem_limit", "set resource limits under `deploy.resources`"),
    ("memswap_limit", "set resource limits under `deploy.resources`"),
];

/// Keys Swarm cannot honour: the CLI ignores them with a warning, and so does Berth — except where the
/// admission policy judges their value (`host_access`).
const IGNORED: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "security_opt",
    "shm_size",
    "userns_mode",
    "container_name",
    "expose",
    "depends_on",
    "tmpfs",
];
const HOST_ACCESS: &[&str] =
    &["privileged", "network_mode", "pid", "ipc", "devices", "security_opt", "userns_mode", "cgroup_parent"];

pub fn project(root: &Node, input: &Input<'_>, diags: &mut Diagnostics) -> Project {
    let mut project = Project::default();
    let Some(mut top) = (match root.value {
        Value::Map(_) => fields(root, "", diags),
        _ => {
            diags.error("", root.line, root.column, "a Compose file is a mapping with `services`");
            None
        }
    }) else {
        return project;
    };
    match top.get("version") {
        None => diags.warn("version", root.line, root.column, "no `version`: read as Compose file format 3.9"),
        Some(v) => {
            let text = match &v.value {
                Value::Str(s) => Some(s.clone()),
                Value::Int(_) | Value::Float(_) => read::string_or_number(v, "version", diags),
                _ => read::string(v, "version", diags),
            };
            if let Some(text) = text
                && !(text == "3" || text.strip_prefix("3.").is_some_and(|m| m.parse::<u8>().is_ok_and(|m| m <= 9)))
            {
                diags.error(
                    "version",
                    v.line,
                    v.column,
                    format!("Compose file format `{text}` is not supported: use 3.0 to 3.9"),
                );
            }
        }
    }
    if let Some(n) = top.get("networks") {
        for (key, node) in read::entries(n, "networks", diags) {
            let path = join("networks", &key.name);
            if let Some(net) = network(node, &path, diags) {
                project.networks.insert(key.name.clone(), net);
            }
        }
    }
    if let Some(n) = top.get("volumes") {
        for (key, node) in read::entries(n, "volumes", diags) {
            let path = join("volumes", &key.name);
            check_object_name(&key.name, &path, key.line, key.column, diags);
            if let Some(vol) = volume(node, &path, diags) {
                project.volumes.insert(key.name.clone(), vol);
            }
        }
    }
    for (section, target) in [("secrets", &mut project.secrets), ("configs", &mut project.configs)] {
        if let Some(n) = top.get(section) {
            for (key, node) in read::entries(n, section, diags) {
                let path = join(section, &key.name);
                check_object_name(&key.name, &path, key.line, key.column, diags);
                if let Some(obj) = file_object(node, &path, section == "secrets", input, diags) {
                    target.insert(key.name.clone(), obj);
                }
            }
        }
    }
    match top.get("services") {
        None => diags.error("services", root.line, root.column, "a Compose file needs `services`"),
        Some(n) => {
            let entries = read::entries(n, "services", diags);
            if entries.is_empty() && matches!(n.value, Value::Map(_) | Value::Null) {
                diags.error("services", n.line, n.column, "declares no services");
            }
            for (key, node) in entries {
                let path = join("services", &key.name);
                check_object_name(&key.name, &path, key.line, key.column, diags);
                if let Some(svc) = service(node, &path, &project, input, diags) {
                    project.services.insert(key.name.clone(), svc);
                }
            }
        }
    }
    top.finish(diags, true);
    project
}

/// Service, volume, secret and config names: what the CLI's schema allows, and short enough that
/// `<application>_<name>` stays a valid Swarm name.
fn check_object_name(name: &str, path: &str, line: u32, column: u32, diags: &mut Diagnostics) {
    let ok =
        !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        diags.error(path, line, column, "names are letters, digits, `.`, `_` and `-`, at most 63 characters");
    }
}

/// `external: true|false` or the old `external: {name: x}`; returns (external, old-style name).
fn external(node: &Node, path: &str, diags: &mut Diagnostics) -> (bool, Option<String>) {
    match &node.value {
        Value::Map(_) => {
            let Some(mut f) = fields(node, path, diags) else { return (true, None) };
            let name = f.get("name").and_then(|n| read::string(n, &f.path("name"), diags));
            f.finish(diags, false);
            diags.warn(path, node.line, node.column, "`external.name` is deprecated: use `name`");
            (true, name)
        }
        _ => (read::boolean(node, path, diags).unwrap_or(false), None),
    }
}

/// Reads `name`, `external` and rejects keys an external object cannot have.
fn name_and_external(f: &mut Fields<'_>, node: &Node, conflicting: &[&str], diags: &mut Diagnostics) -> (Option<String>, bool) {
    let name = f.get("name").and_then(|n| read::string(n, &f.path("name"), diags));
    let (is_external, old_name) = f.get("external").map(|n| external(n, &f.path("external"), diags)).unwrap_or((false, None));
    if name.is_some() && old_name.is_some() {
        diags.error(&f.path("external.name"), node.line, node.column, "`external.name` and `name` conflict; only use `name`");
    }
    if is_external {
        for key in conflicting {
            if f.has(key) {
                diags.error(&f.path(key), node.line, node.column, format!("`external` and `{key}` conflict"));
            }
        }
    }
    (name.or(old_name), is_external)
}

fn network(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Network> {
    let mut f = fields(node, path, diags)?;
    let (name, is_external) = name_and_external(&mut f, node, &["driver", "driver_opts", "ipam", "internal", "labels"], diags);
    let mut net = Network { name, external: is_external, ..Default::default() };
    net.driver = f.get("driver").and_then(|n| read::string(n, &f.path("driver"), diags));
    net.driver_opts = f.get("driver_opts").map(|n| read::string_map(n, &f.path("driver_opts"), diags)).unwrap_or_default();
    net.internal = f.get("internal").and_then(|n| read::boolean(n, &f.path("internal"), diags)).unwrap_or(false);
    net.attachable = f.get("attachable").and_then(|n| read::boolean(n, &f.path("attachable"), diags)).unwrap_or(false);
    net.labels = f.get("labels").map(|n| read::labels(n, &f.path("labels"), diags)).unwrap_or_default();
    if let Some(ipam) = f.get("ipam") {
        let ipath = f.path("ipam");
        if let Some(mut i) = fields(ipam, &ipath, diags) {
            net.ipam_driver = i.get("driver").and_then(|n| read::string(n, &i.path("driver"), diags));
            let mut subnets = None;
            if let Some(config) = i.get("config") {
                let mut list = Vec::new();
                match &config.value {
                    Value::Seq(items) => {
                        for (n, item) in items.iter().enumerate() {
                            let cpath = format!("{}[{n}]", i.path("config"));
                            if let Some(mut c) = fields(item, &cpath, diags) {
                                if let Some(s) = c.get("subnet").and_then(|s| read::string(s, &c.path("subnet"), diags)) {
                                    if s.parse::<ipnet::IpNet>().is_err() {
                                        diags.error(
                                            &c.path("subnet"),
                                            item.line,
                                            item.column,
                                            format!("`{s}` is not a subnet in CIDR form"),
                                        );
                                    }
                                    list.push(s);
                                }
                                c.finish(diags, false);
                            }
                        }
                    }
                    _ => read::mismatch(config, &i.path("config"), "a list", diags),
                }
                subnets = Some(list);
            }
            if net.ipam_driver.is_some() || subnets.is_some() {
                net.ipam_subnets = Some(subnets.unwrap_or_default());
            }
            i.finish(diags, false);
        }
    }
    f.finish(diags, true);
    Some(net)
}

fn volume(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Volume> {
    let mut f = fields(node, path, diags)?;
    let (name, is_external) = name_and_external(&mut f, node, &["driver", "driver_opts", "labels"], diags);
    let vol = Volume {
        name,
        external: is_external,
        driver: f.get("driver").and_then(|n| read::string(n, &f.path("driver"), diags)),
        driver_opts: f.get("driver_opts").map(|n| read::string_map(n, &f.path("driver_opts"), diags)),
        labels: f.get("labels").map(|n| read::labels(n, &f.path("labels"), diags)).unwrap_or_default(),
    };
    f.finish(diags, true);
    Some(vol)
}

/// A path among the template's files: relative, `./` allowed, no `..`.
fn template_file<'i>(name: &str, path: &str, node: &Node, input: &Input<'i>, diags: &mut Diagnostics) -> Option<&'i str> {
    let normal = name.trim_start_matches("./");
    if normal.starts_with('/') || normal.starts_with('~') || normal.split('/').any(|p| p == "..") {
        diags.error(
            path,
            node.line,
            node.column,
            "a file is named relative to the template, inside it (no absolute paths, no `..`)",
        );
        return None;
    }
    let found = input.files.get(normal).map(String::as_str);
    if found.is_none() {
        diags.error(path, node.line, node.column, format!("the template has no file `{normal}`"));
    }
    found
}

fn file_object(node: &Node, path: &str, secret: bool, input: &Input<'_>, diags: &mut Diagnostics) -> Option<FileObject> {
    let mut f = fields(node, path, diags)?;
    let (name, is_external) = name_and_external(&mut f, node, &["file", "content", "driver", "labels"], diags);
    let mut obj = FileObject { name, external: is_external, ..Default::default() };
    obj.labels = f.get("labels").map(|n| read::labels(n, &f.path("labels"), diags)).unwrap_or_default();
    obj.template_driver = f.get("template_driver").and_then(|n| read::string(n, &f.path("template_driver"), diags));
    if secret {
        obj.driver = f.get("driver").and_then(|n| read::string(n, &f.path("driver"), diags));
        obj.driver_opts = f.get("driver_opts").map(|n| read::string_map(n, &f.path("driver_opts"), diags)).unwrap_or_default();
    }
    let file = f.get("file");
    let content = f.get("content");
    match (file, content) {
        (Some(_), Some(c)) => diags.error(&f.path("content"), c.line, c.column, "give `file` or `content`, not both"),
        (Some(n), None) => {
            if let Some(name) = read::string(n, &f.path("file"), diags)
                && let Some(text) = template_file(&name, &f.path("file"), n, input, diags)
            {
                obj.data = text.as_bytes().to_vec();
            }
        }
        (None, Some(n)) => obj.data = read::string(n, &f.path("content"), diags).unwrap_or_default().into_bytes(),
        (None, None) if !is_external && obj.driver.is_none() => {
            diags.error(
                path,
                node.line,
                node.column,
                "needs `file` (one of the template's files), `content` or `external: true`",
            );
        }
        (None, None) => {}
    }
    if obj.driver.is_some() && file.is_some() {
        diags.error(&f.path("driver"), node.line, node.column, "`driver` and `file` conflict; only use `driver`");
    }
    f.finish(diags, true);
    Some(obj)
}

fn spot(path: &str, node: &Node) -> Spot {
    Spot { path: path.to_owned(), line: node.line, column: node.column }
}

fn service(node: &Node, path: &str, project: &Project, input: &Input<'_>, diags: &mut Diagnostics) -> Option<Service> {
    let mut f = fields(node, path, diags)?;
    let mut svc = Service { spot: spot(path, node), ..Default::default() };
    let p = |k: &str| join(path, k);
    for (key, why) in FORBIDDEN {
        if let Some(n) = f.get(key) {
            diags.error(&p(key), n.line, n.column, format!("not supported by Swarm: {why}"));
        }
    }
    for key in IGNORED {
        if let Some(n) = f.get(key) {
            if HOST_ACCESS.contains(key) {
                let text = match &n.value {
                    Value::Seq(items) => items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(","),
                    Value::Bool(b) => b.to_string(),
                    _ => n.as_str().unwrap_or_default().to_owned(),
                };
                svc.host_access.push(((*key).to_owned(), text, spot(&p(key), n)));
            }
            diags.warn(&p(key), n.line, n.column, "ignored: Swarm services do not support this key");
        }
    }
    match f.get("image").and_then(|n| read::string(n, &p("image"), diags)) {
        Some(image) if !image.trim().is_empty() => svc.image = image,
        Some(_) => diags.error(&p("image"), node.line, node.column, "must not be empty"),
        None if !f.has("image") => {
            diags.error(&p("image"), node.line, node.column, "is required: Swarm runs images, it cannot build them")
        }
        None => {}
    }
    svc.entrypoint = f.get("entrypoint").and_then(|n| read::command(n, &p("entrypoint"), diags));
    svc.command = f.get("command").and_then(|n| read::command(n, &p("command"), diags));
    // env_file first, environment over it; empty or bare values are then taken from the variables,
    // as the CLI takes them from its environment.
    if let Some(n) = f.get("env_file") {
        for (i, name) in read::string_or_list(n, &p("env_file"), diags).unwrap_or_default().iter().enumerate() {
            let epath = if matches!(n.value, Value::Seq(_)) { format!("{}[{i}]", p("env_file")) } else { p("env_file") };
            if let Some(text) = template_file(name, &epath, n, input, diags) {
                env_file(text, &epath, n, input, &mut svc.environment, diags);
            }
        }
    }
    if let Some(n) = f.get("environment") {
        svc.environment.extend(read::list_or_dict(n, &p("environment"), diags));
    }
    for (key, value) in svc.environment.iter_mut() {
        if value.as_deref().is_none_or(str::is_empty)
            && let Some(v) = input.variables.get(key)
        {
            *value = Some(v.clone());
        }
    }
    svc.labels = f.get("labels").map(|n| read::labels(n, &p("labels"), diags)).unwrap_or_default();
    svc.hostname = f.get("hostname").and_then(|n| read::string(n, &p("hostname"), diags));
    if let Some(n) = f.get("extra_hosts") {
        svc.extra_hosts = match &n.value {
            Value::Map(_) => {
                let mut hosts: Vec<String> = read::list_or_dict(n, &p("extra_hosts"), diags)
                    .into_iter()
                    .filter_map(|(h, ip)| ip.map(|ip| format!("{h}:{ip}")))
                    .collect();
                hosts.sort();
                hosts
            }
            _ => read::string_list(n, &p("extra_hosts"), diags).unwrap_or_default(),
        };
    }
    svc.dns = f.get("dns").and_then(|n| read::string_or_list(n, &p("dns"), diags));
    svc.dns_search = f.get("dns_search").and_then(|n| read::string_or_list(n, &p("dns_search"), diags));
    svc.healthcheck = f.get("healthcheck").and_then(|n| healthcheck(n, &p("healthcheck"), diags));
    svc.working_dir = f.get("working_dir").and_then(|n| read::string(n, &p("working_dir"), diags));
    svc.user = f.get("user").and_then(|n| read::string_or_number(n, &p("user"), diags));
    if let Some(n) = f.get("volumes") {
        svc.volumes = service_volumes(n, &p("volumes"), project, diags);
    }
    svc.stop_grace_period = f.get("stop_grace_period").and_then(|n| read::duration(n, &p("stop_grace_period"), diags));
    svc.stop_signal = f.get("stop_signal").and_then(|n| read::string(n, &p("stop_signal"), diags));
    svc.tty = f.get("tty").and_then(|n| read::boolean(n, &p("tty"), diags)).unwrap_or(false);
    svc.stdin_open = f.get("stdin_open").and_then(|n| read::boolean(n, &p("stdin_open"), diags)).unwrap_or(false);
    svc.read_only = f.get("read_only").and_then(|n| read::boolean(n, &p("read_only"), diags)).unwrap_or(false);
    svc.init = f.get("init").and_then(|n| read::boolean(n, &p("init"), diags));
    if let Some(n) = f.get("isolation") {
        svc.isolation = read::string(n, &p("isolation"), diags);
        if let Some(i) = &svc.isolation
            && !matches!(i.as_str(), "default" | "process" | "hyperv")
        {
            diags.error(&p("isolation"), n.line, n.column, "must be default, process or hyperv");
        }
    }
    svc.sysctls = f.get("sysctls").map(|n| read::labels(n, &p("sysctls"), diags)).unwrap_or_default();
    if let Some(n) = f.get("cap_add")
        && let Value::Seq(items) = &n.value
    {
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{}[{i}]", p("cap_add"));
            if let Some(c) = read::string(item, &ipath, diags) {
                svc.cap_add.push((c, spot(&ipath, item)));
            }
        }
    } else if let Some(n) = f.get("cap_add") {
        read::mismatch(n, &p("cap_add"), "a list", diags);
    }
    svc.cap_drop = f.get("cap_drop").and_then(|n| read::string_list(n, &p("cap_drop"), diags)).unwrap_or_default();
    if let Some(n) = f.get("ulimits") {
        for (key, value) in read::entries(n, &p("ulimits"), diags) {
            let upath = join(&p("ulimits"), &key.name);
            let limit = match &value.value {
                Value::Map(_) => fields(value, &upath, diags).and_then(|mut u| {
                    let soft = u.get("soft").and_then(|s| read::integer(s, &u.path("soft"), diags));
                    let hard = u.get("hard").and_then(|s| read::integer(s, &u.path("hard"), diags));
                    if !u.has("soft") || !u.has("hard") {
                        diags.error(&upath, value.line, value.column, "needs both `soft` and `hard`");
                    }
                    u.finish(diags, false);
                    Some((soft?, hard?))
                }),
                _ => read::integer(value, &upath, diags).map(|n| (n, n)),
            };
            if let Some(l) = limit {
                svc.ulimits.insert(key.name.clone(), l);
            }
        }
    }
    if let Some(n) = f.get("logging")
        && let Some(mut l) = fields(n, &p("logging"), diags)
    {
        let driver = l.get("driver").and_then(|d| read::string(d, &l.path("driver"), diags)).unwrap_or_default();
        let options = l.get("options").map(|o| read::string_map(o, &l.path("options"), diags)).unwrap_or_default();
        svc.logging = Some(Logging { driver, options });
        l.finish(diags, false);
    }
    svc.secrets = f.get("secrets").map(|n| file_refs(n, &p("secrets"), &project.secrets, "secret", diags)).unwrap_or_default();
    svc.configs = f.get("configs").map(|n| file_refs(n, &p("configs"), &project.configs, "config", diags)).unwrap_or_default();
    if let Some(n) = f.get("credential_spec")
        && let Some(mut c) = fields(n, &p("credential_spec"), diags)
    {
        let mut given = Vec::new();
        for key in ["config", "file", "registry"] {
            if let Some(v) = c.get(key).and_then(|v| read::string(v, &c.path(key), diags)) {
                given.push((key, v));
            }
        }
        match given.as_slice() {
            [] => {}
            [(kind, value)] => {
                svc.credential_spec = Some(match *kind {
                    "config" => {
                        if !project.configs.contains_key(value) {
                            diags.error(&c.path("config"), n.line, n.column, format!("undefined config `{value}`"));
                        }
                        CredentialSpec::Config(value.clone())
                    }
                    "file" => CredentialSpec::File(value.clone()),
                    _ => CredentialSpec::Registry(value.clone()),
                })
            }
            _ => diags.error(&p("credential_spec"), n.line, n.column, "give only one of `config`, `file` and `registry`"),
        }
        c.finish(diags, false);
    }
    if let Some(n) = f.get("ports") {
        svc.ports = ports(n, &p("ports"), diags);
    }
    if let Some(n) = f.get("x-berth") {
        svc.routes = berth_extension(n, &p("x-berth"), diags);
    }
    if let Some(n) = f.get("networks") {
        svc.networks = Some(service_networks(n, &p("networks"), project, diags));
    }
    if let Some(n) = f.get("deploy") {
        svc.deploy = deploy(n, &p("deploy"), diags);
    }
    if let Some(n) = f.get("restart") {
        svc.restart = read::string(n, &p("restart"), diags);
        if svc.deploy.restart_policy.is_some() {
            diags.warn(&p("restart"), n.line, n.column, "ignored: `deploy.restart_policy` is set");
        } else if let Some(r) = &svc.restart
            && let Err(e) = super::convert::restart_from_key(r)
        {
            diags.error(&p("restart"), n.line, n.column, e);
        }
    }
    f.finish(diags, true);
    Some(svc)
}

/// An `env_file`'s lines: `KEY=VALUE` kept verbatim (no quote removal, no interpolation), `KEY` alone
/// taken from the variables or dropped, `#` comments and blank lines skipped.
fn env_file(
    text: &str,
    path: &str,
    node: &Node,
    input: &Input<'_>,
    env: &mut BTreeMap<String, Option<String>>,
    diags: &mut Diagnostics,
) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (line, input.variables.get(line).cloned()),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            diags.error(path, node.line, node.column, format!("line {} of the file: `{key}` is not a variable name", n + 1));
            continue;
        }
        if let Some(value) = value {
            env.insert(key.to_owned(), Some(value));
        }
    }
}

fn healthcheck(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Healthcheck> {
    let mut f = fields(node, path, diags)?;
    let mut hc = Healthcheck {
        test: f.get("test").and_then(|n| match &n.value {
            Value::Str(s) => Some(vec!["CMD-SHELL".to_owned(), s.clone()]),
            _ => read::string_list(n, &f.path("test"), diags),
        }),
        disable: f.get("disable").and_then(|n| read::boolean(n, &f.path("disable"), diags)).unwrap_or(false),
        ..Default::default()
    };
    hc.interval = f.get("interval").and_then(|n| read::duration(n, &f.path("interval"), diags));
    hc.timeout = f.get("timeout").and_then(|n| read::duration(n, &f.path("timeout"), diags));
    hc.start_period = f.get("start_period").and_then(|n| read::duration(n, &f.path("start_period"), diags));
    hc.retries = f.get("retries").and_then(|n| read::integer(n, &f.path("retries"), diags));
    if hc.disable && hc.test.as_ref().is_some_and(|t| !t.is_empty()) {
        diags.error(path, node.line, node.column, "`test` and `disable` cannot both be set");
    }
    f.finish(diags, false);
    Some(hc)
}

fn file_refs(
    node: &Node,
    path: &str,
    defined: &BTreeMap<String, FileObject>,
    kind: &str,
    diags: &mut Diagnostics,
) -> Vec<FileRef> {
    let Value::Seq(items) = &node.value else {
        read::mismatch(node, path, "a list", diags);
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut targets = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let r = match &item.value {
            Value::Str(s) => Some(FileRef { source: s.clone(), target: None, uid: None, gid: None, mode: None }),
            _ => fields(item, &ipath, diags).map(|mut f| {
                let source = f.get("source").and_then(|n| read::string(n, &f.path("source"), diags));
                if !f.has("source") {
                    diags.error(&ipath, item.line, item.column, "needs `source`");
                }
                let r = FileRef {
                    source: source.unwrap_or_default(),
                    target: f.get("target").and_then(|n| read::string(n, &f.path("target"), diags)),
                    uid: f.get("uid").and_then(|n| read::string_or_number(n, &f.path("uid"), diags)),
                    gid: f.get("gid").and_then(|n| read::string_or_number(n, &f.path("gid"), diags)),
                    mode: f.get("mode").and_then(|n| {
                        let m = read::integer(n, &f.path("mode"), diags)?;
                        u32::try_from(m).ok().or_else(|| {
                            diags.error(&f.path("mode"), n.line, n.column, "is not a file mode");
                            None
                        })
                    }),
                };
                f.finish(diags, false);
                r
            }),
        };
        let Some(r) = r else { continue };
        if !r.source.is_empty() && !defined.contains_key(&r.source) {
            diags.error(&ipath, item.line, item.column, format!("undefined {kind} `{}`", r.source));
        }
        let target = r.target.clone().unwrap_or_else(|| r.source.clone());
        if !targets.insert(target.clone()) {
            diags.error(&ipath, item.line, item.column, format!("another {kind} already uses the target `{target}`"));
        }
        out.push(r);
    }
    out
}

/// Berth's service extension: `x-berth: {routes: [{port, domain, path}]}`. (Domains and paths are
/// judged by `routing::declare`, which knows the apps domain.)
fn berth_extension(node: &Node, path: &str, diags: &mut Diagnostics) -> Vec<RouteDecl> {
    let Some(mut f) = fields(node, path, diags) else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(list) = f.get("routes") {
        let rpath = f.path("routes");
        match &list.value {
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{rpath}[{i}]");
                    let Some(mut r) = fields(item, &ipath, diags) else { continue };
                    let port = r.get("port").and_then(|n| {
                        let v = read::integer(n, &r.path("port"), diags)?;
                        u16::try_from(v).ok().filter(|v| *v > 0).or_else(|| {
                            diags.error(&r.path("port"), n.line, n.column, "must be a port number, 1 to 65535");
                            None
                        })
                    });
                    let domain = r.get("domain").and_then(|n| read::string(n, &r.path("domain"), diags));
                    let route_path = r.get("path").and_then(|n| read::string(n, &r.path("path"), diags));
                    for key in ["port", "domain"] {
                        if !r.has(key) {
                            diags.error(&ipath, item.line, item.column, format!("needs `{key}`"));
                        }
                    }
                    r.finish(diags, false);
                    if let (Some(port), Some(domain)) = (port, domain) {
                        out.push(RouteDecl { port, domain, path: route_path, spot: spot(&ipath, item) });
                    }
                }
            }
            _ => read::mismatch(list, &rpath, "a list", diags),
        }
    }
    f.finish(diags, false);
    out
}

fn ports(node: &Node, path: &str, diags: &mut Diagnostics) -> Vec<Port> {
    let Value::Seq(items) = &node.value else {
        read::mismatch(node, path, "a list", diags);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let here = spot(&ipath, item);
        match &item.value {
            Value::Int(_) | Value::Str(_) => {
                let text = read::string_or_number(item, &ipath, diags).unwrap_or_default();
                match short_port(&text) {
                    Ok((ports, warning)) => {
                        if let Some(w) = warning {
                            diags.warn(&ipath, item.line, item.column, w);
                        }
                        out.extend(ports.into_iter().map(|(target, published, protocol)| Port {
                            target,
                            published,
                            protocol,
                            mode: "ingress".to_owned(),
                            spot: here.clone(),
                        }));
                    }
                    Err(e) => diags.error(&ipath, item.line, item.column, e),
                }
            }
            Value::Map(_) => {
                let Some(mut f) = fields(item, &ipath, diags) else { continue };
                let port_number = |n: &Node, p: &str, diags: &mut Diagnostics| {
                    let v = read::integer(n, p, diags)?;
                    u32::try_from(v).ok().filter(|v| (1..=65535).contains(v)).or_else(|| {
                        diags.error(p, n.line, n.column, "must be a port number, 1 to 65535");
                        None
                    })
                };
                let target = f.get("target").and_then(|n| port_number(n, &f.path("target"), diags));
                if !f.has("target") {
                    diags.error(&ipath, item.line, item.column, "needs `target`, the container's port");
                }
                let published = f.get("published").and_then(|n| port_number(n, &f.path("published"), diags));
                let protocol = f.get("protocol").and_then(|n| read::string(n, &f.path("protocol"), diags)).unwrap_or_default();
                if !matches!(protocol.as_str(), "" | "tcp" | "udp" | "sctp") {
                    diags.error(&f.path("protocol"), item.line, item.column, "must be tcp, udp or sctp");
                }
                let mode = f.get("mode").and_then(|n| read::string(n, &f.path("mode"), diags)).unwrap_or_default();
                if !matches!(mode.as_str(), "" | "ingress" | "host") {
                    diags.error(&f.path("mode"), item.line, item.column, "must be ingress or host");
                }
                f.finish(diags, false);
                if let Some(target) = target {
                    out.push(Port { target, published, protocol, mode, spot: here });
                }
            }
            _ => read::mismatch(item, &ipath, "a port (\"8080:80\") or a mapping", diags),
        }
    }
    out
}

/// `[ip:][host[-host]:]container[-container][/protocol]` → (target, published, protocol) entries in the
/// CLI's order, and a warning when a host IP is dropped.
/// (target, published, protocol) entries of one short-syntax port.
pub type ShortPorts = Vec<(u32, Option<u32>, String)>;

pub fn short_port(spec: &str) -> Result<(ShortPorts, Option<String>), String> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("`{protocol}` is not a protocol: use tcp, udp or sctp"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let n = parts.len();
    let (ip, host, container) = match n {
        1 => ("".to_owned(), "", parts[0]),
        2 => ("".to_owned(), parts[0], parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let ip = ip.trim_start_matches('[').trim_end_matches(']').to_owned();
    let mut warning = None;
    if !ip.is_empty() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("`{ip}` is not an IP address"));
        }
        if ip != "0.0.0.0" {
            warning = Some(format!("the address {ip} is ignored: a Swarm service publishes its port on every address"));
        }
    }
    let range = |s: &str| -> Result<(u32, u32), String> {
        let bad = || format!("`{s}` is not a port or a port range");
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a == 0 || b > 65535 || b < a {
            return Err(bad());
        }
        Ok((a, b))
    };
    let (c_lo, c_hi) = range(container)?;
    let host_range = if host.is_empty() { None } else { Some(range(host)?) };
    let mut entries = Vec::new();
    match host_range {
        None => (c_lo..=c_hi).for_each(|c| entries.push((c, None))),
        Some((h_lo, h_hi)) if c_lo == c_hi => (h_lo..=h_hi).for_each(|h| entries.push((c_lo, Some(h)))),
        Some((h_lo, h_hi)) if h_hi - h_lo == c_hi - c_lo => (c_lo..=c_hi).for_each(|c| entries.push((c, Some(h_lo + c - c_lo)))),
        Some(_) => return Err(format!("`{spec}`: the host and container ranges differ in length")),
    }
    if entries.len() > 1000 {
        return Err(format!("`{spec}` publishes more than 1000 ports"));
    }
    // The CLI builds a map keyed by "port/proto" and walks its sorted keys.
    entries.sort_by_key(|(c, _)| format!("{c}/{protocol}"));
    Ok((entries.into_iter().map(|(c, h)| (c, h, protocol.clone())).collect(), warning))
}

fn service_volumes(node: &Node, path: &str, project: &Project, diags: &mut Diagnostics) -> Vec<ServiceVolume> {
    let Value::Seq(items) = &node.value else {
        read::mismatch(node, path, "a list", diags);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let volume = match &item.value {
            Value::Str(s) => short_volume(s, spot(&ipath, item)).map_err(|e| diags.error(&ipath, item.line, item.column, e)).ok(),
            _ => long_volume(item, &ipath, diags),
        };
        let Some(v) = volume else { continue };
        if v.kind == VolumeKind::Volume
            && let Some(source) = &v.source
            && !project.volumes.contains_key(source)
        {
            diags.error(
                &ipath,
                item.line,
                item.column,
                format!("undefined volume `{source}`: declare it under the top-level `volumes`"),
            );
        }
        if v.kind == VolumeKind::Bind && !v.source.as_deref().is_some_and(|s| s.starts_with('/')) {
            diags.error(
                &ipath,
                item.line,
                item.column,
                "a bind mount needs an absolute host path (Berth has no working directory)",
            );
        }
        out.push(v);
    }
    out
}

fn short_volume(spec: &str, spot: Spot) -> Result<ServiceVolume, String> {
    if spec.is_empty() {
        return Err("an empty volume".into());
    }
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("`{spec}`: an empty section between colons"));
    }
    let (source, target, options) = match parts.as_slice() {
        [t] => (None, *t, ""),
        [s, t] => (Some(*s), *t, ""),
        [s, t, o] => (Some(*s), *t, *o),
        _ => return Err(format!("`{spec}`: too many colons")),
    };
    let kind = match source {
        Some(s) if s.starts_with(['.', '/', '~']) => VolumeKind::Bind,
        _ => VolumeKind::Volume,
    };
    let mut v = ServiceVolume {
        spot,
        kind,
        source: source.map(str::to_owned),
        target: target.to_owned(),
        read_only: false,
        consistency: None,
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => v.read_only = true,
            "rw" => v.read_only = false,
            "nocopy" => v.nocopy = true,
            "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => v.propagation = Some(option.to_owned()),
            _ => {} // `z`, `Z`, `cached`, `delegated`: ignored, as by the CLI.
        }
    }
    Ok(v)
}

fn long_volume(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<ServiceVolume> {
    let mut f = fields(node, path, diags)?;
    let kind = match f.get("type").and_then(|n| read::string(n, &f.path("type"), diags)).as_deref() {
        Some("volume") => VolumeKind::Volume,
        Some("bind") => VolumeKind::Bind,
        Some("tmpfs") => VolumeKind::Tmpfs,
        Some(other) => {
            diags.error(
                &f.path("type"),
                node.line,
                node.column,
                format!("`{other}` is not a mount type: use volume, bind or tmpfs"),
            );
            return None;
        }
        None => {
            diags.error(path, node.line, node.column, "needs `type`: volume, bind or tmpfs");
            return None;
        }
    };
    let mut v = ServiceVolume {
        spot: spot(path, node),
        kind: kind.clone(),
        source: f.get("source").and_then(|n| read::string(n, &f.path("source"), diags)).filter(|s| !s.is_empty()),
        target: f.get("target").and_then(|n| read::string(n, &f.path("target"), diags)).unwrap_or_default(),
        read_only: f.get("read_only").and_then(|n| read::boolean(n, &f.path("read_only"), diags)).unwrap_or(false),
        consistency: f.get("consistency").and_then(|n| read::string(n, &f.path("consistency"), diags)),
        propagation: None,
        nocopy: false,
        tmpfs_size: None,
    };
    if v.target.is_empty() {
        diags.error(path, node.line, node.column, "needs `target`, the path inside the container");
    }
    for (block, allowed) in [("bind", VolumeKind::Bind), ("volume", VolumeKind::Volume), ("tmpfs", VolumeKind::Tmpfs)] {
        let Some(n) = f.get(block) else { continue };
        let bpath = f.path(block);
        if kind != allowed {
            diags.error(&bpath, n.line, n.column, format!("`{block}` options do not go with a mount of this type"));
            continue;
        }
        let Some(mut b) = fields(n, &bpath, diags) else { continue };
        match block {
            "bind" => {
                let prop = b.get("propagation").and_then(|n| read::string(n, &b.path("propagation"), diags)).unwrap_or_default();
                if !matches!(prop.as_str(), "" | "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave") {
                    diags.error(&b.path("propagation"), n.line, n.column, "is not a propagation mode");
                }
                v.propagation = Some(prop);
            }
            "volume" => v.nocopy = b.get("nocopy").and_then(|n| read::boolean(n, &b.path("nocopy"), diags)).unwrap_or(false),
            _ => {
                v.tmpfs_size = Some(b.get("size").and_then(|n| read::size(n, &b.path("size"), diags)).unwrap_or(0));
            }
        }
        b.finish(diags, false);
    }
    match kind {
        VolumeKind::Tmpfs if v.source.is_some() => {
            diags.error(&f.path("source"), node.line, node.column, "a tmpfs mount has no source")
        }
        VolumeKind::Bind if v.source.is_none() => diags.error(path, node.line, node.column, "a bind mount needs `source`"),
        _ => {}
    }
    f.finish(diags, false);
    Some(v)
}

fn service_networks(node: &Node, path: &str, project: &Project, diags: &mut Diagnostics) -> BTreeMap<String, ServiceNetwork> {
    let mut out = BTreeMap::new();
    let mut add = |name: &str, at: &Node, npath: &str, attach: ServiceNetwork, diags: &mut Diagnostics| {
        if name != "default" && !project.networks.contains_key(name) {
            diags.error(
                npath,
                at.line,
                at.column,
                format!("undefined network `{name}`: declare it under the top-level `networks`"),
            );
        }
        out.insert(name.to_owned(), attach);
    };
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let ipath = format!("{path}[{i}]");
                if let Some(name) = read::string(item, &ipath, diags) {
                    add(&name, item, &ipath, ServiceNetwork::default(), diags);
                }
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let npath = join(path, &key.name);
                let mut attach = ServiceNetwork::default();
                if let Some(mut f) = fields(value, &npath, diags) {
                    attach.aliases =
                        f.get("aliases").and_then(|n| read::string_list(n, &f.path("aliases"), diags)).unwrap_or_default();
                    f.skip("ipv4_address");
                    f.skip("ipv6_address");
                    f.finish(diags, true);
                }
                add(&key.name, value, &npath, attach, diags);
            }
        }
        _ => read::mismatch(node, path, "a list or a mapping", diags),
    }
    out
}

fn update_config(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<UpdateConfig> {
    let mut f = fields(node, path, diags)?;
    let c = UpdateConfig {
        parallelism: f.get("parallelism").and_then(|n| read::unsigned(n, &f.path("parallelism"), diags)).unwrap_or(1),
        delay: f.get("delay").and_then(|n| read::duration(n, &f.path("delay"), diags)).unwrap_or(0),
        failure_action: f
            .get("failure_action")
            .and_then(|n| read::string(n, &f.path("failure_action"), diags))
            .unwrap_or_default(),
        monitor: f.get("monitor").and_then(|n| read::duration(n, &f.path("monitor"), diags)).unwrap_or(0),
        max_failure_ratio: f
            .get("max_failure_ratio")
            .and_then(|n| read::number(n, &f.path("max_failure_ratio"), diags))
            .unwrap_or(0.0),
        order: f.get("order").and_then(|n| read::string(n, &f.path("order"), diags)).unwrap_or_default(),
    };
    if !matches!(c.failure_action.as_str(), "" | "continue" | "pause" | "rollback") {
        diags.error(&f.path("failure_action"), node.line, node.column, "must be continue, pause or rollback");
    }
    if !matches!(c.order.as_str(), "" | "start-first" | "stop-first") {
        diags.error(&f.path("order"), node.line, node.column, "must be start-first or stop-first");
    }
    f.finish(diags, false);
    Some(c)
}

fn deploy(node: &Node, path: &str, diags: &mut Diagnostics) -> Deploy {
    let mut d = Deploy::default();
    let Some(mut f) = fields(node, path, diags) else { return d };
    let mode = f.get("mode").and_then(|n| read::string(n, &f.path("mode"), diags));
    let replicas = f.get("replicas").and_then(|n| read::unsigned(n, &f.path("replicas"), diags));
    d.mode = match mode.as_deref() {
        None | Some("replicated") => Mode::Replicated(replicas),
        Some("global") => {
            if f.has("replicas") {
                diags.error(&f.path("replicas"), node.line, node.column, "only a replicated service has replicas");
            }
            Mode::Global
        }
        Some(other) => {
            diags.error(&f.path("mode"), node.line, node.column, format!("`{other}` is not a mode: use replicated or global"));
            Mode::Replicated(replicas)
        }
    };
    if let Some(n) = f.get("endpoint_mode") {
        d.endpoint_mode = read::string(n, &f.path("endpoint_mode"), diags).map(|m| m.to_ascii_lowercase());
        if !matches!(d.endpoint_mode.as_deref(), None | Some("vip" | "dnsrr")) {
            diags.error(&f.path("endpoint_mode"), n.line, n.column, "must be vip or dnsrr");
        }
    }
    d.labels = f.get("labels").map(|n| read::labels(n, &f.path("labels"), diags)).unwrap_or_default();
    d.update_config = f.get("update_config").and_then(|n| update_config(n, &f.path("update_config"), diags));
    d.rollback_config = f.get("rollback_config").and_then(|n| update_config(n, &f.path("rollback_config"), diags));
    if let Some(n) = f.get("resources")
        && let Some(mut r) = fields(n, &f.path("resources"), diags)
    {
        if let Some(l) = r.get("limits")
            && let Some(mut lf) = fields(l, &r.path("limits"), diags)
        {
            d.limits = Some(Limits {
                nano_cpus: lf.get("cpus").and_then(|n| read::cpus(n, &lf.path("cpus"), diags)).unwrap_or(0),
                memory: lf.get("memory").and_then(|n| read::size(n, &lf.path("memory"), diags)).unwrap_or(0),
                pids: lf.get("pids").and_then(|n| read::integer(n, &lf.path("pids"), diags)).unwrap_or(0),
            });
            lf.finish(diags, false);
        }
        if let Some(l) = r.get("reservations")
            && let Some(mut rf) = fields(l, &r.path("reservations"), diags)
        {
            let mut res = Reservations {
                nano_cpus: rf.get("cpus").and_then(|n| read::cpus(n, &rf.path("cpus"), diags)).unwrap_or(0),
                memory: rf.get("memory").and_then(|n| read::size(n, &rf.path("memory"), diags)).unwrap_or(0),
                generic_resources: Vec::new(),
            };
            if let Some(g) = rf.get("generic_resources") {
                let gpath = rf.path("generic_resources");
                if let Value::Seq(items) = &g.value {
                    for (i, item) in items.iter().enumerate() {
                        let ipath = format!("{gpath}[{i}]");
                        let Some(mut gf) = fields(item, &ipath, diags) else { continue };
                        let entry = gf.get("discrete_resource_spec").and_then(|s| {
                            let mut sf = fields(s, &gf.path("discrete_resource_spec"), diags)?;
                            let kind = sf.get("kind").and_then(|n| read::string(n, &sf.path("kind"), diags)).unwrap_or_default();
                            let value = sf.get("value").and_then(|n| read::integer(n, &sf.path("value"), diags)).unwrap_or(0);
                            sf.finish(diags, false);
                            Some((kind, value))
                        });
                        gf.finish(diags, false);
                        res.generic_resources.push(entry);
                    }
                } else {
                    read::mismatch(g, &gpath, "a list", diags);
                }
            }
            d.reservations = Some(res);
            rf.finish(diags, false);
        }
        r.finish(diags, false);
    }
    if let Some(n) = f.get("restart_policy")
        && let Some(mut r) = fields(n, &f.path("restart_policy"), diags)
    {
        let policy = RestartPolicy {
            condition: r.get("condition").and_then(|n| read::string(n, &r.path("condition"), diags)).unwrap_or_default(),
            delay: r.get("delay").and_then(|n| read::duration(n, &r.path("delay"), diags)),
            max_attempts: r.get("max_attempts").and_then(|n| read::unsigned(n, &r.path("max_attempts"), diags)),
            window: r.get("window").and_then(|n| read::duration(n, &r.path("window"), diags)),
        };
        if !matches!(policy.condition.as_str(), "" | "none" | "on-failure" | "any") {
            diags.error(&r.path("condition"), n.line, n.column, "must be none, on-failure or any");
        }
        d.restart_policy = Some(policy);
        r.finish(diags, false);
    }
    if let Some(n) = f.get("placement")
        && let Some(mut pf) = fields(n, &f.path("placement"), diags)
    {
        if let Some(c) = pf.get("constraints") {
            let cpath = pf.path("constraints");
            match &c.value {
                Value::Seq(items) => {
                    let mut list = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let ipath = format!("{cpath}[{i}]");
                        if let Some(s) = read::string(item, &ipath, diags) {
                            if !(s.contains("==") || s.contains("!=")) {
                                diags.error(&ipath, item.line, item.column, "a constraint is `<attribute> == <value>` or `!=`");
                            }
                            list.push((s, spot(&ipath, item)));
                        }
                    }
                    d.constraints = Some(list);
                }
                _ => read::mismatch(c, &cpath, "a list", diags),
            }
        }
        if let Some(prefs) = pf.get("preferences") {
            let ppath = pf.path("preferences");
            match &prefs.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ipath = format!("{ppath}[{i}]");
                        if let Some(mut s) = fields(item, &ipath, diags) {
                            if let Some(spread) = s.get("spread").and_then(|n| read::string(n, &s.path("spread"), diags)) {
                                d.preferences.push(spread);
                            }
                            s.finish(diags, false);
                        }
                    }
                }
                _ => read::mismatch(prefs, &ppath, "a list", diags),
            }
        }
        d.max_replicas_per_node = pf
            .get("max_replicas_per_node")
            .and_then(|n| read::unsigned(n, &pf.path("max_replicas_per_node"), diags))
            .unwrap_or(0);
        pf.finish(diags, false);
    }
    f.finish(diags, false);
    d
}
