//! The processor simulator (services/processor-sim) as a [`Processor`]: its
//! wire types, its decline codes mapped to the API's card errors, and its
//! notification signature (`Sim-Signature`).

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use snakepay_domain::Money;
use snakepay_domain::payment_intent::{CardErrorCode, PaymentError};
use tracing::Instrument;
use url::Url;

use super::{
    Authorization, AuthorizeRequest, CallError, CallResult, Completion, Inquiry, Processor,
};
use crate::egress::Egress;

pub const NAME: &str = "sim";

/// The header that signs the simulator's notifications.
pub const SIGNATURE_HEADER: &str = "sim-signature";

/// The 4xx codes that are definite answers about the operation itself
/// (services/processor-sim/README.md); any other 4xx is an unknown outcome.
const DEFINITE_ERRORS: &[&str] = &[
    "invalid_request",
    "amount_exceeds_authorized",
    "amount_exceeds_refundable",
    "invalid_state",
    "authorization_not_found",
    "unknown_operation",
    "operation_in_progress",
];

pub struct SimProcessor {
    base_url: Url,
    api_key: String,
    egress: Egress,
    call_timeout: Duration,
}

impl SimProcessor {
    pub fn new(base_url: Url, api_key: String, egress: Egress, call_timeout: Duration) -> Self {
        SimProcessor {
            base_url,
            api_key,
            egress,
            call_timeout,
        }
    }

