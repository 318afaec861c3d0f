//! The 3-D Secure challenge page and its answers.

use reqwest::StatusCode;
use serde_json::{Value, json};
use snakepay_processor_sim as sim;

use crate::helpers::{
    NOTIFICATION_SECRET, Receiver, TestSim, authorization_body, independently_verified, key,
    section_notifying,
};

async fn requires_action(sim: &TestSim, capture: bool, return_url: Option<&str>) -> Value {
    let mut body = authorization_body(sim::CARD_REQUIRES_3DS, 2_500, capture);
    if let Some(url) = return_url {
        body["return_url"] = json!(url);
    }
    body["reference"] = json!("att_<script>");
    let (status, authorization) = sim.call("/v1/authorizations", &key("3ds"), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(authorization["status"], "requires_action");
    authorization
}

#[tokio::test]
async fn the_challenge_page_has_two_plain_forms() {
    let sim = TestSim::start().await;
    let authorization = requires_action(&sim, false, None).await;
    let response = sim
        .client
        .get(authorization["action_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    let id = authorization["id"].as_str().unwrap();
    assert!(html.contains("<html lang=\"en\">"));
    assert_eq!(
        html.matches(&format!("<form method=\"post\" action=\"/3ds/{id}\">"))
            .count(),
        2
    );
    assert!(html.contains("Complete authentication</button>"));
    assert!(html.contains("Fail authentication</button>"));
    assert!(html.contains("name=\"result\" value=\"complete\""));
    assert!(html.contains("name=\"result\" value=\"fail\""));
    assert!(!html.contains("<script"), "the reference must be escaped");
    assert!(html.contains("att_&lt;script&gt;"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
    // Unknown IDs get a 404 page.
    let missing = sim
        .client
        .get(sim.url("/3ds/auth_unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    sim.stop().await;
}

#[tokio::test]
async fn completing_the_challenge_settles_redirects_and_notifies_signed() {
    let receiver = Receiver::start(0).await;
    let sim = TestSim::start_with(section_notifying(&receiver)).await;
    let authorization = requires_action(&sim, true, Some("https://shop.test/return?x=1")).await;
    let id = authorization["id"].as_str().unwrap();
    let response = sim
        .client
        .post(sim.url(&format!("/3ds/{id}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("result=complete")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        format!("https://shop.test/return?x=1&authorization={id}").as_str()
    );
    let current: Value = sim
        .get(&format!("/v1/authorizations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["status"], "captured");
    assert_eq!(current["amount_captured"], 2_500);
    assert_eq!(current["action_url"], Value::Null);

    let delivered = receiver.delivered(1).await;
    let (headers, body) = &delivered[0];
    let signature = headers["sim-signature"].to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(sim::verify_signature(
        NOTIFICATION_SECRET,
        signature,
        body,
        now,
        300
    ));
    assert!(independently_verified(signature, body));
    assert!(!sim::verify_signature(
        "whsec_wrong_secret_0000000",
        signature,
        body,
        now,
        300
    ));
    let notification: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(notification["type"], "authorization.captured");
    assert_eq!(notification["operation"], "authentication");
    assert_eq!(notification["data"]["authorization"]["id"], id);
    assert!(notification["id"].as_str().unwrap().starts_with("ntf_"));

    // A second submission changes nothing and records nothing.
    let again = sim
        .client
        .post(sim.url(&format!("/3ds/{id}")))
        .body("result=fail")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let kinds: Vec<String> = sim.operations().await["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["authorization", "authentication"]);
    sim.stop().await;
}

#[tokio::test]
async fn failing_the_challenge_declines_and_shows_a_done_page() {
    let sim = TestSim::start().await;
    let authorization = requires_action(&sim, false, None).await;
    let id = authorization["id"].as_str().unwrap();
    let response = sim
        .client
        .post(sim.url(&format!("/3ds/{id}")))
        .body("result=fail")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    assert!(html.contains("Authentication failed"));
    let current: Value = sim
        .get(&format!("/v1/authorizations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current["status"], "declined");
    assert_eq!(current["decline_code"], "authentication_required");
    // A garbage answer is refused.
    let bad = sim
        .client
        .post(sim.url(&format!("/3ds/{id}")))
        .body("result=maybe")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.stop().await;
}

#[tokio::test]
async fn completing_without_capture_approves_for_a_later_capture() {
    let sim = TestSim::start().await;
    let authorization = requires_action(&sim, false, None).await;
    let id = authorization["id"].as_str().unwrap();
    sim.client
        .post(sim.url(&format!("/3ds/{id}")))
        .body("result=complete")
        .send()
        .await
        .unwrap();
    let (status, captured) = sim
        .call(
            &format!("/v1/authorizations/{id}/capture"),
            &key("capture"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(captured["amount_captured"], 2_500);
    sim.stop().await;
}
