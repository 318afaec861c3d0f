//! The final answer after a wait: the one place that decides what a client
//! that waited is told.
//!
//! - An intent that settled (`succeeded`, `requires_capture`,
//!   `requires_action` with `next_action`, `canceled`) or is still
//!   `processing`: 200 with the intent, `expand[]` applied.
//! - A confirmation whose own attempt was declined (the intent is back in
//!   `requires_payment_method` with `last_payment_error`): 402, shaped as
//!   Stripe shapes card errors — `type: card_error`, `code`, `decline_code`,
//!   `message`, `param: null`, `charge` (the failed charge) and
//!   `payment_intent` (the whole intent) — with `Stripe-Should-Retry: false`.
//! - A capture or cancel that the processor refused (the intent is back in
//!   `requires_capture` with `last_payment_error`): 402 as well, with the
//!   code the integration service recorded (`processing_error` for a
//!   refusal). The authorization still holds; the merchant may capture or
//!   cancel again with a new idempotency key, so the SDK must not retry this
//!   one. A 200 would let a client that does not read `status` believe the
//!   money moved.
//! - A refund: 200 with the refund (`succeeded`, `failed`, or `pending`).

use http::StatusCode;
use serde_json::Value;
use snakepay_domain::payment_intent::{PaymentError, PaymentIntent, PaymentIntentStatus};
use snakepay_http::ApiError;
use snakepay_store::objects;
use sqlx::PgConnection;

use super::{Current, IntentChange, Subject};
use crate::auth::Auth;
use crate::idempotent::Reply;
use crate::routes::payment_intents;

pub(super) async fn render(
    conn: &mut PgConnection,
    auth: &Auth,
    subject: &Subject<'_>,
    current: &Current,
) -> anyhow::Result<Reply> {
    match (subject, current) {
        (Subject::Intent { change, expand, .. }, Current::Intent(record)) => {
            let object = payment_intents::render(conn, auth, record, expand).await?;
            match refusal(*change, &record.intent) {
                Some(error) => card_error(error, &record.intent, object),
                None => json(StatusCode::OK, &object, current.in_flight()),
            }
        }
        (Subject::Refund { .. }, Current::Refund(record)) => json(
            StatusCode::OK,
            &objects::refund(record),
            current.in_flight(),
        ),
        _ => anyhow::bail!("the loaded object does not match what the request changed"),
    }
}

/// The processor's refusal of this request's change, if that is how it ended.
fn refusal(change: IntentChange, intent: &PaymentIntent) -> Option<&PaymentError> {
    let error = intent.last_payment_error.as_ref()?;
    let refused = match change {
        IntentChange::Confirm { attempt } => {
            intent.status == PaymentIntentStatus::RequiresPaymentMethod
                && intent.latest_attempt == Some(attempt)
        }
        // Back from `processing` to `requires_capture` only on a refusal.
        IntentChange::Capture | IntentChange::Cancel => {
            intent.status == PaymentIntentStatus::RequiresCapture
        }
    };
    refused.then_some(error)
}

fn card_error(
    error: &PaymentError,
    intent: &PaymentIntent,
    object: Value,
) -> anyhow::Result<Reply> {
    let code = serde_json::to_value(error.code)?;
    let code = code
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("card error code is not a string"))?;
    let mut body =
        ApiError::card_error(code, error.decline_code.as_deref(), &error.message, object).body();
    if let Some(fields) = body.get_mut("error").and_then(Value::as_object_mut) {
        fields.insert(
            "charge".to_owned(),
            intent
                .latest_charge
                .map_or(Value::Null, |charge| Value::from(charge.to_string())),
        );
    }
    json(StatusCode::PAYMENT_REQUIRED, &body, false)
}

fn json(status: StatusCode, value: &Value, in_flight: bool) -> anyhow::Result<Reply> {
    Ok(Reply {
        status,
        body: serde_json::to_vec(value)?,
        in_flight,
    })
}
