//! The dead-letter queues (crates/bus topology: `{queue}.dlq` for each
//! consumer queue), operated from the back office:
//!
//! - [`DeadLetters::collect`] moves what waits in every dead-letter queue
//!   into the control database (`snakepay_store::dead_letters`): the row
//!   commits first, then the broker message is acknowledged, so a crash
//!   between the two parks it again (the pending-message index makes that
//!   a no-op) and never loses it.
//! - [`DeadLetters::replay`] publishes the parked message, unchanged, to the
//!   queue it died in (the default exchange, routed by the queue's name, so
//!   no other consumer gets a second copy), with publisher confirms.
//! - [`mask`] hides card data when a message is shown.

use anyhow::Context;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};
use snakepay_bus::{Envelope, Publisher, Topology, short};
use snakepay_config::sections::BrokerConfig;
use snakepay_store::dead_letters::{self, NewDeadLetter};
use sqlx::PgPool;

/// Messages moved per dead-letter queue per collection: bounds one
/// request's work; the next collection takes the rest.
pub const COLLECT_BATCH: usize = 500;

pub struct DeadLetters {
    url: String,
    topology: Topology,
}

impl DeadLetters {
    pub fn new(config: &BrokerConfig) -> DeadLetters {
        DeadLetters {
            url: config.url.expose().to_string(),
            topology: Topology::from_config(config),
        }
    }

    /// Every consumer queue whose dead letters we collect (names without
    /// the topology prefix).
    pub fn queues(&self) -> Vec<String> {
        Topology::standard_queues()
            .into_iter()
            .map(|spec| spec.name)
            .collect()
    }

    /// Moves waiting dead letters into `control`; returns how many were
    /// parked.
    pub async fn collect(&self, control: &PgPool) -> anyhow::Result<usize> {
        let connection = snakepay_bus::connect(&self.url).await?;
        let result = async {
            let channel = connection.create_channel().await?;
            // Declaring is idempotent and makes sure the queues exist.
            self.topology.declare(&channel).await?;
            let mut parked = 0;
            for spec in Topology::standard_queues() {
                let dlq = self.topology.dead_letter_queue_name(&spec);
                for _ in 0..COLLECT_BATCH {
                    let Some(message) = channel
                        .basic_get(short(&dlq)?, BasicGetOptions { no_ack: false })
                        .await
                        .with_context(|| format!("basic.get {dlq}"))?
                    else {
                        break;
                    };
                    let delivery = message.delivery;
                    let properties = &delivery.properties;
                    let headers = properties
                        .headers()
                        .as_ref()
                        .map(table_to_json)
                        .unwrap_or_else(|| Value::Object(Map::new()));
                    let envelope = Envelope::parse(&delivery.data).ok();
                    let message_id = properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned())
                        .or_else(|| envelope.as_ref().map(|e| e.id.clone()));
                    let message_type = properties
                        .kind()
                        .as_ref()
                        .map(|kind| kind.as_str().to_owned())
                        .or_else(|| envelope.as_ref().map(|e| e.kind.clone()));
                    let reason = headers
                        .pointer("/x-death/0/reason")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if dead_letters::park(
                        control,
                        &NewDeadLetter {
                            queue: &spec.name,
                            message_id: message_id.as_deref(),
                            message_type: message_type.as_deref(),
                            body: &delivery.data,
                            headers: &headers,
                            reason: reason.as_deref(),
                        },
                    )
                    .await?
                    {
                        parked += 1;
                        tracing::warn!(
                            broker.queue = %spec.name,
                            broker.message_id = message_id.as_deref().unwrap_or("-"),
                            broker.dead_letter_reason = reason.as_deref().unwrap_or("-"),
                            "dead letter parked for an operator"
                        );
                    }
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                }
            }
            Ok::<usize, anyhow::Error>(parked)
        }
        .await;
        let _ = connection.close(200, "done".into()).await;
        result
    }

    /// Publishes a parked message back to its queue, with confirms.
    pub async fn replay(&self, queue: &str, body: &[u8]) -> anyhow::Result<()> {
        let envelope = Envelope::parse(body)
            .context("the message is not a valid envelope; it can only be discarded")?;
        let spec = Topology::standard_queues()
            .into_iter()
            .find(|spec| spec.name == queue)
            .with_context(|| format!("unknown queue {queue}"))?;
        let publisher = Publisher::connect(&self.url).await?;
        let published = publisher
            .publish("", &self.topology.queue_name(&spec), &envelope)
            .await;
        publisher.close().await;
        Ok(published?)
    }
}

fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.as_str().to_owned(), amqp_to_json(value)))
            .collect(),
    )
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(amqp_to_json).collect())
        }
        AMQPValue::FieldTable(table) => table_to_json(table),
        other => Value::from(format!("{other:?}")),
    }
}

/// Fields whose value is never shown, whatever it looks like.
const SECRET_FIELDS: [&str; 6] = ["cvc", "cvv", "number", "pan", "card_number", "secret"];

/// A copy of `value` with card data hidden: values of card-ish fields
/// replaced, and any run of 13–19 digits (spaces or dashes between them
/// allowed) that could be a card number reduced to its first 6 and last 4.
pub fn mask(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| {
                    let shown = if SECRET_FIELDS.contains(&key.to_ascii_lowercase().as_str())
                        && !value.is_null()
                    {
                        Value::from("[masked]")
                    } else {
                        mask(value)
                    };
                    (key.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask).collect()),
        Value::String(text) => Value::from(mask_text(text)),
        other => other.clone(),
    }
}

/// Masks digit runs of card-number length in free text.
pub fn mask_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while let Some(&c) = chars.get(index) {
        if !c.is_ascii_digit() {
            out.push(c);
            index += 1;
            continue;
        }
        // The run: digits with single spaces or dashes between them.
        let start = index;
        let mut end = index;
        let mut digits = String::new();
        while let Some(&c) = chars.get(end) {
            if c.is_ascii_digit() {
                digits.push(c);
                end += 1;
            } else if matches!(c, ' ' | '-')
                && chars.get(end + 1).is_some_and(char::is_ascii_digit)
                && !digits.is_empty()
            {
                end += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) {
            let first6 = digits.get(..6).unwrap_or_default();
            let last4 = digits.get(digits.len() - 4..).unwrap_or_default();
            out.push_str(&format!("{first6}{}{last4}", "*".repeat(digits.len() - 10)));
        } else {
            out.extend(chars.get(start..end).unwrap_or_default());
        }
        index = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_numbers_and_card_fields_are_masked_wherever_they_are() {
        let message = json!({
            "payload": {
                "card": { "number": "4242424242424242", "cvc": "123", "exp_month": 12 },
                "note": "customer said 4000 0027 6000 3184 failed",
                "amount": 2000,
                "payment_intent": "pi_0123",
            }
        });
        let masked = mask(&message);
        let text = masked.to_string();
        assert!(!text.contains("4242424242424242"), "{text}");
        assert!(!text.contains("\"123\""), "{text}");
        assert!(!text.contains("4000 0027 6000 3184"), "{text}");
        assert!(text.contains("400000******3184"), "{text}");
        assert_eq!(masked["payload"]["amount"], 2000);
        assert_eq!(masked["payload"]["card"]["exp_month"], 12);
        assert_eq!(
            mask_text("order 12345, 2024-06-20"),
            "order 12345, 2024-06-20"
        );
    }
}
