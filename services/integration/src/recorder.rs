//! The recorder (DESIGN.md §5, step 6): writes the External API's request
//! log into the shards in batches. It is the queue that buffers
//! non-critical database writes: under load the broker holds the backlog,
//! and one multi-row insert replaces hundreds of small commits.
//!
//! Each `log.requests` message carries a batch of entries
//! (services/external-api/src/request_log.rs), so the broker moves one
//! message per batch, not one per request. The consumer runner hands each
//! delivery to [`Recorder::record`], which queues its entries and waits for
//! the insert they joined to commit; only then is the delivery
//! acknowledged, so a crash loses nothing (rows are inserted with
//! `on conflict do nothing`, so a redelivery writes nothing twice).
//!
//! Event history needs no recorder: the events table, written with the
//! change itself, is the history (`snakepay_store::events`). Announcements
//! (`event.…`) that earlier versions left in the queue are acknowledged and
//! dropped, since their events are already in that table.

use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;

use serde::Deserialize;
use snakepay_bus::{Message, Outcome};
use snakepay_domain::ids::{MerchantId, ShardNumber};
use snakepay_store::Store;
use tokio::sync::{mpsc, oneshot};

/// Entries per insert (a batch may overshoot by one message's entries).
pub const BATCH_MAX_ROWS: usize = 500;
/// How long the first message of a batch waits for company.
pub const BATCH_MAX_WAIT_MS: u64 = 50;
/// Messages queued before `record` callers wait: bounded memory.
const QUEUE_CAPACITY: usize = 64;
/// Messages the consumer holds unacknowledged: each carries up to a
/// publisher's batch of entries, so a few are enough to fill an insert.
pub const PREFETCH: u16 = 16;

/// One request log entry (services/external-api/src/request_log.rs).
#[derive(Debug, Clone, Deserialize)]
struct RequestNotice {
    request_id: String,
    merchant_id: MerchantId,
    livemode: bool,
    method: String,
    route: String,
    status: i16,
    duration_ms: i64,
    at_ms: i64,
}

/// A `log.requests` message.
#[derive(Debug, Deserialize)]
struct RequestBatch {
    entries: Vec<RequestNotice>,
}

/// One delivery's entries and who waits for their commit.
struct Pending {
    entries: Vec<RequestNotice>,
    done: oneshot::Sender<bool>,
}

#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the batch writer; it stops when every `Recorder` is dropped.
    pub fn start(store: Store) -> Recorder {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(store, receiver).in_current_span());
        Recorder { queue }
    }

    /// Records one message; `Ack` once its entries committed.
    pub async fn record(&self, message: &Message) -> Outcome {
        let key = message.routing_key.as_str();
        if key.starts_with("event.") {
            // An announcement of an earlier version: its event is already
            // in the events table, which is the history now.
            return Outcome::Ack;
        }
        let payload = message.envelope.payload.clone();
        let entries = match key {
            // One entry per message, as earlier versions published them.
            "log.request" => serde_json::from_value(payload).map(|entry| vec![entry]),
            _ => serde_json::from_value(payload).map(|batch: RequestBatch| batch.entries),
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(error = %error, routing_key = key, "unreadable history message rejected");
                return Outcome::Reject;
            }
        };
        if entries.is_empty() {
            return Outcome::Ack;
        }
        let (done, committed) = oneshot::channel();
        if self.queue.send(Pending { entries, done }).await.is_err() {
            return Outcome::Retry;
        }
        match committed.await {
            Ok(true) => Outcome::Ack,
            _ => Outcome::Retry,
        }
    }
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        let mut rows = first.entries.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(BATCH_MAX_WAIT_MS);
        while rows < BATCH_MAX_ROWS {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(pending)) => {
                    rows += pending.entries.len();
                    batch.push(pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // A message may hold entries of several shards: it is done when
        // every shard it touches committed.
        let mut by_shard: BTreeMap<u8, Vec<&RequestNotice>> = BTreeMap::new();
        for pending in &batch {
            for entry in &pending.entries {
                by_shard
                    .entry(entry.merchant_id.shard().0)
                    .or_default()
                    .push(entry);
            }
        }
        let mut failed_shards = Vec::new();
        for (shard, entries) in &by_shard {
            if !insert(&store, ShardNumber(*shard), entries).await {
                failed_shards.push(*shard);
            }
        }
        for pending in batch {
            let ok = pending
                .entries
                .iter()
                .all(|entry| !failed_shards.contains(&entry.merchant_id.shard().0));
            let _ = pending.done.send(ok);
        }
    }
}

async fn insert(store: &Store, shard: ShardNumber, rows: &[&RequestNotice]) -> bool {
    let Ok(pool) = store.shard(shard) else {
        tracing::warn!(db.shard = shard.0, "request log for an unknown shard");
        return false;
    };
    match insert_requests(pool, rows).await {
        Ok(()) => {
            tracing::debug!(
                db.shard = shard.0,
                recorder.rows = rows.len(),
                "request log written"
            );
            true
        }
        Err(error) => {
            tracing::warn!(db.shard = shard.0, error = %error, "request log batch failed");
            false
        }
    }
}

async fn insert_requests(pool: &sqlx::PgPool, rows: &[&RequestNotice]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = rows.iter().map(|n| n.request_id.as_str()).collect();
    let merchants: Vec<String> = rows.iter().map(|n| n.merchant_id.to_string()).collect();
    let livemodes: Vec<bool> = rows.iter().map(|n| n.livemode).collect();
    let methods: Vec<&str> = rows.iter().map(|n| n.method.as_str()).collect();
    let routes: Vec<&str> = rows.iter().map(|n| n.route.as_str()).collect();
    let statuses: Vec<i16> = rows.iter().map(|n| n.status).collect();
    let durations: Vec<i64> = rows.iter().map(|n| n.duration_ms).collect();
    let at: Vec<i64> = rows.iter().map(|n| n.at_ms).collect();
    sqlx::query(
        "insert into request_log (request_id, merchant_id, livemode, method, route, status, duration_ms, at)
         select id, merchant, livemode, method, route, status, duration, to_timestamp(at_ms / 1000.0)
         from unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::smallint[],
                     $7::bigint[], $8::bigint[])
              as t(id, merchant, livemode, method, route, status, duration, at_ms)
         on conflict (request_id) do nothing",
    )
    .bind(&ids)
    .bind(&merchants)
    .bind(&livemodes)
    .bind(&methods)
    .bind(&routes)
    .bind(&statuses)
    .bind(&durations)
    .bind(&at)
    .execute(pool)
    .await?;
    Ok(())
}
