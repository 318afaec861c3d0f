//! Gauges that mirror the region's state for the alerts (docs/metrics.md):
//! the outbox backlog and its age, payments in flight and the oldest one in
//! `processing`, the ledger's trial balance, and the depth of every queue
//! and dead-letter queue. Read on a timer rather than at scrape time, as a
//! scrape must not wait on the databases or the broker.
//!
//! Every instance of the service exports them; they describe the region, so
//! dashboards take the `max` over instances.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use snakepay_bus::{QueueSpec, Topology};
use snakepay_store::Store;
use snakepay_telemetry::metrics::{BROKER, OUTBOX, PAYMENTS, WEBHOOKS, labels};
use tokio::sync::watch;

/// Every round (`[integration] gauges_interval_ms`, 15 s by default) reads
/// an index-only count per shard, plus the trial balance, which sums every
/// ledger line of the region: that is the costly one, and why the interval
/// is not shorter.
pub async fn run(
    interval: Duration,
    store: Store,
    broker_url: String,
    topology: Topology,
    mut stop: watch::Receiver<bool>,
) {
    // Families exist from the start, at zero, so `increase()` and absent-
    // series alerts see the first event.
    let _ = (&WEBHOOKS.abandoned, &OUTBOX.published);
    for result in ["delivered", "failed"] {
        let _ = WEBHOOKS
            .attempts
            .get_or_create(&labels([("result", result)]));
    }
    PAYMENTS.oldest_processing_age.set(0.0);
    let mut broker: Option<lapin::Connection> = None;
    loop {
        if let Err(error) = database_gauges(&store).await {
            tracing::warn!(error = %format!("{error:#}"), "database gauges not refreshed");
        }
        if let Err(error) = queue_gauges(&mut broker, &broker_url, &topology).await {
            tracing::debug!(error = %format!("{error:#}"), "queue gauges not refreshed");
            broker = None;
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    if let Some(connection) = broker {
        let _ = connection.close(200, "gauges stopped".into()).await;
    }
}

async fn database_gauges(store: &Store) -> anyhow::Result<()> {
    let mut in_flight: BTreeMap<String, i64> = [
        ("processing".to_owned(), 0),
        ("requires_action".to_owned(), 0),
    ]
    .into();
    let mut oldest_processing: f64 = 0.0;
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    for (shard, pool) in store.shards() {
        let shard_label = shard.0.to_string();
        let (backlog, age): (i64, f64) = sqlx::query_as(
            "select count(*),
                    coalesce(extract(epoch from now() - min(created_at)), 0)::float8
               from outbox",
        )
        .fetch_one(pool)
        .await?;
        OUTBOX
            .backlog
            .get_or_create(&labels([("shard", &shard_label)]))
            .set(backlog);
        OUTBOX
            .oldest_age
            .get_or_create(&labels([("shard", &shard_label)]))
            .set(age);

        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "select status, count(*),
                    coalesce(extract(epoch from now() - min(updated_at)), 0)::float8
               from payment_intents
              where status in ('processing', 'requires_action')
              group by status",
        )
        .fetch_all(pool)
        .await?;
        for (status, count, age) in rows {
            if status == "processing" {
                oldest_processing = oldest_processing.max(age);
            }
            *in_flight.entry(status).or_default() += count;
        }

        let sums: Vec<(String, i64)> = sqlx::query_as(
            "select currency,
                    coalesce(sum(case side when 'debit' then amount else -amount end), 0)::int8
               from journal_lines group by currency",
        )
        .fetch_all(pool)
        .await?;
        for (currency, sum) in sums {
            *balances.entry(currency).or_default() += sum;
        }
    }
    for (status, count) in in_flight {
        PAYMENTS
            .in_flight
            .get_or_create(&labels([("status", &status)]))
            .set(count);
    }
    PAYMENTS.oldest_processing_age.set(oldest_processing);
    for (currency, balance) in balances {
        PAYMENTS
            .trial_balance
            .get_or_create(&labels([("currency", &currency)]))
            .set(balance);
    }
    Ok(())
}

async fn queue_gauges(
    broker: &mut Option<lapin::Connection>,
    url: &str,
    topology: &Topology,
) -> anyhow::Result<()> {
    if broker.as_ref().is_none_or(|c| !c.status().connected()) {
        *broker = Some(snakepay_bus::connect(url).await?);
    }
    let Some(connection) = broker.as_ref() else {
        return Ok(());
    };
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for spec in Topology::standard_queues() {
        let depth = message_count(&channel, &topology.queue_name(&spec), passive).await?;
        set_depth(&spec, depth, false);
        let dead =
            message_count(&channel, &topology.dead_letter_queue_name(&spec), passive).await?;
        set_depth(&spec, dead, true);
    }
    let _ = channel.close(200, "gauges read".into()).await;
    Ok(())
}

async fn message_count(
    channel: &lapin::Channel,
    queue: &str,
    passive: QueueDeclareOptions,
) -> anyhow::Result<u32> {
    let declared = channel
        .queue_declare(snakepay_bus::short(queue)?, passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}

fn set_depth(spec: &QueueSpec, count: u32, dead_letters: bool) {
    let family = if dead_letters {
        &BROKER.dead_letters
    } else {
        &BROKER.queue_depth
    };
    family
        .get_or_create(&labels([("queue", &spec.name)]))
        .set(i64::from(count));
}
