//! Executing a POST under Stripe's idempotency rules (API.md).
//!
//! Authentication and parameter validation happen before this (their
//! failures are not stored). Then the key is claimed; the work runs in one
//! shard transaction that also stores the response; errors found after the
//! claim are stored too; replays are byte for byte.

use std::future::Future;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use snakepay_http::ApiError;
use snakepay_store::idempotency::{self, Claim, ClaimOutcome, StoredResponse};
use snakepay_store::retry::{self, AsRetryable};
use sqlx::{Postgres, Transaction};

use crate::auth::Auth;
use crate::state::AppState;

/// What the work produced: a status and the exact bytes to send and store.
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(value: &serde_json::Value) -> Result<Reply, WorkError> {
        Ok(Reply {
            status: StatusCode::OK,
            body: serde_json::to_vec(value).map_err(|e| WorkError::Internal(e.into()))?,
        })
    }
}

/// Why the work failed: an API error (stored and returned) or an internal
/// error (stored as a generic 500, logged once).
pub enum WorkError {
    Api(ApiError),
    Internal(anyhow::Error),
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
        matches!(self, WorkError::Internal(error) if error.is_retryable())
    }
}

/// The request as the fingerprint sees it: method, path and the canonical
/// decoded parameters, so reordered or JSON-encoded equal requests match.
pub fn fingerprint(method: &str, path: &str, canonical_params: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_params.as_bytes());
    hex::encode(hasher.finalize())
}

pub struct Request<'a> {
    pub auth: &'a Auth,
    pub request_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub fingerprint: String,
}

/// Runs `work` in a transaction on the merchant's shard, under the key.
/// `work` may run more than once if the transaction loses a deadlock.
pub async fn execute<W, Fut>(state: &AppState, request: Request<'_>, work: W) -> Response
where
    W: Fn(Transaction<'static, Postgres>) -> Fut,
    Fut: Future<Output = Result<(Transaction<'static, Postgres>, Reply), WorkError>>,
{
    let context = &request.auth.0;
    let pool = match state.shard(context.shard()) {
        Ok(pool) => pool,
        Err(error) => return error.into_response(),
    };
    if let Some(key) = request.idempotency_key {
        let claim = Claim {
            merchant_id: context.merchant_id,
            livemode: context.livemode,
            key,
            fingerprint: &request.fingerprint,
            request_id: request.request_id,
        };
        match idempotency::claim(pool, &claim).await {
            Ok(ClaimOutcome::Claimed) => {}
            Ok(ClaimOutcome::Replay(stored)) => return replay(stored, key),
            Ok(ClaimOutcome::Mismatch) => {
                return ApiError::idempotency_mismatch(key).into_response();
            }
            Ok(ClaimOutcome::InUse) => return ApiError::idempotency_in_use(key).into_response(),
            Err(error) => return ApiError::internal(&error.into()).into_response(),
        }
    }

    let result = retry::retry(|| async {
        let tx = pool.begin().await?;
        let (mut tx, reply) = work(tx).await?;
        if let Some(key) = request.idempotency_key {
            idempotency::complete(
                &mut tx,
                context.merchant_id,
                context.livemode,
                key,
                reply.status.as_u16(),
                &reply.body,
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<Reply, WorkError>(reply)
    })
    .await;

    match result {
        Ok(reply) => with_key(respond(reply.status, reply.body), request.idempotency_key),
        Err(failure) => {
            let error = match failure {
                WorkError::Api(error) => error,
                WorkError::Internal(error) => ApiError::internal(&error),
            };
            let Some(key) = request.idempotency_key else {
                return error.into_response();
            };
            // Stored replies of server errors tell the SDK not to retry:
            // the same key would replay the same error.
            let error = if error.status.is_server_error() {
                error.with_should_retry(false)
            } else {
                error
            };
            let status = error.status;
            let body = match serde_json::to_vec(&error.body()) {
                Ok(body) => body,
                Err(e) => return ApiError::internal(&e.into()).into_response(),
            };
            if let Err(store_error) = idempotency::complete_unchanged(
                pool,
                context.merchant_id,
                context.livemode,
                key,
                status.as_u16(),
                &body,
            )
            .await
            {
                // The key stays locked and is taken over after the lock
                // timeout; nothing was committed, so that is safe.
                tracing::error!(error = %store_error, "could not store an idempotent error response");
            }
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert("idempotency-key", header(key));
            response
        }
    }
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
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
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = respond(status, stored.body);
    let headers = response.headers_mut();
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    headers.insert("original-request", header(&stored.request_id));
    headers.insert("idempotency-key", header(key));
    if status.is_server_error() {
        headers.insert("stripe-should-retry", HeaderValue::from_static("false"));
    }
    response
}
