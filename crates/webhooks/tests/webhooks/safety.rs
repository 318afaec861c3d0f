//! What must never be sent: requests into private networks, and events to
//! endpoints that were deleted or disabled after the fan-out.

use snakepay_domain::effects::EventType;
use snakepay_store::webhook_deliveries::DeliveryStatus;
use snakepay_webhooks::WebhookSettings;

use crate::support::{Receiver, World, pass, settings};

#[tokio::test]
async fn a_private_network_url_is_refused_and_the_receiver_never_sees_a_request() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(0);
    let port = url::Url::parse(&receiver.base_url).unwrap().port().unwrap();
    // The same receiver by literal address, by a name that resolves to
    // loopback, and by an IPv4-mapped IPv6 address.
    let mut endpoints = Vec::new();
    for url in [
        receiver.url(),
        format!("http://localhost:{port}/hooks/{{id}}"),
        format!("http://[::ffff:127.0.0.1]:{port}/hooks/{{id}}"),
    ] {
        let (endpoint, secret) = world.endpoint(merchant, false, &url, &["*"]).await;
        receiver.expect(&endpoint, &secret);
        endpoints.push(endpoint);
    }
    let event = world
        .event(merchant, false, EventType::PaymentIntentSucceeded)
        .await;
    let guarded = world.dispatcher(WebhookSettings {
        allow_private_networks: false,
        ..settings()
    });

    pass(&guarded, 3).await;
    let seen: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert!(seen.is_empty(), "the receiver was reached at {seen:?}");
    let deliveries = world.deliveries(&event).await;
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries {
        // A refusal is a failed attempt like any other: the merchant can
        // fix the URL (or the DNS) within the retry window.
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        let attempts = world.attempts(delivery).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].http_status, None);
        let error = attempts[0].error.as_deref().unwrap();
        assert!(
            error.starts_with("refused:") && error.contains("not a public address"),
            "{error}"
        );
    }

    // The very same deliveries go through where private networks are
    // allowed, so the refusal above was the guard's doing.
    world.clock.set(
        deliveries
            .iter()
            .map(|d| d.next_attempt_at_ms)
            .max()
            .unwrap(),
    );
    pass(&world.dispatcher(settings()), 3).await;
    assert_eq!(receiver.received().len(), 3);
    receiver.assert_all_signed();
}

#[tokio::test]
async fn an_endpoint_deleted_or_disabled_after_the_fan_out_gets_nothing() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(1);
    let (deleted, deleted_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    let (disabled, disabled_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    let (kept, kept_secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&deleted, &deleted_secret);
    receiver.expect(&disabled, &disabled_secret);
    receiver.expect(&kept, &kept_secret);
    let event = world
        .event(merchant, false, EventType::ChargeCaptured)
        .await;
    assert_eq!(world.deliveries(&event).await.len(), 3);
    world.delete_endpoint(&deleted).await;
    world.disable_endpoint(&disabled).await;

    let dispatcher = world.dispatcher(settings());
    pass(&dispatcher, 3).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, url::Url::parse(&kept.url).unwrap().path());
    receiver.assert_all_signed();

    for delivery in world.deliveries(&event).await {
        let attempts = world.attempts(&delivery).await;
        assert_eq!(attempts.len(), 1);
        if delivery.endpoint_id == kept.id {
            assert_eq!(delivery.status, DeliveryStatus::Succeeded);
            continue;
        }
        assert_eq!(delivery.status, DeliveryStatus::Failed);
        let reason = delivery.last_error.unwrap();
        let expected = if delivery.endpoint_id == deleted.id {
            "deleted"
        } else {
            "disabled"
        };
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(attempts[0].error.as_deref(), Some(reason.as_str()));
    }
    // Dropped deliveries are not retried.
    world.clock.advance(std::time::Duration::from_secs(86_400));
    pass(&dispatcher, 0).await;
    assert_eq!(receiver.received().len(), 1);
}
