//! Timestamps as API.md writes them: RFC 3339, UTC, whole seconds, `Z`.
//!
//! Written by hand rather than through `humantime`'s `Display`: a GET's envelope holds
//! two timestamps and a bulk answer one per operation, and the formatter machinery cost
//! ~500 instructions each where the date arithmetic below costs a few dozen. The tests
//! hold the output to `humantime`'s, byte for byte, for every time it can format.

/// Formats milliseconds since the Unix epoch as `2026-11-26T09:14:43Z` (the
/// milliseconds are dropped, not rounded, so a time is never shown in the future).
pub fn rfc3339_seconds(ms: u64) -> String {
    let mut out = Vec::with_capacity(20);
    write_rfc3339_seconds(ms, &mut out);
    // Only ASCII digits and `-:TZ` were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`rfc3339_seconds`] of `ms` to `out`. A year past 9999 (a damaged record's
/// time; no clock or TTL gets there) is written with all its digits rather than
/// refused, so that formatting never fails.
pub fn write_rfc3339_seconds(ms: u64, out: &mut Vec<u8>) {
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], month);
    put_digits(&mut text[8..10], day);
    put_digits(&mut text[11..13], of_day / 3600);
    put_digits(&mut text[14..16], of_day / 60 % 60);
    put_digits(&mut text[17..19], of_day % 60);
    if year >= 10_000 {
        out.extend_from_slice(itoa::Buffer::new().format(year / 10_000).as_bytes());
    }
    out.extend_from_slice(&text);
}

/// Fills `slot` with the last `slot.len()` decimal digits of `n`, zero-padded.
fn put_digits(slot: &mut [u8], mut n: u64) {
    for d in slot.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01: Howard
/// Hinnant's `civil_from_days`, in unsigned arithmetic since no day is before 1970.
/// Days are counted from 0000-03-01 so that a leap day ends its year; an era is the
/// 146,097 days of 400 years.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    fn humantime_of(ms: u64) -> String {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }

    /// The last millisecond humantime formats: 9999-12-31T23:59:59.999Z.
    const LAST_HUMANTIME_MS: u64 = 253_402_300_799_999;

    #[test]
    fn formats_whole_seconds_in_utc() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_795_684_483_999), "2026-11-26T09:14:43Z");
        let mut out = b"at ".to_vec();
        write_rfc3339_seconds(1_795_684_483_999, &mut out);
        assert_eq!(out, b"at 2026-11-26T09:14:43Z");
    }

    #[test]
    fn leap_days_and_century_edges_agree_with_humantime() {
        let day_ms = 86_400_000;
        for (y, m, d) in [
            (1972, 2, 29),
            (2000, 2, 29),
            (2000, 3, 1),
            (2100, 2, 28),
            (2100, 3, 1),
            (2400, 2, 29),
            (9999, 12, 31),
        ] {
            let text = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
            let ms = humantime::parse_rfc3339(&text)
                .expect("a valid date")
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as u64;
            for at in [ms, ms + day_ms - 1, ms.saturating_sub(1)] {
                assert_eq!(rfc3339_seconds(at), humantime_of(at), "at {at} ms");
            }
        }
        assert_eq!(rfc3339_seconds(LAST_HUMANTIME_MS), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn years_past_9999_are_written_in_full_and_never_panic() {
        assert_eq!(
            rfc3339_seconds(LAST_HUMANTIME_MS + 1),
            "10000-01-01T00:00:00Z"
        );
        let far = rfc3339_seconds(u64::MAX);
        assert!(far.ends_with('Z') && far.len() > 20, "{far}");
    }

    proptest! {
        #[test]
        fn every_millisecond_to_year_9999_agrees_with_humantime(ms in 0..=LAST_HUMANTIME_MS) {
            prop_assert_eq!(rfc3339_seconds(ms), humantime_of(ms));
        }

        #[test]
        fn times_near_now_agree_with_humantime(ms in 1_700_000_000_000u64..2_200_000_000_000) {
            prop_assert_eq!(rfc3339_seconds(ms), humantime_of(ms));
        }
    }
}
