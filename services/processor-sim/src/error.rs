//! The error envelope: `{"error": "<code>", "message": "...", "param": "..."}`
//! with the HTTP status that goes with the code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer. Messages never quote request values: a card number in
/// the wrong field must not come back in an error (or reach a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about one request field.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Send the API key as `Authorization: Bearer <key>`.",
        )
    }

    /// The processor failed; whether the work was done is unknown to the
    /// caller, who should ask `GET /v1/operations/{key}`.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The processor had an internal error; the outcome is unknown. Ask GET /v1/operations/{idempotency_key}.",
        )
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(param), Some(object)) = (self.param, body.as_object_mut()) {
            object.insert("param".to_owned(), param.into());
        }
        (self.status, Json(body)).into_response()
    }
}

/// Why a JSON body was rejected, without quoting it (serde's messages can
/// contain the offending value, which may be a card number).
pub fn json_error(error: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    // A missing field's name comes from our own schema, so it is safe to
    // repeat; every other message may quote the input.
    let text = error.to_string();
    if let Some(rest) = text.strip_prefix("missing field `")
        && let Some((field, _)) = rest.split_once('`')
        && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("The request body is missing the field `{field}`."),
        );
    }
    let what = match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => "is not valid JSON",
        Category::Data => "has a missing, unknown or mistyped field",
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!(
            "The request body {what} (line {}, column {}).",
            error.line(),
            error.column()
        ),
    )
}
