//! Processor notifications: `POST /v1/processor-notifications/sim`. The
//! simulator tells us what happened after its synchronous answer — above
//! all, the cardholder's 3-D Secure result. A notification is only a hint:
//! after its signature is checked we ask the processor ourselves (the same
//! path as the reconciler), so a forged, replayed or reordered notification
//! can never move money by its content.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::Deserialize;
use snakepay_domain::ids::{AttemptId, RefundId};
use snakepay_store::{attempts, refunds};

use crate::pipeline::{Mode, Pipeline};
use crate::processor::sim::{SIGNATURE_HEADER, verify_signature};

/// How far a notification's signed timestamp may be from our clock.
const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

#[derive(Clone)]
struct NotificationState {
    pipeline: Arc<Pipeline>,
    secret: Arc<str>,
}

pub fn routes(pipeline: Arc<Pipeline>, secret: String) -> Router {
    Router::new()
        .route("/v1/processor-notifications/sim", post(receive))
        .with_state(NotificationState {
            pipeline,
            secret: secret.into(),
        })
}

#[derive(Debug, Deserialize)]
struct Notification {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: NotificationData,
}

#[derive(Debug, Deserialize)]
struct NotificationData {
    authorization: Option<Reference>,
    refund: Option<Reference>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    reference: Option<String>,
}

async fn receive(
    State(state): State<NotificationState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !verify_signature(
        &state.secret,
        signature,
        &body,
        snakepay_store::unix_now(),
        SIGNATURE_TOLERANCE_SECONDS,
    ) {
        tracing::warn!("processor notification with a bad signature refused");
        return StatusCode::UNAUTHORIZED;
    }
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(error) => {
            tracing::warn!(error = %error, "unreadable processor notification");
            return StatusCode::BAD_REQUEST;
        }
    };
    tracing::info!(notification.id = %notification.id, notification.type = %notification.kind, "processor notification");
    let result = match (&notification.data.refund, &notification.data.authorization) {
        (Some(refund), _) => on_refund(&state.pipeline, refund).await,
        (None, Some(authorization)) => on_authorization(&state.pipeline, authorization).await,
        (None, None) => Ok(()),
    };
    match result {
        Ok(()) => StatusCode::OK,
        Err(error) => {
            // The processor retries; the reconciler is the backstop.
            tracing::warn!(notification.id = %notification.id, error = %format!("{error:#}"), "notification not applied");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn on_authorization(pipeline: &Pipeline, authorization: &Reference) -> anyhow::Result<()> {
    let Some(attempt) = authorization
        .reference
        .as_deref()
        .and_then(|r| AttemptId::parse(r).ok())
    else {
        return Ok(());
    };
    let Ok(pool) = pipeline.store.shard(attempt.shard()) else {
        return Ok(());
    };
    let Some(row) = attempts::find(pool, attempt).await? else {
        return Ok(());
    };
    pipeline
        .drive_intent(
            row.merchant_id,
            row.payment_intent,
            Some(attempt),
            Mode::InquireFirst,
            None,
        )
        .await
}

async fn on_refund(pipeline: &Pipeline, refund: &Reference) -> anyhow::Result<()> {
    let Some(id) = refund
        .reference
        .as_deref()
        .and_then(|r| RefundId::parse(r).ok())
    else {
        return Ok(());
    };
    let Ok(pool) = pipeline.store.shard(id.shard()) else {
        return Ok(());
    };
    let Some(record) = refunds::load(pool, id).await? else {
        return Ok(());
    };
    pipeline
        .drive_refund(record.merchant_id, id, Mode::InquireFirst, None)
        .await
}
