//! Stripe-style idempotency keys (API.md), on the merchant's shard.
//!
//! A request claims its key with the first statement of the transaction
//! that makes its change ([`claim`]), and stores its response in that same
//! transaction ([`complete`]). So a key never says "done" for a change that
//! rolled back, a change never commits without its replayable response, and
//! a request that dies leaves nothing behind: its claim rolls back with it.
//! Claiming inside the transaction also spares every keyed POST a commit of
//! its own (docs/performance.md). A write whose response is known before it
//! runs (a create) goes further: the key goes in with its response as part
//! of the one statement that makes the change ([`push_answered`]), and only
//! a taken key sends the request down the [`claim`] path.
//!
//! Two requests with one key: the second one's claim waits on the first
//! one's uncommitted row (PostgreSQL's unique index), for the milliseconds
//! the first transaction takes, and then replays its answer; a different
//! request under the key is refused. Rows that an earlier version committed
//! as bare claims (`locked_at` set, no response) still answer 409 while
//! fresh, and may be taken over after [`LOCK_TIMEOUT_SECONDS`].
//!
//! Work that waits for an outside party runs in two phases (Brandur Leach,
//! "Implementing Stripe-like Idempotency Keys in Postgres"): phase 1 commits
//! the state change with its first response ([`complete`]), stored as
//! [`Stage::AwaitingOutcome`] while the change is at the processor; it is
//! true and replayable from that moment. Phase 2 settles it once, whoever
//! comes first: the integration service, storing the request's final answer
//! in the statement that commits the outcome ([`push_outcome_answer`]), or
//! the request itself after its wait ([`settle_response`]), which then
//! learns what the other stored. A crash between the phases leaves the
//! phase-1 response (or the outcome's answer), which a replay returns and
//! which is true.

use snakepay_domain::ids::MerchantId;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::compose::Statement;

/// How long a bare claim without a response (left by an earlier version,
/// which committed claims on their own) blocks retries (409) before a retry
/// may take it over. Longer than the API's request timeout, so a request
/// still running is never overtaken.
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
    /// A bare claim that an earlier version committed holds the key, and
    /// its request may still be running.
    InUse,
}

/// Claims the key as the first statement of the caller's write transaction
/// `tx`. `Claimed`: the caller executes and [`complete`]s in `tx`. Anything
/// else: the caller rolls `tx` back and answers with what it says.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    claim: &Claim<'_>,
) -> Result<ClaimOutcome, sqlx::Error> {
    let merchant = claim.merchant_id.to_string();
    // A row that another open transaction inserted makes this wait until
    // that transaction ends: then it conflicts (committed) or inserts
    // (rolled back).
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
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_some() {
        return Ok(ClaimOutcome::Claimed);
    }
    let Some(existing) = existing(tx, claim).await? else {
        // Reaped between the two statements: claim afresh.
        return Box::pin(self::claim(tx, claim)).await;
    };
    if existing.fingerprint != claim.fingerprint {
        return Ok(ClaimOutcome::Mismatch);
    }
    if let Some(stored) = existing.response {
        return Ok(ClaimOutcome::Replay(stored));
    }
    if existing.stale {
        // An earlier version's abandoned claim: take it over, in `tx` too.
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
        .fetch_optional(&mut **tx)
        .await?;
        if taken.is_some() {
            return Ok(ClaimOutcome::Claimed);
        }
    }
    Ok(ClaimOutcome::InUse)
}

/// The request does not hold the key: its claim was not `Claimed` in this
/// transaction, or a response is already stored. The caller must not commit
/// its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency key is no longer held by this request")]
pub struct KeyNotHeld;

/// A stored response's stage (its `recovery_point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The answer for good.
    Final,
    /// Phase 1's answer about a change now at the processor: settled once,
    /// by whoever comes first — the request's phase 2 ([`settle_response`])
    /// or the integration service, with the outcome it commits
    /// ([`push_outcome_answer`]). Replays return it as stored meanwhile.
    AwaitingOutcome,
}

impl Stage {
    /// Phase 1's stage for an answer that is (or is not) in flight.
    pub fn of(in_flight: bool) -> Stage {
        if in_flight {
            Stage::AwaitingOutcome
        } else {
            Stage::Final
        }
    }

    fn recovery_point(self) -> &'static str {
        match self {
            Stage::Final => "finished",
            Stage::AwaitingOutcome => "awaiting_outcome",
        }
    }
}

