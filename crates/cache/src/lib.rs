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
//! - [`tls`]: `rediss://` with a verified certificate and an optional
//!   `cacertfile` authority.

pub mod client;
pub mod rate_limit;
pub mod tls;
pub mod versioned;

use std::sync::Arc;
use std::time::Duration;

pub use client::{CacheStats, Redis, Unavailable};
pub use rate_limit::{Decision, SharedRateLimiter};
pub use versioned::VersionedCache;

/// One kind of cached object: its key prefix, its `cache` metric label and
/// how long an entry lives without a write replacing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKind {
    pub prefix: &'static str,
    pub label: &'static str,
    pub ttl: Duration,
}

/// Payment intents; every service that changes one invalidates it with the
/// new version before committing.
pub const PAYMENT_INTENTS: CacheKind = CacheKind {
    prefix: "pi:",
    label: "payment_intent",
    ttl: Duration::from_secs(60),
};

/// Refunds; their version is their status' rank (pending 1, final 2), as a
/// refund changes exactly once (`snakepay_store::refunds::cache_version`).
pub const REFUNDS: CacheKind = CacheKind {
    prefix: "re:",
    label: "refund",
    ttl: Duration::from_secs(60),
};

/// Customers, which this API never changes after creation (version 1).
pub const CUSTOMERS: CacheKind = CacheKind {
    prefix: "cus:",
    label: "customer",
    ttl: Duration::from_secs(300),
};

/// Charges: views of an intent's attempt, valid only while the intent's
/// entry holds the same version (see [`VersionedCache::get_dependent`]).
pub const CHARGES: CacheKind = CacheKind {
    prefix: "ch:",
    label: "charge",
    ttl: Duration::from_secs(60),
};

/// API-key authentication. Short-lived: should Redis be unreachable when a
/// key is revoked, a stale entry outlives the revocation by at most this.
pub const API_KEYS: CacheKind = CacheKind {
    prefix: "ak:",
    label: "api_key",
    ttl: Duration::from_secs(60),
};

/// The caches of one service, sharing one Redis connection.
pub struct Caches {
    pub intents: VersionedCache,
    pub refunds: VersionedCache,
    pub customers: VersionedCache,
    pub charges: VersionedCache,
    pub api_keys: VersionedCache,
}

impl Caches {
    pub fn new(redis: &Arc<Redis>) -> Caches {
        let of = |kind: &CacheKind| VersionedCache::of(Arc::clone(redis), kind);
        Caches {
            intents: of(&PAYMENT_INTENTS),
            refunds: of(&REFUNDS),
            customers: of(&CUSTOMERS),
            charges: of(&CHARGES),
            api_keys: of(&API_KEYS),
        }
    }
}

/// Makes the API-key cache forget keys after a revocation or a KYC change,
/// so the very next request is checked against the database. An error means
/// Redis could not be told; the caller reports it (the entries then expire
/// within [`API_KEYS`]' TTL).
pub async fn forget_api_keys(redis: &Arc<Redis>, key_ids: &[String]) -> Result<(), Unavailable> {
    let cache = VersionedCache::of(Arc::clone(redis), &API_KEYS);
    for key_id in key_ids {
        cache.forget(key_id).await?;
    }
    Ok(())
}
