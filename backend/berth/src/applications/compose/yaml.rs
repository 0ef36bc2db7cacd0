//! YAML as `docker stack deploy` reads it, into a tree whose every node knows its line and column.
//!
//! The events come from `saphyr-parser` (the maintained successor of yaml-rust); the tree is built here
//! because the CLI's parser (Go's yaml.v2) reads YAML 1.1, not the 1.2 core schema every Rust YAML crate
//! resolves to, and the difference is visible in Compose files: `yes`/`no`/`on`/`off` are booleans and
//! `0440` is octal (a secret `mode: 0440` is 288). Building the tree ourselves also gives:
//! - positions on every node, so each validation error can point at its line;
//! - `<<` merge keys (explicit keys win over merged ones; earlier merge sources win over later ones);
//! - bounds against hostile input: nesting depth, and the number of nodes aliases may expand to (a
//!   "billion laughs" document is refused after a few thousand copies, not after filling memory).
//!
//! Mapping keys must be strings, as the CLI requires. A duplicated key keeps the last value, as in yaml.v2.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

/// The most nodes a document may have, counting every node an alias copies.
pub const MAX_NODES: usize = 100_000;
/// The deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line and column of the node's first character.
    pub line: u32,
    pub column: u32,
    /// True for a string that interpolation changed: the CLI then casts it to the type a few keys want
    /// (`replicas: ${N}` is an integer), while a string written as such stays a string.
    pub substituted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub message: String,
    pub line: u32,
    pub column: u32,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::count).sum(),
            Value::Map(entries) => entries.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }
}

/// Parses the first document of `text`. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            message: e.info().to_owned(),
            line: e.marker().line() as u32,
            column: e.marker().col() as u32 + 1,
        })?;
        if builder.event(event, span)? {
            break;
        }
    }
    Ok(builder.root.unwrap_or(Node { value: Value::Null, line: 1, column: 1, substituted: false }))
}

enum Open {
    Seq { node: Node, anchor: usize, items: Vec<Node> },
    Map { node: Node, anchor: usize, entries: Vec<(Key, Node)>, merges: Vec<Node>, key: Option<(Node, bool)> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
}

fn at(span: &Span) -> (u32, u32) {
    (span.start.line() as u32, span.start.col() as u32 + 1)
}

impl Builder {
    /// Takes one event; true once the first document is complete.
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<bool, YamlError> {
        let (line, column) = at(&span);
        let fail = |message: String| YamlError { message, line, column };
        let blank = |value| Node { value, line, column, substituted: false };
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let merge = style == ScalarStyle::Plain && tag.is_none() && text == "<<";
                let node = blank(scalar(&text, style, tag.as_deref()).map_err(fail)?);
                self.complete(node, anchor, merge)
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| fail("an alias refers to an unknown anchor".into()))?;
                self.nodes += node.count();
                if self.nodes > MAX_NODES {
                    return Err(fail(format!(
                        "the document expands to more than {MAX_NODES} values through anchors and aliases"
                    )));
                }
                let node = Node { line, column, ..node };
                self.complete(node, 0, false)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Open::Seq { node: blank(Value::Null), anchor, items: Vec::new() }, fail)?;
                Ok(false)
            }
            Event::MappingStart(anchor, _) => {
                let node = blank(Value::Null);
                self.open(Open::Map { node, anchor, entries: Vec::new(), merges: Vec::new(), key: None }, fail)?;
                Ok(false)
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Open::Seq { mut node, anchor, items }) => {
                    node.value = Value::Seq(items);
                    self.complete(node, anchor, false)
                }
                _ => Err(fail("unbalanced sequence".into())),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Open::Map { mut node, anchor, mut entries, merges, .. }) => {
                    merge_into(&mut entries, merges).map_err(fail)?;
                    node.value = Value::Map(entries);
                    self.complete(node, anchor, false)
                }
                _ => Err(fail("unbalanced mapping".into())),
            },
            Event::DocumentEnd => Ok(self.root.is_some()),
            _ => Ok(false),
        }
    }

    fn open(&mut self, open: Open, fail: impl Fn(String) -> YamlError) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(fail(format!("the document nests deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push(open);
        Ok(())
    }

    /// Places a finished node into its parent (or as the root). `merge` marks a plain `<<` scalar, which
    /// as a key is the merge key (a quoted "<<" is an ordinary key).
    fn complete(&mut self, node: Node, anchor: usize, merge: bool) -> Result<bool, YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                message: format!("the document has more than {MAX_NODES} values"),
                line: node.line,
                column: node.column,
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                return Ok(true);
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { entries, merges, key, .. }) => match key.take() {
                None => *key = Some((node, merge)),
                Some((k, is_merge)) => {
                    let name = match k.value {
                        Value::Str(s) => s,
                        _ => {
                            return Err(YamlError {
                                message: format!("mapping keys must be strings, not {}", k.kind()),
                                line: k.line,
                                column: k.column,
                            });
                        }
                    };
                    if is_merge {
                        merges.push(node);
                    } else {
                        entries.retain(|(existing, _)| existing.name != name);
                        entries.push((Key { name, line: k.line, column: k.column }, node));
                    }
                }
            },
        }
        Ok(false)
    }
}

/// Adds the entries of `<<` sources that the mapping does not set itself.
fn merge_into(entries: &mut Vec<(Key, Node)>, merges: Vec<Node>) -> Result<(), String> {
    let mut sources = Vec::new();
    for merge in merges {
        match merge.value {
            Value::Map(m) => sources.push(m),
            Value::Seq(items) => {
                for item in items {
                    match item.value {
                        Value::Map(m) => sources.push(m),
                        _ => return Err("a `<<` merge list may only hold mappings".into()),
                    }
                }
            }
            _ => return Err("a `<<` merge key needs a mapping or a list of mappings".into()),
        }
    }
    for source in sources {
        for (k, v) in source {
            if !entries.iter().any(|(e, _)| e.name == k.name) {
                entries.push((k, v));
            }
        }
    }
    Ok(())
}

