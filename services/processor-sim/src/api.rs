//! The acquirer API under `/v1`: request types, their validation, and the
//! handlers. Every mutating handler turns its request into a
//! [`Prepared`](crate::app::Prepared) command and hands it to
//! [`execute`](crate::app::execute).

use std::sync::Arc;

use crate::secret::SecretString;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use snakepay_domain::Currency;
use snakepay_vault::{Cvc, Expiry, Pan};

use crate::app::{Prepared, SharedApp, execute};
use crate::cards::{self, CardBehaviour, DeclineCode};
use crate::clock::year_month_utc;
use crate::engine::{AuthorizeCommand, CardDecision, Command};
use crate::error::{ApiError, json_error};
use crate::idempotency::is_valid_key;
use crate::ids::new_id;

/// The largest amount we accept, in minor units: far above any card limit,
/// far below overflow.
pub const MAX_AMOUNT_MINOR: i64 = 99_999_999_999;
/// The longest `reference` we keep.
pub const REFERENCE_MAX_CHARS: usize = 255;
/// The longest `return_url`.
pub const RETURN_URL_MAX_CHARS: usize = 2_048;

pub fn router() -> Router<SharedApp> {
    Router::new()
        .route("/v1/authorizations", routing::post(create_authorization))
        .route("/v1/authorizations/{id}", routing::get(get_authorization))
        .route(
            "/v1/authorizations/{id}/capture",
            routing::post(capture_authorization),
        )
        .route(
            "/v1/authorizations/{id}/void",
            routing::post(void_authorization),
        )
        .route("/v1/refunds", routing::post(create_refund))
        .route("/v1/refunds/{id}", routing::get(get_refund))
        .route("/v1/operations/{key}", routing::get(get_operation))
}

/// Card fields as sent. The number and CVC are kept in [`SecretString`]s so
/// a stray `{:?}` cannot print them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardInput {
    number: SecretString,
    exp_month: u32,
    exp_year: u32,
    cvc: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationRequest {
    amount: i64,
    currency: String,
    card: CardInput,
    #[serde(default)]
    capture: bool,
    reference: String,
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CaptureRequest {
    #[serde(default)]
    amount: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VoidRequest {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    authorization: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reference: Option<String>,
}

/// Parses a JSON body; an empty body is `{}` for requests whose fields are
/// all optional.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|error| json_error(&error))
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
            "Every mutating request needs an Idempotency-Key header.",
        ));
    };
    match value.to_str() {
        Ok(key) if is_valid_key(key) => Ok(key.to_owned()),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "The Idempotency-Key must be 1 to 255 printable ASCII characters.",
        )),
    }
}

fn check_amount(amount: i64) -> Result<i64, ApiError> {
    if (1..=MAX_AMOUNT_MINOR).contains(&amount) {
        Ok(amount)
    } else {
        Err(ApiError::invalid(
            "amount",
            format!("The amount must be an integer from 1 to {MAX_AMOUNT_MINOR} in minor units."),
        ))
    }
}

fn check_reference(reference: &str, param: &'static str) -> Result<(), ApiError> {
    if reference.is_empty()
        || reference.chars().count() > REFERENCE_MAX_CHARS
        || reference.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            param,
            format!(
                "The {param} must be 1 to {REFERENCE_MAX_CHARS} characters without control characters."
            ),
        ));
    }
    Ok(())
}

fn check_return_url(return_url: &str) -> Result<(), ApiError> {
    let valid = return_url.len() <= RETURN_URL_MAX_CHARS
        && url::Url::parse(return_url).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "return_url",
            "The return_url must be an absolute http or https URL.",
        ))
    }
}

fn fingerprint_amount(amount: Option<i64>) -> Vec<u8> {
    amount.map_or_else(|| b"none".to_vec(), |a| a.to_string().into_bytes())
}

