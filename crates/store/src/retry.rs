//! Transactions that lose a serialization conflict or a deadlock are safe to
//! re-run from the start: PostgreSQL rolled them back entirely.

use std::future::Future;
use std::time::Duration;

/// How many times a transaction is attempted before the error is returned.
pub const MAX_ATTEMPTS: u32 = 5;

/// True for errors after which re-running the whole transaction is safe.
pub fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected
            Some("40001") | Some("40P01")
        ),
        _ => false,
    }
}

/// [`retry`] inside a database client span named `name` (e.g.
/// `commit authorization`): the transaction's time, conflicts and retries
/// included, shows in the payment's trace.
pub async fn transaction<T, E, F, Fut>(name: &'static str, attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: AsRetryable,
{
    traced(name, retry(attempt)).await
}

/// Runs `work` (one transaction, or one statement that is its own) inside
/// a database client span named `name`, marked as an error if it fails.
pub async fn traced<T, E>(
    name: &'static str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::info_span!(
        "db.transaction",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system = "postgresql",
    );
    let result = tracing::Instrument::instrument(work, span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "error");
    }
    result
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, or
/// has run [`MAX_ATTEMPTS`] times; backs off a little between attempts.
pub async fn retry<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: AsRetryable,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(error) if tries < MAX_ATTEMPTS && error.is_retryable() => {
                tracing::debug!(db.attempt = tries, "transaction conflict, retrying");
                tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
            }
            other => return other,
        }
    }
}

/// Errors that may wrap a retryable database error.
pub trait AsRetryable {
    fn is_retryable(&self) -> bool;
}

impl AsRetryable for sqlx::Error {
    fn is_retryable(&self) -> bool {
        is_retryable(self)
    }
}

impl AsRetryable for anyhow::Error {
    fn is_retryable(&self) -> bool {
        self.chain()
            .find_map(|cause| cause.downcast_ref::<sqlx::Error>())
            .is_some_and(is_retryable)
    }
}