    /// One HTTP exchange: the status and the JSON body, or an unknown
    /// outcome when no complete answer came.
    async fn call(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> CallResult<(StatusCode, Value)> {
        // A low-cardinality span name: operation lookups carry a key.
        let route = if path.starts_with("v1/operations/") {
            "v1/operations/{key}"
        } else {
            path
        };
        let span = tracing::info_span!(
            "processor.call",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            processor = NAME,
            http.request.method = %method,
            http.response.status_code = tracing::field::Empty,
        );
        let result = self
            .exchange(method, path, idempotency_key, body)
            .instrument(span.clone())
            .await;
        match &result {
            Ok((status, _)) => {
                span.record("http.response.status_code", status.as_u16());
            }
            Err(_) => {
                span.record("otel.status_code", "error");
            }
        }
        result
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> CallResult<(StatusCode, Value)> {
        let url = self
            .base_url
            .join(path)
            .map_err(|e| CallError::Unknown(format!("bad processor URL: {e}")))?;
        let client = self.egress.client_for(&url)?;
        let mut request = client
            .request(method, url)
            .bearer_auth(&self.api_key)
            .timeout(self.call_timeout);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .headers(snakepay_telemetry::trace::outbound_headers())
            .send()
            .await
            .map_err(|e| CallError::Unknown(describe(&e)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Unknown(describe(&e)))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(CallError::Unknown(format!(
                "processor answered {status} {}",
                error_code(&body)
            )));
        }
        if status == StatusCode::CONFLICT && error_code(&body) == "idempotency_in_progress" {
            return Err(CallError::Unknown("operation still in progress".into()));
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            // Our request under this key differs from the first: a bug of
            // ours, never a definite answer about the payment.
            tracing::error!(
                processor = NAME,
                "processor reports an idempotency key mismatch"
            );
            return Err(CallError::KeyConflict("idempotency key mismatch".into()));
        }
        if status.is_client_error() && !DEFINITE_ERRORS.contains(&error_code(&body)) {
            // 401, 403, 429, a wrong path…: about our request to this
            // processor, not about the payment. Never a decline.
            tracing::error!(
                processor = NAME,
                http.status = status.as_u16(),
                processor.error = error_code(&body),
                "processor refused our request"
            );
            return Err(CallError::Unknown(format!(
                "processor answered {status} {}",
                error_code(&body)
            )));
        }
        Ok((status, body))
    }

    async fn completion(
        &self,
        path: &str,
        idempotency_key: &str,
        body: Value,
    ) -> CallResult<Completion> {
        let (status, body) = self
            .call(Method::POST, path, Some(idempotency_key), Some(&body))
            .await?;
        Ok(completion_from(status, &body))
    }

    async fn inquire(&self, idempotency_key: &str) -> CallResult<Inquiry<StoredOperation>> {
        let path = format!("v1/operations/{}", encode_segment(idempotency_key));
        let (status, body) = self.call(Method::GET, &path, None, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(Inquiry::NeverPerformed),
            StatusCode::CONFLICT => Ok(Inquiry::InProgress),
            s if s.is_success() => serde_json::from_value(body)
                .map(Inquiry::Answered)
                .map_err(|e| CallError::Unknown(format!("unreadable inquiry answer: {e}"))),
            other => Err(CallError::Unknown(format!("inquiry answered {other}"))),
        }
    }
}

/// `GET /v1/operations/{key}`: the stored answer and the authorization now.
#[derive(Debug, Deserialize)]
struct StoredOperation {
    response_status: u16,
    response: Value,
    authorization: Option<WireAuthorization>,
}

#[derive(Debug, Clone, Deserialize)]
struct WireAuthorization {
    id: String,
    status: String,
    decline_code: Option<String>,
    action_url: Option<String>,
}

#[derive(Serialize)]
struct WireCard<'a> {
    number: &'a str,
    exp_month: u8,
    exp_year: u16,
    cvc: &'a str,
}

impl Processor for SimProcessor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest<'a>,
    ) -> BoxFuture<'a, CallResult<Authorization>> {
        async move {
            let Some(cvc) = &request.card.cvc else {
                // The simulator requires a CVC, and ours is deleted once an
                // authorization completes: a payment method used before
                // cannot be charged again here. A definite answer, so the
                // payment does not wait for an outcome that cannot come.
                return Ok(Authorization::Declined {
                    processor_reference: String::new(),
                    error: card_error(Some("incorrect_cvc")),
                });
            };
            let card = WireCard {
                number: request.card.pan.expose_digits(),
                exp_month: request.card.expiry.month(),
                exp_year: request.card.expiry.year(),
                cvc: cvc.expose_digits(),
            };
            let mut body = json!({
                "amount": request.amount.minor(),
                "currency": request.amount.currency().code().to_ascii_lowercase(),
                "card": card,
                "capture": request.capture,
                "reference": request.reference,
            });
            if let (Some(url), Some(fields)) = (request.return_url, body.as_object_mut()) {
                fields.insert("return_url".to_owned(), url.into());
            }
            let (status, body) = self
                .call(
                    Method::POST,
                    "v1/authorizations",
                    Some(request.idempotency_key),
                    Some(&body),
                )
                .await?;
            authorization_from(status, &body)
        }
        .boxed()
    }

    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
        amount: Money,
    ) -> BoxFuture<'a, CallResult<Completion>> {
        async move {
            let path = format!(
                "v1/authorizations/{}/capture",
                encode_segment(processor_reference)
            );
            self.completion(&path, idempotency_key, json!({ "amount": amount.minor() }))
                .await
        }
        .boxed()
    }

    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Completion>> {
        async move {
            let path = format!(
                "v1/authorizations/{}/void",
                encode_segment(processor_reference)
            );
            self.completion(&path, idempotency_key, json!({})).await
        }
        .boxed()
    }

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
        amount: Money,
        reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Completion>> {
        async move {
            let body = json!({
                "authorization": processor_reference,
                "amount": amount.minor(),
                "reference": reference,
            });
            self.completion("v1/refunds", idempotency_key, body).await
        }
        .boxed()
    }

    fn inquire_authorization<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallResult<Inquiry<Authorization>>> {
        async move {
            Ok(match self.inquire(idempotency_key).await? {
                Inquiry::Answered(stored) => {
                    let status = StatusCode::from_u16(stored.response_status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if status.is_server_error() {
                        // The work was done but the answer was an error:
                        // the authorization as it stands tells the truth.
                        match stored.authorization {
                            Some(current) => Inquiry::Answered(map_authorization(&current)),
                            None => Inquiry::NeverPerformed,
                        }
                    } else {
                        Inquiry::Answered(authorization_from(status, &stored.response)?)
                    }
                }
                Inquiry::NeverPerformed => Inquiry::NeverPerformed,
                Inquiry::InProgress => Inquiry::InProgress,
            })
        }
        .boxed()
    }

    fn inquire_completion<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallResult<Inquiry<Completion>>> {
        async move {
            Ok(match self.inquire(idempotency_key).await? {
                Inquiry::Answered(stored) => {
                    let status = StatusCode::from_u16(stored.response_status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if status.is_server_error() {
                        return Err(CallError::Unknown(format!("stored answer is {status}")));
                    }
                    Inquiry::Answered(completion_from(status, &stored.response))
                }
                Inquiry::NeverPerformed => Inquiry::NeverPerformed,
                Inquiry::InProgress => Inquiry::InProgress,
            })
        }
        .boxed()
    }

    fn authorization_status<'a>(
        &'a self,
        processor_reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Authorization>> {
        async move {
            let path = format!("v1/authorizations/{}", encode_segment(processor_reference));
            let (status, body) = self.call(Method::GET, &path, None, None).await?;
            if !status.is_success() {
                return Err(CallError::Unknown(format!(
                    "authorization lookup answered {status}"
                )));
            }
            let wire: WireAuthorization = serde_json::from_value(body)
                .map_err(|e| CallError::Unknown(format!("unreadable authorization: {e}")))?;
            Ok(map_authorization(&wire))
        }
        .boxed()
    }
}

/// An authorization answer: the authorization object, or a definite 4xx
/// refusal of the request itself (declined as a processing error).
fn authorization_from(status: StatusCode, body: &Value) -> CallResult<Authorization> {
    if status.is_success() {
        let wire: WireAuthorization = serde_json::from_value(body.clone())
            .map_err(|e| CallError::Unknown(format!("unreadable authorization: {e}")))?;
        return Ok(map_authorization(&wire));
    }
    tracing::warn!(
        processor = NAME,
        http.status = status.as_u16(),
        processor.error = error_code(body),
        "processor refused an authorization request"
    );
    Ok(Authorization::Declined {
        processor_reference: String::new(),
        error: card_error(Some("processing_error")),
    })
}

fn completion_from(status: StatusCode, body: &Value) -> Completion {
    if status.is_success() {
        Completion::Done
    } else {
        Completion::Refused {
            code: error_code(body).to_owned(),
            message: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The processor refused the operation.")
                .to_owned(),
        }
    }
}

fn map_authorization(wire: &WireAuthorization) -> Authorization {
    let processor_reference = wire.id.clone();
    match wire.status.as_str() {
        "approved" | "captured" => Authorization::Approved {
            processor_reference,
        },
        "requires_action" => Authorization::RequiresAction {
            processor_reference,
            url: wire.action_url.clone().unwrap_or_default(),
        },
        "voided" => Authorization::Voided {
            processor_reference,
        },
        _ => Authorization::Declined {
            processor_reference,
            error: card_error(wire.decline_code.as_deref()),
        },
    }
}

/// The simulator's decline codes as the API's card errors, with Stripe's
/// customer-facing messages.
pub fn card_error(decline_code: Option<&str>) -> PaymentError {
    let (code, decline, message) = match decline_code.unwrap_or("generic_decline") {
        "insufficient_funds" => (
            CardErrorCode::CardDeclined,
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        "expired_card" => (
            CardErrorCode::ExpiredCard,
            "expired_card",
            "Your card has expired.",
        ),
        "incorrect_cvc" => (
            CardErrorCode::IncorrectCvc,
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        "processing_error" => (
            CardErrorCode::ProcessingError,
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        "incorrect_number" => (
            CardErrorCode::IncorrectNumber,
            "incorrect_number",
            "Your card number is incorrect.",
        ),
        "authentication_failed" | "authentication_required" => (
            CardErrorCode::AuthenticationRequired,
            "authentication_required",
            "Your card was declined. This transaction requires authentication.",
        ),
        _ => (
            CardErrorCode::CardDeclined,
            "generic_decline",
            "Your card was declined.",
        ),
    };
    PaymentError {
        code,
        decline_code: Some(decline.to_owned()),
        message: message.to_owned(),
    }
}

fn error_code(body: &Value) -> &str {
    body.get("error").and_then(Value::as_str).unwrap_or("")
}

/// Our IDs and keys are URL-safe already; anything else is percent-encoded
/// so it can never change the path.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A transport error without its URL (which is ours, but keeps logs short).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        // Our own URL, never card data: safe to keep in the message.
        error.to_string()
    }
}

/// Checks a `Sim-Signature` header (`t=<unix seconds>,v1=<hex HMAC-SHA256(
/// secret, "<t>.<body>")>`): a `v1` must match in constant time and `t` must
/// be within `tolerance_seconds` of `now`.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> bool {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => candidates.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if (now - timestamp).abs() > tolerance_seconds {
        return false;
    }
    candidates.iter().any(|candidate| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(candidate).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decline_codes_map_to_the_api_card_errors() {
        assert_eq!(
            card_error(Some("expired_card")).code,
            CardErrorCode::ExpiredCard
        );
        let funds = card_error(Some("insufficient_funds"));
        assert_eq!(funds.code, CardErrorCode::CardDeclined);
        assert_eq!(funds.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            card_error(None).decline_code.as_deref(),
            Some("generic_decline")
        );
    }

    #[test]
    fn signatures_verify_only_with_the_secret_body_and_fresh_time() {
        let secret = "notification_secret_0123456789";
        let body = br#"{"id":"ntf_1"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"1000.");
        mac.update(body);
        let header = format!("t=1000,v1={}", hex::encode(mac.finalize().into_bytes()));
        assert!(verify_signature(secret, &header, body, 1_010, 300));
        assert!(!verify_signature(secret, &header, b"{}", 1_010, 300));
        assert!(!verify_signature(
            "another_secret_0123456789",
            &header,
            body,
            1_010,
            300
        ));
        assert!(!verify_signature(secret, &header, body, 2_000, 300));
        assert!(!verify_signature(secret, "v1=00", body, 1_000, 300));
    }
}
