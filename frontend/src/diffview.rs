//! A unified diff (as `GET /templates/{id}/versions/{v}/diff` returns it) laid out side by side: the
//! old text on the left, the new on the right, removed and added lines paired up. Pure, unit-tested.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// `compose.yml`, or the name of a file the template carries.
    File(String),
    /// A hunk's `@@ … @@` line.
    Hunk(String),
    Line {
        left: Option<(u32, String)>,
        right: Option<(u32, String)>,
    },
}

/// Numbered lines of one side, waiting to be paired with the other's.
type Side = Vec<(u32, String)>;

pub fn rows(diff: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let (mut l, mut r) = (0u32, 0u32);
    let (mut removed, mut added): (Side, Side) = (Vec::new(), Vec::new());
    let flush = |out: &mut Vec<Row>, removed: &mut Side, added: &mut Side| {
        let n = removed.len().max(added.len());
        let (mut a, mut b) = (removed.drain(..), added.drain(..));
        for _ in 0..n {
            out.push(Row::Line { left: a.next(), right: b.next() });
        }
    };
    for line in diff.lines() {
        if let Some(name) = line.strip_prefix("+++ b/") {
            flush(&mut out, &mut removed, &mut added);
            out.push(Row::File(name.to_owned()));
        } else if line.starts_with("--- a/") {
            flush(&mut out, &mut removed, &mut added);
        } else if line.starts_with("@@") {
            flush(&mut out, &mut removed, &mut added);
            let mut nums =
                line.split(' ').skip(1).take(2).map(|p| p[1..].split(',').next().unwrap_or("1").parse::<u32>().unwrap_or(1));
            l = nums.next().unwrap_or(1);
            r = nums.next().unwrap_or(1);
            out.push(Row::Hunk(line.to_owned()));
        } else if let Some(text) = line.strip_prefix('-') {
            removed.push((l, text.to_owned()));
            l += 1;
        } else if let Some(text) = line.strip_prefix('+') {
            added.push((r, text.to_owned()));
            r += 1;
        } else if line.starts_with('\\') {
            // "\ No newline at end of file"
        } else {
            flush(&mut out, &mut removed, &mut added);
            let text = line.strip_prefix(' ').unwrap_or(line).to_owned();
            out.push(Row::Line { left: Some((l, text.clone())), right: Some((r, text)) });
            l += 1;
            r += 1;
        }
    }
    flush(&mut out, &mut removed, &mut added);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: Option<(u32, &str)>, r: Option<(u32, &str)>) -> Row {
        Row::Line { left: l.map(|(n, t)| (n, t.to_owned())), right: r.map(|(n, t)| (n, t.to_owned())) }
    }

    #[test]
    fn changes_pair_up_side_by_side() {
        let diff = "--- a/compose.yml\n+++ b/compose.yml\n@@ -2,4 +2,5 @@\n services:\n-  web: {image: a}\n-  db: {image: b}\n+  web: {image: c}\n+  cache: {image: d}\n+  db: {image: b}\n volumes: {}\n";
        assert_eq!(
            rows(diff),
            vec![
                Row::File("compose.yml".into()),
                Row::Hunk("@@ -2,4 +2,5 @@".into()),
                line(Some((2, "services:")), Some((2, "services:"))),
                line(Some((3, "  web: {image: a}")), Some((3, "  web: {image: c}"))),
                line(Some((4, "  db: {image: b}")), Some((4, "  cache: {image: d}"))),
                line(None, Some((5, "  db: {image: b}"))),
                line(Some((5, "volumes: {}")), Some((6, "volumes: {}"))),
            ]
        );
    }

    #[test]
    fn files_follow_each_other_and_an_empty_diff_is_empty() {
        let diff =
            "--- a/compose.yml\n+++ b/compose.yml\n@@ -1 +1 @@\n-a\n+b\n--- a/site.conf\n+++ b/site.conf\n@@ -0,0 +1 @@\n+new\n";
        let r = rows(diff);
        assert_eq!(r[0], Row::File("compose.yml".into()));
        assert_eq!(r[2], line(Some((1, "a")), Some((1, "b"))));
        assert_eq!(r[3], Row::File("site.conf".into()));
        assert_eq!(r[5], line(None, Some((1, "new"))));
        assert!(rows("").is_empty());
    }
}
