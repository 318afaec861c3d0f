//! The outbox relay (DESIGN.md §5, step 2): moves committed outbox rows of
//! every shard to the broker.
//!
//! Per shard and pass, in one transaction: delete a batch of rows, oldest
//! first, taking them `for update skip locked` (relays running side by side
//! take disjoint batches) and getting them back from the delete; publish them
//! in id order, wait for every confirm, and commit. If anything fails the
//! transaction rolls back and the rows are still there for the next pass.
//! The broker is never the only copy: the delete commits only after the
//! broker confirmed every row. The outbox is a queue: every row in it is
//! unpublished (migration 0013), and the events, not the outbox, are the
//! history.
//!
//! Delivery is at least once: a relay that dies after the confirm and before
//! the commit publishes the batch again on the next pass (with the same
//! envelope ids, derived from the shard and the row id). Consumers are
//! idempotent, and that is the contract.
//!
//! The sweeper of DESIGN.md needs no separate process: the relay keeps no
//! state of its own, and every pass takes *all* rows from the oldest id up,
//! so a row left unsent by a crash (between the API's commit and the
//! publish, or between the confirm and the commit) is picked up by the next
//! pass of any relay instance.
//!
//! Order: within a shard, a single relay publishes rows in id order. Several
//! relays (or a retried batch) can interleave batches, so consumers must not
//! rely on order across batches (the state machines check what is due).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use snakepay_domain::ids::ShardNumber;
use snakepay_store::Store;
use snakepay_telemetry::metrics::OUTBOX;
use sqlx::PgPool;

use crate::envelope::{ENVELOPE_VERSION, Envelope};
use crate::publisher::{Outgoing, Publisher};
use crate::topology::Topology;

/// Rows per shard and pass: large enough to amortize the commit and the
/// confirm round trip, small enough to keep the locking transaction short.
pub const DEFAULT_BATCH_SIZE: u32 = 200;
/// The pause when every shard was drained.
pub const DEFAULT_IDLE_POLL_MS: u64 = 100;
/// The first back-off after a failed pass, doubled per failure up to the cap.
pub const BACKOFF_INITIAL_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub batch_size: u32,
    pub idle_poll_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: DEFAULT_BATCH_SIZE,
            idle_poll_ms: DEFAULT_IDLE_POLL_MS,
            backoff_initial_ms: BACKOFF_INITIAL_MS,
            backoff_max_ms: BACKOFF_MAX_MS,
        }
    }
}

