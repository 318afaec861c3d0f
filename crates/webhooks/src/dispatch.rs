//! The dispatcher: claims due deliveries on every shard, POSTs them
//! concurrently, records every attempt, and reschedules or gives up.
//!
//! A pass ([`dispatch_once`]) is three short steps per delivery, none of
//! which holds a row lock while a merchant's server is called:
//!
//! 1. claim (one statement per shard, `for update skip locked`): the
//!    delivery's attempt count goes up and it is leased — not due again
//!    before every claimed attempt of the pass had its full timeout;
//! 2. send: open the endpoint's secret, sign the event's JSON, POST;
//! 3. record (one statement): the attempt row, and success, the next
//!    attempt time, or failure.
//!
//! A dispatcher that dies after 1 leaves deliveries that become due when
//! their lease runs out: a later retry, never a lost delivery. Two
//! dispatchers never claim the same delivery while its lease holds.

use snakepay_telemetry::metrics::{WEBHOOKS, labels};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use snakepay_config::Validate;
use snakepay_domain::ids::{ShardNumber, fill_random};
use snakepay_store::webhook_deliveries::{self, AttemptRecord, ClaimedDelivery, Resolution};
use snakepay_store::webhook_endpoints::EndpointStatus;
use snakepay_store::{Store, objects};
use snakepay_vault::{SealedRecord, Vault};
use tracing::Instrument;

use crate::clock::Clock;
use crate::egress::{self, TargetError};
use crate::schedule;
use crate::settings::WebhookSettings;
use crate::signature::{SIGNATURE_HEADER, signature_header};

/// Time on top of the attempts' timeouts before a claim's lease runs out:
/// room for opening the secret, signing and recording the outcome.
pub const LEASE_MARGIN_MS: u64 = 30_000;
/// Stored attempt errors are cut to this length (the database allows 1000).
const ERROR_TEXT_MAX_CHARS: usize = 500;

/// Everything a dispatcher needs; cheap to share by reference between the
/// loop and tests.
#[derive(Debug)]
pub struct Dispatcher {
    store: Store,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
    client: reqwest::Client,
    /// How long a claim holds a delivery (see [`lease_ms`]).
    lease_ms: u64,
}

impl Dispatcher {
    /// Checks the settings and builds the HTTP client.
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
    ) -> anyhow::Result<Dispatcher> {
        Dispatcher::with_trust(store, vault, clock, settings, &Default::default())
    }

    /// [`Dispatcher::new`] whose deliveries also trust `trust.ca_path`.
    pub fn with_trust(
        store: Store,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
        trust: &snakepay_config::sections::OutboundTlsConfig,
    ) -> anyhow::Result<Dispatcher> {
        settings.validate("webhooks")?;
        let client = egress::client_with_trust(&settings, trust)?;
        let lease_ms = lease_ms(&settings, store.shard_count());
        Ok(Dispatcher {
            store,
            vault,
            clock,
            settings,
            client,
            lease_ms,
        })
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }
}

/// A pass claims up to `batch_size` deliveries on each shard and runs them
/// `max_concurrent_deliveries` at a time, so the last one may start after
/// several "waves" of timeouts: the lease covers them all.
fn lease_ms(settings: &WebhookSettings, shard_count: usize) -> u64 {
    let claimed = u64::from(settings.batch_size)
        .saturating_mul(u64::try_from(shard_count.max(1)).unwrap_or(u64::MAX));
    let concurrency = u64::from(settings.max_concurrent_deliveries.max(1));
    let waves = claimed.div_ceil(concurrency);
    settings
        .attempt_timeout_ms
        .saturating_mul(waves)
        .saturating_add(LEASE_MARGIN_MS)
}

