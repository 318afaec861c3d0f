//! The final answer to a change that waited for the processor: the one
//! place that shapes it, so that the External API (which renders it after
//! reloading the intent) and the integration service (which renders it with
//! the outcome it commits, stores it under the request's idempotency key
//! and sends it in its reply) answer byte for byte alike.
//!
//! - An intent that settled or is still in flight: 200 with the intent.
//! - A change the processor refused (`refusal`): 402, shaped as Stripe
//!   shapes card errors — `type: card_error`, `code`, `decline_code`,
//!   `message`, `param: null`, `charge` (the failed charge) and
//!   `payment_intent` (the whole intent). The caller sends it with
//!   `Stripe-Should-Retry: false`.

use http::StatusCode;
use serde_json::Value;
use snakepay_domain::payment_intent::{PaymentError, PaymentIntent};

use crate::ApiError;

/// The status and body a client that waited for a change of `intent` gets;
/// `object` is the intent's JSON (with any `expand[]` applied).
pub fn intent_answer(
    intent: &PaymentIntent,
    refusal: Option<&PaymentError>,
    object: Value,
) -> (StatusCode, Value) {
    let Some(error) = refusal else {
        return (StatusCode::OK, object);
    };
    let mut body = ApiError::card_error(
        error.code.as_str(),
        error.decline_code.as_deref(),
        &error.message,
        object,
    )
    .body();
    if let Some(fields) = body.get_mut("error").and_then(Value::as_object_mut) {
        fields.insert(
            "charge".to_owned(),
            intent
                .latest_charge
                .map_or(Value::Null, |charge| Value::from(charge.to_string())),
        );
    }
    (StatusCode::PAYMENT_REQUIRED, body)
}