/// One pass over every shard; returns how many rows were published. A shard
/// that fails does not stop the others; the first error is returned after
/// all shards had their turn.
pub async fn relay_once(
    store: &Store,
    publisher: &Publisher,
    topology: &Topology,
    batch_size: u32,
) -> anyhow::Result<usize> {
    let mut published = 0;
    let mut first_error = None;
    for (shard, pool) in store.shards() {
        match relay_shard(shard, pool, publisher, topology, batch_size).await {
            Ok(count) => published += count,
            Err(error) => {
                tracing::warn!(shard = %shard, error = %format!("{error:#}"), "outbox.relay pass failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(published),
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    routing_key: String,
    payload: serde_json::Value,
    traceparent: Option<String>,
    created_at_ms: i64,
}

async fn relay_shard(
    shard: ShardNumber,
    pool: &PgPool,
    publisher: &Publisher,
    topology: &Topology,
    batch_size: u32,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await.context("begin")?;
    // One statement takes and deletes the batch; the delete is undone if
    // the publish fails, since nothing commits before every confirm.
    let mut rows: Vec<Row> = sqlx::query_as(
        "delete from outbox
          where id = any(array(select id from outbox order by id limit $1 for update skip locked))
         returning id, routing_key, payload, headers->>'traceparent' as traceparent,
                   (extract(epoch from created_at) * 1000)::bigint as created_at_ms",
    )
    .bind(i64::from(batch_size))
    .fetch_all(&mut *tx)
    .await
    .context("taking outbox rows")?;
    if rows.is_empty() {
        tx.commit().await.context("commit")?;
        return Ok(0);
    }
    // `returning` keeps no order; a shard's rows go out in the order they
    // were written.
    rows.sort_unstable_by_key(|row| row.id);
    let count = rows.len();

    let mut messages = Vec::with_capacity(rows.len());
    // One producer span per message, a child of the span that wrote the
    // row; the message carries the producer span's context, so its consumer
    // follows in the same trace. The spans end once the broker confirmed.
    let mut publish_spans = Vec::with_capacity(rows.len());
    for row in rows {
        let exchange = topology.exchange_for(&row.routing_key).with_context(|| {
            format!(
                "outbox row {} has routing key {:?}, neither command nor event",
                row.id, row.routing_key
            )
        })?;
        let span = tracing::info_span!(
            parent: None,
            "outbox.publish",
            otel.name = %format_args!("{exchange} publish"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %exchange,
            messaging.rabbitmq.destination.routing_key = %row.routing_key,
        );
        snakepay_telemetry::trace::set_parent(&span, row.traceparent.as_deref());
        let traceparent = snakepay_telemetry::trace::traceparent_of(&span).or(row.traceparent);
        publish_spans.push(span);
        messages.push(Outgoing {
            exchange,
            routing_key: row.routing_key.clone(),
            envelope: Envelope {
                v: ENVELOPE_VERSION,
                // Stable across republishing, so consumers see a duplicate.
                id: format!("outbox_{shard}_{}", row.id),
                kind: row.routing_key,
                occurred_at: row.created_at_ms,
                traceparent,
                payload: row.payload,
            },
        });
    }
    // Dropping `tx` on error rolls back: the rows stay unpublished.
    publisher
        .publish_batch(&messages)
        .await
        .with_context(|| format!("publishing {} outbox rows", messages.len()))?;

    tx.commit().await.context("commit")?;
    drop(publish_spans);
    OUTBOX.published.inc_by(u64::try_from(count).unwrap_or(0));
    tracing::debug!(shard = %shard, outbox.rows = count, "outbox.relay published");
    Ok(count)
}

/// Relays until `shutdown` resolves: passes back to back while there is
/// work, a short poll when idle, capped exponential back-off with jitter
/// after failures (a broker or database outage must not become a busy loop).
pub async fn run_relay<S>(
    store: &Store,
    publisher: &Publisher,
    topology: &Topology,
    config: &RelayConfig,
    shutdown: S,
) where
    S: Future<Output = ()>,
{
    let mut shutdown = pin!(shutdown);
    let mut failures: u32 = 0;
    tracing::info!(
        outbox.batch_size = config.batch_size,
        "outbox.relay started"
    );
    loop {
        // Shutdown is checked between passes, never inside one: a pass
        // cancelled after the broker's confirm but before the commit would
        // publish its rows a second time.
        if shutdown.as_mut().now_or_never().is_some() {
            break;
        }
        let pause_ms = match relay_once(store, publisher, topology, config.batch_size).await {
            Ok(0) => {
                failures = 0;
                config.idle_poll_ms
            }
            Ok(_) => {
                // There may be more: go again at once.
                failures = 0;
                0
            }
            Err(_) => {
                // Already logged per shard in relay_once.
                failures = failures.saturating_add(1);
                backoff_ms(config, failures)
            }
        };
        if pause_ms > 0 {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(Duration::from_millis(pause_ms)) => {}
            }
        }
    }
    tracing::info!("outbox.relay stopped");
}

/// The pause after `failures` failed passes.
fn backoff_ms(config: &RelayConfig, failures: u32) -> u64 {
    snakepay_resilience::equal_jitter_backoff_ms(
        config.backoff_initial_ms,
        config.backoff_max_ms,
        failures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = RelayConfig::default();
        for failures in 1..40 {
            let ms = backoff_ms(&config, failures);
            assert!(ms <= config.backoff_max_ms);
            let ceiling =
                (config.backoff_initial_ms << (failures - 1).min(20)).min(config.backoff_max_ms);
            assert!(ms >= ceiling / 2, "{failures}: {ms}");
        }
    }
}
