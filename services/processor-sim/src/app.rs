//! The running simulator's shared state and the one path every mutating
//! request takes: latency, idempotency claim, fault roll, commit (decide,
//! journal, apply), notification, answer.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Mutex, watch};

use crate::cards::CardBehaviour;
use crate::clock::SharedClock;
use crate::engine::{Command, Ledger};
use crate::error::ApiError;
use crate::faults::{Fault, Faults};
use crate::idempotency::{ClaimResult, Fingerprinter, Keys};
use crate::journal::Journal;
use crate::model::{Record, StoredResponse};
use crate::notify::{Notifier, notification_for};

pub type SharedApp = Arc<App>;

pub struct App {
    pub api_key: String,
    pub fingerprinter: Fingerprinter,
    /// Base URL for links browsers follow (3-D Secure), without a trailing
    /// slash.
    pub public_url: String,
    pub clock: SharedClock,
    /// One lock over the books: a command is decided, journaled and applied
    /// under it, so two commands on one authorization never interleave and
    /// nobody reads a state that is not yet on disk.
    pub ledger: Mutex<Ledger>,
    pub journal: Journal,
    pub keys: Keys,
    pub faults: Faults,
    pub notifier: Option<Notifier>,
    pub shutdown: watch::Receiver<bool>,
}

/// A validated mutating request, ready to run.
pub struct Prepared {
    pub idempotency_key: String,
    pub fingerprint: String,
    pub command: Command,
    /// The card's behaviour, for authorizations (trigger cards).
    pub card: Option<CardBehaviour>,
}

impl App {
    pub fn now(&self) -> i64 {
        self.clock.now_unix_seconds()
    }

    /// Sleeps unless the simulator is shutting down; `false` if cut short.
    pub async fn pause(&self, duration: Duration) -> bool {
        if duration.is_zero() {
            return true;
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = shutdown.wait_for(|stop| *stop) => false,
        }
    }

    /// Decides, journals and applies `command`; queues the notification.
    /// `Ok(None)` when the command changes nothing.
    pub async fn commit(
        &self,
        command: Command,
        idempotency_key: Option<String>,
        fingerprint: Option<String>,
    ) -> anyhow::Result<Option<Record>> {
        let mut ledger = self.ledger.lock().await;
        let now = self.now();
        let Some(effect) = ledger.decide(&command, now) else {
            return Ok(None);
        };
        let notifiable = effect.is_notifiable();
        let record = ledger.to_record(effect, idempotency_key, fingerprint, now);
        self.journal.append(&record).await?;
        ledger.apply(record.clone());
        drop(ledger);

        log_record(&record);
        if notifiable && let Some(notifier) = &self.notifier {
            let id = crate::ids::new_id("ntf");
            if let Some(body) = notification_for(&id, &record) {
                notifier.send(id, &body);
            }
        }
        Ok(Some(record))
    }
}

fn log_record(record: &Record) {
    let authorization = record.authorization.as_ref();
    tracing::info!(
        operation.seq = record.seq,
        operation.kind = record.kind.as_str(),
        operation.outcome = ?record.outcome,
        operation.idempotency_key = record.idempotency_key.as_deref().unwrap_or(""),
        operation.amount = record.amount.unwrap_or(0),
        operation.error = record.error.as_deref().unwrap_or(""),
        authorization.id = authorization.map_or("", |a| a.id.as_str()),
        authorization.status = authorization.map_or("", |a| a.status.as_str()),
        authorization.reference = authorization.map_or("", |a| a.reference.as_str()),
        "operation recorded"
    );
}

/// Runs a mutating request to the end even if the client goes away: a real
/// processor does not undo a charge because the caller hung up, and the
/// idempotency claim must be settled either way.
pub async fn execute(app: SharedApp, prepared: Prepared) -> Response {
    let key = prepared.idempotency_key.clone();
    let mut response = match tokio::spawn(perform(app, prepared).in_current_span()).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "the operation task failed");
            ApiError::internal().into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&key) {
        response.headers_mut().insert("idempotency-key", value);
    }
    response
}

async fn perform(app: SharedApp, prepared: Prepared) -> Response {
    let Prepared {
        idempotency_key,
        fingerprint,
        command,
        card,
    } = prepared;
    let claim = match app.keys.claim(&idempotency_key, &fingerprint).await {
        ClaimResult::Claimed(claim) => claim,
        ClaimResult::Replay(stored) => return replay(&stored),
        ClaimResult::Mismatch => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_mismatch",
                "This idempotency key was used with a different request.",
            )
            .into_response();
        }
        ClaimResult::Busy => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "Another request with this idempotency key is still being processed; retry later.",
            )
            .into_response();
        }
    };

    let fault = app.faults.roll(card);
    match fault {
        Fault::FailBeforeWork => {
            tracing::info!(
                operation.idempotency_key = %idempotency_key,
                fault = "fail_before_work",
                "answering 500 without doing the work"
            );
            // Dropping the claim frees the key: nothing was done.
            return ApiError::internal().into_response();
        }
        Fault::Slow => {
            if !app.pause(app.faults.slow()).await {
                return shutting_down();
            }
        }
        Fault::None | Fault::FailAfterWork | Fault::TimeoutAfterWork => {}
    }

    let record = match app
        .commit(command, Some(idempotency_key.clone()), Some(fingerprint))
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::error!(operation.idempotency_key = %idempotency_key, "a keyed command changed nothing");
            return ApiError::internal().into_response();
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), operation.idempotency_key = %idempotency_key, "cannot record the operation");
            return ApiError::internal().into_response();
        }
    };
    let Some((_, stored)) = record.stored_response() else {
        return ApiError::internal().into_response();
    };
    app.keys.complete(claim, stored.clone());

    match fault {
        Fault::FailAfterWork => {
            tracing::info!(
                operation.idempotency_key = %idempotency_key,
                fault = "fail_after_work",
                "answering 500 after doing the work"
            );
            ApiError::internal().into_response()
        }
        Fault::TimeoutAfterWork => {
            let timeout = app.faults.timeout();
            tracing::info!(
                operation.idempotency_key = %idempotency_key,
                fault = "timeout_after_work",
                fault.sleep_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "holding the answer after doing the work"
            );
            if app.pause(timeout).await {
                stored_response(&stored)
            } else {
                shutting_down()
            }
        }
        Fault::None | Fault::Slow | Fault::FailBeforeWork => stored_response(&stored),
    }
}

fn shutting_down() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "The processor is shutting down; the outcome is unknown. Ask GET /v1/operations/{idempotency_key}.",
    )
    .into_response()
}

/// The stored answer as first sent.
pub fn stored_response(stored: &StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(stored.body.clone())).into_response()
}

/// The stored answer, marked as a replay.
fn replay(stored: &StoredResponse) -> Response {
    let mut response = stored_response(stored);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
