//! The transactional outbox (DESIGN.md §5): messages for the broker are
//! written in the same transaction as the state change they announce, and a
//! relay publishes them afterwards. The broker is never the only copy.

use snakepay_domain::effects::ProcessorCommand;
use snakepay_domain::ids::MerchantId;
use sqlx::{Postgres, Transaction};

use crate::idempotency::AnswerTo;

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// E.g. `command.authorize`, `event.payment_intent.succeeded`.
    pub routing_key: String,
    pub payload: serde_json::Value,
}

/// The outbox message of a processor command (`command.<name>`), with what
/// the integration service needs to find the payment, the reply queue of
/// the API instance waiting for the outcome, if one is, and the request
/// there that waits (`answer_to`, see `idempotency::AnswerTo`).
pub fn command_message(
    merchant_id: MerchantId,
    livemode: bool,
    payment_intent: &str,
    command: &ProcessorCommand,
    reply_to: Option<&str>,
    answer_to: Option<&AnswerTo>,
) -> anyhow::Result<OutboxMessage> {
    let name = match command {
        ProcessorCommand::Authorize { .. } => "authorize",
        ProcessorCommand::Capture { .. } => "capture",
        ProcessorCommand::Void { .. } => "void",
        ProcessorCommand::Refund { .. } => "refund",
        ProcessorCommand::Inquire { .. } => "inquire",
    };
    let mut payload = serde_json::json!({
        "merchant_id": merchant_id.to_string(),
        "livemode": livemode,
        "payment_intent": payment_intent,
        "command": serde_json::to_value(command)?,
    });
    if let (Some(reply_to), Some(fields)) = (reply_to, payload.as_object_mut()) {
        fields.insert("reply_to".to_owned(), reply_to.into());
        if let Some(answer_to) = answer_to {
            fields.insert("answer_to".to_owned(), serde_json::to_value(answer_to)?);
        }
    }
    Ok(OutboxMessage {
        routing_key: format!("command.{name}"),
        payload,
    })
}

/// A command as the integration service reads it from a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct CommandPayload {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub payment_intent: String,
    pub command: ProcessorCommand,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The waiting request whose final answer the outcome may store and
    /// send (only with `reply_to`).
    #[serde(default)]
    pub answer_to: Option<AnswerTo>,
}

/// True for routing keys the relay can route: the first segment names the
/// exchange (`command.…` → commands, `event.…` → events).
fn routable(routing_key: &str) -> bool {
    ["command.", "event."].iter().any(|prefix| {
        routing_key
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// Writes all messages in one statement, with the current span's trace
/// context in their headers. A routing key the relay could not
/// route is refused here, in the writer's transaction, rather than found
/// later by the relay, where it would hold up its whole shard.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    messages: &[OutboxMessage],
) -> anyhow::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let (keys, payloads) = columns(messages)?;
    sqlx::query(
        "insert into outbox (routing_key, payload, headers)
         select key, payload, $3 from unnest($1::text[], $2::jsonb[]) as m(key, payload)",
    )
    .bind(&keys)
    .bind(&payloads)
    .bind(headers(
        snakepay_telemetry::trace::current_traceparent().as_deref(),
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The routing keys and payloads of `messages`, to bind as arrays; a key
/// the relay could not route is refused (see [`enqueue`]).
pub(crate) fn columns(
    messages: &[OutboxMessage],
) -> anyhow::Result<(Vec<&str>, Vec<serde_json::Value>)> {
    if let Some(bad) = messages.iter().find(|m| !routable(&m.routing_key)) {
        anyhow::bail!(
            "outbox routing key `{}` is neither command.* nor event.*",
            bad.routing_key
        );
    }
    Ok((
        messages.iter().map(|m| m.routing_key.as_str()).collect(),
        messages.iter().map(|m| m.payload.clone()).collect(),
    ))
}

/// The headers of rows written now, given the current span's
/// `traceparent`: the messages continue the trace of the request or message
/// being handled; the relay and the broker carry it to the consumer.
pub(crate) fn headers(traceparent: Option<&str>) -> serde_json::Value {
    match traceparent {
        Some(traceparent) => serde_json::json!({ "traceparent": traceparent }),
        None => serde_json::json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::routable;

    #[test]
    fn only_command_and_event_keys_are_routable() {
        for key in ["command.authorize", "event.payment_intent.succeeded"] {
            assert!(routable(key), "{key}");
        }
        for key in [
            "",
            "command.",
            "event",
            "commands.authorize",
            "other.thing",
            "Command.authorize",
        ] {
            assert!(!routable(key), "{key}");
        }
    }
}
