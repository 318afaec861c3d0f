//! Failing endpoints: backoff, the retry window, and a dispatcher that dies
//! mid-attempt. The test clock stands in for days of waiting.

use std::time::Duration;

use snakepay_domain::effects::EventType;
use snakepay_store::webhook_deliveries::{self, DeliveryStatus};
use snakepay_webhooks::{Clock, WebhookSettings};

use crate::support::{Receiver, Reply, World, advance_to, pass, settings};

#[tokio::test]
async fn a_failing_endpoint_gets_the_same_event_again_after_backoff_with_every_attempt_recorded() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    // Two errors, then an answer slower than the timeout, then success.
    receiver.script(&[
        Reply::Status(500),
        Reply::Status(503),
        Reply::After(Duration::from_secs(3)),
        Reply::Status(200),
    ]);
    let merchant = World::merchant(0);
    let (endpoint, secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&endpoint, &secret);
    let event = world
        .event(merchant, false, EventType::PaymentIntentPaymentFailed)
        .await;
    let settings = WebhookSettings {
        attempt_timeout_ms: 500,
        ..settings()
    };
    let dispatcher = world.dispatcher(settings.clone());

    let mut waits_ms = Vec::new();
    for attempt in 1..=3 {
        let started_ms = world.clock.now_ms();
        pass(&dispatcher, 1).await;
        let delivery = world.only_delivery(&event).await;
        assert_eq!(
            delivery.status,
            DeliveryStatus::Pending,
            "attempt {attempt}"
        );
        assert_eq!(delivery.attempts, attempt);
        let wait_ms = delivery.next_attempt_at_ms - started_ms;
        // Equal jitter: between half and all of initial · 2^(attempt−1).
        let nominal = i64::try_from(settings.initial_backoff_ms).unwrap() << (attempt - 1);
        assert!(
            wait_ms >= nominal / 2 && wait_ms <= nominal,
            "attempt {attempt}: waited {wait_ms} ms, nominal {nominal} ms"
        );
        waits_ms.push(wait_ms);
        // Not due before its time: nothing happens, however often we poll.
        world.clock.set(delivery.next_attempt_at_ms - 1);
        pass(&dispatcher, 0).await;
        advance_to(&world.clock, &delivery);
    }
    assert!(waits_ms.windows(2).all(|w| w[0] <= w[1]), "{waits_ms:?}");
    pass(&dispatcher, 1).await;
    pass(&dispatcher, 0).await;

    let delivery = world.only_delivery(&event).await;
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(delivery.attempts, 4);
    let attempts = world.attempts(&delivery).await;
    let statuses: Vec<_> = attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, [Some(500), Some(503), None, Some(200)]);
    assert!(
        attempts[2].error.as_deref().unwrap().contains("timeout"),
        "{:?}",
        attempts[2]
    );
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );

    // The same event and the same bytes every time; a fresh, valid
    // signature for the time of each attempt.
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    receiver.assert_all_signed();
    for request in &received {
        assert_eq!(request.event_id(), event.id.to_string());
        assert_eq!(request.body, received[0].body);
    }
    let timestamps: Vec<i64> = received.iter().map(|r| r.timestamp.unwrap()).collect();
    assert!(timestamps.windows(2).all(|t| t[0] < t[1]), "{timestamps:?}");
    for (request, attempt) in received.iter().zip(&attempts) {
        assert_eq!(request.timestamp, Some(attempt.at_ms / 1000));
    }
}

#[tokio::test]
async fn a_delivery_still_failing_when_the_retry_window_ends_is_failed() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    receiver.always(Reply::Status(500));
    let merchant = World::merchant(1);
    let (endpoint, secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&endpoint, &secret);
    let event = world
        .event(merchant, false, EventType::ChargeRefunded)
        .await;
    let settings = settings();
    let window_ms = i64::try_from(settings.retry_window_seconds * 1000).unwrap();
    let dispatcher = world.dispatcher(settings.clone());

    // About 30 attempts fit in 3 days with these settings; 200 means a bug.
    let mut passes = 0;
    let delivery = loop {
        pass(&dispatcher, 1).await;
        passes += 1;
        let delivery = world.only_delivery(&event).await;
        if delivery.status != DeliveryStatus::Pending || passes == 200 {
            break delivery;
        }
        advance_to(&world.clock, &delivery);
    };
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    let first = delivery.first_attempt_at_ms.unwrap();
    let attempts = world.attempts(&delivery).await;
    assert_eq!(attempts.len(), passes);
    assert_eq!(i32::try_from(passes).unwrap(), delivery.attempts);
    assert!(attempts.iter().all(|a| a.http_status == Some(500)));
    // The last try is at the very end of the window, none after it.
    assert_eq!(attempts.last().unwrap().at_ms, first + window_ms);
    assert!(attempts.iter().all(|a| a.at_ms <= first + window_ms));
    // Backoff reached its cap: no gap longer than max_backoff_ms.
    let max_backoff_ms = i64::try_from(settings.max_backoff_ms).unwrap();
    assert!(
        attempts
            .windows(2)
            .all(|w| w[1].at_ms - w[0].at_ms <= max_backoff_ms)
    );
    assert!(passes > 12, "only {passes} attempts in 3 days");
    assert_eq!(receiver.received().len(), passes);
    receiver.assert_all_signed();

    // Given up means given up.
    world.clock.advance(Duration::from_secs(7 * 86_400));
    pass(&dispatcher, 0).await;
    assert_eq!(receiver.received().len(), passes);
}

#[tokio::test]
async fn a_dispatcher_that_dies_mid_attempt_only_delays_the_delivery() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(0);
    let (endpoint, secret) = world
        .endpoint(merchant, false, &receiver.url(), &["*"])
        .await;
    receiver.expect(&endpoint, &secret);
    let event = world.event(merchant, false, EventType::RefundUpdated).await;
    let dispatcher = world.dispatcher(settings());

    // A dispatcher claims the delivery and dies before recording anything.
    let now_ms = world.clock.now_ms();
    let lease_until_ms = now_ms + 60_000;
    let claimed = webhook_deliveries::claim_due(world.shard(merchant), now_ms, lease_until_ms, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);

    // While its lease holds, nobody else takes the delivery...
    pass(&dispatcher, 0).await;
    world.clock.set(lease_until_ms - 1);
    pass(&dispatcher, 0).await;
    assert!(receiver.received().is_empty());
    // ...and afterwards it is simply attempted again.
    world.clock.set(lease_until_ms);
    pass(&dispatcher, 1).await;
    let delivery = world.only_delivery(&event).await;
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(delivery.attempts, 2);
    assert_eq!(delivery.first_attempt_at_ms, Some(now_ms));
    assert_eq!(receiver.received().len(), 1);
    receiver.assert_all_signed();

    // The dead dispatcher's late report cannot undo the success.
    let late = webhook_deliveries::AttemptRecord {
        delivery_id: delivery.id,
        attempt: 1,
        at_ms: now_ms,
        http_status: Some(500),
        error: None,
        latency_ms: 10,
    };
    let changed = webhook_deliveries::record_attempt(
        world.shard(merchant),
        &late,
        webhook_deliveries::Resolution::RetryAt(now_ms + 1),
    )
    .await
    .unwrap();
    assert!(!changed);
    assert_eq!(
        world.only_delivery(&event).await.status,
        DeliveryStatus::Succeeded
    );
    assert_eq!(world.attempts(&delivery).await.len(), 2);
}
