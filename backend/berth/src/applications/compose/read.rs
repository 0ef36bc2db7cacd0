//! Typed reads from the YAML tree that never stop at the first problem: each read that fails records an
//! error with its path and position and returns `None`, so one pass reports everything wrong at once.

use std::collections::BTreeMap;

use super::Diagnostics;
use super::yaml::{Key, Node, Value};

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// A mapping's entries, with the keys read so far, so the unread ones can be reported as unknown.
pub struct Fields<'n> {
    pub path: String,
    entries: &'n [(Key, Node)],
    used: Vec<bool>,
}

impl<'n> Fields<'n> {
    pub fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    pub fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k.name == key)
    }

    /// Marks every key as read without looking at it (blocks whose content Berth ignores).
    pub fn skip(&mut self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Reports the keys nobody read. `extensions` allows `x-` keys (ignored, as the CLI ignores them).
    pub fn finish(self, diags: &mut Diagnostics, extensions: bool) {
        for ((key, _), used) in self.entries.iter().zip(self.used) {
            if used || (extensions && key.name.starts_with("x-")) {
                continue;
            }
            let why = if key.name.starts_with("x-") { " (`x-` fields are not allowed here)" } else { "" };
            diags.error(&join(&self.path, &key.name), key.line, key.column, format!("unknown key{why}"));
        }
    }
}

pub fn fields<'n>(node: &'n Node, path: &str, diags: &mut Diagnostics) -> Option<Fields<'n>> {
    match &node.value {
        Value::Map(entries) => Some(Fields { path: path.to_owned(), entries, used: vec![false; entries.len()] }),
        Value::Null => Some(Fields { path: path.to_owned(), entries: &[], used: Vec::new() }),
        _ => {
            mismatch(node, path, "a mapping", diags);
            None
        }
    }
}

/// The entries of a mapping whose keys are names (services, networks, …).
pub fn entries<'n>(node: &'n Node, path: &str, diags: &mut Diagnostics) -> &'n [(Key, Node)] {
    match &node.value {
        Value::Map(entries) => entries,
        Value::Null => &[],
        _ => {
            mismatch(node, path, "a mapping", diags);
            &[]
        }
    }
}

pub fn mismatch(node: &Node, path: &str, expected: &str, diags: &mut Diagnostics) {
    diags.error(path, node.line, node.column, format!("expected {expected}, found {}", node.kind()));
}

pub fn string(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        _ => {
            mismatch(node, path, "a string", diags);
            None
        }
    }
}

/// Go's `fmt.Sprint` of a YAML number: integral floats print without a fraction.
fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e21 => Some(format!("{}", *f as i64)),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// A string, or a number read as its text (where the CLI's schema says "string or number").
pub fn string_or_number(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        v => number_text(v).or_else(|| {
            mismatch(node, path, "a string or a number", diags);
            None
        }),
    }
}

pub fn boolean(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        // A substituted string is cast, as the CLI casts `${FLAG}` for boolean keys.
        Value::Str(s) if node.substituted => match s.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Some(true),
            "n" | "no" | "false" | "off" => Some(false),
            _ => {
                diags.error(path, node.line, node.column, format!("expected a boolean, found `{s}`"));
                None
            }
        },
        _ => {
            mismatch(node, path, "a boolean", diags);
            None
        }
    }
}

pub fn integer(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<i64> {
    match &node.value {
        Value::Int(i) => Some(*i),
        Value::Str(s) if node.substituted => s.trim().parse().ok().or_else(|| {
            diags.error(path, node.line, node.column, format!("expected an integer, found `{s}`"));
            None
        }),
        _ => {
            mismatch(node, path, "an integer", diags);
            None
        }
    }
}

pub fn unsigned(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<u64> {
    let i = integer(node, path, diags)?;
    u64::try_from(i).ok().or_else(|| {
        diags.error(path, node.line, node.column, "must not be negative");
        None
    })
}

pub fn number(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<f64> {
    match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) if node.substituted => s.trim().parse().ok().or_else(|| {
            diags.error(path, node.line, node.column, format!("expected a number, found `{s}`"));
            None
        }),
        _ => {
            mismatch(node, path, "a number", diags);
            None
        }
    }
}

pub fn string_list(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Vec<String>> {
    match &node.value {
        Value::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(string_or_number(item, &format!("{path}[{i}]"), diags)?);
            }
            Some(out)
        }
        _ => {
            mismatch(node, path, "a list", diags);
            None
        }
    }
}

