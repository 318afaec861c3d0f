//! The consumer runner: takes deliveries from one queue, runs the handler,
//! and settles each delivery only after the handler returned, so a handler
//! that commits its work first never loses a message (DESIGN.md §5, step 3).
//!
//! The prefetch bounds how many deliveries are unacknowledged at once; the
//! runner handles that many concurrently on its own task, so the bound is
//! also the handler's concurrency.

use std::future::Future;
use std::pin::pin;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Connection};

use snakepay_telemetry::metrics::{BROKER, labels};
use tracing::Instrument;

use crate::envelope::{Envelope, traceparent_header};
use crate::short;

/// What to do with a delivery once the handler is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or already done before: handlers are idempotent).
    Ack,
    /// A transient failure: requeue. The quorum queue counts deliveries and
    /// dead-letters the message once the delivery limit is reached.
    Retry,
    /// The message can never succeed (malformed, unknown version): to the
    /// dead-letter queue now.
    Reject,
}

/// A delivery as the handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub envelope: Envelope,
    pub routing_key: String,
    /// The broker delivered it before (to us or to another consumer).
    pub redelivered: bool,
    /// From the AMQP header, which wins over the body's copy for tracing
    /// middleware that rewrites headers.
    pub traceparent: Option<String>,
}

/// Consumes `queue` until `shutdown` resolves or the broker cancels the
/// consumer; then stops taking deliveries, lets the in-flight handlers
/// finish, settles them, and returns. A broken connection is an error: the
/// service restarts the runner, and the unacknowledged deliveries go back
/// to the queue.
///
/// `label` names the queue in metrics (its name without the deployment's
/// prefix, e.g. `integration.commands`).
pub async fn run_consumer<H, F, S>(
    connection: &Connection,
    queue: &str,
    label: &str,
    prefetch: u16,
    handler: H,
    shutdown: S,
) -> anyhow::Result<()>
where
    H: Fn(Message) -> F,
    F: Future<Output = Outcome>,
    S: Future<Output = ()>,
{
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .context("basic.qos")?;
    let mut consumer = channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    let tag = consumer.tag();
    // The series exists from the start, so `increase()` sees the first one.
    let _ = BROKER
        .redeliveries
        .get_or_create(&labels([("queue", label)]));
    tracing::info!(
        broker.queue = queue,
        broker.prefetch = prefetch,
        "consumer started"
    );

    let handle = |delivery: Delivery| {
        let handler = &handler;
        async move {
            let Delivery {
                acker,
                data,
                routing_key,
                redelivered,
                properties,
                ..
            } = delivery;
            if redelivered {
                BROKER
                    .redeliveries
                    .get_or_create(&labels([("queue", label)]))
                    .inc();
            }
            let outcome = match Envelope::parse(&data) {
                Ok(envelope) => {
                    let traceparent =
                        traceparent_header(&properties).or_else(|| envelope.traceparent.clone());
                    // The message's work continues the trace of whatever
                    // wrote it (the API request, the outcome that raised
                    // the event).
                    let span = tracing::info_span!(
                        parent: None,
                        "consume",
                        otel.name = %format_args!("{queue} process"),
                        otel.kind = "consumer",
                        messaging.system = "rabbitmq",
                        messaging.destination.name = queue,
                        messaging.message.id = %envelope.id,
                        messaging.rabbitmq.destination.routing_key = routing_key.as_str(),
                    );
                    snakepay_telemetry::trace::set_parent(&span, traceparent.as_deref());
                    handler(Message {
                        envelope,
                        routing_key: routing_key.as_str().to_owned(),
                        redelivered,
                        traceparent,
                    })
                    .instrument(span)
                    .await
                }
                Err(error) => {
                    tracing::warn!(broker.queue = queue, error = %error, "unreadable message rejected");
                    Outcome::Reject
                }
            };
            (acker, outcome)
        }
    };

    let mut in_flight = FuturesUnordered::new();
    let mut shutdown = pin!(shutdown);
    let mut result = Ok(());
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some((acker, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(error) = settle(&acker, outcome, label).await {
                    result = Err(error);
                    break;
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => in_flight.push(handle(delivery)),
                Some(Err(error)) => {
                    result = Err(anyhow::Error::from(error).context(format!("consuming {queue}")));
                    break;
                }
                None => {
                    tracing::warn!(broker.queue = queue, "consumer cancelled by the broker");
                    break;
                }
            },
        }
    }

    // Stop deliveries first, then finish what we hold: deliveries that were
    // buffered but not started go back to the queue when the channel closes.
    let _ = channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await;
    while let Some((acker, outcome)) = in_flight.next().await {
        if let Err(error) = settle(&acker, outcome, label).await {
            tracing::warn!(broker.queue = queue, error = %format!("{error:#}"), "settling after shutdown failed");
        }
    }
    let _ = channel.close(200, "consumer stopped".into()).await;
    tracing::info!(broker.queue = queue, "consumer stopped");
    result
}

async fn settle(acker: &Acker, outcome: Outcome, label: &str) -> anyhow::Result<()> {
    let result = match outcome {
        Outcome::Ack => "ack",
        Outcome::Retry => "retry",
        Outcome::Reject => "dead_letter",
    };
    BROKER
        .consumed
        .get_or_create(&labels([("queue", label), ("result", result)]))
        .inc();
    match outcome {
        Outcome::Ack => acker.ack(BasicAckOptions::default()).await,
        Outcome::Retry => {
            acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
        }
        Outcome::Reject => {
            acker
                .nack(BasicNackOptions {
                    requeue: false,
                    ..BasicNackOptions::default()
                })
                .await
        }
    }
    .map(drop)
    .context("settling a delivery")
}
