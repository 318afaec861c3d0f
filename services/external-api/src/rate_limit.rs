//! Per-API-key rate limits, answered with 429 and `Retry-After` (API.md).
//!
//! With `[redis]` the limit is shared by every instance (GCRA in Redis,
//! `snakepay_cache::SharedRateLimiter`), so a key gets its quota once, not
//! once per instance. When Redis is slow or down, each instance falls back
//! to its own limiter (GCRA by the governor crate): the limit is then
//! enforced per instance, which is looser, never stricter, and requests keep
//! being served. Without `[redis]` only the per-instance limiter runs.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use snakepay_cache::{Decision, SharedRateLimiter};
use snakepay_store::merchants::AuthContext;
use snakepay_telemetry::metrics::{CACHE, labels};

/// Which bucket a request draws from: reads and writes of a key are limited
/// separately, so a merchant polling hard cannot starve its own payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    Read,
    Write,
}

impl EndpointClass {
    pub fn of(method: &http::Method) -> EndpointClass {
        if method == http::Method::GET || method == http::Method::HEAD {
            EndpointClass::Read
        } else {
            EndpointClass::Write
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Read => "read",
            EndpointClass::Write => "write",
        }
    }
}

/// Live and test keys have separate default quotas, as on Stripe (100 and
/// 25 per second); a merchant may have its own (`merchants.rate_limit_*`).
pub struct RateLimits {
    /// The per-instance limiters, one per quota in use.
    local: Mutex<HashMap<u32, Arc<DefaultKeyedRateLimiter<String>>>>,
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
            local: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
            live_per_second,
            test_per_second,
            shared,
        }
    }

    /// Counts a request of the key against its quota for `class`; the wait
    /// until it would be allowed if not.
    pub async fn check(&self, context: &AuthContext, class: EndpointClass) -> Result<(), Duration> {
        let (mode, default) = if context.livemode {
            ("live", self.live_per_second)
        } else {
            ("test", self.test_per_second)
        };
        let rate = context
            .rate_limit_per_second
            .and_then(NonZeroU32::new)
            .unwrap_or(default);
        let bucket = format!("{mode}:{}:{}", class.as_str(), context.key_id);
        if let Some(shared) = &self.shared {
            match shared.check(&bucket, rate.get()).await {
                Ok(Decision::Allowed) => return counted("redis", Ok(())),
                Ok(Decision::Limited { retry_after_ms }) => {
                    return counted("redis", Err(Duration::from_millis(retry_after_ms)));
                }
                // Redis unavailable: the per-instance limiter decides.
                Err(_) => {}
            }
        }
        counted("local", self.check_locally(&bucket, rate))
    }

    fn check_locally(&self, bucket: &str, rate: NonZeroU32) -> Result<(), Duration> {
        let limiter = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                local
                    .entry(rate.get())
                    .or_insert_with(|| Arc::new(RateLimiter::keyed(Quota::per_second(rate)))),
            )
        };
        limiter
            .check_key(&bucket.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys that have been quiet long enough to be back at full
    /// quota, so the table does not grow with every key ever seen.
    pub fn forget_idle(&self) {
        let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        for limiter in local.values() {
            limiter.retain_recent();
        }
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

    fn context(key_id: &str, livemode: bool, own_rate: Option<u32>) -> AuthContext {
        AuthContext {
            merchant_id: snakepay_domain::ids::MerchantId::generate(
                snakepay_domain::ids::RegionNumber(1),
                snakepay_domain::ids::ShardNumber(0),
            )
            .unwrap(),
            livemode,
            kind: snakepay_store::merchants::KeyKind::Secret,
            key_id: key_id.to_owned(),
            rate_limit_per_second: own_rate,
        }
    }

    #[tokio::test]
    async fn a_key_is_limited_per_class_to_its_quota_and_keys_are_independent() {
        let limits = RateLimits::new(
            NonZeroU32::new(100).unwrap(),
            NonZeroU32::new(3).unwrap(),
            None,
        );
        let a = context("key_a", false, None);
        for _ in 0..3 {
            assert!(limits.check(&a, EndpointClass::Write).await.is_ok());
        }
        assert!(limits.check(&a, EndpointClass::Write).await.is_err());
        assert!(
            limits.check(&a, EndpointClass::Read).await.is_ok(),
            "reads have their own bucket"
        );
        assert!(
            limits
                .check(&context("key_b", false, None), EndpointClass::Write)
                .await
                .is_ok(),
            "another key has its own quota"
        );
        assert!(
            limits
                .check(&context("key_a", true, None), EndpointClass::Write)
                .await
                .is_ok(),
            "live mode has its own quota"
        );
    }

    #[tokio::test]
    async fn a_merchant_with_its_own_limit_gets_that_quota() {
        let limits = RateLimits::new(
            NonZeroU32::new(100).unwrap(),
            NonZeroU32::new(3).unwrap(),
            None,
        );
        let generous = context("key_g", false, Some(10));
        for _ in 0..10 {
            assert!(limits.check(&generous, EndpointClass::Write).await.is_ok());
        }
        assert!(limits.check(&generous, EndpointClass::Write).await.is_err());
        let strict = context("key_s", false, Some(1));
        assert!(limits.check(&strict, EndpointClass::Read).await.is_ok());
        assert!(limits.check(&strict, EndpointClass::Read).await.is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
