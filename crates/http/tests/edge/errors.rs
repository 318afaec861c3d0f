//! Every ApiError constructor, as the client sees it.

use crate::app::{TestApp, body};

/// (kind, status, type, code, `Stripe-Should-Retry` header)
type Case = (
    &'static str,
    u16,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

#[tokio::test]
async fn every_constructor_has_its_documented_status_type_code_and_retry_header() {
    let app = TestApp::start().await;
    let cases: [Case; 14] = [
        (
            "parameter_missing",
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            None,
        ),
        (
            "parameter_unknown",
            400,
            "invalid_request_error",
            Some("parameter_unknown"),
            None,
        ),
        (
            "parameter_invalid",
            400,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            None,
        ),
        (
            "invalid_request",
            400,
            "invalid_request_error",
            Some("payment_intent_unexpected_state"),
            None,
        ),
        (
            "resource_missing",
            404,
            "invalid_request_error",
            Some("resource_missing"),
            None,
        ),
        ("unauthorized", 401, "invalid_request_error", None, None),
        ("forbidden", 403, "invalid_request_error", None, None),
        ("idempotency_mismatch", 400, "idempotency_error", None, None),
        (
            "idempotency_in_use",
            409,
            "idempotency_error",
            Some("idempotency_key_in_use"),
            Some("true"),
        ),
        (
            "rate_limited",
            429,
            "invalid_request_error",
            Some("rate_limit"),
            Some("false"),
        ),
        ("card_error", 402, "card_error", Some("card_declined"), None),
        ("not_found_route", 404, "invalid_request_error", None, None),
        ("internal", 500, "api_error", None, None),
        ("unavailable", 503, "api_error", None, Some("true")),
    ];
    for (kind, status, error_type, code, retry) in cases {
        let response = app.get(&format!("/v1/errors/{kind}")).await;
        let headers = response.headers().clone();
        assert_eq!(
            headers
                .get("stripe-should-retry")
                .map(|v| v.to_str().unwrap()),
            retry,
            "{kind}"
        );
        assert!(headers.get("request-id").is_some(), "{kind}");
        assert!(
            headers
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{kind}"
        );
        let (got, v) = body(response).await;
        assert_eq!(got, status, "{kind}");
        let e = &v["error"];
        assert_eq!(e["type"], error_type, "{kind}");
        assert_eq!(e["code"].as_str(), code, "{kind}");
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{kind}"
        );
        // `code` and `param` are always present, possibly null.
        assert!(
            e.get("code").is_some() && e.get("param").is_some(),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn card_errors_carry_decline_code_and_the_intent() {
    let app = TestApp::start().await;
    let (_, v) = body(app.get("/v1/errors/card_error").await).await;
    assert_eq!(v["error"]["decline_code"], "insufficient_funds");
    assert_eq!(v["error"]["payment_intent"]["id"], "pi_1");
    assert_eq!(
        v["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
}

#[tokio::test]
async fn messages_follow_stripes_wording() {
    let app = TestApp::start().await;
    let (_, v) = body(app.get("/v1/errors/resource_missing").await).await;
    assert_eq!(v["error"]["message"], "No such payment_intent: 'pi_123'");
    assert_eq!(v["error"]["param"], "intent");
    let (_, v) = body(app.get("/v1/errors/not_found_route").await).await;
    assert_eq!(
        v["error"]["message"],
        "Unrecognized request URL (GET: /v1/foo)"
    );
    let (_, v) = body(app.get("/v1/errors/parameter_missing").await).await;
    assert_eq!(v["error"]["param"], "amount");
}

#[tokio::test]
async fn internal_errors_reveal_nothing() {
    let app = TestApp::start().await;
    let (_, v) = body(app.get("/v1/errors/internal").await).await;
    let text = v.to_string();
    assert!(
        !text.contains("exploded") && !text.contains("pi_secret_detail"),
        "{text}"
    );
}

#[tokio::test]
async fn unauthorized_responses_name_the_auth_scheme() {
    let app = TestApp::start().await;
    let response = app.get("/v1/errors/unauthorized").await;
    assert!(response.headers().get("www-authenticate").is_some());
}
