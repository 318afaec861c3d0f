//! The request log (DESIGN.md §5 step 6): one line per authenticated API
//! request — who, what, how it ended, how long it took — written to the
//! merchant's shard by the integration service's recorder, in batches,
//! through the broker. It is non-critical history: the request never waits
//! for it, and when the queue is full or the broker is down entries are
//! dropped (and counted) rather than slowing payments down.
//!
//! The middleware puts an empty [`LogSlot`] into the request; the `Auth`
//! extractor fills it with the merchant once the key is known; the
//! middleware reads it after the response and queues the entry. A
//! background task publishes queued entries in batches, one message per
//! batch (`log.requests`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::Instrument;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use snakepay_bus::{Envelope, Outgoing, Publisher, Topology};
use snakepay_domain::ids::MerchantId;
use snakepay_http::RequestIdExt;
use tokio::sync::mpsc;

/// Entries queued for publishing before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Entries per published batch.
const BATCH_MAX: usize = 500;
/// How long the first entry of a batch waits for company.
const BATCH_WAIT_MS: u64 = 100;
/// The pause after the broker refused a batch (it is dropped).
const FAILURE_PAUSE_MS: u64 = 1_000;
/// The routing key of request log messages (events exchange): each carries
/// a batch of entries (`{"entries": [...]}`).
pub const ROUTING_KEY: &str = "log.requests";

/// Filled by `Auth` with the authenticated merchant and mode.
#[derive(Clone, Default)]
pub struct LogSlot(pub Arc<OnceLock<(MerchantId, bool)>>);

#[derive(Debug, Clone, Serialize)]
struct Entry {
    request_id: String,
    merchant_id: MerchantId,
    livemode: bool,
    method: String,
    /// The route template (`/v1/payment_intents/{id}`), never the raw path.
    route: String,
    status: u16,
    duration_ms: u64,
    /// Unix milliseconds.
    at_ms: i64,
}

/// A `log.requests` message's payload.
#[derive(Serialize)]
struct BatchPayload<'a> {
    entries: &'a [Entry],
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct RequestLog {
    sender: mpsc::Sender<Entry>,
    pub dropped: Arc<AtomicU64>,
}

impl RequestLog {
    /// Starts the publisher task.
    pub fn start(broker_url: String, topology: Topology) -> RequestLog {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(
            publish(broker_url, topology, receiver, Arc::clone(&dropped)).in_current_span(),
        );
        RequestLog { sender, dropped }
    }

    fn record(&self, entry: Entry) {
        if self.sender.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The middleware (a route layer, so the route template is known).
pub async fn middleware(
    State(log): State<Option<RequestLog>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(log) = log else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let slot = LogSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let request_id = request
        .extensions()
        .get::<RequestIdExt>()
        .map(|id| id.0.clone())
        .unwrap_or_default();
    let response = next.run(request).await;
    if let Some((merchant_id, livemode)) = slot.0.get() {
        log.record(Entry {
            request_id,
            merchant_id: *merchant_id,
            livemode: *livemode,
            method,
            route,
            status: response.status().as_u16(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            at_ms: snakepay_store::unix_now_ms(),
        });
    }
    response
}

async fn publish(
    url: String,
    topology: Topology,
    mut receiver: mpsc::Receiver<Entry>,
    dropped: Arc<AtomicU64>,
) {
    let exchange = topology.events_exchange();
    let mut publisher: Option<Publisher> = None;
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(BATCH_WAIT_MS);
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(entry)) => batch.push(entry),
                Ok(None) | Err(_) => break,
            }
        }
        // One message per batch: the broker's cost is per message, and the
        // recorder inserts a batch at a time anyway.
        let messages: Vec<Outgoing> = serde_json::to_value(BatchPayload { entries: &batch })
            .ok()
            .and_then(|payload| Envelope::new(ROUTING_KEY, payload).ok())
            .map(|envelope| Outgoing {
                exchange: exchange.clone(),
                routing_key: ROUTING_KEY.to_owned(),
                envelope,
            })
            .into_iter()
            .collect();
        if publisher.is_none() {
            publisher = Publisher::connect(&url).await.ok();
        }
        let sent = match &publisher {
            Some(publisher) => publisher.publish_batch(&messages).await.is_ok(),
            None => false,
        };
        if !sent {
            let lost = u64::try_from(batch.len()).unwrap_or(u64::MAX);
            dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                request_log.dropped = lost,
                "request log batch dropped: broker unavailable"
            );
            publisher = None;
            tokio::time::sleep(Duration::from_millis(FAILURE_PAUSE_MS)).await;
        }
    }
}
