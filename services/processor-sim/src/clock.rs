//! The simulator's clock, injected so tests can decide what "today" is (card
//! expiry) and what "now" is (notification timestamps).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the simulator reads the time. The system clock in production; tests
/// may pass a fixed one to `start_with_clock`.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now_unix_seconds(&self) -> i64;
}

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_seconds(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            // A clock set before 1970 is a broken machine; 0 keeps us running.
            .unwrap_or(0)
    }
}

/// A clock that always says the same instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_unix_seconds(&self) -> i64 {
        self.0
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The UTC calendar year and month (1–12) of a Unix timestamp.
///
/// Days-to-civil conversion after Howard Hinnant's public-domain algorithm
/// description; we only need the month, for card expiry.
pub fn year_month_utc(unix_seconds: i64) -> (i64, u8) {
    let days = unix_seconds.div_euclid(86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // `month` is 1..=12 by construction.
    (year, u8::try_from(month).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(year_month_utc(0), (1970, 1));
        // 2026-11-24T05:53:58Z
        assert_eq!(year_month_utc(1_795_499_638), (2026, 11));
        // 2024-02-29T23:59:59Z and the next second.
        assert_eq!(year_month_utc(1_709_251_199), (2024, 2));
        assert_eq!(year_month_utc(1_709_251_200), (2024, 3));
        // 1999-12-31T23:59:59Z
        assert_eq!(year_month_utc(946_684_799), (1999, 12));
        assert_eq!(year_month_utc(946_684_800), (2000, 1));
    }
}
