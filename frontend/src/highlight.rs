//! Syntax highlighting for Compose (YAML), one line at a time: keys, strings, numbers, booleans and
//! nulls, anchors and aliases, comments, and `${VARIABLE}` interpolations. Pure, unit-tested on the host.
//! It colours; it does not parse (Berth's server reads the file, and its errors are shown at their line).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Key,
    Punct,
    Comment,
    String,
    Number,
    Keyword,
    Anchor,
    Variable,
}

impl Kind {
    pub fn class(self) -> &'static str {
        match self {
            Kind::Plain => "t-plain",
            Kind::Key => "t-key",
            Kind::Punct => "t-punct",
            Kind::Comment => "t-comment",
            Kind::String => "t-string",
            Kind::Number => "t-number",
            Kind::Keyword => "t-keyword",
            Kind::Anchor => "t-anchor",
            Kind::Variable => "t-var",
        }
    }
}

pub type Token = (Kind, String);

/// The tokens of one line; joined, they give the line back exactly.
pub fn line(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let body = text.trim_start();
    push(&mut out, Kind::Plain, &text[..text.len() - body.len()]);
    let mut rest = body;
    // Sequence entries: `- value` or `- key: value`.
    while let Some(after) = rest.strip_prefix('-').filter(|a| a.is_empty() || a.starts_with(' ')) {
        push(&mut out, Kind::Punct, "-");
        let trimmed = after.trim_start();
        push(&mut out, Kind::Plain, &after[..after.len() - trimmed.len()]);
        rest = trimmed;
    }
    if rest.starts_with('#') {
        push(&mut out, Kind::Comment, rest);
        return out;
    }
    if let Some(colon) = key_end(rest) {
        let (key, value) = rest.split_at(colon);
        push(&mut out, Kind::Key, key);
        push(&mut out, Kind::Punct, ":");
        rest = &value[1..];
    }
    value(&mut out, rest);
    out
}

/// Where a mapping key ends: the first `:` outside quotes followed by a space or the end of the line.
fn key_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') if i == 0 => quote = Some(b),
            (Some(q), c) if c == q => quote = None,
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return None,
            (None, b'{' | b'[') if i == 0 => return None,
            (None, b':') if i > 0 && (i + 1 == bytes.len() || bytes[i + 1] == b' ') => return Some(i),
            _ => {}
        }
    }
    None
}

/// A value, with a trailing comment if there is one.
fn value(out: &mut Vec<Token>, s: &str) {
    let trimmed = s.trim_start();
    push(out, Kind::Plain, &s[..s.len() - trimmed.len()]);
    let (scalar, comment) = split_comment(trimmed);
    let core = scalar.trim_end();
    let trailing = &scalar[core.len()..];
    if !core.is_empty() {
        let kind = classify(core);
        match kind {
            Kind::Anchor => {
                let end = core.find(' ').unwrap_or(core.len());
                push(out, Kind::Anchor, &core[..end]);
                if end < core.len() {
                    value(out, &core[end..]);
                }
            }
            Kind::String | Kind::Plain => interpolated(out, kind, core),
            _ => push(out, kind, core),
        }
    }
    push(out, Kind::Plain, trailing);
    push(out, Kind::Comment, comment);
}

fn split_comment(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), c) if c == q => quote = None,
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return s.split_at(i),
            _ => {}
        }
    }
    (s, "")
}

fn classify(v: &str) -> Kind {
    if v.starts_with('"') || v.starts_with('\'') {
        return Kind::String;
    }
    if v.starts_with('&') || v.starts_with('*') {
        return Kind::Anchor;
    }
    if matches!(v, "|" | ">" | "|-" | ">-" | "|+" | ">+" | "[]" | "{}") {
        return Kind::Punct;
    }
    let lower = v.to_ascii_lowercase();
    if matches!(lower.as_str(), "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~") {
        return Kind::Keyword;
    }
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    if !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '_')
        && digits.chars().any(|c| c.is_ascii_digit())
    {
        return Kind::Number;
    }
    Kind::Plain
}

