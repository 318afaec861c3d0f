//! Publishing with publisher confirms (DESIGN.md §2): a publish returns only
//! after the broker has written the message to its queues (quorum queues
//! confirm after a majority fsynced it). A nack, a returned (unroutable)
//! message, a closed channel or a missing confirm is an error, and the
//! caller keeps its own copy (the outbox row) to try again. Outcome replies,
//! which may be lost, go out without confirms
//! ([`Publisher::connect_unconfirmed`]).

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::Mutex;

use crate::envelope::{Envelope, EnvelopeError};
use crate::{Invalid, short};

/// How long one publish (or one batch) may wait for the broker's confirms.
pub const CONFIRM_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("connecting: {0:#}")]
    Connect(anyhow::Error),
    #[error("message {message_id} to {exchange} with key {routing_key} was unroutable")]
    Unroutable {
        message_id: String,
        exchange: String,
        routing_key: String,
    },
    #[error("the broker refused message {message_id} (nack)")]
    Nacked { message_id: String },
    #[error("no confirm within {CONFIRM_TIMEOUT_MS} ms")]
    ConfirmTimeout,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub envelope: Envelope,
}

/// A confirm-mode channel that reconnects after the broker went away.
///
/// Publishes are serialized on one channel: confirms arrive in publish order
/// anyway, and a batch ([`Publisher::publish_batch`]) keeps many messages in
/// flight, which is where the throughput comes from.
#[derive(Debug)]
pub struct Publisher {
    url: String,
    state: Mutex<State>,
    /// Confirm mode: see [`Publisher::connect_unconfirmed`] for the other.
    confirms: bool,
}

#[derive(Debug, Default)]
struct State {
    connection: Option<Connection>,
    channel: Option<Channel>,
}

impl Publisher {
    /// Connects now, so a wrong URL shows at start-up.
    pub async fn connect(url: &str) -> Result<Publisher, PublishError> {
        Publisher::open(url, true).await
    }

    /// A publisher for messages that may be lost (outcome replies, which
    /// are only wake-ups): no confirm mode and not mandatory, so a publish
    /// returns once lapin has the frame, and the broker neither confirms
    /// nor returns anything. A confirmed reply cost the integration service
    /// a wait per outcome (holding the channel, so replies went out one at a
    /// time) and the broker a confirm, for nothing: a reply is never retried.
    pub async fn connect_unconfirmed(url: &str) -> Result<Publisher, PublishError> {
        Publisher::open(url, false).await
    }

    async fn open(url: &str, confirms: bool) -> Result<Publisher, PublishError> {
        let publisher = Publisher {
            url: url.to_owned(),
            state: Mutex::new(State::default()),
            confirms,
        };
        {
            let mut state = publisher.state.lock().await;
            publisher.channel(&mut state).await?;
        }
        Ok(publisher)
    }

    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        envelope: &Envelope,
    ) -> Result<(), PublishError> {
        self.publish_batch(&[Outgoing {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            envelope: envelope.clone(),
        }])
        .await
    }

    /// Publishes every message in order, then waits for all confirms; `Ok`
    /// means the broker holds every one of them (for an unconfirmed
    /// publisher, only that lapin took them). On error some may have been
    /// published: the caller retries the whole batch (at least once).
    pub async fn publish_batch(&self, messages: &[Outgoing]) -> Result<(), PublishError> {
        let mut state = self.state.lock().await;
        let result = self.publish_on(&mut state, messages).await;
        if result.is_err() {
            // The channel may be closed by the broker (e.g. a missing
            // exchange) or hold confirms that will never come: start afresh.
            if let Some(channel) = state.channel.take() {
                let _ = channel.close(200, "reset after error".into()).await;
            }
        }
        result
    }

    async fn publish_on(
        &self,
        state: &mut State,
        messages: &[Outgoing],
    ) -> Result<(), PublishError> {
        let channel = self.channel(state).await?;
        let mut pending: Vec<(PublisherConfirm, &Outgoing)> = Vec::with_capacity(messages.len());
        for message in messages {
            let confirm = channel
                .basic_publish(
                    short(&message.exchange)?,
                    short(&message.routing_key)?,
                    // Mandatory (with confirms): a message no queue takes
                    // comes back to us rather than vanishing. Without
                    // confirms nobody would read it, so it may vanish.
                    BasicPublishOptions {
                        mandatory: self.confirms,
                        ..BasicPublishOptions::default()
                    },
                    &message.envelope.to_bytes()?,
                    message.envelope.properties()?,
                )
                .await?;
            if self.confirms {
                pending.push((confirm, message));
            }
        }
        let all = async {
            for (confirm, message) in pending {
                check(confirm.await?, message)?;
            }
            Ok::<(), PublishError>(())
        };
        tokio::time::timeout(Duration::from_millis(CONFIRM_TIMEOUT_MS), all)
            .await
            .map_err(|_| PublishError::ConfirmTimeout)?
    }

    /// The open channel, reopening the channel or the whole connection when
    /// the broker closed it (a restart, a channel-level error).
    async fn channel(&self, state: &mut State) -> Result<Channel, PublishError> {
        if let Some(channel) = &state.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        state.channel = None;
        let connection_usable = state
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !connection_usable {
            state.connection = None;
            let connection = crate::connect(&self.url)
                .await
                .map_err(PublishError::Connect)?;
            tracing::info!("broker.publisher connected");
            state.connection = Some(connection);
        }
        let connection = state
            .connection
            .as_ref()
            .ok_or_else(|| PublishError::Connect(anyhow::anyhow!("no connection")))?;
        let channel = connection.create_channel().await?;
        if self.confirms {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        state.channel = Some(channel.clone());
        Ok(channel)
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        state.channel = None;
        if let Some(connection) = state.connection.take() {
            let _ = connection.close(200, "shutdown".into()).await;
        }
    }
}

fn check(confirmation: Confirmation, message: &Outgoing) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Err(PublishError::Unroutable {
            message_id: message.envelope.id.clone(),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        }),
        Confirmation::Nack(None) => Err(PublishError::Nacked {
            message_id: message.envelope.id.clone(),
        }),
        // confirm_select ran on this channel, so this cannot happen; treated
        // as a refusal rather than trusted.
        Confirmation::NotRequested => Err(PublishError::Nacked {
            message_id: message.envelope.id.clone(),
        }),
    }
}
