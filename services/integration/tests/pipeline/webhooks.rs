//! Merchant webhooks end to end: every event of real payments reaches the
//! merchant's endpoint, signed, including after the endpoint failed for a
//! while. The receiver checks each signature with its own implementation of
//! the scheme in API.md.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::{Pipeline, WAIT, id};

#[derive(Default)]
struct Receiver {
    secret: String,
    /// Requests still to refuse with a 500 (the endpoint "is down").
    failures_left: usize,
    refused_event_ids: Vec<String>,
    delivered_event_ids: Vec<String>,
    bad_signatures: usize,
}

/// `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
fn signature_is_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((name, value)) = item.split_once('=') else {
            return false;
        };
        match name {
            "t" => timestamp = Some(value.to_owned()),
            "v1" => signatures.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    if (snakepay_store::unix_now() - seconds).abs() > 300 {
        return false;
    }
    let mut payload = timestamp.into_bytes();
    payload.push(b'.');
    payload.extend_from_slice(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&payload);
    let expected = hex::encode(mac.finalize().into_bytes());
    signatures.contains(&expected)
}

async fn receive(
    State(receiver): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let event_id = event["id"].as_str().unwrap().to_owned();
    assert_eq!(event["object"], "event");
    let mut receiver = receiver.lock().unwrap();
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !signature_is_valid(&receiver.secret, header, &body) {
        receiver.bad_signatures += 1;
        return StatusCode::BAD_REQUEST;
    }
    if receiver.failures_left > 0 {
        receiver.failures_left -= 1;
        receiver.refused_event_ids.push(event_id);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    receiver.delivered_event_ids.push(event_id);
    StatusCode::OK
}

#[tokio::test]
async fn the_merchant_receives_every_event_signed_even_after_its_endpoint_failed_for_a_while() {
    let pipeline = Pipeline::start_with(
        |_| {},
        "webhooks.allow_private_networks = true\n\
         webhooks.initial_backoff_ms = 100\n\
         webhooks.max_backoff_ms = 400\n\
         webhooks.poll_interval_ms = 50",
    )
    .await;
    let merchant = pipeline.merchant().await;
    let receiver = Arc::new(Mutex::new(Receiver {
        failures_left: 4,
        ..Receiver::default()
    }));
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(Arc::clone(&receiver));
    let server = snakepay_http::spawn("127.0.0.1:0", app, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let url = format!("{}/hooks", server.url());
    let (status, endpoint) = pipeline
        .post(
            &merchant,
            "/v1/webhook_endpoints",
            &[("url", &url), ("enabled_events[]", "*")],
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");
    receiver.lock().unwrap().secret = endpoint["secret"].as_str().unwrap().to_owned();

    let paid = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "automatic")
        .await;
    pipeline.settled(&merchant, &id(&paid)).await;
    let declined = pipeline
        .pay(&merchant, "4000000000000002", 500, "automatic")
        .await;
    pipeline.settled(&merchant, &id(&declined)).await;
    let (status, refund) = pipeline
        .post(
            &merchant,
            "/v1/refunds",
            &[("payment_intent", &id(&paid)), ("amount", "400")],
        )
        .await;
    assert_eq!(status, 200, "{refund}");
    pipeline.wait_for_refund(&merchant, &id(&refund)).await;

    // Every event the merchant has, as the API lists them.
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
        let (delivered, refused, bad) = {
            let r = receiver.lock().unwrap();
            (
                r.delivered_event_ids
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
                r.refused_event_ids.clone(),
                r.bad_signatures,
            )
        };
        assert_eq!(bad, 0, "every signature verifies");
        if delivered == all && refused.len() == 4 {
            assert!(all.len() >= 10, "{} events", all.len());
            // What was refused came again, with the same event ID.
            for event_id in &refused {
                assert!(delivered.contains(event_id), "{event_id} redelivered");
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {} of {} events ({} refused)",
            delivered.len(),
            all.len(),
            refused.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Each event reached the endpoint once (redeliveries only after a refusal).
    let delivered = receiver.lock().unwrap().delivered_event_ids.clone();
    let unique: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "no event delivered twice");
    pipeline.finish().await;
}
