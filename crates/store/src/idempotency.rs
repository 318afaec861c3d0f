//! Stripe-style idempotency keys (API.md), on the merchant's shard.
//!
//! A request claims its key atomically before it executes. Its response is
//! stored in the same transaction as the state change it reports
//! ([`complete`]), so a key never says "done" for a change that rolled back,
//! and a change never commits without its replayable response. A request that
//! died before committing leaves the key locked; after [`LOCK_TIMEOUT_SECONDS`]
//! a retry may take it over, which is safe because nothing was committed.
//!
//! Work that waits for an outside party runs in two phases (Brandur Leach,
//! "Implementing Stripe-like Idempotency Keys in Postgres"): phase 1 commits
//! the state change with its first response ([`complete`]), which is true
//! and replayable from that moment; phase 2 waits for the outcome and then
//! upgrades the stored response to the final answer ([`replace_response`]),
//! its only write. A crash between the phases leaves the phase-1 response,
//! which a replay returns and which is still true.

use snakepay_domain::ids::MerchantId;
use sqlx::{PgPool, Postgres, Transaction};

/// How long a claimed key without a response blocks retries (409) before a
/// retry may take it over. Longer than the API's request timeout, so a
/// request still running is never overtaken.
pub const LOCK_TIMEOUT_SECONDS: i64 = 90;

/// How long keys are kept: at least 24 hours (API.md), with a margin.
pub const RETENTION_HOURS: i64 = 48;

#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub request_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// The request that produced it (`Original-Request`).
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This request owns the key and must execute.
    Claimed,
    /// A response exists: replay it byte for byte.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InUse,
}

type ExistingRow = (String, Option<i32>, Option<Vec<u8>>, String, bool);

pub async fn claim(pool: &PgPool, claim: &Claim<'_>) -> Result<ClaimOutcome, sqlx::Error> {
    let merchant = claim.merchant_id.to_string();
    let inserted: Option<i32> = sqlx::query_scalar(
        "insert into idempotency_keys (merchant_id, livemode, key, fingerprint, request_id, locked_at)
         values ($1, $2, $3, $4, $5, now())
         on conflict do nothing returning 1",
    )
    .bind(&merchant)
    .bind(claim.livemode)
    .bind(claim.key)
    .bind(claim.fingerprint)
    .bind(claim.request_id)
    .fetch_optional(pool)
    .await?;
    if inserted.is_some() {
        return Ok(ClaimOutcome::Claimed);
    }
    let existing: Option<ExistingRow> = sqlx::query_as(
        "select fingerprint, response_status, response_body, request_id,
                locked_at is not null and locked_at < now() - make_interval(secs => $4)
         from idempotency_keys where merchant_id = $1 and livemode = $2 and key = $3",
    )
    .bind(&merchant)
    .bind(claim.livemode)
    .bind(claim.key)
    .bind(LOCK_TIMEOUT_SECONDS as f64)
    .fetch_optional(pool)
    .await?;
    let Some((fingerprint, status, body, request_id, stale)) = existing else {
        // Reaped between the two statements: claim afresh.
        return Box::pin(self::claim(pool, claim)).await;
    };
    if fingerprint != claim.fingerprint {
        return Ok(ClaimOutcome::Mismatch);
    }
    if let (Some(status), Some(body)) = (status, body) {
        return Ok(ClaimOutcome::Replay(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body,
            request_id,
        }));
    }
    if stale {
        let taken: Option<i32> = sqlx::query_scalar(
            "update idempotency_keys set locked_at = now(), request_id = $4
             where merchant_id = $1 and livemode = $2 and key = $3 and response_status is null
               and locked_at < now() - make_interval(secs => $5)
             returning 1",
        )
        .bind(&merchant)
        .bind(claim.livemode)
        .bind(claim.key)
        .bind(claim.request_id)
        .bind(LOCK_TIMEOUT_SECONDS as f64)
        .fetch_optional(pool)
        .await?;
        if taken.is_some() {
            return Ok(ClaimOutcome::Claimed);
        }
    }
    Ok(ClaimOutcome::InUse)
}