/// A single string or a list of strings (`dns`, `env_file`, …).
pub fn string_or_list(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Vec<String>> {
    match &node.value {
        Value::Str(s) => Some(vec![s.clone()]),
        _ => string_list(node, path, diags),
    }
}

/// `command`/`entrypoint`: a list as it is, or a string split like a shell would.
pub fn command(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<Vec<String>> {
    match &node.value {
        Value::Str(s) => split_words(s).or_else(|| {
            diags.error(path, node.line, node.column, "unbalanced quotes");
            None
        }),
        Value::Null => Some(Vec::new()),
        _ => string_list(node, path, diags),
    }
}

/// Splits a command line into words: whitespace separates, single quotes are literal, double quotes
/// allow `\"`, `\\`, `\$` and `` \` `` escapes, a backslash outside quotes escapes any character, and a
/// `#` starting a word comments out the rest of the line (the CLI's shlex does the same).
pub fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            '\n' => {}
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => w.push(c),
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// A `list_or_dict` (`environment`, `labels`, …): `["K=V", "K"]` or `{K: V, K: null}`. A value may be a
/// string or a number, not a boolean (the CLI refuses those: quote `"true"`). `None` is a bare `K`.
pub fn list_or_dict(node: &Node, path: &str, diags: &mut Diagnostics) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                let Some(text) = string_or_number(item, &p, diags) else { continue };
                match text.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None => out.insert(text, None),
                };
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let p = join(path, &k.name);
                let value = match &v.value {
                    Value::Null => None,
                    Value::Bool(_) => {
                        diags.error(&p, v.line, v.column, "expected a string, a number or null (quote booleans: \"true\")");
                        continue;
                    }
                    _ => match string_or_number(v, &p, diags) {
                        Some(s) => Some(s),
                        None => continue,
                    },
                };
                out.insert(k.name.clone(), value);
            }
        }
        Value::Null => {}
        _ => mismatch(node, path, "a list or a mapping", diags),
    }
    out
}

/// A `list_or_dict` where a bare key means the empty string (`labels`, `sysctls`).
pub fn labels(node: &Node, path: &str, diags: &mut Diagnostics) -> BTreeMap<String, String> {
    list_or_dict(node, path, diags).into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect()
}

/// A mapping of names to strings or numbers (`driver_opts`, logging `options`); null becomes `""`.
pub fn string_map(node: &Node, path: &str, diags: &mut Diagnostics) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in entries(node, path, diags) {
        let value = match v.value {
            Value::Null => String::new(),
            _ => match string_or_number(v, &join(path, &k.name), diags) {
                Some(s) => s,
                None => continue,
            },
        };
        out.insert(k.name.clone(), value);
    }
    out
}

/// A Go duration (`300ms`, `1m30s`, `1.5h`, `0`) in nanoseconds.
pub fn duration(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<i64> {
    let text = string(node, path, diags)?;
    parse_duration(&text).or_else(|| {
        diags.error(path, node.line, node.column, format!("`{text}` is not a duration such as 10s, 1m30s or 500ms"));
        None
    })
}

pub fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let nanos = total.round() as i64;
    Some(if negative { -nanos } else { nanos })
}

/// A byte size: an integer, or a string like `512m`, `1.5g`, `64 MiB` (binary units, as go-units reads
/// them; the fraction is truncated).
pub fn size(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<i64> {
    let parsed = match &node.value {
        Value::Int(i) if *i >= 0 => Some(*i),
        Value::Str(s) => parse_size(s),
        _ => None,
    };
    parsed.or_else(|| {
        diags.error(path, node.line, node.column, "expected a size such as 512m, 1g or a number of bytes");
        None
    })
}

pub fn parse_size(text: &str) -> Option<i64> {
    let s = text.trim();
    let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let number: f64 = s[..num_len].parse().ok()?;
    let mut unit = s[num_len..].strip_prefix(' ').unwrap_or(&s[num_len..]).to_ascii_lowercase();
    if unit.ends_with('b') {
        unit.pop();
    }
    if unit.ends_with('i') {
        unit.pop();
    }
    let scale: f64 = match unit.as_str() {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * scale;
    (bytes.is_finite() && bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// CPUs as nanoCPUs: an exact decimal (at most 9 places) or a fraction `a/b`, never rounded.
pub fn cpus(node: &Node, path: &str, diags: &mut Diagnostics) -> Option<i64> {
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        v => number_text(v).unwrap_or_default(),
    };
    if text.is_empty() {
        return Some(0);
    }
    parse_nano_cpus(&text).or_else(|| {
        diags.error(path, node.line, node.column, format!("`{text}` is not a number of CPUs such as 0.5 (at most 9 decimals)"));
        None
    })
}

pub fn parse_nano_cpus(text: &str) -> Option<i64> {
    const NANO: i128 = 1_000_000_000;
    let text = text.trim();
    if let Some((a, b)) = text.split_once('/') {
        let (a, b): (i128, i128) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        if b <= 0 || a < 0 || (a * NANO) % b != 0 {
            return None;
        }
        return i64::try_from(a * NANO / b).ok();
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 9 || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac_value: i128 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    i64::try_from(whole * NANO + frac_value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(split_words(r#"sh -c 'echo $A' "b\"c" d\ e # comment"#).unwrap(), ["sh", "-c", "echo $A", "b\"c", "d e"]);
        assert_eq!(split_words("a#b").unwrap(), ["a#b"]);
        assert!(split_words("'open").is_none());
    }

    #[test]
    fn durations_sizes_cpus() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("300ms"), Some(300_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_size("12x"), None);
        assert_eq!(parse_nano_cpus("0.5"), Some(500_000_000));
        assert_eq!(parse_nano_cpus("0.003"), Some(3_000_000));
        assert_eq!(parse_nano_cpus("1/4"), Some(250_000_000));
        assert_eq!(parse_nano_cpus("0.0000000001"), None);
        assert_eq!(parse_nano_cpus("two"), None);
    }
}
