//! Executing a POST under Stripe's idempotency rules (API.md).
//!
//! Authentication and parameter validation happen before this (their
//! failures are not stored). Then one shard transaction claims the key,
//! runs the work and stores the response; errors found after the claim are
//! stored too; replays are byte for byte. A create, whose answer is known
//! before it writes, first tries to be one statement that inserts the key
//! with its answer ([`write_at_once`]), and takes the transaction path
//! when the key is taken or anything fails.
//!
//! A change that leaves its object at the processor may be followed by a
//! second phase ([`execute_phased`], then [`answer_after_wait`]): the
//! request waits for the outcome and replaces its stored response with the
//! final answer, so that a replay still returns what the client got.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequest;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use http::{HeaderValue, StatusCode};
use sha2::Sha256;
use snakepay_http::error::SHOULD_RETRY_HEADER;
use snakepay_http::{ApiError, Params, StripeParams, idempotency_key};
use snakepay_store::compose::Statement;
use snakepay_store::idempotency::{
    self, AfterFailure, Claim, ClaimOutcome, ResponseBytes, Settled, Stage, StoredResponse,
};
use snakepay_store::retry::{self, AsRetryable};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::auth::Auth;
use crate::state::AppState;

/// What the work produced: a status and the exact bytes to send and store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The change it reports is at the processor (an intent `processing`, a
    /// refund `pending`): the caller may wait for its outcome.
    pub in_flight: bool,
}

impl Reply {
    pub fn ok(value: &serde_json::Value) -> Result<Reply, WorkError> {
        Ok(Reply {
            status: StatusCode::OK,
            body: serde_json::to_vec(value).map_err(|e| WorkError::Internal(e.into()))?,
            in_flight: false,
        })
    }

    pub fn in_flight(mut self, in_flight: bool) -> Reply {
        self.in_flight = in_flight;
        self
    }

    /// The reply as its key stores it.
    fn stored(&self) -> ResponseBytes<'_> {
        ResponseBytes {
            status: self.status.as_u16(),
            body: &self.body,
        }
    }

    /// The stage its key stores it at: awaiting the outcome while in flight.
    fn stage(&self) -> Stage {
        Stage::of(self.in_flight)
    }
}

/// What [`execute_phased`] did.
pub struct Executed {
    /// The answer as of phase 1 (or the replay, or the error).
    pub response: Response,
    /// Set only when this request executed, committed, and stored (with a
    /// key) a reply that reports a change in flight: what may be waited for.
    pub in_flight: Option<Reply>,
}

/// Why the work failed: an API error (stored and returned) or an internal
/// error (stored as a generic 500, logged once).
pub enum WorkError {
    Api(ApiError),
    Internal(anyhow::Error),
    /// No transaction could start, or it could not claim the key: nothing
    /// was executed.
    Unavailable(sqlx::Error),
}

impl From<ApiError> for WorkError {
    fn from(error: ApiError) -> Self {
        WorkError::Api(error)
    }
}

impl From<anyhow::Error> for WorkError {
    fn from(error: anyhow::Error) -> Self {
        WorkError::Internal(error)
    }
}

impl From<sqlx::Error> for WorkError {
    fn from(error: sqlx::Error) -> Self {
        WorkError::Internal(error.into())
    }
}

impl AsRetryable for WorkError {
    fn is_retryable(&self) -> bool {
        match self {
            WorkError::Internal(error) => error.is_retryable(),
            WorkError::Unavailable(_) | WorkError::Api(_) => false,
        }
    }
}

