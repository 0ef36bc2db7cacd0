//! `${VAR}` substitution, as `docker stack deploy` does it: after parsing, on string **values** only (never
//! keys, numbers or booleans), everywhere in the document, `x-` fields included. Berth's values are the
//! template's variables instead of the CLI's process environment.
//!
//! | Form | Result |
//! |---|---|
//! | `$$` | a literal `$` |
//! | `$VAR`, `${VAR}` | the value; unset gives `""` (with a warning) |
//! | `${VAR:-default}` / `${VAR-default}` | the default when unset or empty / only when unset |
//! | `${VAR:?message}` / `${VAR?message}` | an error when unset or empty / only when unset |
//!
//! Two deliberate departures from the v20.10 CLI, both where it silently does something nobody means
//! (docs/compose-translation.md §2): an unbraced `$VAR` takes no modifiers (the CLI reads `$HOME-dir`
//! as `${HOME-dir}`), and the operator is the one right after the name (the CLI reads
//! `${VAR:?must-be-set}` as a `-` default and never raises the error).

use std::collections::BTreeMap;

use super::Diagnostics;
use super::yaml::{Node, Value};

/// What a template says about one variable it uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reference {
    /// The default it gives, if any (the first one written wins).
    pub default: Option<String>,
    /// True when some use of it is `${VAR:?…}` or `${VAR?…}`.
    pub required: bool,
}

enum Piece<'a> {
    Text(&'a str),
    Dollar,
    Var { name: &'a str, op: Op<'a> },
}

