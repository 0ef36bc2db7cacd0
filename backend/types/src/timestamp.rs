//! Timestamps on the wire: RFC 3339 in UTC, character for character as chrono writes them, but without
//! going through `core::fmt`. chrono's own serializer costs about 160 ns a timestamp; a 100-row list
//! carries 200 of them, which was half the time of encoding the whole page. Every `DateTime<Utc>` field
//! of a response names [`rfc3339`] (or [`rfc3339_opt`]) as its serializer; reading stays chrono's.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// Writes `t` as chrono does (`2026-11-26T23:40:23.838566Z`: fractional seconds in groups of three
/// digits, as many as needed, none when zero).
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut out = [0u8; MAX_LEN];
    match write(t, &mut out) {
        Some(len) => serializer.serialize_str(std::str::from_utf8(&out[..len]).expect("ASCII")),
        // Years outside 0000–9999 and leap seconds: rare enough to leave to chrono.
        None => t.serialize(serializer),
    }
}

/// [`rfc3339`] for an optional timestamp (`null` when absent).
pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    struct Wire<'a>(&'a DateTime<Utc>);
    impl Serialize for Wire<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            rfc3339(self.0, serializer)
        }
    }
    match t {
        Some(t) => serializer.serialize_some(&Wire(t)),
        None => serializer.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffffZ`
const MAX_LEN: usize = 30;

fn write(t: &DateTime<Utc>, out: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let year = year as u32;
    let mut two = |at: usize, value: u32| {
        out[at] = b'0' + (value / 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    };
    two(0, year / 100);
    two(2, year % 100);
    two(5, t.month());
    two(8, t.day());
    two(11, t.hour());
    two(14, t.minute());
    two(17, t.second());
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    let (digits, mut fraction) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (3, n / 1_000_000),
        n if n % 1_000 == 0 => (6, n / 1_000),
        n => (9, n),
    };
    let mut len = 19;
    if digits > 0 {
        out[19] = b'.';
        for at in (20..20 + digits).rev() {
            out[at] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len = 20 + digits;
    }
    out[len] = b'Z';
    Some(len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn ours(t: &DateTime<Utc>) -> String {
        rfc3339(t, serde_json::value::Serializer).unwrap().as_str().unwrap().to_owned()
    }

    fn chronos(t: &DateTime<Utc>) -> String {
        serde_json::to_value(t).unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn writes_what_chrono_writes() {
        let mut cases = vec![
            Utc.with_ymd_and_hms(2026, 11, 26, 23, 40, 23).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 15, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ];
        // Fractions of every length AutoSi picks, and the boundaries between them.
        let base = Utc.with_ymd_and_hms(2024, 2, 29, 9, 5, 7).unwrap();
        for nanos in [1, 9, 10, 999, 1_000, 1_001, 120_000, 838_566_000, 999_000_000, 999_999_999, 100_000_000, 5_000_000] {
            cases.push(base + chrono::Duration::nanoseconds(nanos));
        }
        // A pseudo-random spread of instants across four centuries, to microseconds (as PostgreSQL stores them).
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(DateTime::from_timestamp_micros(x.rem_euclid(12_600_000_000_000_000) - 2_208_988_800_000_000).unwrap());
        }
        // A leap second (chrono shows it as second 60).
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap();
        cases.push(Utc.from_utc_datetime(&leap));
        for t in &cases {
            assert_eq!(ours(t), chronos(t), "{t:?}");
        }
        assert_eq!(
            rfc3339_opt(&Some(cases[0]), serde_json::value::Serializer).unwrap(),
            serde_json::json!("2026-11-26T23:40:23Z")
        );
        assert_eq!(rfc3339_opt(&None, serde_json::value::Serializer).unwrap(), serde_json::Value::Null);
    }
}
