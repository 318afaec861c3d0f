//! CORS for the hosted checkout: its origins may retrieve and confirm an
//! intent from the browser; nothing else is open to any origin.

use crate::support::{TestApi, encode};

const CHECKOUT: &str = "https://checkout.snakepay.test";

async fn api() -> TestApi {
    TestApi::start_with(&format!(
        "rate_limit_test_per_second = 100000\ncheckout_origins = [\"{CHECKOUT}\", \"http://127.0.0.1:8083\"]"
    ))
    .await
}

/// A browser's preflight for `method` on `path` from `origin`.
async fn preflight(api: &TestApi, origin: &str, method: &str, path: &str) -> reqwest::Response {
    api.client
        .request(reqwest::Method::OPTIONS, api.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap()
}

fn allowed_origin(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_checkout_origin_may_retrieve_and_confirm_with_a_publishable_key() {
    let api = api().await;
    let merchant = api.merchant().await;
    let intent = api
        .post(
            &merchant.secret_key,
            "/v1/payment_intents",
            &[("amount", "2400"), ("currency", "eur")],
            None,
        )
        .await;
    let id = intent.body["id"].as_str().unwrap();
    let secret = intent.body["client_secret"].as_str().unwrap();

    let confirm_path = format!("/v1/payment_intents/{id}/confirm");
    let answer = preflight(&api, CHECKOUT, "POST", &confirm_path).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(allowed_origin(&answer).as_deref(), Some(CHECKOUT));
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-methods"], "POST");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    for header in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(header), "{allowed}");
    }
    assert!(headers.get("access-control-allow-credentials").is_none());

    let retrieve = api
        .client
        .get(api.url(&format!("/v1/payment_intents/{id}?client_secret={secret}")))
        .bearer_auth(&merchant.publishable_key)
        .header("Origin", CHECKOUT)
        .send()
        .await
        .unwrap();
    assert_eq!(retrieve.status(), 200);
    assert_eq!(allowed_origin(&retrieve).as_deref(), Some(CHECKOUT));
    assert_eq!(
        retrieve.headers()["access-control-expose-headers"],
        "request-id"
    );

    let confirm = api
        .client
        .post(api.url(&confirm_path))
        .bearer_auth(&merchant.publishable_key)
        .header("Origin", CHECKOUT)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("client_secret", secret),
            ("payment_method", "pm_card_visa"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed_origin(&confirm).as_deref(), Some(CHECKOUT));
    assert_ne!(confirm.status(), 403);
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let api = api().await;
    let answer = preflight(
        &api,
        "https://evil.example",
        "POST",
        "/v1/payment_intents/pi_x/confirm",
    )
    .await;
    assert_eq!(allowed_origin(&answer), None);
    // Not even a port away from an allowed origin.
    let answer = preflight(
        &api,
        "http://127.0.0.1:8084",
        "GET",
        "/v1/payment_intents/pi_x",
    )
    .await;
    assert_eq!(allowed_origin(&answer), None);
}

#[tokio::test]
async fn secret_key_operations_are_not_open_to_the_checkout_origin() {
    let api = api().await;
    for (method, path) in [
        ("POST", "/v1/payment_intents"),
        ("GET", "/v1/payment_intents"),
        ("POST", "/v1/payment_intents/pi_x/capture"),
        ("POST", "/v1/refunds"),
        ("GET", "/v1/customers/cus_x"),
    ] {
        let answer = preflight(&api, CHECKOUT, method, path).await;
        assert_eq!(allowed_origin(&answer), None, "{method} {path}");
        assert!(!answer.status().is_success(), "{method} {path}");
    }
    // Updating an intent shares the retrieve route's path, but not its method.
    let answer = preflight(&api, CHECKOUT, "POST", "/v1/payment_intents/pi_x").await;
    let methods = answer
        .headers()
        .get("access-control-allow-methods")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(methods.as_deref(), Some("GET"));
}

#[tokio::test]
async fn without_checkout_origins_no_origin_is_allowed() {
    let api = TestApi::start().await;
    let answer = preflight(&api, CHECKOUT, "POST", "/v1/payment_intents/pi_x/confirm").await;
    assert_eq!(allowed_origin(&answer), None);
}

#[tokio::test]
async fn a_checkout_origin_with_a_path_is_refused_at_start_up() {
    let error = snakepay_config::from_toml_str::<snakepay_external_api::ExternalApiConfig>(
        r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "http://127.0.0.1"
        [database]
        control_url = "postgres://x@127.0.0.1/control"
        shard_urls = ["postgres://x@127.0.0.1/shard"]
        [api_keys]
        hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="
        [vault]
        key_ring_path = "/nonexistent"
        [external_api]
        listen_addr = "127.0.0.1:0"
        checkout_origins = ["https://checkout.snakepay.test/pay"]
        "#,
    )
    .unwrap_err();
    assert_eq!(error.key(), Some("external_api.checkout_origins[0]"));
}
