//! When to try again: capped exponential backoff with jitter, inside the
//! retry window that starts at a delivery's first attempt (DESIGN.md §8,
//! API.md "Webhooks"). Pure functions; the caller brings the time and the
//! randomness.

use snakepay_store::webhook_deliveries::Resolution;

use crate::settings::WebhookSettings;

/// The wait after failed attempt number `attempt` (1 for the first):
/// `initial_backoff_ms · 2^(attempt−1)`, capped at `max_backoff_ms`, of
/// which the upper half is random ("equal jitter"): retries spread out
/// while every wait stays at least half the nominal one.
pub fn backoff_ms(settings: &WebhookSettings, attempt: i32, random: u64) -> u64 {
    let doublings = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0);
    let factor = 1_u64.checked_shl(doublings).unwrap_or(u64::MAX);
    let nominal = settings
        .initial_backoff_ms
        .saturating_mul(factor)
        .min(settings.max_backoff_ms);
    let random_part = nominal / 2;
    let fixed_part = nominal - random_part;
    fixed_part + random.checked_rem(random_part + 1).unwrap_or(0)
}

/// What follows failed attempt number `attempt`, made at `now_ms`: another
/// attempt after the backoff, but no later than the end of the retry
/// window (so the last try happens at the window's end), or giving up once
/// the window is over.
pub fn after_failure(
    settings: &WebhookSettings,
    attempt: i32,
    first_attempt_at_ms: i64,
    now_ms: i64,
    random: u64,
) -> Resolution {
    let window_ms =
        i64::try_from(settings.retry_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let deadline_ms = first_attempt_at_ms.saturating_add(window_ms);
    if now_ms >= deadline_ms {
        return Resolution::Failed;
    }
    let backoff_ms = i64::try_from(backoff_ms(settings, attempt, random)).unwrap_or(i64::MAX);
    Resolution::RetryAt(now_ms.saturating_add(backoff_ms).min(deadline_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            initial_backoff_ms: 60_000,
            max_backoff_ms: 6 * 3_600_000,
            retry_window_seconds: 3 * 86_400,
            ..WebhookSettings::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_initial_wait_and_stops_at_the_cap() {
        let settings = settings();
        // With no randomness, the wait is half the nominal one; with the
        // most, all of it.
        assert_eq!(backoff_ms(&settings, 1, 0), 30_000);
        assert_eq!(backoff_ms(&settings, 1, 30_000), 60_000);
        assert_eq!(backoff_ms(&settings, 2, 30_000), 90_000);
        assert_eq!(backoff_ms(&settings, 3, 120_000), 4 * 60_000);
        for attempt in 1..200 {
            for random in [0, 1, 12_345, u64::MAX] {
                let wait = backoff_ms(&settings, attempt, random);
                assert!(
                    wait >= 30_000 && wait <= settings.max_backoff_ms,
                    "{attempt}: {wait}"
                );
            }
        }
        assert!(backoff_ms(&settings, 40, 0) >= settings.max_backoff_ms / 2);
        assert_eq!(
            backoff_ms(&settings, i32::MAX, settings.max_backoff_ms / 2),
            settings.max_backoff_ms
        );
    }

    #[test]
    fn retries_stay_inside_the_window_and_give_up_at_its_end() {
        let settings = settings();
        let first = 1_000_000;
        let window_end = first + 3 * 86_400_000;
        assert_eq!(
            after_failure(&settings, 1, first, first, 0),
            Resolution::RetryAt(first + 30_000)
        );
        // Close to the end, the retry is moved to the end itself.
        assert_eq!(
            after_failure(&settings, 30, first, window_end - 1_000, u64::MAX),
            Resolution::RetryAt(window_end)
        );
        assert_eq!(
            after_failure(&settings, 31, first, window_end, 0),
            Resolution::Failed
        );
        assert_eq!(
            after_failure(&settings, 31, first, window_end + 5, 0),
            Resolution::Failed
        );
    }
}
