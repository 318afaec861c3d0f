//! The fan-out: one delivery per subscribed endpoint, never two, and the
//! right answer to the broker for every kind of message.

use std::time::Duration;

use snakepay_bus::Outcome;
use snakepay_domain::effects::EventType;
use snakepay_domain::ids::EventId;
use snakepay_store::Store;
use snakepay_webhooks::fan_out_at;
use sqlx::postgres::PgPoolOptions;

use crate::support::{REGION, Receiver, World, pass, settings};

#[tokio::test]
async fn a_redelivered_announcement_creates_no_second_delivery() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(0);
    let (endpoint, secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&endpoint, &secret);
    let event = world.event(merchant, false, EventType::RefundCreated).await;
    let mut message = world.announcement(&event).await;
    assert_eq!(
        fan_out_at(&world.db.store, &message, &world.clock).await,
        Outcome::Ack
    );
    message.redelivered = true;
    world.clock.advance(Duration::from_secs(5));
    assert_eq!(
        fan_out_at(&world.db.store, &message, &world.clock).await,
        Outcome::Ack
    );
    assert_eq!(world.deliveries(&event).await.len(), 1);

    let dispatcher = world.dispatcher(settings());
    pass(&dispatcher, 1).await;
    // Once delivered, yet another copy of the announcement changes nothing.
    assert_eq!(
        fan_out_at(&world.db.store, &message, &world.clock).await,
        Outcome::Ack
    );
    pass(&dispatcher, 0).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(world.deliveries(&event).await.len(), 1);
}

#[tokio::test]
async fn an_endpoint_deleted_before_the_event_gets_no_delivery() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(1);
    let (endpoint, secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&endpoint, &secret);
    world.delete_endpoint(&endpoint).await;
    let event = world
        .event(merchant, false, EventType::CustomerCreated)
        .await;
    world.announce(&event).await;
    assert!(world.deliveries(&event).await.is_empty());
    pass(&world.dispatcher(settings()), 0).await;
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn malformed_announcements_are_rejected_and_unknown_events_acknowledged() {
    let world = World::new().await;
    let merchant = World::merchant(0);
    let event = world
        .event(merchant, false, EventType::PaymentIntentCreated)
        .await;
    let good = world.announcement(&event).await;
    let store = &world.db.store;
    let clock = &world.clock;

    let mut not_an_event = good.clone();
    not_an_event.routing_key = "command.authorize".to_owned();
    assert_eq!(
        fan_out_at(store, &not_an_event, clock).await,
        Outcome::Reject
    );

    let mut wrong_type = good.clone();
    wrong_type.routing_key = "event.charge.succeeded".to_owned();
    assert_eq!(fan_out_at(store, &wrong_type, clock).await, Outcome::Reject);

    for broken in [
        serde_json::json!({}),
        serde_json::json!("event"),
        serde_json::json!({"event_id": "nope", "merchant_id": merchant.to_string(),
            "livemode": false, "type": "payment_intent.created"}),
        serde_json::json!({"event_id": event.id.to_string(), "merchant_id": "acct_bad",
            "livemode": false, "type": "payment_intent.created"}),
        serde_json::json!({"event_id": event.id.to_string(), "merchant_id": merchant.to_string(),
            "livemode": "no", "type": "payment_intent.created"}),
        // The event's ID names another shard than its merchant's.
        serde_json::json!({"event_id": EventId::generate(REGION, snakepay_domain::ids::ShardNumber(1)).unwrap().to_string(),
            "merchant_id": merchant.to_string(), "livemode": false, "type": "payment_intent.created"}),
    ] {
        let mut message = good.clone();
        message.envelope.payload = broken.clone();
        assert_eq!(
            fan_out_at(store, &message, clock).await,
            Outcome::Reject,
            "{broken}"
        );
    }

    // Well-formed, but no such event (or not in this mode): nothing a
    // redelivery could fix.
    let mut unknown = good.clone();
    unknown.envelope.payload["event_id"] = EventId::generate(REGION, merchant.shard())
        .unwrap()
        .to_string()
        .into();
    assert_eq!(fan_out_at(store, &unknown, clock).await, Outcome::Ack);
    let mut other_mode = good.clone();
    other_mode.envelope.payload["livemode"] = true.into();
    assert_eq!(fan_out_at(store, &other_mode, clock).await, Outcome::Ack);

    // A merchant on a shard this region does not have.
    let mut far_away = good.clone();
    let far_merchant = World::merchant(7);
    far_away.envelope.payload["merchant_id"] = far_merchant.to_string().into();
    far_away.envelope.payload["event_id"] = EventId::generate(REGION, far_merchant.shard())
        .unwrap()
        .to_string()
        .into();
    assert_eq!(fan_out_at(store, &far_away, clock).await, Outcome::Reject);

    assert_eq!(fan_out_at(store, &good, clock).await, Outcome::Ack);
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_asks_for_a_redelivery() {
    let world = World::new().await;
    let merchant = World::merchant(0);
    let event = world.event(merchant, false, EventType::ChargeFailed).await;
    let message = world.announcement(&event).await;
    let server = snakepay_store::testing::server_url();
    let unreachable = || {
        PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&format!("{server}/snakepay_no_such_database"))
            .unwrap()
    };
    let broken = Store::from_pools(unreachable(), vec![unreachable(), unreachable()]);
    assert_eq!(
        fan_out_at(&broken, &message, &world.clock).await,
        Outcome::Retry
    );
}