/// The request no longer owns the key: another request took it over after
/// the lock timed out, or a response is already stored (an earlier commit
/// that the caller saw fail). The caller must not commit its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency key is no longer held by this request")]
pub struct KeyNotHeld;

/// Stores the response in the caller's transaction (with the state change).
/// Fenced: it succeeds only while `request_id` still holds the key and no
/// response is stored, so a request that lost its claim rolls back.
pub async fn complete(
    tx: &mut Transaction<'_, Postgres>,
    owner: &Claim<'_>,
    status: u16,
    body: &[u8],
) -> anyhow::Result<()> {
    let updated = sqlx::query(
        "update idempotency_keys set response_status = $5, response_body = $6, locked_at = null,
             recovery_point = 'finished'
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4
           and response_status is null",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .bind(owner.request_id)
    .bind(i32::from(status))
    .bind(body)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(KeyNotHeld.into());
    }
    Ok(())
}

/// What became of a key after its request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// The failure response was stored under the key.
    Stored,
    /// A response was already stored (the change did commit): replay it.
    Replay(StoredResponse),
    /// Another request holds the key now.
    NotHeld,
}

/// Stores the response of a request that changed nothing (an error found
/// after execution began), unless the key already has an answer.
pub async fn complete_unchanged(
    pool: &PgPool,
    owner: &Claim<'_>,
    status: u16,
    body: &[u8],
) -> anyhow::Result<AfterFailure> {
    let mut tx = pool.begin().await?;
    match complete(&mut tx, owner, status, body).await {
        Ok(()) => {
            tx.commit().await?;
            Ok(AfterFailure::Stored)
        }
        Err(error) if error.is::<KeyNotHeld>() => {
            drop(tx);
            Ok(match stored_response(pool, owner).await? {
                Some(stored) => AfterFailure::Replay(stored),
                None => AfterFailure::NotHeld,
            })
        }
        Err(error) => Err(error),
    }
}

/// Gives the key up without an answer: for failures before anything was
/// executed (no transaction could even start), so a retry may execute.
pub async fn release(pool: &PgPool, owner: &Claim<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from idempotency_keys
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4 and response_status is null",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .bind(owner.request_id)
    .execute(pool)
    .await?;
    Ok(())
}

async fn stored_response(
    pool: &PgPool,
    owner: &Claim<'_>,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    let row: Option<(Option<i32>, Option<Vec<u8>>, String)> = sqlx::query_as(
        "select response_status, response_body, request_id from idempotency_keys
         where merchant_id = $1 and livemode = $2 and key = $3",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((Some(status), Some(body), request_id)) => Some(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body,
            request_id,
        }),
        _ => None,
    })
}

/// A response as stored under a key: what phase 1 stored, or what phase 2
/// stores instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseBytes<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// Phase 2: replaces the response that `owner` stored in phase 1
/// (`previous`) with the final answer (`next`). Fenced on the request that
/// executed (`request_id`) and on the key still holding exactly `previous`,
/// so only that request can upgrade it, once, and never over a response
/// someone else stored. Returns whether the response was replaced.
pub async fn replace_response(
    pool: &PgPool,
    owner: &Claim<'_>,
    previous: ResponseBytes<'_>,
    next: ResponseBytes<'_>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "update idempotency_keys set response_status = $7, response_body = $8
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4
           and response_status = $5 and response_body = $6",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .bind(owner.request_id)
    .bind(i32::from(previous.status))
    .bind(previous.body)
    .bind(i32::from(next.status))
    .bind(next.body)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes keys older than [`RETENTION_HOURS`]; returns how many.
pub async fn reap(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "delete from idempotency_keys where created_at < now() - make_interval(hours => $1::int)",
    )
    .bind(i32::try_from(RETENTION_HOURS).unwrap_or(48))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
