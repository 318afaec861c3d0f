//! Idempotency keys and the status inquiry.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, authorization_body, key};

#[tokio::test]
async fn a_replay_returns_the_identical_answer_and_is_recorded_once() {
    let sim = TestSim::start().await;
    let k = key("replay");
    let first = sim
        .post(
            "/v1/authorizations",
            &k,
            &authorization_body(sim::CARD_APPROVED_VISA, 700, false),
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();
    let second = sim
        .post(
            "/v1/authorizations",
            &k,
            &authorization_body(sim::CARD_APPROVED_VISA, 700, false),
        )
        .await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.headers()["idempotency-key"], k.as_str());
    assert_eq!(second.bytes().await.unwrap(), first_body);
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);

    // Refusals are answers too: replayed, not re-evaluated.
    let id = serde_json::from_slice::<serde_json::Value>(&first_body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refund_key = key("refund");
    let refund = json!({"authorization": id, "amount": 100});
    let (status, refused) = sim.call("/v1/refunds", &refund_key, &refund).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let capture_key = key("capture");
    sim.call(
        &format!("/v1/authorizations/{id}/capture"),
        &capture_key,
        &json!({}),
    )
    .await;
    let (status, again) = sim.call("/v1/refunds", &refund_key, &refund).await;
    assert_eq!((status, again), (StatusCode::CONFLICT, refused));
    sim.stop().await;
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_refused() {
    let sim = TestSim::start().await;
    let k = key("mismatch");
    sim.authorize(sim::CARD_APPROVED_VISA, false, &k).await;
    for body in [
        authorization_body(sim::CARD_APPROVED_VISA, 701, false),
        authorization_body(sim::CARD_APPROVED_MASTERCARD, 1_000, false),
        authorization_body(sim::CARD_APPROVED_VISA, 1_000, true),
    ] {
        let (status, error) = sim.call("/v1/authorizations", &k, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error["error"], "idempotency_mismatch");
    }
    // The same key on another endpoint is a different request too.
    let (status, error) = sim
        .call("/v1/refunds", &k, &json!({"authorization": "auth_x"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"], "idempotency_mismatch");
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_mutating_request_without_a_key_is_refused() {
    let sim = TestSim::start().await;
    let response = sim
        .client
        .post(sim.url("/v1/authorizations"))
        .bearer_auth(crate::helpers::API_KEY)
        .json(&authorization_body(sim::CARD_APPROVED_VISA, 100, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "idempotency_key_required");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_do_the_work_once() {
    let sim = Arc::new(TestSim::start().await);
    // Some latency so the requests really overlap.
    sim.configure(&json!({"latency_ms": 20, "jitter_ms": 10}))
        .await;
    let k = key("concurrent");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let sim = Arc::clone(&sim);
            let k = k.clone();
            tokio::spawn(async move {
                let response = sim
                    .post(
                        "/v1/authorizations",
                        &k,
                        &authorization_body(sim::CARD_APPROVED_VISA, 900, true),
                    )
                    .await;
                (response.status(), response.bytes().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        bodies.push(body);
    }
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    let operations = sim.operations_with_key(&k).await;
    assert_eq!(operations.len(), 1);
    assert_eq!(
        sim.operations().await["authorizations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    Arc::try_unwrap(sim).ok().unwrap().stop().await;
}

#[tokio::test]
async fn the_status_inquiry_knows_performed_operations_only() {
    let sim = TestSim::start().await;
    let k = key("inquiry");
    let (_, body) = sim.authorize(sim::CARD_APPROVED_VISA, false, &k).await;
    let (status, inquiry) = sim.inquiry(&k).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inquiry["operation"], "authorization");
    assert_eq!(inquiry["response_status"], 200);
    assert_eq!(inquiry["response"], body);
    assert_eq!(inquiry["authorization"]["status"], "approved");

    // The current state follows later changes; the stored answer does not.
    let id = body["id"].as_str().unwrap();
    sim.call(
        &format!("/v1/authorizations/{id}/capture"),
        &key("capture"),
        &json!({}),
    )
    .await;
    let (_, inquiry) = sim.inquiry(&k).await;
    assert_eq!(inquiry["response"]["status"], "approved");
    assert_eq!(inquiry["authorization"]["status"], "captured");

    let (status, unknown) = sim.inquiry("never-sent").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["error"], "unknown_operation");
    sim.stop().await;
}
