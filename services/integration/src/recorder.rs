//! The recorder (DESIGN.md §5, step 6): writes non-critical history — every
//! event, by the object it is about — into the shards in batches. It is the
//! queue that buffers database writes: under load the broker holds the
//! backlog, and one multi-row insert replaces hundreds of small commits.
//!
//! The consumer runner hands each delivery to [`Recorder::record`], which
//! queues the row and waits for the batch it joined to commit; only then is
//! the delivery acknowledged, so a crash loses nothing (rows are inserted
//! with `on conflict do nothing`, so a redelivery writes nothing twice).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use snakepay_bus::{Message, Outcome};
use snakepay_domain::ids::MerchantId;
use snakepay_store::Store;
use tokio::sync::{mpsc, oneshot};

/// Rows per insert.
pub const BATCH_MAX_ROWS: usize = 500;
/// How long the first row of a batch waits for company.
pub const BATCH_MAX_WAIT_MS: u64 = 50;
/// Rows queued before `record` callers wait: bounded memory.
const QUEUE_CAPACITY: usize = 4 * BATCH_MAX_ROWS;

#[derive(Debug, Clone, Deserialize)]
struct EventNotice {
    event_id: String,
    merchant_id: MerchantId,
    livemode: bool,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    object_id: Option<String>,
    /// Unix seconds; absent in messages written before it was added.
    #[serde(default)]
    created: Option<i64>,
}

type Pending = (EventNotice, oneshot::Sender<bool>);

#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the batch writer; it stops when every `Recorder` is dropped.
    pub fn start(store: Store) -> Recorder {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_batches(store, receiver));
        Recorder { queue }
    }

    /// Records one event message; `Ack` once its batch committed.
    pub async fn record(&self, message: &Message) -> Outcome {
        let notice: EventNotice = match serde_json::from_value(message.envelope.payload.clone()) {
            Ok(notice) => notice,
            Err(error) => {
                tracing::warn!(error = %error, "unreadable event message rejected");
                return Outcome::Reject;
            }
        };
        let (done, committed) = oneshot::channel();
        if self.queue.send((notice, done)).await.is_err() {
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
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(BATCH_MAX_WAIT_MS);
        while batch.len() < BATCH_MAX_ROWS {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(pending)) => batch.push(pending),
                Ok(None) | Err(_) => break,
            }
        }
        let mut by_shard: BTreeMap<u8, Vec<Pending>> = BTreeMap::new();
        for pending in batch {
            by_shard
                .entry(pending.0.merchant_id.shard().0)
                .or_default()
                .push(pending);
        }
        for (shard, rows) in by_shard {
            let ok = insert(&store, snakepay_domain::ids::ShardNumber(shard), &rows).await;
            for (_, done) in rows {
                let _ = done.send(ok);
            }
        }
    }
}

async fn insert(store: &Store, shard: snakepay_domain::ids::ShardNumber, rows: &[Pending]) -> bool {
    let Ok(pool) = store.shard(shard) else {
        tracing::warn!(db.shard = shard.0, "event for an unknown shard");
        return false;
    };
    let ids: Vec<&str> = rows.iter().map(|(n, _)| n.event_id.as_str()).collect();
    let merchants: Vec<String> = rows
        .iter()
        .map(|(n, _)| n.merchant_id.to_string())
        .collect();
    let livemodes: Vec<bool> = rows.iter().map(|(n, _)| n.livemode).collect();
    let types: Vec<&str> = rows.iter().map(|(n, _)| n.event_type.as_str()).collect();
    let objects: Vec<Option<&str>> = rows.iter().map(|(n, _)| n.object_id.as_deref()).collect();
    let created: Vec<Option<i64>> = rows.iter().map(|(n, _)| n.created).collect();
    let result = sqlx::query(
        "insert into event_history (event_id, merchant_id, livemode, type, object_id, occurred_at)
         select id, merchant, livemode, type, object, coalesce(to_timestamp(created), now())
         from unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::bigint[])
              as t(id, merchant, livemode, type, object, created)
         on conflict (event_id) do nothing",
    )
    .bind(&ids)
    .bind(&merchants)
    .bind(&livemodes)
    .bind(&types)
    .bind(&objects)
    .bind(&created)
    .execute(pool)
    .await;
    match result {
        Ok(_) => {
            tracing::debug!(
                db.shard = shard.0,
                recorder.rows = rows.len(),
                "event history written"
            );
            true
        }
        Err(error) => {
            tracing::warn!(db.shard = shard.0, error = %error, "event history batch failed");
            false
        }
    }
}
