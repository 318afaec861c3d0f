//! The shared rate limiter: GCRA (the generic cell rate algorithm, as in
//! ATM networks and redis-cell) in one Lua script, so the read-decide-write
//! is atomic, and on Redis' own clock (`TIME`), so instances whose clocks
//! differ still enforce one limit together.
//!
//! Each key stores its "theoretical arrival time" (TAT, microseconds). A
//! request is allowed when `TAT + interval - burst <= now`; the TAT then
//! moves one interval on. `per_second` requests may come in a burst, then
//! one per `1/per_second` seconds.

use std::sync::Arc;

use redis::Script;

use crate::client::{Redis, Unavailable};

const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if allow_at > now then
  return {0, math.ceil((allow_at - now) / 1000)}
end
-- '%.0f': Lua's default number format would round microseconds away.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return {1, 0}
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the earliest a retry can succeed.
    Limited {
        retry_after_ms: u64,
    },
}

pub struct SharedRateLimiter {
    redis: Arc<Redis>,
    prefix: String,
}

impl SharedRateLimiter {
    pub fn new(redis: Arc<Redis>, prefix: &str) -> SharedRateLimiter {
        SharedRateLimiter {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    /// One request against `key`'s limit of `per_second` (at least 1). An
    /// error means Redis is unavailable: the caller falls back to its
    /// per-instance limiter.
    pub async fn check(&self, key: &str, per_second: u32) -> Result<Decision, Unavailable> {
        let per_second = u64::from(per_second.max(1));
        let interval_us = 1_000_000 / per_second;
        // With the check on the new TAT, a tolerance of `per_second`
        // intervals admits a burst of exactly `per_second` requests.
        let burst_us = interval_us * per_second;
        let key = format!("{}{key}", self.prefix);
        let (allowed, retry_after_ms): (i64, i64) = self
            .redis
            .call(|mut c| async move {
                Script::new(GCRA)
                    .key(key)
                    .arg(interval_us)
                    .arg(burst_us)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(if allowed == 1 {
            Decision::Allowed
        } else {
            Decision::Limited {
                retry_after_ms: u64::try_from(retry_after_ms).unwrap_or(0).max(1),
            }
        })
    }
}
