//! Failure modes: 500 before and after the work, timeouts after the work,
//! slow answers, and the run-time fault settings.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, authorization_body, key};

#[tokio::test]
async fn a_timeout_after_work_is_resolved_by_inquiry_and_done_once() {
    // A long hold, so "the retry did not wait for it" is unmistakable;
    // shutdown cuts it short.
    let sim = TestSim::start_with(sim::ProcessorSimSection {
        timeout_ms: 20_000,
        ..crate::helpers::section()
    })
    .await;
    let k = key("timeout");
    let body = authorization_body(sim::CARD_TIMEOUT_AFTER_WORK, 1_200, true);
    let result = sim
        .client
        .post(sim.url("/v1/authorizations"))
        .bearer_auth(crate::helpers::API_KEY)
        .header("Idempotency-Key", &k)
        .timeout(Duration::from_millis(200))
        .json(&body)
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());

    let (status, inquiry) = sim.inquiry(&k).await;
    assert_eq!(status, StatusCode::OK, "{inquiry}");
    assert_eq!(inquiry["response"]["status"], "captured");
    assert_eq!(inquiry["response"]["amount_captured"], 1_200);

    // A retry with the same key gets the stored answer at once.
    let started = Instant::now();
    let (status, retried) = sim.call("/v1/authorizations", &k, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(10_000));
    assert_eq!(retried, inquiry["response"]);
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_500_after_work_is_resolved_by_inquiry_and_done_once() {
    let sim = TestSim::start().await;
    let k = key("after");
    let body = authorization_body(sim::CARD_FAIL_AFTER_WORK, 800, false);
    let (status, error) = sim.call("/v1/authorizations", &k, &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error["error"], "internal_error");

    let (status, inquiry) = sim.inquiry(&k).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(inquiry["response"]["status"], "approved");
    let (status, retried) = sim.call("/v1/authorizations", &k, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(retried, inquiry["response"]);
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_500_before_work_leaves_no_record() {
    let sim = TestSim::start().await;
    let k = key("before");
    let body = authorization_body(sim::CARD_FAIL_BEFORE_WORK, 800, false);
    let (status, error) = sim.call("/v1/authorizations", &k, &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error["error"], "internal_error");
    let (status, inquiry) = sim.inquiry(&k).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(inquiry["error"], "unknown_operation");
    assert!(
        sim.operations().await["operations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_slow_approval_answers_after_the_configured_delay() {
    let sim = TestSim::start().await;
    let started = Instant::now();
    let (status, body) = sim
        .authorize(sim::CARD_SLOW_APPROVAL, false, &key("slow"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.stop().await;
}

#[tokio::test]
async fn the_config_endpoint_reads_and_changes_the_fault_settings() {
    let sim = TestSim::start().await;
    let current: Value = sim.get("/_sim/config").await.json().await.unwrap();
    assert_eq!(current["failure_rate"], 0.0);
    assert_eq!(current["timeout_ms"], 1_500);

    let changed = sim.configure(&json!({"failure_rate": 1.0})).await;
    assert_eq!(changed["failure_rate"], 1.0);
    assert_eq!(changed["timeout_ms"], 1_500);
    // Every fresh operation now fails before the work...
    let k = key("rate");
    let (status, _) = sim.authorize(sim::CARD_APPROVED_VISA, false, &k).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(sim.inquiry(&k).await.0, StatusCode::NOT_FOUND);
    // ...and once the fault clears, a retry with the same key does it once.
    sim.configure(&json!({"failure_rate": 0.0})).await;
    let (status, _) = sim.authorize(sim::CARD_APPROVED_VISA, false, &k).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);

    // Every fresh operation is done and then answered 500.
    sim.configure(&json!({"failure_after_work_rate": 1.0}))
        .await;
    let k = key("rate");
    let (status, _) = sim.authorize(sim::CARD_APPROVED_VISA, false, &k).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(sim.inquiry(&k).await.0, StatusCode::OK);

    // Every fresh operation is done and then answered too late.
    sim.configure(&json!({"failure_after_work_rate": 0.0, "timeout_after_work_rate": 1.0, "timeout_ms": 1000}))
        .await;
    let k = key("rate");
    let result = sim
        .client
        .post(sim.url("/v1/authorizations"))
        .bearer_auth(crate::helpers::API_KEY)
        .header("Idempotency-Key", &k)
        .timeout(Duration::from_millis(200))
        .json(&authorization_body(sim::CARD_APPROVED_VISA, 1_000, false))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(sim.inquiry(&k).await.0, StatusCode::OK);

    // Invalid settings name the field and change nothing.
    let response = sim
        .client
        .post(sim.url("/_sim/config"))
        .bearer_auth(crate::helpers::API_KEY)
        .json(&json!({"failure_rate": 0.5, "failure_after_work_rate": 0.8}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["param"], "failure_rate");
    let current: Value = sim.get("/_sim/config").await.json().await.unwrap();
    assert_eq!(current["timeout_after_work_rate"], 1.0);
    sim.stop().await;
}

/// The statuses of `count` fresh authorizations under the current settings.
async fn outcomes(sim: &TestSim, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let (status, _) = sim
            .authorize(sim::CARD_APPROVED_VISA, false, &key("seeded"))
            .await;
        statuses.push(status.as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_seed_makes_the_faults_deterministic() {
    let sim = TestSim::start().await;
    let settings = json!({"failure_rate": 0.3, "failure_after_work_rate": 0.3, "seed": 7});
    sim.configure(&settings).await;
    let first = outcomes(&sim, 30).await;
    sim.configure(&settings).await;
    let second = outcomes(&sim, 30).await;
    assert_eq!(first, second);
    assert!(first.contains(&200) && first.contains(&500), "{first:?}");
    // Another simulator with the same seed in its start-up config agrees.
    let other = TestSim::start_with(sim::ProcessorSimSection {
        failure_rate: 0.3,
        failure_after_work_rate: 0.3,
        seed: Some(7),
        ..crate::helpers::section()
    })
    .await;
    assert_eq!(outcomes(&other, 30).await, first);
    sim.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn an_operation_still_running_is_reported_in_progress_not_unknown() {
    let sim = std::sync::Arc::new(
        TestSim::start_with(sim::ProcessorSimSection {
            slow_ms: 2_000,
            ..crate::helpers::section()
        })
        .await,
    );
    let k = key("slow");
    let first = {
        let (sim, k) = (std::sync::Arc::clone(&sim), k.clone());
        tokio::spawn(async move { sim.authorize(sim::CARD_SLOW_APPROVAL, false, &k).await })
    };
    // Until the request arrives the key is unknown; then it is in progress
    // for the two seconds the slow card takes.
    let (mut status, mut inquiry) = sim.inquiry(&k).await;
    while status == StatusCode::NOT_FOUND {
        tokio::time::sleep(Duration::from_millis(10)).await;
        (status, inquiry) = sim.inquiry(&k).await;
    }
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(inquiry["error"], "operation_in_progress");
    // A retry meanwhile waits for the first and gets the same answer.
    let (status, retried) = sim.authorize(sim::CARD_SLOW_APPROVAL, false, &k).await;
    assert_eq!(status, StatusCode::OK);
    let (_, original) = first.await.unwrap();
    assert_eq!(retried, original);
    assert_eq!(sim.inquiry(&k).await.0, StatusCode::OK);
    assert_eq!(sim.operations_with_key(&k).await.len(), 1);
    std::sync::Arc::try_unwrap(sim).ok().unwrap().stop().await;
}
