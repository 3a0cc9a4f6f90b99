//! Timestamps written as RFC 3339 text without `fmt`.
//!
//! chrono's `Serialize` for `DateTime<Utc>` goes through `Display`, and serde_json feeds
//! that output through its escaping writer a few characters at a time: 13 % of the circuit
//! stage's CPU under load (BENCHMARKS.md, "Issue 13, second round"). These functions write
//! the same text, byte for byte (`2026-12-07T09:57:18Z`, with `.fff`, `.ffffff` or
//! `.fffffffff` when the instant has a fraction, as chrono's `SecondsFormat::AutoSi`), into
//! a stack buffer, and hand it to the serializer as one string. Instants chrono writes
//! differently (years outside 0000–9999, leap seconds) are left to chrono.
//!
//! Use on fields: `#[serde(serialize_with = "crate::timestamp::serialize")]`, and
//! `crate::timestamp::serialize_option` for `Option<DateTime<Utc>>`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// The longest text written here: `YYYY-MM-DDTHH:MM:SS.fffffffffZ`.
const MAX_LEN: usize = 30;

/// Serialize an instant as chrono does, without `fmt`.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write(at, &mut buf) {
        // The buffer holds ASCII digits and separators only.
        Some(len) => match std::str::from_utf8(&buf[..len]) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serde::Serialize::serialize(at, serializer),
        },
        None => serde::Serialize::serialize(at, serializer),
    }
}

/// [`serialize`] for an optional instant (`None` as `null`, as serde writes it).
///
/// # Errors
/// The serializer's.
pub fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// The text of `at` in `buf`; its length, or `None` for what chrono writes otherwise.
fn write(at: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = at.year();
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let year = year as u32;
    put(&mut buf[0..4], year, 4);
    buf[4] = b'-';
    put(&mut buf[5..7], at.month(), 2);
    buf[7] = b'-';
    put(&mut buf[8..10], at.day(), 2);
    buf[10] = b'T';
    put(&mut buf[11..13], at.hour(), 2);
    buf[13] = b':';
    put(&mut buf[14..16], at.minute(), 2);
    buf[16] = b':';
    put(&mut buf[17..19], at.second(), 2);
    let mut len = 19;
    if nanos != 0 {
        buf[len] = b'.';
        len += 1;
        let (value, digits) = if nanos % 1_000_000 == 0 {
            (nanos / 1_000_000, 3)
        } else if nanos % 1_000 == 0 {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        put(&mut buf[len..len + digits], value, digits);
        len += digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// `value` as `digits` decimal digits, zero-padded, into `out`.
fn put(out: &mut [u8], mut value: u32, digits: usize) {
    for slot in out.iter_mut().take(digits).rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct Ours {
        #[serde(serialize_with = "serialize")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "serialize_option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(serde::Serialize)]
    struct Chronos {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    fn same(at: DateTime<Utc>, maybe: Option<DateTime<Utc>>) {
        let ours = serde_json::to_string(&Ours { at, maybe }).unwrap();
        let theirs = serde_json::to_string(&Chronos { at, maybe }).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn each_fraction_width_and_the_edges_are_written_as_chrono_writes_them() {
        let base = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        for nanos in [
            0,
            1,
            10,
            999,
            1_000,
            120_000,
            1_000_000,
            500_000_000,
            999_999_999,
        ] {
            let at = base + chrono::Duration::nanoseconds(i64::from(nanos));
            same(at, Some(at));
        }
        same(Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(), None);
        same(
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            None,
        );
        // Outside 0000-9999 chrono writes a sign and more digits: left to chrono.
        same(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(), None);
        same(Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(), None);
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it(
            secs in -100_000_000_000i64..300_000_000_000i64,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1_000).prop_map(|m| m * 1_000_000),
                (0u32..1_000_000).prop_map(|u| u * 1_000),
                0u32..1_000_000_000,
            ],
        ) {
            if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                same(at, None);
            }
        }
    }
}