async fn create_authorization(
    State(app): State<SharedApp>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request: AuthorizationRequest = parse_body(&body)?;
    let amount = check_amount(request.amount)?;
    let currency = Currency::parse(&request.currency).map_err(|_| {
        ApiError::invalid(
            "currency",
            "The currency must be a lower-case ISO 4217 code such as `usd`.",
        )
    })?;
    check_reference(&request.reference, "reference")?;
    if let Some(return_url) = &request.return_url {
        check_return_url(return_url)?;
    }
    let card = &request.card;
    let expiry = Expiry::new(card.exp_month, card.exp_year).map_err(|error| {
        let param = match error.code() {
            "invalid_expiry_month" => "card.exp_month",
            _ => "card.exp_year",
        };
        ApiError::invalid(param, error.to_string())
    })?;
    let pan = Pan::parse(card.number.expose());
    let cvc = match &pan {
        Ok(pan) => Cvc::parse_for_brand(card.cvc.expose(), pan.brand()),
        Err(_) => Cvc::parse(card.cvc.expose()),
    }
    .map_err(|error| ApiError::invalid("card.cvc", error.to_string()))?;

    let (decision, behaviour, last4, brand) = match &pan {
        Err(_) => (
            CardDecision::Decline(DeclineCode::IncorrectNumber),
            None,
            None,
            None,
        ),
        Ok(pan) => {
            let behaviour = cards::behaviour(pan.expose_digits());
            let (year, month) = year_month_utc(app.now());
            let expired = expiry.is_expired_at(u16::try_from(year).unwrap_or(u16::MAX), month);
            let decision = match behaviour {
                _ if expired => CardDecision::Decline(DeclineCode::ExpiredCard),
                CardBehaviour::Decline(code) => CardDecision::Decline(code),
                CardBehaviour::RequireAuthentication => CardDecision::RequireAuthentication,
                CardBehaviour::Approve
                | CardBehaviour::FailBeforeWork
                | CardBehaviour::FailAfterWork
                | CardBehaviour::TimeoutAfterWork
                | CardBehaviour::SlowApproval => CardDecision::Approve,
            };
            (
                decision,
                Some(behaviour),
                Some(pan.last4().to_owned()),
                Some(pan.brand().as_str().to_owned()),
            )
        }
    };

    let number_for_fingerprint = match &pan {
        Ok(pan) => pan.expose_digits(),
        Err(_) => card.number.expose(),
    };
    let fingerprint = app.fingerprinter.fingerprint(&[
        b"authorization",
        amount.to_string().as_bytes(),
        currency.code().as_bytes(),
        number_for_fingerprint.as_bytes(),
        card.exp_month.to_string().as_bytes(),
        card.exp_year.to_string().as_bytes(),
        cvc.expose_digits().as_bytes(),
        if request.capture {
            b"capture"
        } else {
            b"authorize"
        },
        request.reference.as_bytes(),
        request.return_url.as_deref().unwrap_or("").as_bytes(),
    ]);
    let id = new_id("auth");
    let command = Command::Authorize(AuthorizeCommand {
        action_url: format!("{}/3ds/{id}", app.public_url),
        id,
        amount,
        currency: currency.code().to_owned(),
        capture: request.capture,
        reference: request.reference,
        return_url: request.return_url,
        card_last4: last4,
        card_brand: brand,
        decision,
    });
    Ok(execute(
        Arc::clone(&app),
        Prepared {
            idempotency_key: key,
            fingerprint,
            command,
            card: behaviour,
        },
    )
    .await)
}

async fn capture_authorization(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request: CaptureRequest = parse_body(&body)?;
    if let Some(amount) = request.amount {
        check_amount(amount)?;
    }
    let fingerprint = app.fingerprinter.fingerprint(&[
        b"capture",
        id.as_bytes(),
        &fingerprint_amount(request.amount),
    ]);
    let command = Command::Capture {
        authorization_id: id,
        amount: request.amount,
    };
    Ok(execute(
        Arc::clone(&app),
        Prepared {
            idempotency_key: key,
            fingerprint,
            command,
            card: None,
        },
    )
    .await)
}

async fn void_authorization(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let VoidRequest {} = parse_body(&body)?;
    let fingerprint = app.fingerprinter.fingerprint(&[b"void", id.as_bytes()]);
    let command = Command::Void {
        authorization_id: id,
    };
    Ok(execute(
        Arc::clone(&app),
        Prepared {
            idempotency_key: key,
            fingerprint,
            command,
            card: None,
        },
    )
    .await)
}

async fn create_refund(
    State(app): State<SharedApp>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let request: RefundRequest = parse_body(&body)?;
    if request.authorization.is_empty() {
        return Err(ApiError::invalid(
            "authorization",
            "Name the authorization to refund.",
        ));
    }
    if let Some(amount) = request.amount {
        check_amount(amount)?;
    }
    if let Some(reference) = &request.reference {
        check_reference(reference, "reference")?;
    }
    let fingerprint = app.fingerprinter.fingerprint(&[
        b"refund",
        request.authorization.as_bytes(),
        &fingerprint_amount(request.amount),
        request.reference.as_deref().unwrap_or("").as_bytes(),
    ]);
    let command = Command::Refund {
        refund_id: new_id("rf"),
        authorization_id: request.authorization,
        amount: request.amount,
        reference: request.reference,
    };
    Ok(execute(
        Arc::clone(&app),
        Prepared {
            idempotency_key: key,
            fingerprint,
            command,
            card: None,
        },
    )
    .await)
}

async fn get_authorization(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ledger = app.ledger.lock().await;
    let authorization = ledger.authorization(&id).ok_or_else(|| {
        ApiError::not_found("authorization_not_found", format!("No authorization {id}."))
    })?;
    Ok(Json(authorization).into_response())
}

async fn get_refund(
    State(app): State<SharedApp>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let ledger = app.ledger.lock().await;
    let refund = ledger
        .refund(&id)
        .ok_or_else(|| ApiError::not_found("refund_not_found", format!("No refund {id}.")))?;
    Ok(Json(refund).into_response())
}

/// The status inquiry: what became of the operation sent under `key`.
async fn get_operation(
    State(app): State<SharedApp>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let Some(stored) = app.keys.get(&key) else {
        if app.keys.is_in_progress(&key) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "operation_in_progress",
                "The operation sent under this key is still being processed.",
            ));
        }
        return Err(ApiError::not_found(
            "unknown_operation",
            "No operation was performed under this idempotency key.",
        ));
    };
    let current = match &stored.authorization_id {
        Some(id) => app.ledger.lock().await.authorization(id).cloned(),
        None => None,
    };
    Ok(Json(json!({
        "object": "operation",
        "idempotency_key": key,
        "operation": stored.kind.as_str(),
        "created": stored.at,
        "response_status": stored.status,
        "response": stored.body,
        "authorization": current,
    }))
    .into_response())
}
