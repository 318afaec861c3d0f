//! Reading everything the pipeline stored: PostgreSQL, Redis, RabbitMQ; and
//! planting a canary in each to prove the readers see it.

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use snakepay_bus::{QueueSpec, Topology, short};
use snakepay_store::testing::TestDatabases;

use crate::Received;
use crate::scan::{self, Canary, Hit};
use crate::support::{Merchant, Pipeline, WAIT, amqp_url};

/// How much the scan read: it must have seen real data, not empty stores.
#[derive(Debug, Default)]
pub struct Seen {
    pub databases: usize,
    pub tables: usize,
    pub rows: usize,
    pub redis_keys: usize,
    pub queues: usize,
    pub queued_messages: usize,
    pub tapped_messages: usize,
    pub dead_letters: usize,
    pub webhook_bodies: usize,
    pub log_lines: usize,
}

/// Every row of every table of every database the test created.
pub async fn scan_postgres(
    db: &TestDatabases,
    canaries: &[Canary],
    found: &mut Vec<Hit>,
    seen: &mut Seen,
) {
    let pools = std::iter::once(("control".to_owned(), db.store.control())).chain(
        db.store
            .shards()
            .map(|(n, pool)| (format!("shard {n}"), pool)),
    );
    for (database, pool) in pools {
        seen.databases += 1;
        let tables: Vec<(String, String)> = sqlx::query_as(
            "select table_schema::text, table_name::text from information_schema.tables
             where table_type = 'BASE TABLE'
               and table_schema not in ('pg_catalog', 'information_schema')",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        for (schema, table) in tables {
            seen.tables += 1;
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                r#"select row_to_json(t)::text from "{schema}"."{table}" t"#
            ))
            .fetch_all(pool)
            .await
            .unwrap();
            for row in rows {
                seen.rows += 1;
                found.extend(scan::scan(
                    &format!("postgres {database} {schema}.{table}"),
                    &row,
                    canaries,
                ));
            }
        }
    }
}

pub fn redis_url() -> String {
    std::env::var("SNAKEPAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Flattens any Redis reply into text.
fn redis_text(value: &redis::Value, out: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
        redis::Value::SimpleString(text) => out.push_str(text),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                redis_text(item, out);
                out.push('\n');
            }
        }
        redis::Value::Map(pairs) => {
            for (key, value) in pairs {
                redis_text(key, out);
                out.push('=');
                redis_text(value, out);
                out.push('\n');
            }
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

/// Every key in the test Redis database, and its value read as what it is.
pub async fn scan_redis(canaries: &[Canary], found: &mut Vec<Hit>, seen: &mut Seen) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .unwrap();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            let read = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).clone(),
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .clone(),
                "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
                // Expired between SCAN and TYPE.
                "none" => continue,
                other => panic!("a Redis value of type {other}: teach the scan to read it"),
            };
            let value: redis::Value = read.query_async(&mut connection).await.unwrap();
            let name = String::from_utf8_lossy(&key).into_owned();
            let mut text = format!("{name}\n");
            redis_text(&value, &mut text);
            seen.redis_keys += 1;
            found.extend(scan::scan(&format!("redis {name}"), &text, canaries));
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
}

/// A queue bound to everything on both exchanges from the start, so the
/// scan sees every message published during the test, including those the
/// consumers took long ago.
pub struct Tap {
    connection: Connection,
    pub queue: String,
}

