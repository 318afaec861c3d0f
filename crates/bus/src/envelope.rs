//! The versioned message envelope every Snakepay message travels in.
//!
//! The body is JSON (`{"v":1,"id":…,"type":…,"occurred_at":…,"traceparent":…,
//! "payload":…}`); the id, type and traceparent are repeated as AMQP
//! properties so the broker's tools and tracing middleware can read them
//! without parsing the body.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::{Deserialize, Serialize};

/// The only version this code writes and reads. A consumer that meets a
/// newer version rejects the message (it goes to the dead-letter queue)
/// rather than guessing at its meaning.
pub const ENVELOPE_VERSION: u32 = 1;

/// The AMQP header that carries the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// AMQP persistent delivery mode: the broker writes the message to disk
/// before it confirms.
const DELIVERY_MODE_PERSISTENT: u8 = 2;

/// Bytes of randomness in a generated message id.
const MESSAGE_ID_RANDOM_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    /// Unique per logical message; a redelivery or a republish of the same
    /// outbox row keeps it, so consumers can recognise duplicates.
    pub id: String,
    /// The routing key, e.g. `command.authorize`.
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u64),
    #[error("no random source: {0}")]
    Random(String),
}

impl Envelope {
    /// A new message with a random id, stamped now.
    pub fn new(kind: &str, payload: serde_json::Value) -> Result<Envelope, EnvelopeError> {
        let mut random = [0_u8; MESSAGE_ID_RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(|e| EnvelopeError::Random(e.to_string()))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Envelope {
            v: ENVELOPE_VERSION,
            id: format!("msg_{hex}"),
            kind: kind.to_owned(),
            occurred_at: unix_ms_now(),
            traceparent: None,
            payload,
        })
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Envelope {
        self.traceparent = traceparent;
        self
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Reads a body; the version is checked before the rest, so a future
    /// version with a different shape reports its version, not a field error.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u64,
        }
        let Version { v } = serde_json::from_slice(bytes)?;
        if v != u64::from(ENVELOPE_VERSION) {
            return Err(EnvelopeError::UnsupportedVersion(v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The AMQP properties that mirror the envelope.
    pub(crate) fn properties(&self) -> Result<BasicProperties, crate::Invalid> {
        let mut headers = FieldTable::default();
        if let Some(traceparent) = &self.traceparent {
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(LongString::from(traceparent.as_str())),
            );
        }
        Ok(BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(DELIVERY_MODE_PERSISTENT)
            .with_message_id(crate::short(&self.id)?)
            .with_type(crate::short(&self.kind)?)
            .with_timestamp(u64::try_from(self.occurred_at / 1000).unwrap_or(0))
            .with_headers(headers))
    }
}

/// Reads the traceparent header of a received message, if any.
pub fn traceparent_header(properties: &BasicProperties) -> Option<String> {
    let value = properties
        .headers()
        .as_ref()?
        .inner()
        .get(TRACEPARENT_HEADER)?;
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

pub(crate) fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_versions() {
        let envelope = Envelope::new("command.authorize", serde_json::json!({"a": 1}))
            .unwrap()
            .with_traceparent(Some(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            ));
        let bytes = envelope.to_bytes().unwrap();
        assert_eq!(Envelope::parse(&bytes).unwrap(), envelope);
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["type"], "command.authorize");
        value["v"] = serde_json::json!(2);
        assert!(matches!(
            Envelope::parse(&serde_json::to_vec(&value).unwrap()),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            Envelope::parse(b"{\"v\":1}"),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
