//! Capture, void and refund, and the refusals that guard the money.

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{TestSim, key};

async fn approved(sim: &TestSim) -> String {
    let (_, body) = sim
        .authorize(sim::CARD_APPROVED_VISA, false, &key("auth"))
        .await;
    assert_eq!(body["status"], "approved");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_full_capture_then_partial_and_full_refunds() {
    let sim = TestSim::start().await;
    let id = approved(&sim).await;
    let (status, body) = sim
        .call(
            &format!("/v1/authorizations/{id}/capture"),
            &key("capture"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "captured");
    assert_eq!(body["amount_captured"], 1_000);

    let refund =
        |amount: Value| json!({"authorization": id, "amount": amount, "reference": "re_1"});
    let (status, body) = sim
        .call("/v1/refunds", &key("refund"), &refund(json!(300)))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "refund");
    assert_eq!(body["amount"], 300);
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["authorization"], id);
    assert!(body["id"].as_str().unwrap().starts_with("rf_"));
    let refund_id = body["id"].as_str().unwrap().to_owned();

    // Over-refund: 701 > 700 left.
    let (status, body) = sim
        .call("/v1/refunds", &key("refund"), &refund(json!(701)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "amount_exceeds_refundable");

    // Without an amount: the rest.
    let (status, body) = sim
        .call("/v1/refunds", &key("refund"), &json!({"authorization": id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["amount"], 700);
    let (status, body) = sim
        .call("/v1/refunds", &key("refund"), &refund(json!(1)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "amount_exceeds_refundable");

    let authorization: Value = sim
        .get(&format!("/v1/authorizations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(authorization["amount_refunded"], 1_000);
    let stored: Value = sim
        .get(&format!("/v1/refunds/{refund_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["amount"], 300);
    sim.stop().await;
}

#[tokio::test]
async fn a_partial_capture_releases_the_rest() {
    let sim = TestSim::start().await;
    let id = approved(&sim).await;
    let path = format!("/v1/authorizations/{id}/capture");
    let (status, body) = sim
        .call(&path, &key("capture"), &json!({"amount": 1_001}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "amount_exceeds_authorized");
    let (status, body) = sim
        .call(&path, &key("capture"), &json!({"amount": 400}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["amount_captured"], 400);
    // The released 600 cannot be captured later.
    let (status, body) = sim
        .call(&path, &key("capture"), &json!({"amount": 100}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "invalid_state");
    // Nor refunded beyond what was captured.
    let (status, body) = sim
        .call(
            "/v1/refunds",
            &key("refund"),
            &json!({"authorization": id, "amount": 401}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "amount_exceeds_refundable");
    sim.stop().await;
}

#[tokio::test]
async fn a_void_releases_the_hold_and_blocks_capture() {
    let sim = TestSim::start().await;
    let id = approved(&sim).await;
    let (status, body) = sim
        .call(
            &format!("/v1/authorizations/{id}/void"),
            &key("void"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "voided");
    let (status, body) = sim
        .call(
            &format!("/v1/authorizations/{id}/capture"),
            &key("capture"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "invalid_state");
    let (status, body) = sim
        .call("/v1/refunds", &key("refund"), &json!({"authorization": id}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "invalid_state");
    // A captured authorization cannot be voided.
    let (_, captured) = sim
        .authorize(sim::CARD_APPROVED_VISA, true, &key("auth"))
        .await;
    let (status, body) = sim
        .call(
            &format!(
                "/v1/authorizations/{}/void",
                captured["id"].as_str().unwrap()
            ),
            &key("void"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "invalid_state");
    sim.stop().await;
}

#[tokio::test]
async fn declined_and_unknown_authorizations_cannot_be_captured() {
    let sim = TestSim::start().await;
    let (_, declined) = sim
        .authorize(sim::CARD_DECLINED_GENERIC, false, &key("auth"))
        .await;
    let (status, body) = sim
        .call(
            &format!(
                "/v1/authorizations/{}/capture",
                declined["id"].as_str().unwrap()
            ),
            &key("capture"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "invalid_state");
    let (status, body) = sim
        .call(
            "/v1/authorizations/auth_nope/capture",
            &key("capture"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "authorization_not_found");
    sim.stop().await;
}

#[tokio::test]
async fn the_record_lists_every_operation_with_its_final_status() {
    let sim = TestSim::start().await;
    let id = approved(&sim).await;
    let capture_key = key("capture");
    sim.call(
        &format!("/v1/authorizations/{id}/capture"),
        &capture_key,
        &json!({"amount": 600}),
    )
    .await;
    let refund_key = key("refund");
    sim.call(
        "/v1/refunds",
        &refund_key,
        &json!({"authorization": id, "amount": 100}),
    )
    .await;
    let record = sim.operations().await;
    let operations = record["operations"].as_array().unwrap();
    assert_eq!(operations.len(), 3);
    let kinds: Vec<&str> = operations
        .iter()
        .map(|op| op["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["authorization", "capture", "refund"]);
    assert_eq!(operations[0]["status"], "approved");
    assert_eq!(operations[0]["final_status"], "captured");
    assert_eq!(operations[0]["card_last4"], "4242");
    assert_eq!(operations[0]["reference"], "att_test");
    assert_eq!(operations[1]["amount"], 600);
    assert_eq!(operations[1]["idempotency_key"], capture_key.as_str());
    assert_eq!(operations[1]["outcome"], "succeeded");
    assert_eq!(operations[2]["amount"], 100);
    assert_eq!(operations[2]["idempotency_key"], refund_key.as_str());
    let seqs: Vec<i64> = operations
        .iter()
        .map(|op| op["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let authorizations = record["authorizations"].as_array().unwrap();
    assert_eq!(authorizations.len(), 1);
    assert_eq!(authorizations[0]["amount_captured"], 600);
    assert_eq!(authorizations[0]["amount_refunded"], 100);
    sim.stop().await;
}

#[tokio::test]
async fn the_record_can_be_read_in_pages_with_the_authorizations_each_page_touched() {
    let sim = TestSim::start().await;
    let first = approved(&sim).await;
    let second = approved(&sim).await;
    sim.call(
        &format!("/v1/authorizations/{first}/capture"),
        &key("capture"),
        &json!({}),
    )
    .await;

    let page = |query: &'static str| {
        let sim = &sim;
        async move {
            let response = sim.get(&format!("/_sim/operations?{query}")).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, one) = page("limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let seqs = |body: &Value| -> Vec<i64> {
        body["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["seq"].as_i64().unwrap())
            .collect()
    };
    let ids = |body: &Value| -> Vec<String> {
        body["authorizations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(seqs(&one), [1, 2]);
    assert_eq!(one["has_more"], true);
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(ids(&one), expected);
    // The authorizations as they stand now, not as the page's operations left them.
    let captured = one["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == first.as_str())
        .unwrap();
    assert_eq!(captured["status"], "captured");

    let (_, two) = page("after_seq=2&limit=2").await;
    assert_eq!(seqs(&two), [3]);
    assert_eq!(two["has_more"], false);
    assert_eq!(ids(&two), [first]);

    let (_, past) = page("after_seq=3").await;
    assert_eq!(seqs(&past), Vec::<i64>::new());
    assert_eq!(past["has_more"], false);

    // Without paging: everything, as before.
    let all = sim.operations().await;
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(all["authorizations"].as_array().unwrap().len(), 2);

    for bad in ["limit=0", "limit=10001", "after_seq=x"] {
        let (status, body) = page(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"], "invalid_request", "{bad}");
    }
    sim.stop().await;
}
