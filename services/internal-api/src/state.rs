//! What every handler shares.

use std::sync::Arc;

use snakepay_domain::ids::{RegionNumber, ShardNumber};
use snakepay_http::ApiError;
use snakepay_store::Store;
use snakepay_store::merchants::KeyHasher;
use sqlx::PgPool;

use crate::config::ProcessorSimAccess;
use crate::dead_letters::DeadLetters;
use crate::tokens::Verifier;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub hasher: KeyHasher,
    pub region: RegionNumber,
    pub region_code: String,
    pub verifier: Verifier,
    /// The External API's payment intent cache (with `[redis]`): a refund
    /// changes the intent, so it invalidates the entry before committing.
    pub intent_cache: Option<snakepay_cache::VersionedCache>,
    /// Redis (with `[redis]`): the External API's API-key cache is told to
    /// forget keys after a revocation or a KYC change.
    pub redis: Option<Arc<snakepay_cache::Redis>>,
    pub refund_approval_threshold: i64,
    /// The dead-letter queues (with `[broker]`).
    pub dead_letters: Option<DeadLetters>,
    /// What the processor says it did, for reconciliation.
    pub processor_sim: Option<ProcessorSimAccess>,
    pub http: reqwest::Client,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Makes the External API's API-key cache forget `key_ids`, after the
    /// change committed, so the next request with one of them is checked
    /// against the database. Returns what the audit row should say: without
    /// `[redis]` there is nothing to forget; when Redis cannot be told, the
    /// entries expire within the cache's TTL (60 s) and this is logged.
    pub async fn forget_api_keys(&self, key_ids: &[String]) -> &'static str {
        let Some(redis) = &self.redis else {
            return "no_cache";
        };
        match snakepay_cache::forget_api_keys(redis, key_ids).await {
            Ok(()) => "forgotten",
            Err(error) => {
                tracing::warn!(error = %error, cache.keys = key_ids.len(), "API-key cache not told to forget; entries expire within their TTL");
                "failed"
            }
        }
    }

    /// The pool of a shard this region has; an unknown shard can only come
    /// from a corrupt ID or merchant row.
    pub fn shard(&self, shard: ShardNumber) -> Result<&PgPool, ApiError> {
        self.store
            .shard(shard)
            .map_err(|e| ApiError::internal(&anyhow::anyhow!(e)))
    }
}
