//! Deliveries that succeed: the body, the headers, the signature, who gets
//! what, and two dispatchers sharing the work.

use std::collections::HashMap;
use std::time::Duration;

use snakepay_domain::effects::EventType;
use snakepay_store::events;
use snakepay_store::objects;
use snakepay_store::webhook_deliveries::DeliveryStatus;
use snakepay_webhooks::{Clock, run_dispatcher};

use crate::support::{Receiver, World, pass, settings};

#[tokio::test]
async fn a_subscribed_event_is_delivered_once_with_a_valid_signature_and_the_exact_event_json() {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(1);
    let (endpoint, secret) = world
        .endpoint(
            merchant,
            false,
            &receiver.url(),
            &["payment_intent.succeeded"],
        )
        .await;
    receiver.expect(&endpoint, &secret);
    let event = world
        .event(merchant, false, EventType::PaymentIntentSucceeded)
        .await;
    let dispatcher = world.dispatcher(settings());

    pass(&dispatcher, 1).await;
    pass(&dispatcher, 0).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    receiver.assert_all_signed();
    let request = &received[0];
    // The exact bytes the API serves for GET /v1/events/{id}.
    let stored = events::find(world.shard(merchant), event.id, merchant, false)
        .await
        .unwrap()
        .unwrap();
    let expected = serde_json::to_vec(&objects::event(&stored, None)).unwrap();
    assert_eq!(request.body, expected);
    assert_eq!(request.json(), objects::event(&event, None));
    assert_eq!(request.event_id(), event.id.to_string());
    assert_eq!(request.json()["object"], "event");
    assert_eq!(request.json()["type"], "payment_intent.succeeded");
    assert_eq!(
        request.json()["data"]["object"]["metadata"]["note"],
        "ünïcode ✓"
    );
    assert_eq!(
        request.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        request.headers["user-agent"].to_str().unwrap(),
        "Snakepay/1.0 (+webhooks)"
    );
    assert_eq!(request.timestamp, Some(world.clock.now_ms() / 1000));

    let delivery = world.only_delivery(&event).await;
    assert_eq!(delivery.status, DeliveryStatus::Succeeded);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.endpoint_id, endpoint.id);
    assert_eq!(delivery.last_http_status, Some(200));
    assert_eq!(delivery.delivered_at_ms, Some(world.clock.now_ms()));
    let attempts = world.attempts(&delivery).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].attempt, 1);
    assert_eq!(attempts[0].http_status, Some(200));
    assert_eq!(attempts[0].error, None);
}

#[tokio::test]
async fn only_enabled_endpoints_of_the_same_merchant_and_mode_subscribed_to_the_type_or_to_everything_receive_it()
 {
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    let merchant = World::merchant(0);
    let url = receiver.url();
    let (exact, exact_secret) = world
        .endpoint(
            merchant,
            false,
            &url,
            &["charge.succeeded", "payment_intent.succeeded"],
        )
        .await;
    let (everything, everything_secret) = world.endpoint(merchant, false, &url, &["*"]).await;
    let (other_type, _) = world
        .endpoint(merchant, false, &url, &["payment_intent.created"])
        .await;
    let (disabled, _) = world.endpoint(merchant, false, &url, &["*"]).await;
    world.disable_endpoint(&disabled).await;
    // Live endpoints must be HTTPS; this one is never called.
    let (live, _) = world
        .endpoint(merchant, true, "https://127.0.0.1:9/hooks/{id}", &["*"])
        .await;
    let (someone_else, _) = world
        .endpoint(World::merchant(0), false, &url, &["*"])
        .await;
    receiver.expect(&exact, &exact_secret);
    receiver.expect(&everything, &everything_secret);
    let event = world
        .event(merchant, false, EventType::PaymentIntentSucceeded)
        .await;

    let mut targets: Vec<_> = world
        .deliveries(&event)
        .await
        .iter()
        .map(|d| d.endpoint_id)
        .collect();
    targets.sort();
    let mut expected = vec![exact.id, everything.id];
    expected.sort();
    assert_eq!(targets, expected);
    for excluded in [&other_type, &disabled, &live, &someone_else] {
        assert!(!targets.contains(&excluded.id));
    }

    pass(&world.dispatcher(settings()), 2).await;
    let mut paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    let mut expected: Vec<String> = [&exact, &everything]
        .iter()
        .map(|e| url::Url::parse(&e.url).unwrap().path().to_owned())
        .collect();
    expected.sort();
    assert_eq!(paths, expected);
    receiver.assert_all_signed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_running_at_once_deliver_each_event_exactly_once() {
    const EVENTS_PER_MERCHANT: usize = 15;
    let world = World::new().await;
    let receiver = Receiver::start(&world.clock).await;
    // Slow enough answers that the two dispatchers' passes overlap.
    receiver.delay(Duration::from_millis(20));
    let mut all_events = Vec::new();
    for shard in [0, 1] {
        let merchant = World::merchant(shard);
        let (endpoint, secret) = world
            .endpoint(merchant, false, &receiver.url(), &["*"])
            .await;
        receiver.expect(&endpoint, &secret);
        for _ in 0..EVENTS_PER_MERCHANT {
            let event = world
                .event(merchant, false, EventType::ChargeSucceeded)
                .await;
            all_events.push(event);
        }
    }
    let small_batches = snakepay_webhooks::WebhookSettings {
        batch_size: 3,
        max_concurrent_deliveries: 2,
        ..settings()
    };
    let first = world.dispatcher(small_batches.clone());
    let second = world.dispatcher(small_batches);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let watcher = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut done = 0;
            for event in &all_events {
                if world.only_delivery(event).await.status == DeliveryStatus::Succeeded {
                    done += 1;
                }
            }
            if done == all_events.len() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_tx.send(true).unwrap();
    };
    tokio::join!(
        run_dispatcher(&first, stopped(stop_rx.clone())),
        run_dispatcher(&second, stopped(stop_rx)),
        watcher,
    );

    let mut per_event: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *per_event.entry(request.event_id()).or_default() += 1;
    }
    assert_eq!(per_event.len(), all_events.len());
    for event in &all_events {
        assert_eq!(
            per_event.get(&event.id.to_string()),
            Some(&1),
            "{}",
            event.id
        );
        let delivery = world.only_delivery(event).await;
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(delivery.attempts, 1);
        assert_eq!(world.attempts(&delivery).await.len(), 1);
    }
    receiver.assert_all_signed();
}
