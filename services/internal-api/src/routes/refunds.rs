//! Operator refunds with maker-checker. A refund up to
//! `refund_approval_threshold` is created at once; a larger one waits as a
//! refund request until a different operator approves it, and only then is
//! the refund created (and so sent to the processor). Both go through
//! `snakepay_store::refund_requests::execute`, the External API's refund
//! path, so the integration service executes them like any other refund.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_domain::ids::{PaymentIntentId, RefundId};
use snakepay_http::ApiError;
use snakepay_store::refund_requests::{
    self, DecisionError, ExecuteError, Execution, NewRefundRequest, RefundRequest,
};
use snakepay_store::{intents, objects};

use crate::auth::{Authed, Permission, noted};
use crate::openapi::ApiRoutes;
use crate::routes::payments::intent_on_shard;
use crate::routes::{Body, Params, page_limit};
use crate::state::AppState;

const REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];
const STATUSES: [&str; 5] = [
    "pending_approval",
    "approved",
    "rejected",
    "executed",
    "failed",
];

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.post(
        "/v1/payments/{id}/refunds",
        create,
        Permission::Refund,
        "Refund a payment; above the approval threshold it waits for a second operator",
        &["amount", "reason"],
    )
    .get(
        "/v1/refund_requests",
        list,
        Permission::Read,
        "List operator refund requests, newest first",
        &["status", "starting_after", "limit"],
    )
    .get(
        "/v1/refund_requests/{id}",
        retrieve,
        Permission::Read,
        "Retrieve a refund request",
        &[],
    )
    .post(
        "/v1/refund_requests/{id}/approve",
        approve,
        Permission::Refund,
        "Approve another operator's refund request; the refund is then sent",
        &["note"],
    )
    .post(
        "/v1/refund_requests/{id}/reject",
        reject,
        Permission::Refund,
        "Reject another operator's refund request",
        &["note"],
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    /// Minor units; absent refunds everything still refundable.
    amount: Option<i64>,
    reason: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    Body(params): Body<CreateParams>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::resource_missing("payment_intent", &id, "id");
    let (intent_id, pool) = intent_on_shard(&state, &id)?;
    if let Some(reason) = &params.reason
        && !REASONS.contains(&reason.as_str())
    {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "reason",
            "reason must be duplicate, fraudulent or requested_by_customer.",
        ));
    }
    let record = intents::load_by_id(pool, intent_id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(missing)?;
    let intent = &record.intent;
    let refundable = intent.amount_received - intent.amount_refunded - intent.amount_refund_pending;
    let amount = params.amount.unwrap_or(refundable);
    if amount <= 0 || amount > refundable {
        return Err(ApiError::invalid_request(
            Some("amount_too_large"),
            Some("amount"),
            format!("Refund amount must be between 1 and {refundable}, what is still refundable."),
        ));
    }
    let needs_approval = amount > state.refund_approval_threshold;
    let refund_id = RefundId::generate(state.region, intent_id.shard())
        .map_err(|e| ApiError::internal(&e.into()))?;
    let request = refund_requests::insert(
        state.store.control(),
        &NewRefundRequest {
            merchant_id: record.merchant_id,
            livemode: record.livemode,
            payment_intent_id: intent_id,
            refund_id,
            amount,
            currency: intent.amount.currency().code(),
            reason: params.reason.as_deref(),
            requested_by: &authed.0.subject,
            needs_approval,
        },
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let note = json!({ "refund_request": request.id, "amount": amount, "payment_intent": id });
    if needs_approval {
        return Ok(noted(
            Json(json!({ "refund_request": request, "refund": null })),
            note,
        ));
    }
    let (request, refund) = execute(&state, request).await?;
    Ok(noted(
        Json(json!({ "refund_request": request, "refund": refund })),
        note,
    ))
}

/// Executes an approved request and reloads it; maps the outcomes.
async fn execute(
    state: &AppState,
    request: RefundRequest,
) -> Result<(RefundRequest, serde_json::Value), ApiError> {
    let intent_id = PaymentIntentId::parse(&request.payment_intent_id)
        .map_err(|e| ApiError::internal(&e.into()))?;
    let shard = state.shard(intent_id.shard())?;
    let cache = state.intent_cache.as_ref();
    let executed = refund_requests::execute(
        Execution {
            control: state.store.control(),
            shard,
            api_version: snakepay_http::API_VERSION,
            now: crate::now(),
        },
        &request,
        move |intent, version| async move {
            if let Some(cache) = cache {
                cache.invalidate(&intent, version).await;
            }
        },
    )
    .await;
    let refund = match executed {
        Ok(refund) => objects::refund(&refund),
        Err(ExecuteError::Refused(error)) => {
            return Err(ApiError::invalid_request(
                error.code(),
                error.param(),
                error.to_string(),
            ));
        }
        Err(ExecuteError::NotApproved(status)) => {
            return Err(ApiError::invalid_request(
                Some("refund_request_unexpected_state"),
                None,
                format!("The request is {status}."),
            ));
        }
        Err(ExecuteError::PaymentMissing) => {
            return Err(ApiError::resource_missing(
                "payment_intent",
                &request.payment_intent_id,
                "id",
            ));
        }
        Err(ExecuteError::Other(error)) => return Err(ApiError::internal(&error)),
    };
    let request = refund_requests::find(state.store.control(), &request.id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .unwrap_or(request);
    Ok((request, refund))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    starting_after: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    if let Some(status) = &params.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "status",
            format!("status must be one of {}.", STATUSES.join(", ")),
        ));
    }
    let (data, has_more) = refund_requests::list(
        state.store.control(),
        params.status.as_deref(),
        params.starting_after.as_deref(),
        page_limit(params.limit)?,
    )
    .await
    .map_err(|e| ApiError::internal(&e.into()))?;
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more })).into_response())
}

