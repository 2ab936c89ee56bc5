//! Timestamps as API.md writes them: RFC 3339, UTC, whole seconds, `Z`.

use std::time::{Duration, UNIX_EPOCH};

/// Formats milliseconds since the Unix epoch as `2026-11-26T09:14:43Z` (the
/// milliseconds are dropped, not rounded, so a time is never shown in the future).
pub fn rfc3339_seconds(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_in_utc() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(1_795_684_483_999), "2026-11-26T09:14:43Z");
    }
}
