//! The Stripe error envelope: `{"error":{"type","code","message","param",…}}`.
//!
//! Stripe's SDKs pick their exception class from the HTTP status and read
//! `type`/`code`/`param` from the body; they accept `null` for absent fields,
//! so `code` and `param` are always present (possibly null) to keep the shape
//! fixed, while `decline_code` and `payment_intent` appear only on card errors.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Map, Value};

/// The header telling Stripe's SDKs whether a retry can help.
pub const SHOULD_RETRY_HEADER: &str = "stripe-should-retry";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Card,
    Idempotency,
    Api,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "invalid_request_error",
            ErrorType::Card => "card_error",
            ErrorType::Idempotency => "idempotency_error",
            ErrorType::Api => "api_error",
        }
    }
}

/// An error as the client sees it. Build it with the constructors; the fields
/// are public so handlers can adjust one (e.g. `param` on a card error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {}: {message}", error_type.as_str())]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: ErrorType,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<String>,
    /// Boxed to keep `ApiError` under clippy's `result_large_err` threshold
    /// (128 bytes), so every `Result<_, ApiError>` in handlers passes clippy.
    pub payment_intent: Option<Box<Value>>,
    pub should_retry: Option<bool>,
    /// Sent as `Retry-After` (seconds), e.g. on 429.
    pub retry_after_seconds: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, error_type: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            code: None,
            message: message.into(),
            param: None,
            decline_code: None,
            payment_intent: None,
            should_retry: None,
            retry_after_seconds: None,
        }
    }

    /// When the client may try again (`Retry-After`), in whole seconds.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn with_should_retry(mut self, should_retry: bool) -> Self {
        self.should_retry = Some(should_retry);
        self
    }

    /// 400 `parameter_missing`.
    pub fn parameter_missing(param: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            format!("Missing required param: {param}."),
        )
        .with_code("parameter_missing")
        .with_param(param)
    }

    /// 400 `parameter_unknown`.
    pub fn parameter_unknown(param: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequest,
            format!("Received unknown parameter: {param}"),
        )
        .with_code("parameter_unknown")
        .with_param(param)
    }

    /// 400 with a `parameter_invalid_*` code.
    pub fn parameter_invalid(code: &str, param: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message)
            .with_code(code)
            .with_param(param)
    }

    /// 400 `invalid_request_error`, for whatever the other constructors do not cover
    /// (e.g. `payment_intent_unexpected_state`, `amount_too_large`).
    pub fn invalid_request(
        code: Option<&str>,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequest, message);
        error.code = code.map(str::to_owned);
        error.param = param.map(str::to_owned);
        error
    }

    /// 404 `resource_missing`: "No such payment_intent: 'pi_…'".
    pub fn resource_missing(object_name: &str, id: &str, param: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            format!("No such {object_name}: '{id}'"),
        )
        .with_code("resource_missing")
        .with_param(param)
    }

    /// 401: missing, malformed, invalid or revoked key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::InvalidRequest, message)
    }

    /// 403: the key is valid but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorType::InvalidRequest, message)
    }

    /// 400: the key was first used with a different request.
    pub fn idempotency_mismatch(key: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorType::Idempotency,
            format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                 Try using a key other than '{key}' if you meant to execute a different request."
            ),
        )
    }

    /// 409: the first request with this key is still running; retrying later helps.
    pub fn idempotency_in_use(key: &str) -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::Idempotency,
            format!(
                "There is currently another in-progress request using the idempotency key '{key}'. \
                 Try again later."
            ),
        )
        .with_code("idempotency_key_in_use")
        .with_should_retry(true)
    }

    /// 429 `rate_limit`. Stripe's SDKs never retry a 429 by themselves; the
    /// header says so explicitly for other clients.
    pub fn rate_limited() -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::InvalidRequest,
            "Too many requests hit the API too quickly. Please slow down and retry later.",
        )
        .with_code("rate_limit")
        .with_should_retry(false)
    }

    /// 402 `card_error`, with the intent as it now is.
    pub fn card_error(
        code: &str,
        decline_code: Option<&str>,
        message: &str,
        payment_intent: Value,
    ) -> Self {
        let mut error =
            ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorType::Card, message).with_code(code);
        error.decline_code = decline_code.map(str::to_owned);
        error.payment_intent = Some(Box::new(payment_intent));
        error
    }

    /// 404 for a URL no route matches.
    pub fn not_found_route(method: &Method, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequest,
            format!("Unrecognized request URL ({method}: {path})"),
        )
    }

    /// 405 for a known URL with a method it does not take.
    pub fn method_not_allowed(method: &Method, path: &str) -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorType::InvalidRequest,
            format!(
                "Unrecognized request method ({method}: {path}): this URL does not accept {method}."
            ),
        )
    }

    /// 413 for a body over the configured limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequest,
            format!("The request body is too large: at most {limit_bytes} bytes are accepted."),
        )
    }

    /// 500 that reveals nothing. The cause chain is logged here, once, so
    /// callers must not log it again.
    ///
    /// A database pool that had no connection free within its acquire
    /// timeout is overload, not a fault: that is a 503 the client should
    /// retry (with `Stripe-Should-Retry: true`), logged as a warning.
    pub fn internal(error: &anyhow::Error) -> Self {
        if is_overload(error) {
            tracing::warn!(error.chain = %format_args!("{error:#}"), "database busy");
            return ApiError::unavailable(
                "The service is busy right now; please retry the request shortly.",
            );
        }
        tracing::error!(error.chain = %format_args!("{error:#}"), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::Api,
            "An unexpected error occurred on our side. It has been logged; quote the Request-Id header if you contact support.",
        )
    }

    /// 503: a dependency is down or the request ran out of time; retrying helps.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::Api, message)
            .with_should_retry(true)
    }

    /// The envelope as JSON.
    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), Value::from(self.error_type.as_str()));
        error.insert(
            "code".into(),
            self.code.clone().map_or(Value::Null, Value::from),
        );
        error.insert("message".into(), Value::from(self.message.clone()));
        error.insert(
            "param".into(),
            self.param.clone().map_or(Value::Null, Value::from),
        );
        if let Some(decline_code) = &self.decline_code {
            error.insert("decline_code".into(), Value::from(decline_code.clone()));
        }
        if let Some(payment_intent) = &self.payment_intent {
            error.insert("payment_intent".into(), Value::clone(payment_intent));
        }
        let mut envelope = Map::new();
        envelope.insert("error".into(), Value::Object(error));
        Value::Object(envelope)
    }
}