/// Stores the response in the caller's transaction (with the state change),
/// the one that [`claim`]ed the key. Fenced: it succeeds only while
/// `request_id` holds the key and no response is stored.
pub async fn complete(
    tx: &mut Transaction<'_, Postgres>,
    owner: &Claim<'_>,
    response: ResponseBytes<'_>,
    stage: Stage,
) -> anyhow::Result<()> {
    let updated = sqlx::query(
        "update idempotency_keys set response_status = $5, response_body = $6, locked_at = null,
             recovery_point = $7
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4
           and response_status is null",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .bind(owner.request_id)
    .bind(i32::from(response.status))
    .bind(response.body)
    .bind(stage.recovery_point())
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
    /// Another request with the key committed its answer first: replay it.
    Replay(StoredResponse),
    /// Another request, with other parameters, used the key meanwhile.
    Mismatch,
    /// An earlier version's bare claim holds the key.
    NotHeld,
}

/// A key with its response, inserted at once: no claim phase. Alone (with
/// `on conflict do nothing`) for [`complete_unchanged`]; as the first CTE of
/// a write that is one statement ([`push_answered`]).
const INSERT_ANSWERED: &str = "insert into idempotency_keys
     (merchant_id, livemode, key, fingerprint, request_id, response_status, response_body,
      recovery_point)
 values ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Appends the insert of `owner`'s key with its response to `statement`.
///
/// For a write whose response is known before it runs (a create): the key,
/// its response and the change go in as one autocommit statement, one round
/// trip instead of `BEGIN`, [`claim`], the change, [`complete`], `COMMIT`.
/// There is no `on conflict`: if the key exists, or another open
/// transaction holds it (the insert waits for that one's end), the whole
/// statement fails with the key's unique violation ([`is_held_elsewhere`])
/// and writes nothing; the caller then takes the [`claim`] path, which
/// replays, refuses or takes over as usual. (The alternative, `on conflict
/// do nothing` with every other CTE guarded on the key's insert, spares a
/// replay its aborted statement but cost every create 7% more PostgreSQL
/// CPU, measured: replays are rare, creates are not.)
pub fn push_answered(
    statement: &mut Statement,
    owner: &Claim<'_>,
    response: ResponseBytes<'_>,
    stage: Stage,
) -> anyhow::Result<()> {
    statement.push(INSERT_ANSWERED);
    statement
        .bind(owner.merchant_id.to_string())?
        .bind(owner.livemode)?
        .bind(owner.key.to_owned())?
        .bind(owner.fingerprint.to_owned())?
        .bind(owner.request_id.to_owned())?
        .bind(i32::from(response.status))?
        .bind(response.body.to_vec())?
        .bind(stage.recovery_point())?;
    Ok(())
}

/// The error of a [`push_answered`] statement whose key was already taken.
pub fn is_held_elsewhere(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.constraint() == Some("idempotency_keys_pkey"),
        _ => false,
    }
}

/// Stores the response of a request that changed nothing (an error found
/// after execution began, its transaction rolled back, the claim with it):
/// the key and its answer in a commit of their own, unless another request
/// with the key committed first.
pub async fn complete_unchanged(
    pool: &PgPool,
    owner: &Claim<'_>,
    status: u16,
    body: &[u8],
) -> Result<AfterFailure, sqlx::Error> {
    let mut statement = Statement::new();
    push_answered(
        &mut statement,
        owner,
        ResponseBytes { status, body },
        Stage::Final,
    )
    .map_err(|e| sqlx::Error::Encode(e.into()))?;
    statement.push(" on conflict do nothing returning 1");
    let inserted: Option<i32> = statement.fetch_scalar(pool).await?;
    if inserted.is_some() {
        return Ok(AfterFailure::Stored);
    }
    let mut conn = pool.acquire().await?;
    Ok(match existing(&mut conn, owner).await? {
        // Reaped meanwhile: store afresh.
        None => return Box::pin(complete_unchanged(pool, owner, status, body)).await,
        Some(existing) if existing.fingerprint != owner.fingerprint => AfterFailure::Mismatch,
        Some(Existing {
            response: Some(stored),
            ..
        }) => AfterFailure::Replay(stored),
        Some(_) => AfterFailure::NotHeld,
    })
}

/// fingerprint, response status and body, request id, stale.
type ExistingRow = (String, Option<i32>, Option<Vec<u8>>, String, bool);