/// The request as the fingerprint sees it: method, path and the canonical
/// decoded parameters, so reordered or JSON-encoded equal requests match.
/// Keyed (HMAC under a server secret): the parameters can hold a card number
/// and CVC, and a plain hash of them, stored for days next to the card's
/// first six and last four digits, could be reversed by brute force.
pub fn fingerprint(
    key: &RequestFingerprintKey,
    method: &str,
    path: &str,
    canonical_params: &str,
) -> String {
    let mut mac = key.0.clone();
    mac.update(method.as_bytes());
    mac.update(b" ");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(canonical_params.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The HMAC key of request fingerprints, derived from the API-key hashing
/// secret under its own label so that neither use can stand in for the other.
#[derive(Clone)]
pub struct RequestFingerprintKey(Hmac<Sha256>);

impl RequestFingerprintKey {
    pub fn derive(server_secret: &[u8]) -> anyhow::Result<RequestFingerprintKey> {
        let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(server_secret)
            .map_err(|_| anyhow::anyhow!("invalid server secret length"))?;
        derive.update(b"snakepay/idempotency-fingerprint/v1");
        let key = derive.finalize().into_bytes();
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .map_err(|_| anyhow::anyhow!("invalid derived key length"))?;
        Ok(RequestFingerprintKey(mac))
    }
}

/// A POST as the idempotency rules see it: its parameters, its
/// `Idempotency-Key`, and its fingerprint, computed from the request's own
/// method and canonical path (after the edge stripped any prefix), so no
/// handler can fingerprint the wrong path. An extractor: handlers take it
/// last, after `Auth`, so authentication and rate limiting come first.
pub struct IdempotentPost {
    pub params: Params,
    pub key: Option<String>,
    pub fingerprint: String,
}

impl FromRequest<AppState> for IdempotentPost {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = idempotency_key(request.headers())?;
        let method = request.method().as_str().to_owned();
        let path = request.uri().path().to_owned();
        let StripeParams(params) = StripeParams::from_request(request, state).await?;
        let fingerprint = fingerprint(&state.fingerprint_key, &method, &path, &params.canonical());
        Ok(IdempotentPost {
            params,
            key,
            fingerprint,
        })
    }
}

#[derive(Clone)]
pub struct Request<'a> {
    pub auth: &'a Auth,
    pub request_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub fingerprint: String,
}

impl Request<'_> {
    fn claim(&self) -> Option<Claim<'_>> {
        let context = &self.auth.0;
        self.idempotency_key.map(|key| Claim {
            merchant_id: context.merchant_id,
            livemode: context.livemode,
            key,
            fingerprint: &self.fingerprint,
            request_id: self.request_id,
        })
    }
}