impl Tap {
    pub async fn declare(prefix: &str) -> Tap {
        let topology = Topology::new(prefix, 5);
        let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare_exchanges(&channel).await.unwrap();
        let queue = format!("{prefix}leak-scan.tap");
        channel
            .queue_declare(
                short(&queue).unwrap(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for exchange in [topology.commands_exchange(), topology.events_exchange()] {
            channel
                .queue_bind(
                    short(&queue).unwrap(),
                    short(&exchange).unwrap(),
                    short("#").unwrap(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Tap { connection, queue }
    }

    /// Publishes an unreadable processor command about `intent`: the
    /// integration service rejects it into its dead-letter queue.
    pub async fn publish_poison(&self, prefix: &str, intent: &str) {
        let topology = Topology::new(prefix, 5);
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .basic_publish(
                short(&topology.commands_exchange()).unwrap(),
                short("command.payment.authorize").unwrap(),
                BasicPublishOptions::default(),
                format!(r#"{{"version":99,"payment_intent":"{intent}"}}"#).as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn delete(self) {
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .queue_delete(short(&self.queue).unwrap(), QueueDeleteOptions::default())
            .await
            .unwrap();
        let _ = self.connection.close(200, "leak scan done".into()).await;
    }
}

/// Every message in the test's queues, their dead-letter queues and the
/// tap, read without acknowledging (closing the channel puts them back).
pub async fn scan_rabbitmq(
    prefix: &str,
    tap: &Tap,
    canaries: &[Canary],
    found: &mut Vec<Hit>,
    seen: &mut Seen,
) {
    let topology = Topology::new(prefix, 5);
    let mut queues: Vec<(String, &str)> = Vec::new();
    for spec in Topology::standard_queues().iter().chain([
        &QueueSpec::recorder_events(),
        &QueueSpec::integration_commands(),
    ]) {
        queues.push((topology.queue_name(spec), "queue"));
        queues.push((topology.dead_letter_queue_name(spec), "dead letter"));
    }
    queues.push((tap.queue.clone(), "tap"));
    let unique: BTreeSet<(String, &str)> = queues.into_iter().collect();
    let channel = tap.connection.create_channel().await.unwrap();
    for (queue, kind) in unique {
        seen.queues += 1;
        loop {
            let Some(message) = channel
                .basic_get(short(&queue).unwrap(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
            else {
                break;
            };
            match kind {
                "tap" => seen.tapped_messages += 1,
                "dead letter" => seen.dead_letters += 1,
                _ => seen.queued_messages += 1,
            }
            let delivery = &message.delivery;
            let text = format!(
                "{}\n{:?}\n{}",
                delivery.routing_key,
                delivery.properties,
                String::from_utf8_lossy(&delivery.data)
            );
            found.extend(scan::scan(
                &format!("rabbitmq {queue} ({kind})"),
                &text,
                canaries,
            ));
        }
    }
    // Unacknowledged messages return to their queues.
    channel.close(200, "scanned".into()).await.unwrap();
}

/// Waits until the merchant's endpoint received every event the merchant
/// has; returns how many.
pub async fn wait_for_webhooks(
    pipeline: &Pipeline,
    merchant: &Merchant,
    received: &Received,
) -> usize {
    let pool = pipeline.db.store.shard(merchant.id.shard()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all: BTreeSet<String> =
            sqlx::query_scalar("select id from events where merchant_id = $1")
                .bind(merchant.id.to_string())
                .fetch_all(pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let delivered: BTreeSet<String> = received
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| {
                serde_json::from_str::<serde_json::Value>(body).ok()?["id"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        if !all.is_empty() && all.is_subset(&delivered) {
            return all.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {} of {} events",
            delivered.len(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the integration commands' dead-letter queue holds a message.
pub async fn wait_for_dead_letter(prefix: &str) {
    let topology = Topology::new(prefix, 5);
    let queue = topology.dead_letter_queue_name(&QueueSpec::integration_commands());
    let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = channel
            .queue_declare(
                short(&queue).unwrap(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if state.message_count() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison message never reached {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Where the self-check planted the canary, to remove it afterwards.
pub struct Plants {
    redis_key: String,
}

/// Plants `pan` once in each store: a scratch table on a shard, a Redis
/// key, a message on the tap, and a log line.
pub async fn plant(pipeline: &Pipeline, tap: &Tap, pan: &str) -> Plants {
    let shard = pipeline.db.store.shards().next().unwrap().1;
    sqlx::query("create table leak_scan_plant (note text)")
        .execute(shard)
        .await
        .unwrap();
    sqlx::query("insert into leak_scan_plant values ($1)")
        .bind(format!("customer typed {pan} into the notes"))
        .execute(shard)
        .await
        .unwrap();
    let redis_key = format!("{}leak-scan-plant", pipeline.prefix);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&redis_key)
        .arg("card")
        .arg(pan)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(&redis_key)
        .arg(600)
        .query_async(&mut connection)
        .await
        .unwrap();
    let channel = tap.connection.create_channel().await.unwrap();
    channel
        .basic_publish(
            short("").unwrap(),
            short(&tap.queue).unwrap(),
            BasicPublishOptions::default(),
            format!(r#"{{"card":{{"number":"{pan}"}}}}"#).as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    tracing::warn!(
        card.number = pan,
        "leak scan self-check: a planted log line"
    );
    Plants { redis_key }
}

pub async fn unplant(plants: &Plants) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&plants.redis_key)
        .query_async(&mut connection)
        .await
        .unwrap();
}
