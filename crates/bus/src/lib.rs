//! Snakepay's RabbitMQ layer (DESIGN.md §2, §5, §8).
//!
//! # Layout
//!
//! - [`connect`] (this file): one AMQP connection, with a bounded connect
//!   timeout; [`short`] checks AMQP's 255-byte name limit.
//! - [`tls`]: `amqps://` with a verified certificate and an optional
//!   `cacertfile` authority.
//! - [`envelope`]: the versioned message body and its AMQP properties
//!   (message id, type, `traceparent` header, persistent delivery).
//! - [`topology`]: the `commands` and `events` topic exchanges, quorum queues
//!   per consumer with a delivery limit, and their dead-letter queues; every
//!   name carries a prefix so tests never share names.
//! - [`publisher`]: a channel in confirm mode; a publish returns only once
//!   the broker confirmed it, and an unroutable message is an error.
//! - [`consumer`]: the consumer runner: bounded prefetch, explicit
//!   ack/retry/reject after the handler returns, graceful shutdown.
//! - [`reply`]: outcome replies from the integration service to the API
//!   instance waiting for them, through per-instance reply queues.
//! - [`relay`]: the outbox relay that moves committed outbox rows of every
//!   shard to the broker, deleting them in a transaction that commits only
//!   after the broker confirmed.
//!
//! Delivery is at least once end to end: a row can be published twice (the
//! relay crashed between the broker's confirm and its commit) and a message
//! can be delivered twice (a consumer crashed between its commit and its
//! ack). Consumers are idempotent; the envelope id of a relayed row is stable
//! across republishing so they can tell.

pub mod consumer;
pub mod envelope;
pub mod publisher;
pub mod relay;
pub mod reply;
pub mod tls;
pub mod topology;

use std::time::Duration;

use anyhow::Context;
use lapin::Connection;
use lapin::types::ShortString;

pub use consumer::{Message, Outcome, run_consumer};
pub use envelope::{Envelope, EnvelopeError};
pub use publisher::{Outgoing, PublishError, Publisher};
pub use relay::{RelayConfig, relay_once, run_relay};

pub use topology::{Binding, ExchangeRole, QueueSpec, Topology};

/// How long opening a connection (TCP, handshake, vhost) may take.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Opens a connection to `url` (`amqp://user:pass@host:port/vhost`, or
/// `amqps://…` for TLS, with an optional `?cacertfile=` — see [`tls`]).
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), tls::open(url))
        .await
        .with_context(|| format!("no AMQP connection within {CONNECT_TIMEOUT_MS} ms"))?
}

/// A name or value longer than AMQP allows (255 bytes).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is longer than AMQP's 255-byte limit")]
pub struct Invalid(pub String);

/// AMQP short strings; `ShortString::from` would panic on a long one.
pub fn short(value: &str) -> Result<ShortString, Invalid> {
    ShortString::try_new(value).map_err(|_| Invalid(value.to_owned()))
}
