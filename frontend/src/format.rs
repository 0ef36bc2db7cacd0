//! Pure formatting for the pages: sizes, durations, times, digests. Unit-tested on the host.

use chrono::{DateTime, Utc};

/// `1536` → `1.5 KiB`, as `docker images` counts (binary units).
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// How long ago `at` was, relative to `now`, in the largest whole unit (`5 s ago`, `3 min ago`, …).
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// A timestamp as people read it: `2026-11-26 07:45:03 UTC`.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `sha256:0123456789ab…` (alone or at the end of a pinned reference, `repo@sha256:…`) shortened to
/// the 12 hex digits `docker images` shows.
pub fn short_digest(digest: &str) -> String {
    let digest = digest.rsplit('@').next().unwrap_or(digest);
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// Usage against an optional limit, for quota bars: (`used of limit` text, fraction 0–1 when limited).
pub fn usage(used: f64, limit: Option<f64>, unit: &str) -> (String, Option<f64>) {
    let num = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    match limit {
        Some(l) if l > 0.0 => (format!("{} of {} {unit}", num(used), num(l)), Some((used / l).clamp(0.0, 1.0))),
        Some(_) => (format!("{} of 0 {unit}", num(used)), Some(1.0)),
        None => (format!("{} {unit} (no limit)", num(used)), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn ages_pick_the_largest_unit() {
        let now = Utc::now();
        assert_eq!(ago(now - chrono::Duration::seconds(5), now), "5 s ago");
        assert_eq!(ago(now - chrono::Duration::seconds(190), now), "3 min ago");
        assert_eq!(ago(now - chrono::Duration::hours(49), now), "2 d ago");
        assert_eq!(ago(now + chrono::Duration::seconds(3), now), "0 s ago");
    }

    #[test]
    fn digests_shorten_like_the_cli() {
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_digest("10.213.0.1:5000/acme/web:1@sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn usage_without_a_limit_has_no_bar() {
        assert_eq!(usage(2.0, Some(8.0), "CPUs"), ("2 of 8 CPUs".into(), Some(0.25)));
        assert_eq!(usage(1.5, None, "CPUs").1, None);
        assert_eq!(usage(3.0, Some(0.0), "nodes").1, Some(1.0));
    }
}
