//! What every handler shares.

use std::sync::Arc;

use snakepay_domain::ids::{RegionNumber, ShardNumber};
use snakepay_http::ApiError;
use snakepay_store::Store;
use snakepay_store::merchants::KeyHasher;
use snakepay_vault::Vault;
use sqlx::PgPool;

use crate::config::RegionDirectoryEntry;
use crate::idempotent::RequestFingerprintKey;
use crate::outcome::Outcomes;
use crate::rate_limit::RateLimits;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub hasher: KeyHasher,
    pub vault: Vault,
    pub region: RegionNumber,
    pub other_regions: Vec<RegionDirectoryEntry>,
    pub rate_limits: RateLimits,
    pub fingerprint_key: RequestFingerprintKey,
    /// The reply queue for commands and the requests waiting for outcomes.
    pub outcomes: Outcomes,
    /// The Redis caches (with `[redis]`): API-key authentication, and
    /// read-through on retrieve of intents, refunds, customers and charges,
    /// invalidated by every change before it commits.
    pub caches: Option<snakepay_cache::Caches>,
    /// Failed authentications are audited (PCI DSS 10.2.1.4) through the
    /// buffer: bounded per client address by the throttle, written in
    /// batches so a burst never locks the chain head per request.
    pub audit: snakepay_store::audit::Recorder,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn intent_cache(&self) -> Option<&snakepay_cache::VersionedCache> {
        self.caches.as_ref().map(|caches| &caches.intents)
    }

    /// The pool of a shard this region has. An unknown shard can only come
    /// from a corrupt ID or merchant row.
    pub fn shard(&self, shard: ShardNumber) -> Result<&PgPool, ApiError> {
        self.store
            .shard(shard)
            .map_err(|e| ApiError::internal(&anyhow::anyhow!(e)))
    }

    /// "region X, served at URL" for a foreign region number, if we know it.
    pub fn describe_region(&self, region: RegionNumber) -> String {
        self.other_regions
            .iter()
            .find(|entry| entry.number == region.0)
            .map(|entry| {
                format!(
                    "region {}: send requests to {}",
                    entry.code, entry.public_api_url
                )
            })
            .unwrap_or_else(|| {
                format!("region number {region}, which this deployment does not know")
            })
    }
}