/// A key's row as another request left it.
struct Existing {
    fingerprint: String,
    response: Option<StoredResponse>,
    /// A bare claim (no response) older than [`LOCK_TIMEOUT_SECONDS`].
    stale: bool,
}

async fn existing(
    conn: &mut PgConnection,
    key: &Claim<'_>,
) -> Result<Option<Existing>, sqlx::Error> {
    let row: Option<ExistingRow> = sqlx::query_as(
        "select fingerprint, response_status, response_body, request_id,
                locked_at is not null and locked_at < now() - make_interval(secs => $4)
         from idempotency_keys where merchant_id = $1 and livemode = $2 and key = $3",
    )
    .bind(key.merchant_id.to_string())
    .bind(key.livemode)
    .bind(key.key)
    .bind(LOCK_TIMEOUT_SECONDS as f64)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(fingerprint, status, body, request_id, stale)| {
        let response = match (status, body) {
            (Some(status), Some(body)) => Some(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
                request_id,
            }),
            _ => None,
        };
        Existing {
            fingerprint,
            response,
            stale,
        }
    }))
}

/// A response as stored under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseBytes<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// How phase 2 found the response its request stored in phase 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// This request settled it (with its final answer, or as it was).
    Ours,
    /// The integration service settled it first, with the final answer it
    /// committed with the outcome: this is what the client must get.
    Theirs(StoredResponse),
    /// Nothing of this request's is stored under the key (reaped).
    Gone,
}

/// Phase 2: settles the response that `owner` stored in phase 1 as
/// [`Stage::AwaitingOutcome`], replacing it with `next` (the final answer)
/// or, with `None`, keeping it as it is (the wait ran out). Fenced on the
/// request that executed and on the stage, so it happens once, whoever
/// comes first; when the integration service came first, its answer is
/// returned ([`Settled::Theirs`]). One statement: its `select` sees the row
/// as it was before the `update`, which is the stored answer exactly when
/// the update did not happen.
pub async fn settle_response(
    conn: &mut PgConnection,
    owner: &Claim<'_>,
    next: Option<ResponseBytes<'_>>,
) -> Result<Settled, sqlx::Error> {
    let row: Option<(bool, Option<i32>, Option<Vec<u8>>)> = sqlx::query_as(
        "with settled as (
             update idempotency_keys set recovery_point = 'finished',
                 response_status = coalesce($5, response_status),
                 response_body = coalesce($6, response_body)
             where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4
               and recovery_point = 'awaiting_outcome'
             returning 1)
         select exists (select 1 from settled), response_status, response_body
         from idempotency_keys
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4",
    )
    .bind(owner.merchant_id.to_string())
    .bind(owner.livemode)
    .bind(owner.key)
    .bind(owner.request_id)
    .bind(next.map(|next| i32::from(next.status)))
    .bind(next.map(|next| next.body))
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some((true, _, _)) => Settled::Ours,
        Some((false, Some(status), Some(body))) => Settled::Theirs(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body,
            request_id: owner.request_id.to_owned(),
        }),
        _ => Settled::Gone,
    })
}

/// The request an outcome answers: named in its command by the request
/// that waits for it, so that the integration service can store that
/// request's final answer with the outcome ([`push_outcome_answer`]) and
/// send it in its reply, sparing the request a reload and a write.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnswerTo {
    pub request_id: String,
    /// The key its phase-1 answer is stored under, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The integration service's side of [`settle_response`], as a CTE named
/// `answered` of the statement that commits an outcome, written only where
/// `guard` (SQL) holds: stores `answer` as the final response of the
/// request `to`, if that request's phase-1 response is still awaiting its
/// outcome. `exists (select 1 from answered)` then tells whether it did.
pub fn push_outcome_answer(
    statement: &mut Statement,
    merchant_id: MerchantId,
    livemode: bool,
    to: &AnswerTo,
    key: &str,
    answer: ResponseBytes<'_>,
    guard: &str,
) -> anyhow::Result<()> {
    statement.push(
        "answered as (update idempotency_keys
             set response_status = $5, response_body = $6, recovery_point = 'finished'
         where merchant_id = $1 and livemode = $2 and key = $3 and request_id = $4
           and recovery_point = 'awaiting_outcome' and ",
    );
    statement.push(guard);
    statement.push(" returning 1)");
    statement
        .bind(merchant_id.to_string())?
        .bind(livemode)?
        .bind(key.to_owned())?
        .bind(to.request_id.clone())?
        .bind(i32::from(answer.status))?
        .bind(answer.body.to_vec())?;
    Ok(())
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
