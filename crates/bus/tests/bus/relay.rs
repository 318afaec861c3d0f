//! The outbox relay against real shard databases and the real broker.

use std::time::Duration;

use snakepay_bus::envelope::traceparent_header;
use snakepay_bus::relay::RelayConfig;
use snakepay_bus::{Envelope, Publisher, Topology, relay_once, run_relay};
use snakepay_store::Store;
use snakepay_store::outbox::{OutboxMessage, enqueue};
use snakepay_store::testing::{TestDatabases, fresh};
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::helpers::{Broker, WAIT, amqp_url};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn shard(databases: &TestDatabases, n: usize) -> &PgPool {
    databases.store.shards().nth(n).unwrap().1
}

/// Commits `messages` in one transaction, as the External API does.
async fn commit(pool: &PgPool, messages: &[(&str, serde_json::Value)]) {
    let mut tx = pool.begin().await.unwrap();
    let messages: Vec<OutboxMessage> = messages
        .iter()
        .map(|(key, payload)| OutboxMessage {
            routing_key: (*key).to_owned(),
            payload: payload.clone(),
        })
        .collect();
    enqueue(&mut tx, &messages).await.unwrap();
    tx.commit().await.unwrap();
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Passes until a pass publishes nothing; returns the rows published.
async fn drain(store: &Store, publisher: &Publisher, topology: &Topology, batch: u32) -> usize {
    let mut total = 0;
    loop {
        let published = relay_once(store, publisher, topology, batch).await.unwrap();
        if published == 0 {
            return total;
        }
        total += published;
    }
}

#[tokio::test]
async fn committed_rows_are_published_in_id_order_and_leave_the_outbox() {
    let databases = fresh(2).await.unwrap();
    let broker = Broker::declared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let pool = shard(&databases, 0);
    for n in 0..5 {
        commit(
            pool,
            &[
                ("command.authorize", serde_json::json!({ "n": n })),
                (
                    "event.payment_intent.created",
                    serde_json::json!({ "n": n }),
                ),
            ],
        )
        .await;
    }
    sqlx::query(
        "insert into outbox (routing_key, payload, headers) values ('command.capture', '{}', $1)",
    )
    .bind(serde_json::json!({ "traceparent": TRACEPARENT }))
    .execute(pool)
    .await
    .unwrap();

    let ids: Vec<i64> = sqlx::query_scalar("select id from outbox order by id")
        .fetch_all(pool)
        .await
        .unwrap();
    // Small batches: order must hold across batches too. Published rows
    // leave the outbox.
    assert_eq!(
        drain(&databases.store, &publisher, &broker.topology, 3).await,
        11
    );
    assert_eq!(unpublished(pool).await, 0);
    let mut commands = Vec::new();
    for _ in 0..6 {
        commands.push(broker.wait_get(&broker.commands_queue()).await);
    }
    let mut events = Vec::new();
    for _ in 0..5 {
        events.push(broker.wait_get(&broker.events_queue()).await);
    }
    let received: Vec<Envelope> = commands
        .iter()
        .chain(&events)
        .map(|d| Envelope::parse(&d.data).unwrap())
        .collect();
    let command_ids: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(index, _)| index % 2 == 0 || *index == 10)
        .map(|(_, id)| format!("outbox_0_{id}"))
        .collect();
    assert_eq!(
        received[..6]
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        command_ids
    );
    for (n, envelope) in received[..5].iter().enumerate() {
        assert_eq!(envelope.kind, "command.authorize");
        assert_eq!(envelope.payload, serde_json::json!({ "n": n }));
    }
    for (n, envelope) in received[6..].iter().enumerate() {
        assert_eq!(envelope.kind, "event.payment_intent.created");
        assert_eq!(envelope.payload, serde_json::json!({ "n": n }));
    }
    assert_eq!(received[5].kind, "command.capture");
    assert_eq!(received[5].traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(
        traceparent_header(&commands[5].properties).as_deref(),
        Some(TRACEPARENT)
    );
    assert_eq!(received[0].traceparent, None);
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);

    publisher.close().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn rows_of_a_rolled_back_transaction_are_never_published() {
    let databases = fresh(1).await.unwrap();
    let broker = Broker::declared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let pool = shard(&databases, 0);

    let mut tx = pool.begin().await.unwrap();
    enqueue(
        &mut tx,
        &[OutboxMessage {
            routing_key: "command.void".to_owned(),
            payload: serde_json::json!({ "rolled_back": true }),
        }],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    commit(
        pool,
        &[(
            "command.authorize",
            serde_json::json!({ "committed": true }),
        )],
    )
    .await;

    assert_eq!(
        drain(&databases.store, &publisher, &broker.topology, 10).await,
        1
    );
    let delivery = broker.wait_get(&broker.commands_queue()).await;
    assert_eq!(
        Envelope::parse(&delivery.data).unwrap().payload,
        serde_json::json!({ "committed": true })
    );
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);

    publisher.close().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn rows_stay_unpublished_while_the_broker_refuses_and_go_out_once_fixed() {
    let databases = fresh(1).await.unwrap();
    // Nothing declared yet: the exchanges are missing.
    let broker = Broker::undeclared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let pool = shard(&databases, 0);
    commit(
        pool,
        &[
            ("command.authorize", serde_json::json!({ "n": 0 })),
            ("command.authorize", serde_json::json!({ "n": 1 })),
        ],
    )
    .await;

    relay_once(&databases.store, &publisher, &broker.topology, 10)
        .await
        .unwrap_err();
    assert_eq!(unpublished(pool).await, 2);

    // Exchanges but no queue: unroutable, refused as well.
    broker
        .topology
        .declare_exchanges(&broker.channel)
        .await
        .unwrap();
    relay_once(&databases.store, &publisher, &broker.topology, 10)
        .await
        .unwrap_err();
    assert_eq!(unpublished(pool).await, 2);

    broker.topology.declare(&broker.channel).await.unwrap();
    assert_eq!(
        drain(&databases.store, &publisher, &broker.topology, 10).await,
        2
    );
    assert_eq!(unpublished(pool).await, 0);
    for n in 0..2 {
        let delivery = broker.wait_get(&broker.commands_queue()).await;
        assert_eq!(
            Envelope::parse(&delivery.data).unwrap().payload,
            serde_json::json!({ "n": n })
        );
    }
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);

    publisher.close().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn two_relays_side_by_side_publish_every_row_once() {
    const ROWS_PER_SHARD: usize = 150;
    let databases = fresh(2).await.unwrap();
    let broker = Broker::declared(3).await;
    let first = Publisher::connect(&amqp_url()).await.unwrap();
    let second = Publisher::connect(&amqp_url()).await.unwrap();
    for n in 0..2 {
        let messages: Vec<(&str, serde_json::Value)> = (0..ROWS_PER_SHARD)
            .map(|i| ("command.authorize", serde_json::json!({ "i": i })))
            .collect();
        commit(shard(&databases, n), &messages).await;
    }

    let (a, b) = tokio::join!(
        drain(&databases.store, &first, &broker.topology, 7),
        drain(&databases.store, &second, &broker.topology, 7),
    );
    assert_eq!(a + b, 2 * ROWS_PER_SHARD, "rows marked by the two relays");
    assert!(a > 0 && b > 0, "both relays worked: {a} and {b}");
    for n in 0..2 {
        assert_eq!(unpublished(shard(&databases, n)).await, 0);
    }
    // Exactly one message per row on the broker.
    broker
        .wait_count(&broker.commands_queue(), (2 * ROWS_PER_SHARD) as u32)
        .await;

    first.close().await;
    second.close().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn the_running_relay_publishes_rows_from_both_shards_and_stops_on_shutdown() {
    let databases = fresh(2).await.unwrap();
    let broker = Broker::declared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let config = RelayConfig {
        idle_poll_ms: 10,
        ..RelayConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = run_relay(
        &databases.store,
        &publisher,
        &broker.topology,
        &config,
        async {
            let _ = stopped.await;
        },
    );
    let scenario = async {
        // Committed while the relay is already running and idle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        commit(
            shard(&databases, 0),
            &[("command.authorize", serde_json::json!({ "shard": 0 }))],
        )
        .await;
        commit(
            shard(&databases, 1),
            &[(
                "event.payment_intent.created",
                serde_json::json!({ "shard": 1 }),
            )],
        )
        .await;
        let command = broker.wait_get(&broker.commands_queue()).await;
        let event = broker.wait_get(&broker.events_queue()).await;
        let _ = stop.send(());
        (command, event)
    };
    let ((), (command, event)) =
        tokio::time::timeout(WAIT, async { tokio::join!(relay, scenario) })
            .await
            .expect("relay scenario timed out");
    let command = Envelope::parse(&command.data).unwrap();
    let event = Envelope::parse(&event.data).unwrap();
    assert_eq!(command.payload, serde_json::json!({ "shard": 0 }));
    assert!(command.id.starts_with("outbox_0_"), "{}", command.id);
    assert_eq!(event.payload, serde_json::json!({ "shard": 1 }));
    assert!(event.id.starts_with("outbox_1_"), "{}", event.id);
    // Marked once the broker confirmed (the relay commits right after).
    for n in 0..2 {
        assert_eq!(unpublished(shard(&databases, n)).await, 0);
    }

    publisher.close().await;
    broker.cleanup().await;
}