/// Resolves a scalar the way yaml.v2 (YAML 1.1) does: quoted scalars are strings; plain ones may be
/// null, booleans, integers (decimal, `0x` hex, `0o`/leading-zero octal, `0b` binary, `_` separators) or
/// floats. Core-schema tags (`!!str`, `!!int`, …) force a type.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:" {
            return match tag.suffix.as_str() {
                "str" => Ok(Value::Str(text.to_owned())),
                "null" => Ok(Value::Null),
                "bool" => plain_bool(text).map(Value::Bool).ok_or_else(|| format!("`{text}` is not a boolean")),
                "int" => plain_int(text).map(Value::Int).ok_or_else(|| format!("`{text}` is not an integer")),
                "float" => plain_float(text)
                    .or_else(|| plain_int(text).map(|i| i as f64))
                    .map(Value::Float)
                    .ok_or_else(|| format!("`{text}` is not a number")),
                "merge" => Ok(Value::Str(text.to_owned())),
                other => Err(format!("unsupported tag `!!{other}`")),
            };
        }
        return Ok(Value::Str(text.to_owned()));
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str(text.to_owned()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ => {
            if let Some(b) = plain_bool(text) {
                Value::Bool(b)
            } else if let Some(i) = plain_int(text) {
                Value::Int(i)
            } else if let Some(f) = plain_float(text) {
                Value::Float(f)
            } else {
                Value::Str(text.to_owned())
            }
        }
    })
}

fn plain_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn plain_int(text: &str) -> Option<i64> {
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    let (negative, digits) = match cleaned.as_bytes().first()? {
        b'-' => (true, &cleaned[1..]),
        b'+' => (false, &cleaned[1..]),
        _ => (false, &cleaned[..]),
    };
    if digits.is_empty() {
        return None;
    }
    let magnitude = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        u64::from_str_radix(bin, 2).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o").or_else(|| digits.strip_prefix("0O")) {
        u64::from_str_radix(oct, 8).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() }
}

fn plain_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    let body = cleaned.trim_start_matches(['+', '-']);
    // Go's ParseFloat accepts these forms; words like "infinity" or "nan" are strings in YAML.
    let numeric = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && body.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if numeric { cleaned.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Node {
        parse(text).unwrap()
    }

    #[test]
    fn yaml_1_1_scalars() {
        let doc = map("a: yes\nb: off\nc: 0440\nd: '0440'\ne: 0x1F\nf: 1_000\ng: 1.5\nh: ~\ni: hello\nj: -12\nk: 08\n");
        let v = |k: &str| doc.get(k).unwrap().value.clone();
        assert_eq!(v("a"), Value::Bool(true));
        assert_eq!(v("b"), Value::Bool(false));
        assert_eq!(v("c"), Value::Int(288));
        assert_eq!(v("d"), Value::Str("0440".into()));
        assert_eq!(v("e"), Value::Int(31));
        assert_eq!(v("f"), Value::Int(1000));
        assert_eq!(v("g"), Value::Float(1.5));
        assert_eq!(v("h"), Value::Null);
        assert_eq!(v("i"), Value::Str("hello".into()));
        assert_eq!(v("j"), Value::Int(-12));
        // Not valid octal: Go falls back to a float.
        assert_eq!(v("k"), Value::Float(8.0));
    }

    #[test]
    fn positions_are_one_based() {
        let doc = map("services:\n  web:\n    image: nginx\n");
        let image = doc.get("services").unwrap().get("web").unwrap().get("image").unwrap();
        assert_eq!((image.line, image.column), (3, 12));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let doc = map(
            "x-base: &base\n  image: busybox\n  environment: {A: '1'}\nservices:\n  web:\n    <<: *base\n    environment: {B: '2'}\n",
        );
        let web = doc.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().as_str(), Some("busybox"));
        let env = web.get("environment").unwrap();
        assert!(env.get("B").is_some() && env.get("A").is_none(), "explicit keys win over merged ones");
        // A quoted "<<" is an ordinary key.
        let doc = map("'<<': 1\n");
        assert!(doc.get("<<").is_some());
        // Merge lists: earlier sources win.
        let doc = map("a: &a {x: 1}\nb: &b {x: 2, z: 2}\nc:\n  <<: [*a, *b]\n");
        let c = doc.get("c").unwrap();
        assert_eq!(c.get("x").unwrap().value, Value::Int(1));
        assert_eq!(c.get("z").unwrap().value, Value::Int(2));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("anchors and aliases"), "{}", err.message);
    }

    #[test]
    fn depth_and_keys_are_bounded() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nests deeper"));
        let err = parse("services:\n  1: x\n").unwrap_err();
        assert!(err.message.contains("keys must be strings"));
        assert_eq!(err.line, 2);
    }

    #[test]
    fn syntax_errors_have_positions_and_duplicates_keep_the_last() {
        let err = parse("services:\n  web:\n    image: [unclosed\n").unwrap_err();
        assert!(err.line >= 3, "{err:?}");
        let doc = map("a: 1\na: 2\n");
        assert_eq!(doc.as_map().unwrap().len(), 1);
        assert_eq!(doc.get("a").unwrap().value, Value::Int(2));
        assert_eq!(parse("").unwrap().value, Value::Null);
    }
}