async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let request = refund_requests::find(state.store.control(), &id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| ApiError::resource_missing("refund_request", &id, "id"))?;
    Ok(Json(request).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionParams {
    note: Option<String>,
}

async fn decide(
    state: &AppState,
    authed: &Authed,
    id: &str,
    approve: bool,
    note: Option<String>,
) -> Result<RefundRequest, ApiError> {
    if note.as_ref().is_some_and(|n| n.len() > 2000) {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "note",
            "note must be at most 2000 characters.",
        ));
    }
    refund_requests::decide(
        state.store.control(),
        id,
        &authed.0.subject,
        approve,
        note.as_deref(),
    )
    .await
    .map_err(|error| match error {
        DecisionError::NotFound => ApiError::resource_missing("refund_request", id, "id"),
        DecisionError::SameOperator(_) => ApiError::forbidden(format!(
            "{error}: maker-checker needs two different operators."
        )),
        DecisionError::NotPending(_) => ApiError::invalid_request(
            Some("refund_request_unexpected_state"),
            None,
            format!("{error}."),
        ),
        DecisionError::Database(e) => ApiError::internal(&e.into()),
    })
}

async fn approve(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    Body(params): Body<DecisionParams>,
) -> Result<Response, ApiError> {
    let request = match decide(&state, &authed, &id, true, params.note).await {
        Ok(request) => request,
        // Approved before, but its execution did not finish (the database
        // went away in between): the approver may run it again; executing
        // is idempotent (the refund's ID was fixed with the request).
        Err(error) => match refund_requests::find(state.store.control(), &id).await {
            Ok(Some(request))
                if request.status == "approved"
                    && request.decided_by.as_deref() == Some(authed.0.subject.as_str()) =>
            {
                request
            }
            _ => return Err(error),
        },
    };
    let (request, refund) = execute(&state, request).await?;
    Ok(noted(
        Json(json!({ "refund_request": request, "refund": refund })),
        json!({ "refund_request": id, "decision": "approved", "requested_by": request.requested_by }),
    ))
}

async fn reject(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    Body(params): Body<DecisionParams>,
) -> Result<Response, ApiError> {
    let request = decide(&state, &authed, &id, false, params.note).await?;
    Ok(noted(
        Json(json!({ "refund_request": request, "refund": null })),
        json!({ "refund_request": id, "decision": "rejected" }),
    ))
}
