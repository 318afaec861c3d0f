//! Per-API-key rate limits, answered with 429 and `Retry-After` (API.md).
//!
//! With `[redis]` the limit is shared by every instance (GCRA in Redis,
//! `snakepay_cache::SharedRateLimiter`), so a key gets its quota once, not
//! once per instance. When Redis is slow or down, each instance falls back
//! to its own limiter (GCRA by the governor crate): the limit is then
//! enforced per instance, which is looser, never stricter, and requests keep
//! being served. Without `[redis]` only the per-instance limiter runs.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use snakepay_cache::{Decision, SharedRateLimiter};
use snakepay_telemetry::metrics::{CACHE, labels};

/// Live and test keys have separate quotas, as on Stripe (100 and 25 per
/// second by default).
pub struct RateLimits {
    live: DefaultKeyedRateLimiter<String>,
    test: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    live_per_second: NonZeroU32,
    test_per_second: NonZeroU32,
    shared: Option<SharedRateLimiter>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl RateLimits {
    pub fn new(
        live_per_second: NonZeroU32,
        test_per_second: NonZeroU32,
        shared: Option<SharedRateLimiter>,
    ) -> RateLimits {
        RateLimits {
            live: RateLimiter::keyed(Quota::per_second(live_per_second)),
            test: RateLimiter::keyed(Quota::per_second(test_per_second)),
            clock: DefaultClock::default(),
            live_per_second,
            test_per_second,
            shared,
        }
    }

    /// `Ok` if the key may make a request now, else how long to wait.
    pub async fn check(&self, key_id: &str, livemode: bool) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            let (mode, rate) = if livemode {
                ("live", self.live_per_second)
            } else {
                ("test", self.test_per_second)
            };
            match shared.check(&format!("{mode}:{key_id}"), rate.get()).await {
                Ok(Decision::Allowed) => return counted("redis", Ok(())),
                Ok(Decision::Limited { retry_after_ms }) => {
                    return counted("redis", Err(Duration::from_millis(retry_after_ms)));
                }
                // Redis unavailable: the per-instance limiter decides.
                Err(_) => {}
            }
        }
        counted("local", self.check_locally(key_id, livemode))
    }

    fn check_locally(&self, key_id: &str, livemode: bool) -> Result<(), Duration> {
        let limiter = if livemode { &self.live } else { &self.test };
        limiter
            .check_key(&key_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys that have been quiet long enough to be back at full
    /// quota, so the table does not grow with every key ever seen.
    pub fn forget_idle(&self) {
        self.live.retain_recent();
        self.test.retain_recent();
    }
}

/// Counts a decision in `snakepay_rate_limit_decisions_total`.
fn counted(limiter: &str, decision: Result<(), Duration>) -> Result<(), Duration> {
    let result = if decision.is_ok() {
        "allowed"
    } else {
        "limited"
    };
    CACHE
        .rate_limit_decisions
        .get_or_create(&labels([("limiter", limiter), ("result", result)]))
        .inc();
    decision
}

/// Whole seconds to announce in `Retry-After`: at least one, rounded up.
pub fn retry_after_seconds(wait: Duration) -> u32 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_limited_to_its_quota_and_keys_are_independent() {
        let limits = RateLimits::new(
            NonZeroU32::new(100).unwrap(),
            NonZeroU32::new(3).unwrap(),
            None,
        );
        for _ in 0..3 {
            assert!(limits.check_locally("key_a", false).is_ok());
        }
        assert!(limits.check_locally("key_a", false).is_err());
        assert!(
            limits.check_locally("key_b", false).is_ok(),
            "another key has its own quota"
        );
        assert!(
            limits.check_locally("key_a", true).is_ok(),
            "live mode has its own quota"
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
