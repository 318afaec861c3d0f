//! The demo router and a client for it.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use snakepay_http::{
    ApiError, EdgeLimits, MetadataUpdate, RequestIdExt, ServerHandle, StripeParams, api_key,
    idempotency_key, spawn, stripe_edge,
};

pub struct TestApp {
    pub server: ServerHandle,
    pub client: reqwest::Client,
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::with_limits(EdgeLimits::default()).await
    }

    pub async fn with_limits(limits: EdgeLimits) -> TestApp {
        TestApp::with_router(demo_router(), limits, Duration::from_secs(5)).await
    }

    pub async fn with_router(router: Router, limits: EdgeLimits, grace: Duration) -> TestApp {
        let server = spawn("127.0.0.1:0", stripe_edge(router, limits), grace)
            .await
            .unwrap();
        TestApp {
            server,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub async fn form(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
}

/// Reads a response's status and JSON body.
pub async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

/// Asserts an error envelope and returns its `error` object.
pub async fn error(response: reqwest::Response, status: u16) -> Value {
    let (got, value) = body(response).await;
    assert_eq!(got, status, "{value}");
    assert!(value["error"]["message"].is_string(), "{value}");
    value["error"].clone()
}

pub fn demo_router() -> Router {
    Router::new()
        .route("/v1/echo", get(echo).post(echo).delete(echo))
        .route("/v1/read", post(read))
        .route("/v1/errors/{kind}", get(errors))
        .route("/v1/slow", get(slow))
        .route("/v1/panic", get(panics))
        .route("/v1/headers", get(headers))
        .route("/v1/bytes", post(bytes))
        .route("/v1/request_id", get(request_id))
}

async fn echo(StripeParams(params): StripeParams) -> Response {
    axum::Json(json!({"canonical": params.canonical(), "tree": params})).into_response()
}

async fn bytes(body: Bytes) -> Response {
    axum::Json(json!({"len": body.len()})).into_response()
}

async fn request_id(RequestIdExt(id): RequestIdExt) -> Response {
    axum::Json(json!({"id": id})).into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    Automatic,
    Manual,
}

/// Reads a PaymentIntent-like schema, the way handlers will.
async fn read(StripeParams(params): StripeParams) -> Result<Response, ApiError> {
    let mut r = params.reader();
    let amount = r.required_i64("amount")?;
    let currency = r.required_string("currency")?;
    let description = r.string("description")?;
    let confirm = r.bool("confirm")?;
    let capture = r.enumeration(
        "capture_method",
        &[
            ("automatic", Capture::Automatic),
            ("manual", Capture::Manual),
        ],
    )?;
    let expand = r.string_list("expand")?;
    let metadata = match r.metadata("metadata")? {
        None => Value::Null,
        Some(MetadataUpdate::ClearAll) => json!("clear"),
        Some(MetadataUpdate::Patch(changes)) => json!(changes),
    };
    let mut card_number = None;
    let mut card_exp_month = None;
    let mut pm_type = None;
    if let Some(mut pmd) = r.nested("payment_method_data")? {
        pm_type = pmd.string("type")?;
        if let Some(mut card) = pmd.nested("card")? {
            card_number = card.string("number")?.map(|n| n.len());
            card_exp_month = card.i64("exp_month")?;
            card.finish()?;
        }
        pmd.finish()?;
    }
    let mut created_gte = None;
    if let Some(mut created) = r.nested("created")? {
        created_gte = created.i64("gte")?;
        // Not finished: a leftover must still be reported by the parent.
    }
    r.finish()?;
    Ok(axum::Json(json!({
        "amount": amount,
        "currency": currency,
        "description": description,
        "confirm": confirm,
        "capture_manual": capture.map(|c| c == Capture::Manual),
        "expand": expand,
        "metadata": metadata,
        "pm_type": pm_type,
        "card_number_len": card_number,
        "card_exp_month": card_exp_month,
        "created_gte": created_gte,
    }))
    .into_response())
}

async fn errors(Path(kind): Path<String>) -> ApiError {
    match kind.as_str() {
        "parameter_missing" => ApiError::parameter_missing("amount"),
        "parameter_unknown" => ApiError::parameter_unknown("foo"),
        "parameter_invalid" => {
            ApiError::parameter_invalid("parameter_invalid_integer", "amount", "Invalid integer: x")
        }
        "invalid_request" => {
            ApiError::invalid_request(Some("payment_intent_unexpected_state"), None, "bad state")
        }
        "resource_missing" => ApiError::resource_missing("payment_intent", "pi_123", "intent"),
        "unauthorized" => ApiError::unauthorized("Invalid API Key provided"),
        "forbidden" => ApiError::forbidden("not allowed"),
        "idempotency_mismatch" => ApiError::idempotency_mismatch("key-1"),
        "idempotency_in_use" => ApiError::idempotency_in_use("key-1"),
        "rate_limited" => ApiError::rate_limited(),
        "card_error" => ApiError::card_error(
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
            json!({"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method"}),
        ),
        "not_found_route" => ApiError::not_found_route(&Method::GET, "/v1/foo"),
        "internal" => ApiError::internal(
            &anyhow::anyhow!("db exploded").context("loading intent pi_secret_detail"),
        ),
        "unavailable" => ApiError::unavailable("processor down"),
        _ => ApiError::invalid_request(None, None, "unknown kind"),
    }
}

async fn slow(StripeParams(params): StripeParams) -> Result<Response, ApiError> {
    let mut r = params.reader();
    let ms = r.i64("ms")?.unwrap_or(0);
    r.finish()?;
    tokio::time::sleep(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).await;
    Ok(axum::Json(json!({"slept_ms": ms})).into_response())
}

async fn panics() -> Response {
    panic!("boom in handler");
}

async fn headers(headers: HeaderMap) -> Result<Response, ApiError> {
    let key = api_key(&headers)?;
    let idempotency = idempotency_key(&headers)?;
    Ok(axum::Json(json!({"api_key": key, "idempotency_key": idempotency})).into_response())
}