/// Runs `work` in a transaction on the merchant's shard, under the key.
/// `work` may run more than once if the transaction loses a deadlock.
pub async fn execute<W, Fut>(state: &AppState, request: Request<'_>, work: W) -> Response
where
    W: Fn(Transaction<'static, Postgres>) -> Fut,
    Fut: Future<Output = Result<(Transaction<'static, Postgres>, Reply), WorkError>>,
{
    execute_phased(state, &request, work).await.response
}

/// What the write transaction did under the key.
enum Written {
    /// Claimed the key, executed and committed.
    Executed(Reply),
    /// Found the key answered or held elsewhere: executed nothing.
    Answered(ClaimOutcome),
}

/// The answer to a request whose key was not this request's to execute.
fn answer_without_executing(outcome: ClaimOutcome, key: Option<&str>) -> Response {
    let key = key.unwrap_or_default();
    match outcome {
        ClaimOutcome::Replay(stored) => replay(stored, key),
        ClaimOutcome::Mismatch => ApiError::idempotency_mismatch(key).into_response(),
        // (`Claimed` executes and never comes here.)
        ClaimOutcome::InUse | ClaimOutcome::Claimed => {
            ApiError::idempotency_in_use(key).into_response()
        }
    }
}

/// [`execute`], telling the caller whether its committed change is in
/// flight, so it may wait for the outcome and [`answer_after_wait`].
pub async fn execute_phased<W, Fut>(state: &AppState, request: &Request<'_>, work: W) -> Executed
where
    W: Fn(Transaction<'static, Postgres>) -> Fut,
    Fut: Future<Output = Result<(Transaction<'static, Postgres>, Reply), WorkError>>,
{
    let done = |response: Response| Executed {
        response,
        in_flight: None,
    };
    let context = &request.auth.0;
    let pool = match state.shard(context.shard()) {
        Ok(pool) => pool,
        Err(error) => return done(error.into_response()),
    };
    let claim = request.claim();
    let result = retry::transaction("write payment state", || async {
        let mut tx = pool.begin().await.map_err(WorkError::Unavailable)?;
        if let Some(claim) = &claim {
            // A failed claim executed nothing: the client may retry.
            let claimed = idempotency::claim(&mut tx, claim).await;
            match claimed.map_err(WorkError::Unavailable)? {
                ClaimOutcome::Claimed => {}
                // Rolled back: nothing was written under the key.
                answered => return Ok(Written::Answered(answered)),
            }
        }
        let (mut tx, reply) = work(tx).await?;
        if let Some(claim) = &claim {
            idempotency::complete(&mut tx, claim, reply.stored(), reply.stage()).await?;
        }
        tx.commit().await?;
        Ok::<Written, WorkError>(Written::Executed(reply))
    })
    .await;

    let failure = match result {
        Ok(Written::Answered(answered)) => {
            return done(answer_without_executing(answered, request.idempotency_key));
        }
        Ok(Written::Executed(reply)) => return executed(reply, request.idempotency_key),
        Err(failure) => failure,
    };
    done(after_failure(pool, claim.as_ref(), failure).await)
}

/// A write whose response is known before it runs (a create), as one
/// autocommit statement on `conn`: the key with its response
/// (`idempotency::push_answered`) as the first CTE, then what `write`
/// appends (its CTEs and the final `select`). One round trip and one commit
/// instead of [`execute_phased`]'s five round trips.
///
/// `None` when it did not write: the key is taken (a replay, another
/// request under it, an earlier version's claim) or the statement failed.
/// The caller then runs [`execute_phased`], which decides as always and
/// stores or replays the answer; nothing half-written stands in its way.
/// (If the statement's answer was lost after it committed, that path finds
/// the key and replays this request's own answer.)
pub async fn write_at_once(
    conn: &mut PgConnection,
    request: &Request<'_>,
    reply: Reply,
    write: impl FnOnce(&mut Statement) -> anyhow::Result<()>,
) -> Option<Executed> {
    let mut statement = Statement::new();
    statement.push("with ");
    if let Some(claim) = request.claim() {
        statement.push("answered as (");
        let stored =
            idempotency::push_answered(&mut statement, &claim, reply.stored(), reply.stage());
        if let Err(error) = stored {
            tracing::warn!(error = %format!("{error:#}"), "cannot bind the stored response");
            return None;
        }
        statement.push("), ");
    }
    let written = match write(&mut statement) {
        Ok(()) => retry::traced("write payment state", statement.execute(conn))
            .await
            .map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        let held = error
            .downcast_ref::<sqlx::Error>()
            .is_some_and(idempotency::is_held_elsewhere);
        if !held {
            tracing::warn!(
                http.request_id = request.request_id,
                error = %format!("{error:#}"),
                "the one-statement write failed; writing in a transaction instead"
            );
        }
        return None;
    }
    Some(executed(reply, request.idempotency_key))
}

/// What a request that executed and committed `reply` answers now.
fn executed(reply: Reply, key: Option<&str>) -> Executed {
    let response = with_key(respond(reply.status, reply.body.clone()), key);
    Executed {
        response,
        in_flight: reply.in_flight.then_some(reply),
    }
}

/// The answer when no connection to the shard could be had: nothing was
/// executed, so the client's retry (with the key) executes.
pub fn unavailable(request: &Request<'_>, error: sqlx::Error) -> Executed {
    tracing::warn!(error = %error, "no database connection for the write");
    Executed {
        response: with_key(
            failure_response(WorkError::Unavailable(error)),
            request.idempotency_key,
        ),
        in_flight: None,
    }
}

/// Phase 2's answer: settles the response stored in phase 1 (which a
/// request that waits stores as awaiting its outcome) with `answer`, the
/// state after the wait, so that a replay returns what this client gets.
/// If the integration service settled it first (with the answer it stored
/// with the outcome, when this request's reply went astray), that stored
/// answer is the one to give. If the settling fails, the client gets the
/// phase-1 response, which is still true.
pub async fn answer_after_wait(
    conn: &mut PgConnection,
    request: &Request<'_>,
    phase1: Reply,
    answer: Reply,
) -> Response {
    let Some(claim) = request.claim() else {
        return respond(answer.status, answer.body);
    };
    let unchanged = answer.status == phase1.status && answer.body == phase1.body;
    // Unchanged: keep the stored bytes, only settle them.
    let next = (!unchanged).then(|| answer.stored());
    match idempotency::settle_response(conn, &claim, next).await {
        Ok(Settled::Ours) => with_key(respond(answer.status, answer.body), Some(claim.key)),
        Ok(Settled::Theirs(stored)) => {
            with_key(respond_stored(stored.status, stored.body), Some(claim.key))
        }
        Ok(Settled::Gone) => {
            tracing::warn!(
                http.request_id = request.request_id,
                "the stored idempotent response was gone; answering without storing"
            );
            with_key(respond(answer.status, answer.body), Some(claim.key))
        }
        Err(error) => {
            tracing::warn!(
                http.request_id = request.request_id,
                error = %format!("{error:#}"),
                "could not settle the stored idempotent response; answering with phase 1's"
            );
            with_key(respond(phase1.status, phase1.body), Some(claim.key))
        }
    }
}

/// The answer the integration service committed with the outcome (and
/// stored under the key, if there is one): sent as is.
pub fn answered_by_outcome(request: &Request<'_>, status: u16, body: Vec<u8>) -> Response {
    with_key(respond_stored(status, body), request.idempotency_key)
}

fn respond_stored(status: u16, body: Vec<u8>) -> Response {
    respond(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

/// The answer to work that failed; stores it under the key when execution
/// had begun.
async fn after_failure(pool: &PgPool, claim: Option<&Claim<'_>>, failure: WorkError) -> Response {
    let Some(claim) = claim else {
        return failure_response(failure);
    };
    if let WorkError::Unavailable(error) = &failure {
        // Nothing ran, and the claim (if any) rolled back: the client's
        // retry executes.
        tracing::warn!(error = %error, "no database transaction could start or claim its key");
        return with_key(failure_response(failure), Some(claim.key));
    }
    let error = match failure {
        WorkError::Api(error) => error,
        WorkError::Internal(error) => ApiError::internal(&error),
        WorkError::Unavailable(error) => ApiError::internal(&error.into()),
    };
    // Stored replies of server errors tell the SDK not to retry: the same
    // key would replay the same error (API.md).
    let error = if error.status.is_server_error() {
        error.with_should_retry(false)
    } else {
        error
    };
    let body = match serde_json::to_vec(&error.body()) {
        Ok(body) => body,
        Err(e) => return ApiError::internal(&e.into()).into_response(),
    };
    match idempotency::complete_unchanged(pool, claim, error.status.as_u16(), &body).await {
        Ok(AfterFailure::Stored) => with_key(error.into_response(), Some(claim.key)),
        // The change did commit (the commit's answer was lost): its stored
        // response is the truth, never the error we saw.
        Ok(AfterFailure::Replay(stored)) => replay(stored, claim.key),
        Ok(AfterFailure::Mismatch) => ApiError::idempotency_mismatch(claim.key).into_response(),
        Ok(AfterFailure::NotHeld) => ApiError::idempotency_in_use(claim.key).into_response(),
        Err(store_error) => {
            // Nothing is stored under the key (the change rolled back with
            // its claim): a retry executes afresh, which is safe.
            tracing::error!(error = %store_error, "could not store an idempotent error response");
            with_key(error.into_response(), Some(claim.key))
        }
    }
}

fn failure_response(failure: WorkError) -> Response {
    match failure {
        WorkError::Api(error) => error.into_response(),
        WorkError::Internal(error) => ApiError::internal(&error).into_response(),
        WorkError::Unavailable(_) => {
            ApiError::unavailable("The database is temporarily unavailable; please retry.")
                .into_response()
        }
    }
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A card error is the processor's answer: the same request would get
    // the same one (and a replay of its key certainly does).
    if status == StatusCode::PAYMENT_REQUIRED {
        headers.insert(SHOULD_RETRY_HEADER, HeaderValue::from_static("false"));
    }
    response
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn with_key(mut response: Response, key: Option<&str>) -> Response {
    if let Some(key) = key {
        response
            .headers_mut()
            .insert("idempotency-key", header(key));
    }
    response
}

fn replay(stored: StoredResponse, key: &str) -> Response {
    let mut response = respond_stored(stored.status, stored.body);
    let status = response.status();
    let headers = response.headers_mut();
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    headers.insert("original-request", header(&stored.request_id));
    headers.insert("idempotency-key", header(key));
    if status.is_server_error() {
        headers.insert("stripe-should-retry", HeaderValue::from_static("false"));
    }
    response
}