/// Text with `${…}` (and `$NAME`) interpolations picked out; `$$` is a literal dollar.
fn interpolated(out: &mut Vec<Token>, kind: Kind, s: &str) {
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let len = if after.starts_with('$') {
            push(out, kind, &rest[..at + 2]);
            rest = &rest[at + 2..];
            continue;
        } else if after.starts_with('{') {
            after.find('}').map(|e| e + 2)
        } else {
            let n = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').count();
            (n > 0).then_some(n + 1)
        };
        match len {
            Some(len) => {
                push(out, kind, &rest[..at]);
                push(out, Kind::Variable, &rest[at..at + len]);
                rest = &rest[at + len..];
            }
            None => {
                push(out, kind, &rest[..at + 1]);
                rest = &rest[at + 1..];
            }
        }
    }
    push(out, kind, rest);
}

fn push(out: &mut Vec<Token>, kind: Kind, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some((k, t)) if *k == kind => t.push_str(text),
        _ => out.push((kind, text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Kind::*;

    /// The line's tokens, checked to give the line back, as (kind, text) pairs to compare.
    fn kinds(text: &str) -> Vec<(Kind, std::string::String)> {
        let tokens = line(text);
        assert_eq!(tokens.iter().map(|(_, t)| t.as_str()).collect::<std::string::String>(), text, "tokens give the line back");
        tokens
    }

    fn t(pairs: &[(Kind, &str)]) -> Vec<(Kind, std::string::String)> {
        pairs.iter().map(|(k, s)| (*k, (*s).to_owned())).collect()
    }

    #[test]
    fn keys_values_and_comments() {
        assert_eq!(
            kinds("  image: busybox:1.36 # pinned"),
            t(&[(Plain, "  "), (Key, "image"), (Punct, ":"), (Plain, " busybox:1.36 "), (Comment, "# pinned")])
        );
        assert_eq!(kinds("    replicas: 3"), t(&[(Plain, "    "), (Key, "replicas"), (Punct, ":"), (Plain, " "), (Number, "3")]));
        assert_eq!(
            kinds("  read_only: yes"),
            t(&[(Plain, "  "), (Key, "read_only"), (Punct, ":"), (Plain, " "), (Keyword, "yes")])
        );
        assert_eq!(kinds("# a comment: not a key"), t(&[(Comment, "# a comment: not a key")]));
        assert_eq!(kinds("services:"), t(&[(Key, "services"), (Punct, ":")]));
    }

    #[test]
    fn sequences_strings_anchors_and_variables() {
        assert_eq!(kinds("  - \"8080:80\""), t(&[(Plain, "  "), (Punct, "-"), (Plain, " "), (String, "\"8080:80\"")]));
        assert_eq!(
            kinds("  - name: web"),
            t(&[(Plain, "  "), (Punct, "-"), (Plain, " "), (Key, "name"), (Punct, ":"), (Plain, " web")])
        );
        assert_eq!(kinds("x-small: &small"), t(&[(Key, "x-small"), (Punct, ":"), (Plain, " "), (Anchor, "&small")]));
        assert_eq!(
            kinds("    image: ${REGISTRY}/web:$TAG"),
            t(&[
                (Plain, "    "),
                (Key, "image"),
                (Punct, ":"),
                (Plain, " "),
                (Variable, "${REGISTRY}"),
                (Plain, "/web:"),
                (Variable, "$TAG")
            ])
        );
        assert_eq!(kinds("  cmd: echo $$HOME"), t(&[(Plain, "  "), (Key, "cmd"), (Punct, ":"), (Plain, " echo $$HOME")]));
    }

    #[test]
    fn odd_lines_come_back_whole() {
        for text in
            ["", "   ", "- ", "key:value", "'quoted: key': 1", "a: 'unterminated", "{a: 1}", "- - x", "url: http://x#y", "é: ü"]
        {
            let _ = kinds(text);
        }
    }
}
