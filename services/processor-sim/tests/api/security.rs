//! API keys, health endpoints, and no card data in the journal or the logs.

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, authorization_body, captured_logs, key, section};

#[tokio::test]
async fn calls_without_the_right_api_key_get_401() {
    let sim = TestSim::start().await;
    let body = authorization_body(sim::CARD_APPROVED_VISA, 100, false);
    let missing = sim
        .client
        .post(sim.url("/v1/authorizations"))
        .header("Idempotency-Key", "k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"], "unauthorized");
    for (path, wrong) in [
        ("/v1/authorizations", "sk_sim_test_0123456789abcdeX"),
        ("/_sim/operations", "sk_sim_test_0123456789abcde"),
        ("/_sim/config", ""),
    ] {
        let response = sim
            .client
            .get(sim.url(path))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // The right key under another scheme is not accepted either.
    let basic = sim
        .client
        .get(sim.url("/v1/operations/k"))
        .header(
            "Authorization",
            format!("Basic {}", crate::helpers::API_KEY),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(
        sim.operations().await["operations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    sim.stop().await;
}

#[tokio::test]
async fn health_endpoints_answer_without_a_key() {
    let sim = TestSim::start().await;
    for path in ["/livez", "/readyz"] {
        let response = sim.client.get(sim.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"status": "ok"})
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn no_card_number_or_cvc_reaches_the_journal_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.jsonl");
    let sim = TestSim::start_with(sim::ProcessorSimSection {
        journal_path: Some(journal.clone()),
        ..section()
    })
    .await;
    let cards = [
        sim::CARD_APPROVED_VISA,
        sim::CARD_APPROVED_MASTERCARD,
        sim::CARD_APPROVED_AMEX,
        sim::CARD_DECLINED_GENERIC,
        sim::CARD_DECLINED_INSUFFICIENT_FUNDS,
        sim::CARD_DECLINED_EXPIRED,
        sim::CARD_DECLINED_INCORRECT_CVC,
        sim::CARD_REQUIRES_3DS,
        sim::CARD_PROCESSING_ERROR,
        sim::CARD_FAIL_AFTER_WORK,
        sim::CARD_FAIL_BEFORE_WORK,
        // A canary only this test uses, with an unusual CVC.
        "4111111111111111",
        // An invalid number still must not leak.
        "4242424242424241",
    ];
    for card in cards {
        let mut body = authorization_body(card, 1_000, true);
        if !card.starts_with("37") {
            body["card"]["cvc"] = json!("987");
        }
        sim.call("/v1/authorizations", &key("leak"), &body).await;
    }
    // A request the API rejects, with the number where a string belongs.
    let mut wrong_type = authorization_body(sim::CARD_APPROVED_VISA, 100, false);
    wrong_type["card"]["number"] = json!(4111111111111111_u64);
    sim.call("/v1/authorizations", &key("leak"), &wrong_type)
        .await;
    sim.stop().await;

    let journal = std::fs::read_to_string(&journal).unwrap();
    assert!(journal.lines().count() >= 12);
    let logs = captured_logs();
    assert!(logs.contains("operation recorded"), "the log capture works");
    for card in cards {
        assert!(!journal.contains(card), "{card} in the journal");
        assert!(!logs.contains(card), "{card} in the logs");
        // Nor the first six and more.
        assert!(
            !journal.contains(&card[..8]),
            "{card} prefix in the journal"
        );
    }
    assert!(!journal.contains("\"987\"") && !journal.contains("\"cvc\""));
    assert!(!logs.contains("\"987\""));
}
