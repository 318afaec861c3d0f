//! The journal: what the simulator did survives a restart.

use reqwest::StatusCode;
use serde_json::json;
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, authorization_body, key, section};

#[tokio::test]
async fn the_record_survives_a_restart_on_the_same_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("sim-journal.jsonl");
    let with_journal = || sim::ProcessorSimSection {
        journal_path: Some(journal.clone()),
        ..section()
    };

    let first = TestSim::start_with(with_journal()).await;
    let auth_key = key("journal");
    let (_, authorization) = first
        .authorize(sim::CARD_APPROVED_VISA, false, &auth_key)
        .await;
    let id = authorization["id"].as_str().unwrap().to_owned();
    first
        .call(
            &format!("/v1/authorizations/{id}/capture"),
            &key("capture"),
            &json!({"amount": 900}),
        )
        .await;
    first
        .call(
            "/v1/refunds",
            &key("refund"),
            &json!({"authorization": id, "amount": 50}),
        )
        .await;
    let before = first.operations().await;
    first.stop().await;

    let second = TestSim::start_with(with_journal()).await;
    let after = second.operations().await;
    assert_eq!(after, before);
    assert_eq!(after["operations"].as_array().unwrap().len(), 3);

    // Idempotent replays still work after the restart...
    let (status, replayed) = second
        .call(
            "/v1/authorizations",
            &auth_key,
            &authorization_body(sim::CARD_APPROVED_VISA, 1_000, false),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed, authorization);
    let (status, _) = second.inquiry(&auth_key).await;
    assert_eq!(status, StatusCode::OK);
    // ...and so do the money rules: only 850 is left to refund.
    let (status, body) = second
        .call(
            "/v1/refunds",
            &key("refund"),
            &json!({"authorization": id, "amount": 851}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = second
        .call("/v1/refunds", &key("refund"), &json!({"authorization": id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["amount"], 850);
    let operations = second.operations().await;
    let last = operations["operations"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["seq"], 5);
    second.stop().await;
}

#[tokio::test]
async fn a_second_simulator_cannot_share_a_journal_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let with_journal = sim::ProcessorSimSection {
        journal_path: Some(dir.path().join("busy.jsonl")),
        ..section()
    };
    let first = TestSim::start_with(with_journal.clone()).await;
    let config = sim::SimConfig {
        processor_sim: with_journal,
        ..sim::SimConfig::default()
    };
    let error = sim::start(config).await.err().unwrap();
    assert!(format!("{error:#}").contains("in use"), "{error:#}");
    first.stop().await;
}
