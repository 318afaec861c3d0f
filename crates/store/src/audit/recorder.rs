//! Buffered audit appends for frequent events: every opening of a card by
//! the integration service, every failed API-key authentication.
//!
//! One append per event would lock the chain head once per payment, and the
//! head is one row for the whole region: at 1,000 payments/s that lock, not
//! the work, would set the pace. Instead the event goes into an in-process
//! buffer (no I/O on the payment path) and a background task writes what
//! accumulated every [`FLUSH_INTERVAL_MS`] (or every [`MAX_BATCH_ROWS`]) in
//! one transaction: one head lock per batch, rows chained in order, the
//! same chain [`super::verify_chain`] checks.
//!
//! What this trades: an event is durable up to [`FLUSH_INTERVAL_MS`] after
//! it happened, so a crash can lose the last fraction of a second of events
//! (a graceful stop flushes first). Events that find the buffer full (the
//! control database down for long) are counted, and the count is appended
//! as an `audit.events_dropped` row as soon as writing works again, so a
//! gap in the trail is itself on the trail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{Actor, NewEntry, append_all};

/// Events waiting in memory at most; beyond, new events are counted as
/// dropped (and the count audited).
pub const BUFFER_CAPACITY: usize = 20_000;
/// Rows per append transaction at most.
pub const MAX_BATCH_ROWS: usize = 1_000;
/// How long an event waits in the buffer at most before it is written
/// (while the control database answers).
pub const FLUSH_INTERVAL_MS: u64 = 250;

/// An event to record, owned so it can wait in the buffer.
#[derive(Debug, Clone)]
pub struct Event {
    pub actor: Actor,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: String,
    pub origin: Option<String>,
    pub details: serde_json::Value,
}

enum Message {
    Event(Event),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// A handle to the buffer; cheap to clone. The writer task ends (after
/// writing what is left) when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Recorder {
    sender: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Event(event) => f.debug_tuple("Event").field(&event.action).finish(),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Recorder {
    /// Starts the writer task on the current runtime, appending to the
    /// audit trail in `control` (the control database).
    pub fn start(control: PgPool) -> Recorder {
        let (sender, receiver) = mpsc::channel(BUFFER_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_loop(control, receiver, dropped.clone()));
        Recorder { sender, dropped }
    }

    /// Queues an event without waiting. Never fails the caller: a full
    /// buffer counts the event as dropped (see the module docs).
    pub fn record(&self, event: Event) {
        if self.sender.try_send(Message::Event(event)).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!("audit buffer full: events are being dropped and counted");
            }
        }
    }

    /// Writes everything queued so far and returns once it is committed
    /// (or the write failed). For a graceful stop and for tests.
    pub async fn flush(&self) -> anyhow::Result<()> {
        let (answer, answered) = oneshot::channel();
        self.sender
            .send(Message::Flush(answer))
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer has stopped"))?;
        answered
            .await
            .map_err(|_| anyhow::anyhow!("the audit writer has stopped"))?
            .map_err(|error| anyhow::anyhow!("writing audit events: {error}"))
    }
}

async fn write_loop(pool: PgPool, mut receiver: mpsc::Receiver<Message>, dropped: Arc<AtomicU64>) {
    let mut pending: Vec<Event> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let closed = tokio::select! {
            message = receiver.recv() => match message {
                Some(Message::Event(event)) => {
                    pending.push(event);
                    if pending.len() < MAX_BATCH_ROWS {
                        continue;
                    }
                    false
                }
                Some(Message::Flush(waiter)) => {
                    waiters.push(waiter);
                    false
                }
                None => true,
            },
            _ = ticker.tick() => false,
        };
        let result = write_pending(&pool, &mut pending, &dropped).await;
        match &result {
            Ok(()) if failing => {
                tracing::info!("audit events are being written again");
                failing = false;
            }
            Err(error) if !failing => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "writing audit events failed; retrying"
                );
                failing = true;
            }
            _ => {}
        }
        let answer = result.map_err(|error| format!("{error:#}"));
        for waiter in waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
        if closed {
            return;
        }
    }
}

/// Writes `pending` in batches; what could not be written stays, bounded
/// by [`BUFFER_CAPACITY`] (the oldest beyond it are counted as dropped).
async fn write_pending(
    pool: &PgPool,
    pending: &mut Vec<Event>,
    dropped: &AtomicU64,
) -> anyhow::Result<()> {
    let lost = dropped.swap(0, Ordering::Relaxed);
    if lost > 0 {
        pending.push(Event {
            actor: Actor {
                subject: "audit-recorder".into(),
                role: "system".into(),
            },
            action: "audit.events_dropped".into(),
            resource: None,
            outcome: "failed".into(),
            origin: None,
            details: serde_json::json!({ "count": lost }),
        });
    }
    while !pending.is_empty() {
        let take = pending.len().min(MAX_BATCH_ROWS);
        let batch: Vec<NewEntry<'_>> = pending
            .iter()
            .take(take)
            .map(|event| NewEntry {
                actor: &event.actor,
                action: &event.action,
                resource: event.resource.as_deref(),
                outcome: &event.outcome,
                origin: event.origin.as_deref(),
                details: &event.details,
            })
            .collect();
        if let Err(error) = append_all(pool, &batch).await {
            if pending.len() > BUFFER_CAPACITY {
                let excess = pending.len() - BUFFER_CAPACITY;
                pending.drain(..excess);
                dropped.fetch_add(u64::try_from(excess).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            return Err(error);
        }
        pending.drain(..take);
    }
    Ok(())
}
