//! The consumer runner: settling, dead-lettering, prefetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use snakepay_bus::{Envelope, Message, Outcome, Publisher, QueueSpec, run_consumer};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::helpers::{Broker, WAIT, amqp_url};

async fn publish_commands(broker: &Broker, count: usize) -> Vec<Envelope> {
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let mut sent = Vec::new();
    for n in 0..count {
        let envelope = Envelope::new("command.authorize", serde_json::json!({ "n": n })).unwrap();
        publisher
            .publish(
                &broker.topology.commands_exchange(),
                "command.authorize",
                &envelope,
            )
            .await
            .unwrap();
        sent.push(envelope);
    }
    publisher.close().await;
    sent
}

/// Runs a consumer with `handler` while `scenario` runs; the consumer shuts
/// down when the scenario ends.
async fn with_consumer<H, F, S>(broker: &Broker, prefetch: u16, handler: H, scenario: S)
where
    H: Fn(Message) -> F,
    F: Future<Output = Outcome>,
    S: Future<Output = ()>,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let queue = broker.commands_queue();
    let consumer = run_consumer(
        &broker.connection,
        &queue,
        "test",
        prefetch,
        handler,
        async {
            let _ = stopped.await;
        },
    );
    let scenario = async {
        scenario.await;
        let _ = stop.send(());
    };
    let (result, ()) = tokio::time::timeout(WAIT, async { tokio::join!(consumer, scenario) })
        .await
        .expect("consumer scenario timed out");
    result.unwrap();
}

#[tokio::test]
async fn ack_removes_the_message() {
    let broker = Broker::declared(3).await;
    let sent = publish_commands(&broker, 1).await;
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Message>();
    with_consumer(
        &broker,
        10,
        |message: Message| {
            let seen_tx = seen_tx.clone();
            async move {
                seen_tx.send(message).unwrap();
                Outcome::Ack
            }
        },
        async {
            let message = seen.recv().await.unwrap();
            assert_eq!(message.envelope, sent[0]);
            assert_eq!(message.routing_key, "command.authorize");
            assert!(!message.redelivered);
        },
    )
    .await;
    // The consumer's channel is closed: an unacknowledged message would be
    // back in the queue now.
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);
    assert_eq!(
        broker
            .count(&broker.dead_letter_queue(&QueueSpec::integration_commands()))
            .await,
        0
    );
    broker.cleanup().await;
}

#[tokio::test]
async fn retry_redelivers_until_the_delivery_limit_then_dead_letters() {
    retry_until_dead_lettered(3).await;
}

#[tokio::test]
async fn a_delivery_limit_of_one_dead_letters_the_first_retry() {
    retry_until_dead_lettered(1).await;
}

async fn retry_until_dead_lettered(delivery_limit: u32) {
    let broker = Broker::declared(delivery_limit).await;
    let sent = publish_commands(&broker, 1).await;
    let deliveries = Arc::new(AtomicUsize::new(0));
    let redelivered = Arc::new(AtomicUsize::new(0));
    let dead_letters = broker.dead_letter_queue(&QueueSpec::integration_commands());
    with_consumer(
        &broker,
        10,
        |message: Message| {
            let deliveries = deliveries.clone();
            let redelivered = redelivered.clone();
            async move {
                deliveries.fetch_add(1, Ordering::SeqCst);
                if message.redelivered {
                    redelivered.fetch_add(1, Ordering::SeqCst);
                }
                Outcome::Retry
            }
        },
        broker.wait_count(&dead_letters, 1),
    )
    .await;
    let deliveries = deliveries.load(Ordering::SeqCst);
    assert_eq!(deliveries, delivery_limit as usize, "deliveries");
    assert_eq!(redelivered.load(Ordering::SeqCst), deliveries - 1);
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);
    let dead = broker.wait_get(&dead_letters).await;
    assert_eq!(Envelope::parse(&dead.data).unwrap(), sent[0]);
    broker.cleanup().await;
}

#[tokio::test]
async fn reject_dead_letters_at_once() {
    let broker = Broker::declared(5).await;
    let sent = publish_commands(&broker, 1).await;
    let deliveries = Arc::new(AtomicUsize::new(0));
    let dead_letters = broker.dead_letter_queue(&QueueSpec::integration_commands());
    with_consumer(
        &broker,
        10,
        |_message: Message| {
            let deliveries = deliveries.clone();
            async move {
                deliveries.fetch_add(1, Ordering::SeqCst);
                Outcome::Reject
            }
        },
        broker.wait_count(&dead_letters, 1),
    )
    .await;
    assert_eq!(deliveries.load(Ordering::SeqCst), 1);
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);
    let dead = broker.wait_get(&dead_letters).await;
    assert_eq!(Envelope::parse(&dead.data).unwrap(), sent[0]);
    broker.cleanup().await;
}

#[tokio::test]
async fn prefetch_bounds_the_deliveries_in_flight() {
    const PREFETCH: u16 = 2;
    const MESSAGES: usize = 6;
    let broker = Broker::declared(3).await;
    publish_commands(&broker, MESSAGES).await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    with_consumer(
        &broker,
        PREFETCH,
        |_message: Message| {
            let (in_flight, max_in_flight, started, done, gate) = (
                in_flight.clone(),
                max_in_flight.clone(),
                started.clone(),
                done.clone(),
                gate.clone(),
            );
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                started.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                in_flight.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                Outcome::Ack
            }
        },
        async {
            while started.load(Ordering::SeqCst) < usize::from(PREFETCH) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The rest stays in the queue while the handlers are blocked.
            broker
                .wait_count(
                    &broker.commands_queue(),
                    (MESSAGES - usize::from(PREFETCH)) as u32,
                )
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(started.load(Ordering::SeqCst), usize::from(PREFETCH));
            gate.add_permits(MESSAGES);
            while done.load(Ordering::SeqCst) < MESSAGES {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        },
    )
    .await;
    assert_eq!(max_in_flight.load(Ordering::SeqCst), usize::from(PREFETCH));
    assert_eq!(broker.count(&broker.commands_queue()).await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn a_message_of_an_unknown_envelope_version_is_dead_lettered_unhandled() {
    let broker = Broker::declared(5).await;
    let body = serde_json::to_vec(&serde_json::json!({
        "v": 2, "id": "msg_future", "type": "command.authorize", "occurred_at": 0, "payload": {}
    }))
    .unwrap();
    let confirm = broker
        .channel
        .basic_publish(
            broker.topology.commands_exchange().as_str().into(),
            "command.authorize".into(),
            lapin::options::BasicPublishOptions::default(),
            &body,
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
    drop(confirm);
    let handled = Arc::new(AtomicUsize::new(0));
    let dead_letters = broker.dead_letter_queue(&QueueSpec::integration_commands());
    with_consumer(
        &broker,
        10,
        |_message: Message| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Outcome::Ack
            }
        },
        broker.wait_count(&dead_letters, 1),
    )
    .await;
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    assert_eq!(broker.wait_get(&dead_letters).await.data, body);
    broker.cleanup().await;
}
