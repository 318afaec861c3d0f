//! One Redis connection per process, guarded.
//!
//! Every call is bounded by the configured timeout (`[redis] timeout_ms`,
//! milliseconds: Redis answers in microseconds, so anything slower means it
//! is in trouble). Failures feed a circuit breaker; while it is open calls
//! are not even tried and return [`Unavailable::CircuitOpen`] at once. The
//! connection is made on first use and re-made after it breaks, so the
//! process starts, and keeps serving, without Redis.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::RedisResult;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use snakepay_config::sections::RedisConfig;
use snakepay_resilience::{Breaker, BreakerState, SystemClock};
use snakepay_telemetry::metrics::{self, CACHE, CIRCUIT_BREAKERS, labels};
use tokio::sync::Mutex;

/// Consecutive failures that open the circuit.
pub const BREAKER_FAILURE_THRESHOLD: u32 = 3;
/// How long an open circuit skips Redis before one trial call.
pub const BREAKER_OPEN_MS: u64 = 1_000;

/// Why Redis could not be used for a call; the caller degrades.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("redis circuit open")]
    CircuitOpen,
    #[error("redis timed out")]
    Timeout,
    #[error("redis error: {0}")]
    Failed(String),
}

/// Counters for the cache's metrics (exported with the telemetry issue).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Calls that failed or were skipped: requests served without Redis.
    pub degraded: AtomicU64,
}

impl CacheStats {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.degraded.load(Ordering::Relaxed),
        )
    }
}

pub struct Redis {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    breaker: Breaker,
    pub stats: CacheStats,
    /// Set when a call failed while Redis might have held data we meant to
    /// change (an invalidation that did not happen); see [`Redis::take_dirty`].
    dirty: AtomicBool,
}

impl Redis {
    /// Parses the URL; connects on first use.
    pub fn new(config: &RedisConfig) -> anyhow::Result<Arc<Redis>> {
        let client = crate::tls::client(config.url.expose())?;
        let redis = Arc::new(Redis {
            client,
            connection: Mutex::new(None),
            timeout: Duration::from_millis(config.timeout_ms),
            breaker: Breaker::new(
                SystemClock::shared(),
                BREAKER_FAILURE_THRESHOLD,
                BREAKER_OPEN_MS,
            ),
            stats: CacheStats::default(),
            dirty: AtomicBool::new(false),
        });
        // Registered at start, so dashboards see the families at zero.
        let _ = &CACHE.requests;
        let _ = CACHE
            .degraded
            .get_or_create(&labels([("dependency", "redis")]));
        let weak = Arc::downgrade(&redis);
        metrics::on_scrape(move || {
            if let Some(redis) = weak.upgrade() {
                CIRCUIT_BREAKERS
                    .get_or_create(&labels([("breaker", "redis")]))
                    .set(redis.breaker.state().gauge_value());
            }
        });
        Ok(redis)
    }

    /// `None` when healthy; otherwise why Redis is being bypassed (for
    /// `/readyz`, which reports it as degraded, never as down).
    pub fn degraded_reason(&self) -> Option<String> {
        match self.breaker.state() {
            BreakerState::Closed { .. } => None,
            BreakerState::Open { .. } => Some("redis circuit open".to_owned()),
            BreakerState::HalfOpen { .. } => Some("redis circuit half-open".to_owned()),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        let mut guard = self.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let connection = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| Unavailable::Failed(e.to_string()))?;
        *guard = Some(connection.clone());
        tracing::info!("redis connected");
        Ok(connection)
    }

    /// Runs one call (one command, pipeline or script) under the timeout
    /// and the breaker.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.permit() {
            self.count_degraded();
            return Err(Unavailable::CircuitOpen);
        }
        let started = std::time::Instant::now();
        let attempt = async {
            let connection = self.connection().await?;
            call(connection)
                .await
                .map_err(|e| Unavailable::Failed(e.to_string()))
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Unavailable::Timeout),
        };
        CACHE
            .redis_duration
            .observe(metrics::seconds(started.elapsed()));
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(error) => {
                self.breaker.record_failure();
                self.count_degraded();
                if matches!(error, Unavailable::Failed(_)) {
                    // Start afresh: the next call connects anew.
                    *self.connection.lock().await = None;
                }
                tracing::debug!(error = %error, "redis call failed");
            }
        }
        result
    }

    fn count_degraded(&self) {
        self.stats.degraded.fetch_add(1, Ordering::Relaxed);
        CACHE
            .degraded
            .get_or_create(&labels([("dependency", "redis")]))
            .inc();
    }

    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// True once after a write to Redis was lost; the caller must then make
    /// everything cached before unreachable (see [`crate::versioned`]).
    pub(crate) fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }
}
