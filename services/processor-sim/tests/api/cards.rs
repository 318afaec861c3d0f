//! Each test card's outcome, and the card checks (Luhn, expiry, CVC).

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, authorization_body, key};

#[tokio::test]
async fn each_test_card_gets_its_documented_outcome() {
    let sim = TestSim::start().await;
    let cases: [(&str, &str, Value, &str); 10] = [
        (sim::CARD_APPROVED_VISA, "approved", Value::Null, "visa"),
        (
            sim::CARD_APPROVED_MASTERCARD,
            "approved",
            Value::Null,
            "mastercard",
        ),
        (sim::CARD_APPROVED_AMEX, "approved", Value::Null, "amex"),
        (
            sim::CARD_DECLINED_GENERIC,
            "declined",
            json!("generic_decline"),
            "visa",
        ),
        (
            sim::CARD_DECLINED_INSUFFICIENT_FUNDS,
            "declined",
            json!("insufficient_funds"),
            "visa",
        ),
        (
            sim::CARD_DECLINED_EXPIRED,
            "declined",
            json!("expired_card"),
            "visa",
        ),
        (
            sim::CARD_DECLINED_INCORRECT_CVC,
            "declined",
            json!("incorrect_cvc"),
            "visa",
        ),
        (
            sim::CARD_PROCESSING_ERROR,
            "declined",
            json!("processing_error"),
            "visa",
        ),
        (
            sim::CARD_REQUIRES_3DS,
            "requires_action",
            Value::Null,
            "visa",
        ),
        // Any other Luhn-valid number approves.
        ("6011111111111117", "approved", Value::Null, "discover"),
    ];
    for (card, status, decline_code, brand) in cases {
        let (http_status, body) = sim.authorize(card, false, &key("card")).await;
        assert_eq!(http_status, StatusCode::OK, "{card}: {body}");
        assert_eq!(body["status"], status, "{card}: {body}");
        assert_eq!(body["decline_code"], decline_code, "{card}: {body}");
        assert_eq!(body["card_brand"], brand, "{card}");
        assert_eq!(body["card_last4"], card[card.len() - 4..], "{card}");
        assert_eq!(body["amount"], 1_000);
        assert_eq!(body["currency"], "usd");
        assert_eq!(body["reference"], "att_test");
        assert_eq!(body["amount_captured"], 0);
        assert!(body["id"].as_str().unwrap().starts_with("auth_"));
        assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
        if status == "declined" {
            assert!(body["message"].as_str().unwrap().len() > 5);
        }
        if status == "requires_action" {
            let action_url = body["action_url"].as_str().unwrap();
            assert_eq!(
                action_url,
                sim.url(&format!("/3ds/{}", body["id"].as_str().unwrap()))
            );
        } else {
            assert_eq!(body["action_url"], Value::Null);
        }
    }
    sim.stop().await;
}

#[tokio::test]
async fn authorize_and_capture_in_one_step() {
    let sim = TestSim::start().await;
    let (_, body) = sim
        .authorize(sim::CARD_APPROVED_VISA, true, &key("cap"))
        .await;
    assert_eq!(body["status"], "captured");
    assert_eq!(body["amount_captured"], 1_000);
    assert_eq!(body["capture"], true);
    // A declined card is not captured either way.
    let (_, body) = sim
        .authorize(sim::CARD_DECLINED_GENERIC, true, &key("cap"))
        .await;
    assert_eq!(body["status"], "declined");
    assert_eq!(body["amount_captured"], 0);
    sim.stop().await;
}

#[tokio::test]
async fn an_invalid_number_is_declined_incorrect_number() {
    let sim = TestSim::start().await;
    for number in ["4242424242424241", "1234", "4242-abcd"] {
        let (status, body) = sim.authorize(number, false, &key("bad")).await;
        assert_eq!(status, StatusCode::OK, "{number}: {body}");
        assert_eq!(body["status"], "declined");
        assert_eq!(body["decline_code"], "incorrect_number");
        assert_eq!(body["card_last4"], Value::Null);
    }
    sim.stop().await;
}

#[tokio::test]
async fn an_expired_expiry_is_declined_expired_card() {
    let sim = TestSim::start().await;
    let mut request = authorization_body(sim::CARD_APPROVED_VISA, 500, false);
    request["card"]["exp_year"] = json!(2020);
    let (_, body) = sim.call("/v1/authorizations", &key("exp"), &request).await;
    assert_eq!(body["status"], "declined");
    assert_eq!(body["decline_code"], "expired_card");
    sim.stop().await;
}

#[tokio::test]
async fn expiry_is_judged_by_the_simulators_clock() {
    use std::sync::Arc;
    crate::helpers::capture_logs();
    // 2031-06-23: a card valid through 2030-12 has expired by then.
    let clock = Arc::new(sim::FixedClock(1_939_939_200));
    let config = sim::SimConfig {
        processor_sim: crate::helpers::section(),
        ..sim::SimConfig::default()
    };
    let running = sim::start_with_clock(config, clock).await.unwrap();
    let client = reqwest::Client::new();
    let mut request = authorization_body(sim::CARD_APPROVED_VISA, 500, false);
    for (year, month, expected) in [(2030, 12, "declined"), (2031, 6, "approved")] {
        request["card"]["exp_year"] = json!(year);
        request["card"]["exp_month"] = json!(month);
        let body: Value = client
            .post(format!("{}/v1/authorizations", running.base_url()))
            .bearer_auth(crate::helpers::API_KEY)
            .header("Idempotency-Key", key("clock"))
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], expected, "{year}-{month}: {body}");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_a_400_naming_the_field_and_are_not_recorded() {
    let sim = TestSim::start().await;
    let valid = authorization_body(sim::CARD_APPROVED_VISA, 500, false);
    let mut cases = Vec::new();
    let mut bad = valid.clone();
    bad["amount"] = json!(0);
    cases.push((bad, "amount"));
    let mut bad = valid.clone();
    bad["currency"] = json!("USD");
    cases.push((bad, "currency"));
    let mut bad = valid.clone();
    bad["card"]["exp_month"] = json!(13);
    cases.push((bad, "card.exp_month"));
    let mut bad = valid.clone();
    bad["card"]["cvc"] = json!("12");
    cases.push((bad, "card.cvc"));
    let mut bad = valid.clone();
    bad["reference"] = json!("");
    cases.push((bad, "reference"));
    let mut bad = valid.clone();
    bad["return_url"] = json!("javascript:alert(1)");
    cases.push((bad, "return_url"));
    for (body, param) in cases {
        let (status, error) = sim.call("/v1/authorizations", &key("bad"), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{param}: {error}");
        assert_eq!(error["error"], "invalid_request");
        assert_eq!(error["param"], param);
    }
    // A missing field is named; a mistyped card number is not echoed.
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("amount");
    let (status, error) = sim.call("/v1/authorizations", &key("bad"), &missing).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"].as_str().unwrap().contains("`amount`"),
        "{error}"
    );
    let mut typed = valid.clone();
    typed["card"]["number"] = json!(4242424242424242_u64);
    let (status, error) = sim.call("/v1/authorizations", &key("bad"), &typed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!error.to_string().contains("4242424242424242"), "{error}");
    assert_eq!(
        sim.operations().await["operations"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    sim.stop().await;
}
