//! The fan-out: recording an event creates, in the same transaction, one
//! delivery per subscribed endpoint, never one for an endpoint that is
//! deleted, disabled, of the other mode or not subscribed.

use snakepay_domain::effects::EventType;

use crate::support::{Receiver, World, pass, settings};

#[tokio::test]
async fn an_endpoint_deleted_or_disabled_before_the_event_gets_no_delivery() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(1);
    let (deleted, deleted_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    let (disabled, disabled_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&deleted, &deleted_secret);
    receiver.expect(&disabled, &disabled_secret);
    world.delete_endpoint(&deleted).await;
    world.disable_endpoint(&disabled).await;
    let event = world
        .event(merchant, false, EventType::CustomerCreated)
        .await;
    assert!(world.deliveries(&event).await.is_empty());
    pass(&world.dispatcher(settings()), 0).await;
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn only_endpoints_of_the_mode_subscribed_to_the_type_get_a_delivery() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(0);
    let (wildcard, wildcard_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    let (refunds, refunds_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["refund.created"])
        .await;
    let (charges, _) = world
        .endpoint(merchant, false, &receiver.url(), &["charge.succeeded"])
        .await;
    // Live endpoints take HTTPS only; it is never called here.
    let (live, _) = world
        .endpoint(merchant, true, "https://live.example/hook", &["*"])
        .await;
    let (other_merchant, _) = world
        .endpoint(World::merchant(0), false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&wildcard, &wildcard_secret);
    receiver.expect(&refunds, &refunds_secret);

    let event = world.event(merchant, false, EventType::RefundCreated).await;
    let mut endpoints: Vec<String> = world
        .deliveries(&event)
        .await
        .iter()
        .map(|delivery| delivery.endpoint_id.to_string())
        .collect();
    endpoints.sort();
    let mut expected = vec![wildcard.id.to_string(), refunds.id.to_string()];
    expected.sort();
    assert_eq!(endpoints, expected);
    for unexpected in [&charges, &live, &other_merchant] {
        assert!(!endpoints.contains(&unexpected.id.to_string()));
    }

    pass(&world.dispatcher(settings()), 2).await;
    assert_eq!(receiver.received().len(), 2);
    receiver.assert_all_signed();
}
