//! Snakepay's Redis layer (DESIGN.md §1, §8): the cache in front of the
//! shards, and the rate limiter every API instance shares.
//!
//! # Layout
//!
//! - [`client`]: [`Redis`], one lazily connected, self-healing connection
//!   with a short timeout on every call and a circuit breaker, so a slow or
//!   dead Redis costs a request at most one timeout and then nothing: callers
//!   fall back to PostgreSQL (or the per-instance limiter) and Redis is tried
//!   again by itself. Hit, miss and degradation counters.
//! - [`versioned`]: cache-aside entries that carry the row's version, so a
//!   populate that lost a race with a write can never put an older state
//!   back (see the module for the protocol).
//! - [`rate_limit`]: GCRA in one Lua script, on Redis' clock, so every
//!   instance enforces one shared limit.

pub mod client;
pub mod rate_limit;
pub mod versioned;

pub use client::{CacheStats, Redis, Unavailable};
pub use rate_limit::{Decision, SharedRateLimiter};
pub use versioned::VersionedCache;

/// Where payment intents are cached; shared by every service that changes
/// one (each invalidates with the new version before committing).
pub const INTENT_NAMESPACE: &str = "pi:";
/// How long a cached intent lives without a read refreshing it.
pub const INTENT_TTL_SECONDS: u64 = 60;
