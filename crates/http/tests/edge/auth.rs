//! API key and Idempotency-Key headers.

use serde_json::Value;

use crate::app::{TestApp, body, error};

#[tokio::test]
async fn bearer_and_basic_auth_give_the_key() {
    let app = TestApp::start().await;
    let (status, v) = body(
        app.client
            .get(app.url("/v1/headers"))
            .bearer_auth("sk_test_abc")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["api_key"], "sk_test_abc");
    let (status, v) = body(
        app.client
            .get(app.url("/v1/headers"))
            .basic_auth("sk_test_abc", Some(""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["api_key"], "sk_test_abc");
    let (status, v) = body(
        app.client
            .get(app.url("/v1/headers"))
            .basic_auth("sk_test_abc", None::<&str>)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["api_key"], "sk_test_abc");
    let (_, v) = body(app.get("/v1/headers").await).await;
    assert_eq!(v["api_key"], Value::Null);
}

#[tokio::test]
async fn malformed_authorization_is_a_401_envelope_that_does_not_echo_the_key() {
    let app = TestApp::start().await;
    for header in ["Bearer", "Digest sk_test_abc", "Basic %%%", "sk_test_abc"] {
        let response = app
            .client
            .get(app.url("/v1/headers"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        let e = error(response, 401).await;
        assert_eq!(e["type"], "invalid_request_error");
        assert!(!e["message"].as_str().unwrap().contains("sk_test_abc"));
    }
    let response = app
        .client
        .get(app.url("/v1/headers"))
        .basic_auth("sk_test_abc", Some("password"))
        .send()
        .await
        .unwrap();
    error(response, 401).await;
}

#[tokio::test]
async fn idempotency_keys_are_validated() {
    let app = TestApp::start().await;
    let send = |key: String| {
        let request = app
            .client
            .get(app.url("/v1/headers"))
            .header("idempotency-key", key);
        async move { request.send().await.unwrap() }
    };
    let (status, v) = body(send("a-key_1 with spaces".to_owned()).await).await;
    assert_eq!(status, 200);
    assert_eq!(v["idempotency_key"], "a-key_1 with spaces");
    let (status, _) = body(send("k".repeat(255)).await).await;
    assert_eq!(status, 200);
    error(send("k".repeat(256)).await, 400).await;
    error(send(String::new()).await, 400).await;
    let response = app
        .client
        .get(app.url("/v1/headers"))
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    error(response, 400).await;
    let response = app
        .client
        .get(app.url("/v1/headers"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .send()
        .await
        .unwrap();
    error(response, 400).await;
}