/// Runs passes until `shutdown` resolves: right after a pass that found
/// work, after `poll_interval_ms` otherwise. A pass under way when
/// shutdown comes is finished first, so no attempt is cut off unrecorded.
pub async fn run_dispatcher<S>(dispatcher: &Dispatcher, shutdown: S)
where
    S: Future<Output = ()>,
{
    let poll_interval = Duration::from_millis(dispatcher.settings.poll_interval_ms);
    let mut shutdown = pin!(shutdown);
    tracing::info!(
        webhook.batch_size = dispatcher.settings.batch_size,
        webhook.max_concurrent_deliveries = dispatcher.settings.max_concurrent_deliveries,
        webhook.allow_private_networks = dispatcher.settings.allow_private_networks,
        "webhook.dispatcher started"
    );
    loop {
        let claimed = dispatch_once(dispatcher).await;
        let pause = if claimed == 0 {
            poll_interval
        } else {
            Duration::ZERO
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    tracing::info!("webhook.dispatcher stopped");
}

/// One pass over every shard; returns how many deliveries it claimed (and
/// attempted). Errors are logged and left for the next pass: a shard that
/// cannot be reached does not stop the others.
pub async fn dispatch_once(dispatcher: &Dispatcher) -> usize {
    let now_ms = dispatcher.clock.now_ms();
    let lease_until_ms =
        now_ms.saturating_add(i64::try_from(dispatcher.lease_ms).unwrap_or(i64::MAX));
    let mut claimed: Vec<(ShardNumber, ClaimedDelivery)> = Vec::new();
    for (shard, pool) in dispatcher.store.shards() {
        match webhook_deliveries::claim_due(
            pool,
            now_ms,
            lease_until_ms,
            dispatcher.settings.batch_size,
        )
        .await
        {
            Ok(batch) => claimed.extend(batch.into_iter().map(|delivery| (shard, delivery))),
            Err(error) => tracing::error!(
                db.shard = %shard,
                error.chain = %format!("{error:#}"),
                "webhook.dispatcher could not claim deliveries"
            ),
        }
    }
    let count = claimed.len();
    let concurrency = usize::try_from(dispatcher.settings.max_concurrent_deliveries).unwrap_or(1);
    futures_util::stream::iter(claimed)
        .for_each_concurrent(concurrency, |(shard, delivery)| {
            // Each attempt continues the trace of the event it delivers.
            let span = tracing::info_span!(
                parent: None,
                "webhook.attempt",
                otel.name = "POST webhook",
                otel.kind = "client",
                webhook.delivery_id = delivery.id,
                webhook.event_id = %delivery.event_id,
                webhook.attempt = delivery.attempt,
            );
            snakepay_telemetry::trace::set_parent(&span, delivery.traceparent.as_deref());
            attempt(dispatcher, shard, delivery).instrument(span)
        })
        .await;
    count
}

/// How one attempt ended.
enum Attempted {
    /// A 2xx in time.
    Delivered { status: u16 },
    /// Worth retrying: an answer other than 2xx, a timeout, a refused or
    /// unreachable address, a secret that could not be opened.
    Failed {
        status: Option<u16>,
        error: Option<String>,
    },
    /// Never deliverable again: the endpoint (or event) is gone or off.
    Dropped { reason: &'static str },
}

async fn attempt(dispatcher: &Dispatcher, shard: ShardNumber, delivery: ClaimedDelivery) {
    let timeout_ms = dispatcher.settings.attempt_timeout_ms;
    let started_ms = dispatcher.clock.now_ms();
    let timeout_i64 = i64::try_from(timeout_ms).unwrap_or(i64::MAX);
    if started_ms.saturating_add(timeout_i64) > delivery.lease_until_ms {
        // Only when a pass ran far slower than its lease allowed: another
        // dispatcher may already hold this delivery, so leave it alone.
        tracing::warn!(
            webhook.delivery_id = delivery.id,
            db.shard = %shard,
            "webhook.dispatcher lease ran out before the attempt started; skipped"
        );
        return;
    }
    let started = Instant::now();
    let attempted = send(dispatcher, &delivery).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let finished_ms = dispatcher.clock.now_ms();

    let (status, error, resolution) = match &attempted {
        Attempted::Delivered { status } => (Some(*status), None, Resolution::Succeeded),
        Attempted::Failed { status, error } => (
            *status,
            error.clone(),
            schedule::after_failure(
                &dispatcher.settings,
                delivery.attempt,
                delivery.first_attempt_at_ms,
                finished_ms,
                random_u64(),
            ),
        ),
        Attempted::Dropped { reason } => (None, Some((*reason).to_owned()), Resolution::Failed),
    };
    let record = AttemptRecord {
        delivery_id: delivery.id,
        attempt: delivery.attempt,
        at_ms: started_ms,
        http_status: status.and_then(|s| i16::try_from(s).ok()),
        error: error.map(|text| truncate(&text)),
        latency_ms,
    };
    log_attempt(shard, &delivery, &record, resolution);
    let result = match attempted {
        Attempted::Delivered { .. } => "delivered",
        Attempted::Failed { .. } | Attempted::Dropped { .. } => "failed",
    };
    WEBHOOKS
        .attempts
        .get_or_create(&labels([("result", result)]))
        .inc();
    if resolution == Resolution::Failed {
        WEBHOOKS.abandoned.inc();
    }

    let recorded = match dispatcher.store.shard(shard) {
        Ok(pool) => webhook_deliveries::record_attempt(pool, &record, resolution).await,
        Err(error) => Err(error.into()),
    };
    match recorded {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            webhook.delivery_id = delivery.id,
            webhook.attempt = delivery.attempt,
            db.shard = %shard,
            "webhook.dispatcher attempt recorded after another dispatcher took the delivery over"
        ),
        // The lease runs out and the delivery is attempted again: the
        // receiver may see this event twice, which it must tolerate anyway.
        Err(error) => tracing::error!(
            webhook.delivery_id = delivery.id,
            webhook.attempt = delivery.attempt,
            db.shard = %shard,
            error.chain = %format!("{error:#}"),
            "webhook.dispatcher could not record an attempt"
        ),
    }
}

async fn send(dispatcher: &Dispatcher, delivery: &ClaimedDelivery) -> Attempted {
    let Some(event) = &delivery.event else {
        return Attempted::Dropped {
            reason: "dropped: the event no longer exists",
        };
    };
    let Some(target) = delivery.target.as_ref().filter(|t| !t.deleted) else {
        return Attempted::Dropped {
            reason: "dropped: the endpoint was deleted",
        };
    };
    if target.status != EndpointStatus::Enabled {
        return Attempted::Dropped {
            reason: "dropped: the endpoint is disabled",
        };
    }
    let failed = |error: String| Attempted::Failed {
        status: None,
        error: Some(error),
    };
    let url = match egress::check_url(&target.url, dispatcher.settings.allow_private_networks) {
        Ok(url) => url,
        Err(error @ (TargetError::Invalid(_) | TargetError::Refused(_))) => {
            return failed(error.to_string());
        }
    };
    let secret = SealedRecord::from_parts(
        target.secret.key_id.clone(),
        target.secret.wrapped_key.clone(),
        target.secret.ciphertext.clone(),
    )
    .and_then(|sealed| {
        dispatcher
            .vault
            .open(&sealed, delivery.endpoint_id.to_string().as_bytes())
    });
    let secret = match secret {
        Ok(secret) => secret,
        Err(error) => {
            tracing::error!(
                webhook.endpoint_id = %delivery.endpoint_id,
                error.chain = %error,
                "webhook.dispatcher cannot open an endpoint's signing secret"
            );
            return failed("the signing secret could not be opened".to_owned());
        }
    };
    // The same bytes on every attempt: the event as the API serves it.
    let body = match serde_json::to_vec(&objects::event(event, None)) {
        Ok(body) => body,
        Err(error) => return failed(format!("the event cannot be serialized: {error}")),
    };
    let timestamp_seconds = dispatcher.clock.now_ms().div_euclid(1000);
    let signature = match signature_header(&secret, timestamp_seconds, &body) {
        Ok(signature) => signature,
        Err(error) => return failed(format!("{error:#}")),
    };
    drop(secret);

    let response = dispatcher
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => Attempted::Delivered {
            status: response.status().as_u16(),
        },
        Ok(response) => Attempted::Failed {
            status: Some(response.status().as_u16()),
            error: None,
        },
        Err(error) => failed(egress::describe_error(
            error,
            dispatcher.settings.attempt_timeout_ms,
        )),
    }
}

fn log_attempt(
    shard: ShardNumber,
    delivery: &ClaimedDelivery,
    record: &AttemptRecord,
    resolution: Resolution,
) {
    let next_attempt_at_ms = match resolution {
        Resolution::RetryAt(at_ms) => Some(at_ms),
        Resolution::Succeeded | Resolution::Failed => None,
    };
    macro_rules! event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                webhook.delivery_id = delivery.id,
                webhook.endpoint_id = %delivery.endpoint_id,
                webhook.event_id = %delivery.event_id,
                webhook.attempt = delivery.attempt,
                http.status = record.http_status,
                webhook.latency_ms = record.latency_ms,
                webhook.error = record.error.as_deref(),
                webhook.next_attempt_at_ms = next_attempt_at_ms,
                db.shard = %shard,
                $message
            )
        };
    }
    match resolution {
        Resolution::Succeeded => event!(info, "webhook delivered"),
        Resolution::RetryAt(_) => event!(warn, "webhook attempt failed; retry scheduled"),
        Resolution::Failed => event!(warn, "webhook delivery given up"),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(ERROR_TEXT_MAX_CHARS).collect()
}

/// Jitter for the backoff. Without a random source (never seen in
/// practice) the backoff simply has none.
fn random_u64() -> u64 {
    let mut bytes = [0_u8; 8];
    match fill_random(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_covers_every_wave_of_a_pass() {
        let settings = WebhookSettings {
            attempt_timeout_ms: 10_000,
            batch_size: 64,
            max_concurrent_deliveries: 32,
            ..WebhookSettings::default()
        };
        // 2 shards × 64 claimed, 32 at a time: 4 waves.
        assert_eq!(lease_ms(&settings, 2), 4 * 10_000 + LEASE_MARGIN_MS);
        assert_eq!(lease_ms(&settings, 0), 2 * 10_000 + LEASE_MARGIN_MS);
    }
}
