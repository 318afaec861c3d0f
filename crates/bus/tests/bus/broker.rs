//! Topology, envelope on the wire, and the publisher.

use snakepay_bus::envelope::traceparent_header;
use snakepay_bus::{Envelope, PublishError, Publisher, QueueSpec};

use crate::helpers::{Broker, amqp_url};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn topology_declares_idempotently() {
    let broker = Broker::declared(3).await;
    // Again, on another channel, with the same arguments: a no-op.
    let channel = broker.connection.create_channel().await.unwrap();
    broker.topology.declare(&channel).await.unwrap();
    broker.topology.declare(&channel).await.unwrap();
    for spec in [
        QueueSpec::integration_commands(),
        QueueSpec::recorder_events(),
    ] {
        assert_eq!(broker.count(&broker.queue(&spec)).await, 0);
        assert_eq!(broker.count(&broker.dead_letter_queue(&spec)).await, 0);
    }
    broker.cleanup().await;
}

#[tokio::test]
async fn declaring_deletes_a_retired_queue_left_by_an_earlier_version() {
    let broker = Broker::declared(3).await;
    let channel = broker.connection.create_channel().await.unwrap();
    let retired = format!("{}webhooks.events", broker.topology.prefix);
    channel
        .queue_declare(
            retired.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(broker.count(&retired).await, 0, "the old queue exists");
    broker.topology.declare(&channel).await.unwrap();
    // A passive declare of a queue that is gone closes the channel with 404.
    let gone = broker
        .connection
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            retired.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "the retired queue was not deleted");
    // And declaring again, with nothing to delete, still succeeds.
    broker.topology.declare(&channel).await.unwrap();
    broker.cleanup().await;
}

#[tokio::test]
async fn a_published_message_arrives_with_its_envelope_and_traceparent() {
    let broker = Broker::declared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let envelope = Envelope::new("command.authorize", serde_json::json!({"attempt": "att_1"}))
        .unwrap()
        .with_traceparent(Some(TRACEPARENT.to_owned()));
    publisher
        .publish(
            &broker.topology.commands_exchange(),
            "command.authorize",
            &envelope,
        )
        .await
        .unwrap();

    let delivery = broker.wait_get(&broker.commands_queue()).await;
    assert_eq!(Envelope::parse(&delivery.data).unwrap(), envelope);
    let properties = &delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some(envelope.id.as_str())
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str()),
        Some("command.authorize")
    );
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(traceparent_header(properties).as_deref(), Some(TRACEPARENT));
    // Commands do not leak into the events queue.
    assert_eq!(broker.count(&broker.events_queue()).await, 0);

    publisher.close().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn publishing_to_an_unroutable_key_is_an_error() {
    let broker = Broker::declared(3).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    let envelope = Envelope::new("nobody.listens", serde_json::json!({})).unwrap();
    let error = publisher
        .publish(
            &broker.topology.commands_exchange(),
            "nobody.listens",
            &envelope,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Unroutable { .. }), "{error}");

    // A missing exchange closes the channel: an error too, and the
    // publisher recovers for the next message.
    let error = publisher
        .publish(
            &format!("{}missing", broker.topology.prefix),
            "command.authorize",
            &envelope,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Broker(_)), "{error}");

    let routable = Envelope::new("command.capture", serde_json::json!({})).unwrap();
    publisher
        .publish(
            &broker.topology.commands_exchange(),
            "command.capture",
            &routable,
        )
        .await
        .unwrap();
    broker.wait_count(&broker.commands_queue(), 1).await;

    publisher.close().await;
    broker.cleanup().await;
}

/// Outcome replies go out without confirms: delivered to a live reply
/// queue, and dropped without an error (nor a closed channel) when the
/// queue is gone, so the next reply still goes out.
#[tokio::test]
async fn an_unconfirmed_publisher_delivers_replies_and_drops_those_to_a_missing_queue() {
    use snakepay_bus::reply::{OutcomeReply, declare_reply_queue, send_reply};

    let broker = Broker::undeclared(3).await;
    let queue = declare_reply_queue(&broker.channel).await.unwrap();
    let publisher = Publisher::connect_unconfirmed(&amqp_url()).await.unwrap();
    let reply = |intent: &str| OutcomeReply {
        payment_intent: intent.to_owned(),
        refund: None,
        answer: None,
    };
    send_reply(&publisher, "amq.gen-no-such-queue", &reply("pi_lost"))
        .await
        .unwrap();
    send_reply(&publisher, &queue, &reply("pi_1"))
        .await
        .unwrap();
    let delivery = broker.wait_get(&queue).await;
    let envelope = Envelope::parse(&delivery.data).unwrap();
    assert_eq!(OutcomeReply::from_envelope(&envelope), Some(reply("pi_1")));
    assert!(broker.get(&queue).await.is_none(), "only the one reply");
    publisher.close().await;
    let _ = broker.connection.close(200, "test done".into()).await;
}
