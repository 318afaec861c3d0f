//! The reply listener: one broker connection per instance, one exclusive,
//! server-named reply queue on it (`snakepay_bus::reply`), consumed with
//! automatic acknowledgement — a reply is only a wake-up, and one that is
//! lost costs a client a `processing` answer, nothing more.
//!
//! The queue dies with its connection. When the connection drops, the
//! listener forgets the queue at once (new commands carry no `reply_to` and
//! their requests do not wait), then reconnects with capped, jittered
//! exponential backoff and declares a new queue. A broker that is down at
//! start-up is the same case: the API serves meanwhile.

use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use snakepay_bus::Envelope;
use snakepay_bus::reply::{OutcomeReply, declare_reply_queue};

use super::Outcomes;

/// The first pause before reconnecting, doubled after every failed attempt.
pub const RECONNECT_BACKOFF_INITIAL_MS: u64 = 100;
/// The longest pause between attempts to reconnect.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 10_000;
/// How often a quiet connection is checked: the consumer stream reports a
/// lost connection too, this is the backstop.
const CONNECTION_CHECK_INTERVAL_MS: u64 = 1_000;

/// Listens for replies until the task is aborted (or the runtime ends).
pub fn spawn(outcomes: Outcomes, url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff_ms = RECONNECT_BACKOFF_INITIAL_MS;
        loop {
            let mut listened = false;
            let error = match listen(&outcomes, &url, &mut listened).await {
                Ok(never) => match never {},
                Err(error) => error,
            };
            outcomes.set_reply_queue(None);
            if listened {
                backoff_ms = RECONNECT_BACKOFF_INITIAL_MS;
            }
            let pause_ms = jittered(backoff_ms);
            tracing::warn!(
                error = %format!("{error:#}"),
                broker.reconnect_in_ms = pause_ms,
                "outcome replies: no reply queue; requests answer without waiting until it is back"
            );
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            backoff_ms = backoff_ms.saturating_mul(2).min(RECONNECT_BACKOFF_MAX_MS);
        }
    }.in_current_span())
}

/// How long closing a connection we give up on may take.
const CLOSE_TIMEOUT_MS: u64 = 1_000;

/// Connects, declares the reply queue and delivers replies until the
/// connection fails. `listened` turns true once the queue was in use.
async fn listen(
    outcomes: &Outcomes,
    url: &str,
    listened: &mut bool,
) -> anyhow::Result<std::convert::Infallible> {
    let connection = snakepay_bus::connect(url).await?;
    let result = consume(outcomes, &connection, listened).await;
    // The connection may still be open (the broker only cancelled the
    // consumer): close it, so it and its queue do not linger.
    let close = connection.close(200, "reconnecting".into());
    let _ = tokio::time::timeout(Duration::from_millis(CLOSE_TIMEOUT_MS), close).await;
    result
}

async fn consume(
    outcomes: &Outcomes,
    connection: &lapin::Connection,
    listened: &mut bool,
) -> anyhow::Result<std::convert::Infallible> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    let queue = declare_reply_queue(&channel).await?;
    let mut consumer = channel
        .basic_consume(
            snakepay_bus::short(&queue)?,
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming the reply queue")?;
    tracing::info!(broker.queue = %queue, "outcome replies: listening");
    outcomes.set_reply_queue(Some(queue));
    *listened = true;
    let mut check = tokio::time::interval(Duration::from_millis(CONNECTION_CHECK_INTERVAL_MS));
    loop {
        tokio::select! {
            next = consumer.next() => match next {
                Some(Ok(delivery)) => deliver(outcomes, &delivery.data),
                Some(Err(error)) => return Err(error).context("consuming the reply queue"),
                None => anyhow::bail!("the broker cancelled the reply consumer"),
            },
            _ = check.tick() => {
                if !connection.status().connected() {
                    anyhow::bail!("the broker connection was lost");
                }
            }
        }
    }
}

fn deliver(outcomes: &Outcomes, data: &[u8]) {
    let reply = Envelope::parse(data)
        .ok()
        .as_ref()
        .and_then(OutcomeReply::from_envelope);
    match reply {
        Some(reply) => outcomes.wake(reply),
        None => tracing::warn!("outcome replies: ignored a message that is not an outcome reply"),
    }
}

/// A pause between half of `backoff_ms` and all of it, so instances that
/// lost the broker together do not come back together.
fn jittered(backoff_ms: u64) -> u64 {
    snakepay_resilience::equal_jitter_backoff_ms(backoff_ms, backoff_ms, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        for backoff in [0, 1, 100, RECONNECT_BACKOFF_MAX_MS] {
            for _ in 0..100 {
                let pause = jittered(backoff);
                assert!(
                    (backoff / 2..=backoff).contains(&pause),
                    "{backoff}: {pause}"
                );
            }
        }
    }
}