#[derive(Clone, Copy)]
enum Op<'a> {
    Plain,
    DefaultIfUnsetOrEmpty(&'a str),
    DefaultIfUnset(&'a str),
    ErrorIfUnsetOrEmpty(&'a str),
    ErrorIfUnset(&'a str),
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `text` into literal text, `$$` and variable references; `None` for an invalid template.
fn pieces(text: &str) -> Option<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        if i > 0 {
            out.push(Piece::Text(&rest[..i]));
        }
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push(Piece::Dollar);
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}')?;
            let inner = &body[..end];
            let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
            let (name, tail) = inner.split_at(name_len);
            if !is_name(name) {
                return None;
            }
            let op = if tail.is_empty() {
                Op::Plain
            } else if let Some(d) = tail.strip_prefix(":-") {
                Op::DefaultIfUnsetOrEmpty(d)
            } else if let Some(d) = tail.strip_prefix('-') {
                Op::DefaultIfUnset(d)
            } else if let Some(m) = tail.strip_prefix(":?") {
                Op::ErrorIfUnsetOrEmpty(m)
            } else if let Some(m) = tail.strip_prefix('?') {
                Op::ErrorIfUnset(m)
            } else {
                return None;
            };
            out.push(Piece::Var { name, op });
            rest = &body[end + 1..];
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            let name = &after[..len];
            if !is_name(name) {
                return None;
            }
            out.push(Piece::Var { name, op: Op::Plain });
            rest = &after[len..];
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Some(out)
}

const INVALID: &str = "invalid interpolation: a `$` must start `${NAME}`, `$NAME` or `$$` (write `$$` for a literal `$`)";

/// Substitutes every string value of `node` in place. Errors and warnings name the value's path.
pub fn interpolate(node: &mut Node, values: &BTreeMap<String, String>, path: &mut Vec<String>, diags: &mut Diagnostics) {
    match &mut node.value {
        Value::Str(text) if text.contains('$') => {
            let Some(parts) = pieces(text) else {
                diags.error_at(path, node.line, node.column, INVALID);
                return;
            };
            let mut out = String::with_capacity(text.len());
            for piece in parts {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Dollar => out.push('$'),
                    Piece::Var { name, op } => {
                        let value = values.get(name).map(String::as_str);
                        let filled = value.is_some_and(|v| !v.is_empty());
                        match op {
                            Op::Plain => {
                                if value.is_none() {
                                    diags.unresolved.push(super::join_path(path));
                                    diags.warn_at(
                                        path,
                                        node.line,
                                        node.column,
                                        format!("variable {name} is not set; using an empty string"),
                                    );
                                }
                                out.push_str(value.unwrap_or(""));
                            }
                            Op::DefaultIfUnsetOrEmpty(d) => out.push_str(if filled { value.unwrap_or("") } else { d }),
                            Op::DefaultIfUnset(d) => out.push_str(value.unwrap_or(d)),
                            Op::ErrorIfUnsetOrEmpty(m) | Op::ErrorIfUnset(m) => {
                                let missing = if matches!(op, Op::ErrorIfUnset(_)) { value.is_none() } else { !filled };
                                if missing {
                                    diags.unresolved.push(super::join_path(path));
                                    let why = if m.is_empty() { String::new() } else { format!(": {m}") };
                                    diags.error_at(path, node.line, node.column, format!("variable {name} needs a value{why}"));
                                    return;
                                }
                                out.push_str(value.unwrap_or(""));
                            }
                        }
                    }
                }
            }
            if out != *text {
                node.substituted = true;
                *text = out;
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate(item, values, path, diags);
                path.pop();
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                path.push(key.name.clone());
                interpolate(value, values, path, diags);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The variables a document uses, with their defaults and whether they are required. Invalid
/// references are skipped here; interpolation reports them.
pub fn references(node: &Node, out: &mut BTreeMap<String, Reference>) {
    match &node.value {
        Value::Str(text) => {
            for piece in pieces(text).unwrap_or_default() {
                if let Piece::Var { name, op } = piece {
                    let entry = out.entry(name.to_owned()).or_default();
                    match op {
                        Op::DefaultIfUnsetOrEmpty(d) | Op::DefaultIfUnset(d) => {
                            entry.default.get_or_insert_with(|| d.to_owned());
                        }
                        Op::ErrorIfUnsetOrEmpty(_) | Op::ErrorIfUnset(_) => entry.required = true,
                        Op::Plain => {}
                    }
                }
            }
        }
        Value::Seq(items) => items.iter().for_each(|i| references(i, out)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| references(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applications::compose::yaml;

    fn run(text: &str, vars: &[(&str, &str)]) -> (Node, Diagnostics) {
        let mut node = yaml::parse(text).unwrap();
        let values = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut diags = Diagnostics::default();
        interpolate(&mut node, &values, &mut Vec::new(), &mut diags);
        (node, diags)
    }

    #[test]
    fn forms() {
        let (node, diags) = run(
            "a: ${A}\nb: $A-x\nc: ${E:-d}\nd: ${E-d}\ne: ${U:-d}\nf: ${U-d}\ng: $$A\nh: pre${A}post\ni: ${U}\nj: 3\n",
            &[("A", "v"), ("E", "")],
        );
        let s = |k: &str| node.get(k).unwrap().as_str().map(str::to_owned);
        assert_eq!(s("a").as_deref(), Some("v"));
        assert_eq!(s("b").as_deref(), Some("v-x"));
        assert_eq!(s("c").as_deref(), Some("d"));
        assert_eq!(s("d").as_deref(), Some(""));
        assert_eq!(s("e").as_deref(), Some("d"));
        assert_eq!(s("f").as_deref(), Some("d"));
        assert_eq!(s("g").as_deref(), Some("$A"));
        assert_eq!(s("h").as_deref(), Some("prevpost"));
        assert_eq!(s("i").as_deref(), Some(""));
        assert!(node.get("a").unwrap().substituted);
        assert!(diags.errors.is_empty());
        assert_eq!(diags.warnings.len(), 1, "{:?}", diags.warnings);
        assert_eq!(diags.warnings[0].path, "i");
    }

    #[test]
    fn errors_name_the_path() {
        let (_, diags) =
            run("services:\n  web:\n    image: ${IMG:?pick an image}\n    environment: ['A=$', 'B=${1}', 'C=${E?}']\n", &[]);
        let paths: Vec<_> = diags.errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(
            paths,
            vec![
                ("services.web.image", 3),
                ("services.web.environment[0]", 4),
                ("services.web.environment[1]", 4),
                ("services.web.environment[2]", 4)
            ]
        );
        assert!(diags.errors[0].message.contains("pick an image"));
    }

    #[test]
    fn keys_are_not_interpolated_and_references_are_listed() {
        let (node, _) = run("${K}: v\n", &[("K", "x")]);
        assert!(node.get("${K}").is_some());
        let node = yaml::parse("a: ${A:-1} ${B:?} $C\nb: ${A:-2}\n").unwrap();
        let mut refs = BTreeMap::new();
        references(&node, &mut refs);
        assert_eq!(refs["A"], Reference { default: Some("1".into()), required: false });
        assert!(refs["B"].required);
        assert_eq!(refs["C"], Reference::default());
    }
}
