//! Outcome replies (DESIGN.md §5, step 4): how the integration service tells
//! the External API instance that sent a command that its outcome committed.
//!
//! Each API instance declares one exclusive, server-named reply queue
//! ([`declare_reply_queue`]) and names it in the `reply_to` field of every
//! command it writes to the outbox. After the integration service commits
//! the outcome of such a command it publishes an [`OutcomeReply`] straight to
//! that queue through the default exchange ([`send_reply`]).
//!
//! A reply is a wake-up call: the database holds the truth, and the waiting
//! instance reloads the object when the reply arrives (or when its wait
//! runs out). The one exception is a reply that carries the waiting
//! request's final answer ([`ReplyAnswer`]), which the integration service
//! stored under that request's idempotency key in the same statement as the
//! outcome: that request answers with it as is. A reply may be lost — the
//! instance restarted, the broker was down — and nothing is wrong except
//! that the client gets `processing` and polls. Replies are therefore never
//! retried.

use anyhow::Context;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::publisher::Publisher;

/// The envelope type of an outcome reply.
pub const OUTCOME_REPLY_KIND: &str = "reply.outcome";

/// The field of a command's payload that names the reply queue.
pub const REPLY_TO_FIELD: &str = "reply_to";

/// "This object changed; look again."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeReply {
    /// The payment intent whose command committed an outcome.
    pub payment_intent: String,
    /// Set when the command was a refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<String>,
    /// The final answer of the request named in the command's `answer_to`,
    /// when the outcome committed with it (and stored it under that
    /// request's key, if it had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<ReplyAnswer>,
}

/// A waiting request's final answer: the exact status and body to send
/// (and, with a key, the ones stored under it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyAnswer {
    pub request_id: String,
    pub status: u16,
    /// The JSON body as text, so its bytes arrive exactly as stored.
    pub body: String,
}

impl OutcomeReply {
    pub fn to_envelope(&self) -> anyhow::Result<Envelope> {
        Ok(Envelope::new(
            OUTCOME_REPLY_KIND,
            serde_json::to_value(self).context("serializing an outcome reply")?,
        )?)
    }

    /// The reply in `envelope`, or `None` for any other message.
    pub fn from_envelope(envelope: &Envelope) -> Option<OutcomeReply> {
        if envelope.kind != OUTCOME_REPLY_KIND {
            return None;
        }
        serde_json::from_value(envelope.payload.clone()).ok()
    }
}

/// Declares this instance's reply queue: server-named, exclusive to the
/// connection and deleted with it, so a dead instance leaves nothing behind.
/// Returns its name, to put in `reply_to`.
pub async fn declare_reply_queue(channel: &Channel) -> anyhow::Result<String> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                durable: false,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the reply queue")?;
    Ok(queue.name().as_str().to_owned())
}

/// Sends `reply` to the queue named `reply_to` through the default exchange.
/// The integration service's publisher does not wait for confirms
/// (`Publisher::connect_unconfirmed`): a reply to a queue that no longer
/// exists (its instance is gone) is dropped by the broker, and sending
/// fails only when the broker cannot be reached. Callers log a failure and
/// carry on.
pub async fn send_reply(
    publisher: &Publisher,
    reply_to: &str,
    reply: &OutcomeReply,
) -> anyhow::Result<()> {
    publisher
        .publish("", reply_to, &reply.to_envelope()?)
        .await
        .with_context(|| format!("sending an outcome reply to {reply_to}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_round_trips_through_its_envelope() {
        let reply = OutcomeReply {
            payment_intent: "pi_1".into(),
            refund: Some("re_1".into()),
            answer: Some(ReplyAnswer {
                request_id: "req_1".into(),
                status: 402,
                body: r#"{"error":{"code":"card_declined"}}"#.into(),
            }),
        };
        let envelope = reply.to_envelope().unwrap();
        assert_eq!(envelope.kind, OUTCOME_REPLY_KIND);
        assert_eq!(OutcomeReply::from_envelope(&envelope), Some(reply));
        let other = Envelope::new("event.x", serde_json::json!({})).unwrap();
        assert_eq!(OutcomeReply::from_envelope(&other), None);
    }
}
