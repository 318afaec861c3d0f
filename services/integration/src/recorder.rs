//! The recorder (DESIGN.md §5, step 6): writes non-critical history — every
//! event, by the object it is about, and the External API's request log —
//! into the shards in batches. It is the
//! queue that buffers database writes: under load the broker holds the
//! backlog, and one multi-row insert replaces hundreds of small commits.
//!
//! The consumer runner hands each delivery to [`Recorder::record`], which
//! queues the row and waits for the batch it joined to commit; only then is
//! the delivery acknowledged, so a crash loses nothing (rows are inserted
//! with `on conflict do nothing`, so a redelivery writes nothing twice).

use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;

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

/// A `log.request` message (services/external-api/src/request_log.rs).
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

#[derive(Debug, Clone)]
enum Row {
    Event(EventNotice),
    Request(RequestNotice),
}

impl Row {
    fn merchant(&self) -> MerchantId {
        match self {
            Row::Event(notice) => notice.merchant_id,
            Row::Request(notice) => notice.merchant_id,
        }
    }
}

type Pending = (Row, oneshot::Sender<bool>);

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

    /// Records one event message; `Ack` once its batch committed.
    pub async fn record(&self, message: &Message) -> Outcome {
        let payload = message.envelope.payload.clone();
        let row = if message.routing_key.starts_with("log.") {
            serde_json::from_value(payload).map(Row::Request)
        } else {
            serde_json::from_value(payload).map(Row::Event)
        };
        let notice = match row {
            Ok(row) => row,
            Err(error) => {
                tracing::warn!(error = %error, "unreadable history message rejected");
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
                .entry(pending.0.merchant().shard().0)
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
        tracing::warn!(db.shard = shard.0, "history for an unknown shard");
        return false;
    };
    let events: Vec<&EventNotice> = rows
        .iter()
        .filter_map(|(row, _)| match row {
            Row::Event(notice) => Some(notice),
            Row::Request(_) => None,
        })
        .collect();
    let requests: Vec<&RequestNotice> = rows
        .iter()
        .filter_map(|(row, _)| match row {
            Row::Request(notice) => Some(notice),
            Row::Event(_) => None,
        })
        .collect();
    let result = async {
        if !events.is_empty() {
            insert_events(pool, &events).await?;
        }
        if !requests.is_empty() {
            insert_requests(pool, &requests).await?;
        }
        Ok::<(), sqlx::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            tracing::debug!(
                db.shard = shard.0,
                recorder.rows = rows.len(),
                "history written"
            );
            true
        }
        Err(error) => {
            tracing::warn!(db.shard = shard.0, error = %error, "history batch failed");
            false
        }
    }
}

async fn insert_events(pool: &sqlx::PgPool, rows: &[&EventNotice]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = rows.iter().map(|n| n.event_id.as_str()).collect();
    let merchants: Vec<String> = rows.iter().map(|n| n.merchant_id.to_string()).collect();
    let livemodes: Vec<bool> = rows.iter().map(|n| n.livemode).collect();
    let types: Vec<&str> = rows.iter().map(|n| n.event_type.as_str()).collect();
    let objects: Vec<Option<&str>> = rows.iter().map(|n| n.object_id.as_deref()).collect();
    let created: Vec<Option<i64>> = rows.iter().map(|n| n.created).collect();
    sqlx::query(
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
    .await?;
    Ok(())
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
