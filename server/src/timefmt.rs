//! Timestamps as API.md writes them: RFC 3339, UTC, whole seconds, `Z`.

use std::time::{Duration, UNIX_EPOCH};

/// Formats milliseconds since the Unix epoch as `2026-11-26T09:14:43Z` (the
/// milliseconds are dropped, not rounded, so a time is never shown in the future).
pub fn rfc3339_seconds(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Appends [`rfc3339_seconds`] of `ms` to `out` without an intermediate `String`.
pub fn write_rfc3339_seconds(ms: u64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let time = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{time}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_795_684_483_999), "2026-11-26T09:14:43Z");
        let mut out = b"at ".to_vec();
        write_rfc3339_seconds(1_795_684_483_999, &mut out);
        assert_eq!(out, b"at 2026-11-26T09:14:43Z");
    }
}
