//! Modification times: nanoseconds since the Unix epoch on the wire, RFC 3339 for people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (negative before 1970).
pub fn to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The instant `ns` nanoseconds after the Unix epoch.
pub fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-27T22:12:18.123456789Z`.
pub fn rfc3339(ns: i64) -> String {
    Rfc3339(ns).to_string()
}

/// A time in ns since the epoch, displayed as RFC 3339 UTC with nanoseconds (times before the
/// epoch show as the epoch); writes without allocating.
pub struct Rfc3339(pub i64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < 0 {
            // humantime only formats times after the epoch.
            return f.write_str("1970-01-01T00:00:00Z");
        }
        write!(f, "{}", humantime::format_rfc3339_nanos(from_ns(self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let now = SystemTime::now();
        assert_eq!(from_ns(to_ns(now)), now);
        assert_eq!(rfc3339(1_500_000_000), "1970-01-01T00:00:01.500000000Z");
    }
}