/// True when the database is overloaded rather than broken: its pool timed
/// out waiting for a free connection, or the server's listen queue was full
/// when the pool opened a new one (`EAGAIN` on a Unix socket, where TCP
/// would have retried its SYN). Nothing was executed either way.
fn is_overload(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::PoolTimedOut) => true,
            Some(sqlx::Error::Io(io)) => io.kind() == std::io::ErrorKind::WouldBlock,
            _ => false,
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(retry) = self.should_retry {
            headers.insert(
                SHOULD_RETRY_HEADER,
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if let Some(seconds) = self.retry_after_seconds {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"Snakepay\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_stays_small_enough_for_result_large_err() {
        assert!(
            std::mem::size_of::<ApiError>() <= 128,
            "{}",
            std::mem::size_of::<ApiError>()
        );
    }

    #[test]
    fn envelope_has_null_code_and_param_when_absent() {
        let body = ApiError::unauthorized("no key").body();
        assert_eq!(body["error"]["code"], Value::Null);
        assert_eq!(body["error"]["param"], Value::Null);
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"].get("decline_code").is_none());
    }

    #[test]
    fn card_errors_carry_decline_code_and_intent() {
        let e = ApiError::card_error(
            "card_declined",
            Some("insufficient_funds"),
            "declined",
            serde_json::json!({"id": "pi_1"}),
        );
        let body = e.body();
        assert_eq!(e.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(body["error"]["decline_code"], "insufficient_funds");
        assert_eq!(body["error"]["payment_intent"]["id"], "pi_1");
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn internal_logs_the_whole_cause_chain_once_and_returns_nothing_of_it() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let error = anyhow::anyhow!("connection refused").context("loading payment intent");
        let api_error =
            tracing::subscriber::with_default(subscriber, || ApiError::internal(&error));
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("error.chain").count(), 1, "{log}");
        assert!(
            log.contains("loading payment intent: connection refused"),
            "{log}"
        );
        assert_eq!(api_error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(api_error.error_type, ErrorType::Api);
        assert!(!api_error.message.contains("connection refused"));
    }

    #[test]
    fn a_pool_timeout_is_a_retryable_503_and_other_database_errors_stay_500() {
        let busy = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("claiming the key");
        let api_error = ApiError::internal(&busy);
        assert_eq!(api_error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api_error.should_retry, Some(true));
        assert_eq!(api_error.error_type, ErrorType::Api);

        let backlog_full = anyhow::Error::from(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::WouldBlock,
        )))
        .context("claiming the key");
        assert_eq!(
            ApiError::internal(&backlog_full).status,
            StatusCode::SERVICE_UNAVAILABLE
        );

        let refused = anyhow::Error::from(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            ApiError::internal(&refused).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let closed = anyhow::Error::from(sqlx::Error::PoolClosed).context("claiming the key");
        assert_eq!(
            ApiError::internal(&closed).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
