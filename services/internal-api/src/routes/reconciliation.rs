//! `/v1/reconciliation`: our payment records and ledger against what the
//! processor (the simulator's operations record) says it did.
//!
//! Matched by our attempt ID, which every authorization carries as its
//! `reference`. A mismatch names its reason:
//!
//! | reason | meaning |
//! | --- | --- |
//! | `missing_at_processor` | we recorded money received for an attempt the processor has no authorization for |
//! | `unknown_to_platform` | the processor captured money for a reference that is none of our attempts |
//! | `captured_not_recorded` | the processor captured money on an attempt that is not the payment's authorization, or on a payment we do not consider paid |
//! | `capture_mismatch` | captured amounts differ |
//! | `refund_mismatch` | refunded amounts differ |
//! | `currency_mismatch` | currencies differ |
//! | `ledger_mismatch` | the ledger's processor receivable for the payment is not captured − refunded |
//!
//! Payments still `processing` are listed apart (`in_flight`): their
//! outcome is not known yet, so a difference there is not a mismatch.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use snakepay_http::ApiError;
use snakepay_store::search::{self, AttemptPosition};

use crate::auth::Permission;
use crate::openapi::ApiRoutes;
use crate::routes::Params;
use crate::state::AppState;

/// The processor name our attempts carry for the simulator.
const PROCESSOR: &str = "sim";

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/reconciliation",
        report,
        Permission::Read,
        "Compare our payments and ledger with what the processor says it did; mismatches with reasons",
        &["created_gte", "created_lte"],
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    created_gte: Option<i64>,
    created_lte: Option<i64>,
}

/// The processor's view of one authorization.
#[derive(Debug, Clone, Deserialize)]
struct ProcessorAuthorization {
    id: String,
    reference: String,
    currency: String,
    status: String,
    amount_captured: i64,
    amount_refunded: i64,
    created: i64,
}

#[derive(Debug, Deserialize)]
struct OperationsRecord {
    authorizations: Vec<ProcessorAuthorization>,
}

async fn report(
    State(state): State<AppState>,
    Params(params): Params<ReportParams>,
) -> Result<Response, ApiError> {
    let sim = state.processor_sim.as_ref().ok_or_else(|| {
        ApiError::unavailable("No processor record is configured ([internal_api.processor_sim]).")
            .with_should_retry(false)
    })?;
    let url = sim
        .base_url
        .join("/_sim/operations")
        .map_err(|e| ApiError::internal(&e.into()))?;
    let record: OperationsRecord = state
        .http
        .get(url)
        .bearer_auth(&sim.api_key)
        .headers(snakepay_telemetry::trace::outbound_headers())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| {
            tracing::warn!(error.chain = %e, "processor record unavailable");
            ApiError::unavailable("The processor's record cannot be read right now.")
        })?
        .json()
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let ours = search::attempt_positions(
        &state.store,
        PROCESSOR,
        params.created_gte,
        params.created_lte,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let in_range = |created: i64| {
        params.created_gte.is_none_or(|low| created >= low)
            && params.created_lte.is_none_or(|high| created <= high)
    };
    let theirs: BTreeMap<&str, &ProcessorAuthorization> = record
        .authorizations
        .iter()
        .map(|a| (a.reference.as_str(), a))
        .collect();
    Ok(Json(compare(&ours, &theirs, &record.authorizations, in_range)).into_response())
}

fn mismatch(
    reason: &str,
    ours: Option<&AttemptPosition>,
    theirs: Option<&ProcessorAuthorization>,
) -> Value {
    json!({
        "reason": reason,
        "payment_intent": ours.map(|o| o.payment_intent.clone()),
        "attempt": ours.map(|o| o.attempt.clone()).or_else(|| theirs.map(|t| t.reference.clone())),
        "merchant": ours.map(|o| o.merchant_id.clone()),
        "ours": ours.map(|o| json!({
            "intent_status": o.intent_status,
            "attempt_status": o.attempt_status,
            "authorized": o.authorized,
            "currency": o.currency,
            "amount_received": o.amount_received,
            "amount_refunded": o.amount_refunded,
            "ledger_receivable": o.ledger_receivable,
        })),
        "processor": theirs.map(|t| json!({
            "authorization": t.id,
            "status": t.status,
            "currency": t.currency,
            "amount_captured": t.amount_captured,
            "amount_refunded": t.amount_refunded,
        })),
    })
}

fn compare(
    ours: &[AttemptPosition],
    theirs: &BTreeMap<&str, &ProcessorAuthorization>,
    all_theirs: &[ProcessorAuthorization],
    in_range: impl Fn(i64) -> bool,
) -> Value {
    let mut mismatches = Vec::new();
    let mut in_flight = Vec::new();
    let mut matched = 0_u64;
    let mut ledger_checked = BTreeSet::new();
    for position in ours {
        let processor = theirs.get(position.attempt.as_str()).copied();
        if position.intent_status == "processing" {
            in_flight.push(mismatch("in_flight", Some(position), processor));
            continue;
        }
        let before = mismatches.len();
        if position.authorized {
            let paid = position.amount_received > 0;
            match processor {
                None if paid => {
                    mismatches.push(mismatch("missing_at_processor", Some(position), None));
                }
                None => {}
                Some(auth) => {
                    if auth.currency != position.currency {
                        mismatches.push(mismatch("currency_mismatch", Some(position), Some(auth)));
                    }
                    if auth.amount_captured != position.amount_received {
                        mismatches.push(mismatch("capture_mismatch", Some(position), Some(auth)));
                    }
                    if auth.amount_refunded != position.amount_refunded {
                        mismatches.push(mismatch("refund_mismatch", Some(position), Some(auth)));
                    }
                }
            }
            // Our records against our books, once per payment.
            if ledger_checked.insert(position.payment_intent.clone())
                && position.ledger_receivable != position.amount_received - position.amount_refunded
            {
                mismatches.push(mismatch("ledger_mismatch", Some(position), processor));
            }
        } else if let Some(auth) = processor.filter(|a| a.amount_captured > 0) {
            mismatches.push(mismatch(
                "captured_not_recorded",
                Some(position),
                Some(auth),
            ));
        }
        if mismatches.len() == before {
            matched += 1;
        }
    }
    let known: BTreeSet<&str> = ours.iter().map(|p| p.attempt.as_str()).collect();
    for auth in all_theirs {
        if !known.contains(auth.reference.as_str())
            && auth.amount_captured > 0
            && in_range(auth.created)
        {
            mismatches.push(mismatch("unknown_to_platform", None, Some(auth)));
        }
    }
    json!({
        "processor": PROCESSOR,
        "generated_at": crate::now(),
        "attempts_checked": ours.len(),
        "processor_authorizations": theirs.len(),
        "matched": matched,
        "mismatches": mismatches,
        "in_flight": in_flight,
        "reconciled": mismatches.is_empty(),
    })
}
