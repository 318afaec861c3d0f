//! Notifications of capture, void and refund, and their retries.

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{Receiver, TestSim, independently_verified, key, section_notifying};

#[tokio::test]
async fn capture_void_and_refund_are_notified_but_the_answer_does_not_wait() {
    let receiver = Receiver::start(0).await;
    let sim = TestSim::start_with(section_notifying(&receiver)).await;
    let (_, first) = sim
        .authorize(sim::CARD_APPROVED_VISA, false, &key("auth"))
        .await;
    let (_, second) = sim
        .authorize(sim::CARD_APPROVED_VISA, false, &key("auth"))
        .await;
    let first_id = first["id"].as_str().unwrap();
    let capture_key = key("capture");
    sim.call(
        &format!("/v1/authorizations/{first_id}/capture"),
        &capture_key,
        &json!({}),
    )
    .await;
    sim.call(
        "/v1/refunds",
        &key("refund"),
        &json!({"authorization": first_id, "amount": 10}),
    )
    .await;
    sim.call(
        &format!("/v1/authorizations/{}/void", second["id"].as_str().unwrap()),
        &key("void"),
        &json!({}),
    )
    .await;
    // A refused operation is not a state change.
    let (status, _) = sim
        .call(
            &format!("/v1/authorizations/{first_id}/void"),
            &key("void"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let delivered = receiver.delivered(3).await;
    let mut types: Vec<String> = Vec::new();
    for (headers, body) in &delivered {
        assert!(independently_verified(
            headers["sim-signature"].to_str().unwrap(),
            body
        ));
        let notification: Value = serde_json::from_slice(body).unwrap();
        types.push(notification["type"].as_str().unwrap().to_owned());
        if notification["operation"] == "capture" {
            assert_eq!(notification["idempotency_key"], capture_key.as_str());
        }
        if notification["type"] == "refund.succeeded" {
            assert_eq!(notification["data"]["refund"]["amount"], 10);
        }
    }
    types.sort();
    assert_eq!(
        types,
        [
            "authorization.captured",
            "authorization.voided",
            "refund.succeeded"
        ]
    );
    // Authorizations themselves are answered synchronously, not notified.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(receiver.received().len(), 3);
    sim.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_notification_again() {
    let receiver = Receiver::start(2).await;
    let sim = TestSim::start_with(section_notifying(&receiver)).await;
    let (_, authorization) = sim
        .authorize(sim::CARD_APPROVED_VISA, false, &key("auth"))
        .await;
    sim.call(
        &format!(
            "/v1/authorizations/{}/void",
            authorization["id"].as_str().unwrap()
        ),
        &key("void"),
        &json!({}),
    )
    .await;
    receiver.delivered(1).await;
    let attempts = receiver.received();
    assert_eq!(attempts.len(), 3);
    let statuses: Vec<u16> = attempts
        .iter()
        .map(|(_, _, status)| status.as_u16())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    for (headers, body, _) in &attempts {
        assert_eq!(body, &attempts[0].1, "same body on every attempt");
        assert!(independently_verified(
            headers["sim-signature"].to_str().unwrap(),
            body
        ));
    }
    sim.stop().await;
}
