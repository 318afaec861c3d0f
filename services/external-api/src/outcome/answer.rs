//! The final answer after a wait that reloaded the object (a reply that
//! carried the answer is sent as is). The shape of an intent's answer is
//! `snakepay_http::outcome`'s, which the integration service uses too:
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
use snakepay_http::outcome;
use snakepay_store::objects;
use sqlx::PgConnection;

use super::{Current, Subject};
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
            let intent = &record.intent;
            let (status, body) = outcome::intent_answer(intent, change.refusal(intent), object);
            json(status, &body, current.in_flight())
        }
        (Subject::Refund { .. }, Current::Refund(record)) => json(
            StatusCode::OK,
            &objects::refund(record),
            current.in_flight(),
        ),
        _ => anyhow::bail!("the loaded object does not match what the request changed"),
    }
}

fn json(status: StatusCode, value: &Value, in_flight: bool) -> anyhow::Result<Reply> {
    Ok(Reply {
        status,
        body: serde_json::to_vec(value)?,
        in_flight,
    })
}
