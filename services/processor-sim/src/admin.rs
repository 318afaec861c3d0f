//! The test-control API under `/_sim`: fault settings and the record of
//! everything the simulator did.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::SharedApp;
use crate::error::{ApiError, json_error};
use crate::model::{Authorization, AuthorizationStatus, OperationKind, Outcome, Record};

pub fn router() -> Router<SharedApp> {
    Router::new()
        .route("/_sim/config", routing::get(get_config).post(set_config))
        .route("/_sim/operations", routing::get(list_operations))
}

async fn get_config(State(app): State<SharedApp>) -> Response {
    Json(app.faults.settings()).into_response()
}

/// Any subset of the fault settings. Sending `seed` (even the same value)
/// restarts the generators; `"seed": null` reseeds randomly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    failure_rate: Option<f64>,
    failure_after_work_rate: Option<f64>,
    timeout_after_work_rate: Option<f64>,
    timeout_ms: Option<u64>,
    slow_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    seed: Option<Option<u64>>,
}

/// Tells `"seed": null` (present, reseed randomly) from no `seed` at all.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

async fn set_config(State(app): State<SharedApp>, body: Bytes) -> Result<Response, ApiError> {
    let patch: ConfigPatch = serde_json::from_slice(&body).map_err(|error| json_error(&error))?;
    let mut settings = app.faults.settings();
    settings.latency_ms = patch.latency_ms.unwrap_or(settings.latency_ms);
    settings.jitter_ms = patch.jitter_ms.unwrap_or(settings.jitter_ms);
    settings.failure_rate = patch.failure_rate.unwrap_or(settings.failure_rate);
    settings.failure_after_work_rate = patch
        .failure_after_work_rate
        .unwrap_or(settings.failure_after_work_rate);
    settings.timeout_after_work_rate = patch
        .timeout_after_work_rate
        .unwrap_or(settings.timeout_after_work_rate);
    settings.timeout_ms = patch.timeout_ms.unwrap_or(settings.timeout_ms);
    settings.slow_ms = patch.slow_ms.unwrap_or(settings.slow_ms);
    let reseed = patch.seed.is_some();
    if let Some(seed) = patch.seed {
        settings.seed = seed;
    }
    settings.check().map_err(|error| ApiError {
        param: Some(error.field),
        ..ApiError::invalid(error.field, error.message)
    })?;
    tracing::info!(sim.config = ?settings, "fault settings changed");
    app.faults.replace(settings.clone(), reseed);
    Ok(Json(settings).into_response())
}

/// One line of `GET /_sim/operations`.
#[derive(Serialize)]
struct OperationView<'a> {
    seq: u64,
    kind: OperationKind,
    outcome: Outcome,
    at: i64,
    idempotency_key: Option<&'a str>,
    /// The operation's own amount (authorized, captured, voided, refunded).
    amount: Option<i64>,
    currency: Option<&'a str>,
    error: Option<&'a str>,
    response_status: u16,
    authorization: Option<&'a str>,
    reference: Option<&'a str>,
    /// The authorization's status right after this operation.
    status: Option<AuthorizationStatus>,
    /// For `authorization` lines: its status now (after 3-D Secure, capture,
    /// void…).
    #[serde(skip_serializing_if = "Option::is_none")]
    final_status: Option<AuthorizationStatus>,
    refund: Option<&'a str>,
    card_last4: Option<&'a str>,
    card_brand: Option<&'a str>,
}

fn view<'a>(record: &'a Record, current: Option<&Authorization>) -> OperationView<'a> {
    let authorization = record.authorization.as_ref();
    let is_authorization = record.kind == OperationKind::Authorization;
    OperationView {
        seq: record.seq,
        kind: record.kind,
        outcome: record.outcome,
        at: record.at,
        idempotency_key: record.idempotency_key.as_deref(),
        amount: record.amount,
        currency: authorization.map(|a| a.currency.as_str()),
        error: record.error.as_deref(),
        response_status: record.response_status,
        authorization: authorization.map(|a| a.id.as_str()),
        reference: match &record.refund {
            Some(refund) => refund.reference.as_deref(),
            None => authorization.map(|a| a.reference.as_str()),
        },
        status: authorization.map(|a| a.status),
        final_status: if is_authorization {
            current.map(|a| a.status)
        } else {
            None
        },
        refund: record.refund.as_ref().map(|r| r.id.as_str()),
        card_last4: authorization
            .filter(|_| is_authorization)
            .and_then(|a| a.card_last4.as_deref()),
        card_brand: authorization
            .filter(|_| is_authorization)
            .and_then(|a| a.card_brand.as_deref()),
    }
}

/// The most operations one page of `GET /_sim/operations` holds.
pub const MAX_OPERATIONS_PAGE: usize = 10_000;

/// `?after_seq=&limit=`: a page of the record. Without either, the whole
/// record at once (what small tests read).
#[derive(Debug, Default, PartialEq, Eq)]
struct Paging {
    after_seq: Option<u64>,
    limit: Option<usize>,
}

impl Paging {
    fn parse(query: Option<&str>) -> Result<Paging, ApiError> {
        let mut paging = Paging::default();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "after_seq" => {
                    paging.after_seq = Some(value.parse().map_err(|_| {
                        ApiError::invalid("after_seq", "must be a sequence number")
                    })?);
                }
                "limit" => {
                    let limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=MAX_OPERATIONS_PAGE).contains(limit));
                    paging.limit = Some(limit.ok_or_else(|| {
                        ApiError::invalid(
                            "limit",
                            format!("must be between 1 and {MAX_OPERATIONS_PAGE}"),
                        )
                    })?);
                }
                _ => {}
            }
        }
        Ok(paging)
    }

    fn is_paged(&self) -> bool {
        self.after_seq.is_some() || self.limit.is_some()
    }
}

/// Everything the simulator did, oldest first, and every authorization as
/// it stands now (with `amount_captured` and `amount_refunded`), for tests
/// and `snakepay-admin verify`, which reconcile "charged exactly once".
///
/// Paged (`after_seq`, `limit`), it holds the operations after `after_seq`,
/// at most `limit` of them, `has_more` when later ones exist, and only the
/// authorizations those operations touched, as they stand now: a reader that
/// walks every page sees every authorization at least once.
async fn list_operations(
    State(app): State<SharedApp>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let paging = Paging::parse(query.as_deref())?;
    let ledger = app.ledger.lock().await;
    let records = ledger.records();
    // Records are appended in `seq` order.
    let start = paging
        .after_seq
        .map_or(0, |after| records.partition_point(|r| r.seq <= after));
    let rest = records.get(start..).unwrap_or_default();
    let page = match paging.limit {
        Some(limit) => rest.get(..limit).unwrap_or(rest),
        None => rest,
    };
    let operations: Vec<OperationView<'_>> = page
        .iter()
        .map(|record| {
            let current = record
                .authorization
                .as_ref()
                .and_then(|a| ledger.authorization(&a.id));
            view(record, current)
        })
        .collect();
    let authorizations: Vec<&Authorization> = if paging.is_paged() {
        let touched: std::collections::BTreeSet<&str> = page
            .iter()
            .filter_map(|record| record.authorization.as_ref().map(|a| a.id.as_str()))
            .collect();
        touched
            .into_iter()
            .filter_map(|id| ledger.authorization(id))
            .collect()
    } else {
        ledger.authorizations()
    };
    Ok(Json(json!({
        "object": "list",
        "operations": operations,
        "authorizations": authorizations,
        "has_more": page.len() < rest.len(),
    }))
    .into_response())
}
