//! `/v1/payments`: search across every shard with a cursor that stays
//! correct across shards (`snakepay_store::search`), and one payment's
//! whole story.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_domain::ids::PaymentIntentId;
use snakepay_domain::payment_intent::PaymentIntentStatus;
use snakepay_http::ApiError;
use snakepay_store::search::{self, PaymentSearch};

use crate::auth::Permission;
use crate::openapi::ApiRoutes;
use crate::routes::merchants::merchant_id;
use crate::routes::{Params, page_limit};
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/payments",
        list,
        Permission::Read,
        "Search payments across every shard, newest first; next page with starting_after = the last id",
        &[
            "merchant",
            "livemode",
            "status",
            "currency",
            "created_gte",
            "created_lte",
            "amount_gte",
            "amount_lte",
            "card_last4",
            "customer",
            "starting_after",
            "limit",
        ],
    )
    .get(
        "/v1/payments/{id}",
        story,
        Permission::Read,
        "A payment's story: attempts with the processor's answers, refunds, events, ledger lines, webhook deliveries",
        &[],
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    merchant: Option<String>,
    livemode: Option<bool>,
    status: Option<String>,
    currency: Option<String>,
    created_gte: Option<i64>,
    created_lte: Option<i64>,
    amount_gte: Option<i64>,
    amount_lte: Option<i64>,
    card_last4: Option<String>,
    customer: Option<String>,
    starting_after: Option<String>,
    limit: Option<i64>,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::parameter_invalid("parameter_invalid", param, message)
}

async fn list(
    State(state): State<AppState>,
    Params(params): Params<SearchParams>,
) -> Result<Response, ApiError> {
    let merchant = params
        .merchant
        .as_deref()
        .map(|m| merchant_id(&state, m))
        .transpose()?;
    if let Some(status) = &params.status
        && PaymentIntentStatus::parse(status).is_none()
    {
        return Err(invalid("status", "status must be a PaymentIntent status."));
    }
    if let Some(last4) = &params.card_last4
        && (last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("card_last4", "card_last4 must be four digits."));
    }
    if let Some(cursor) = &params.starting_after
        && PaymentIntentId::parse(cursor).is_err()
    {
        return Err(invalid(
            "starting_after",
            "starting_after must be a payment intent ID from a previous page.",
        ));
    }
    let query = PaymentSearch {
        merchant,
        livemode: params.livemode,
        status: params.status,
        currency: params.currency.map(|c| c.to_ascii_lowercase()),
        created_gte: params.created_gte,
        created_lte: params.created_lte,
        amount_gte: params.amount_gte,
        amount_lte: params.amount_lte,
        card_last4: params.card_last4,
        customer: params.customer,
        starting_after: params.starting_after,
        limit: page_limit(params.limit)?,
    };
    let (data, has_more) = search::search_payments(&state.store, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more })).into_response())
}

/// A payment intent ID of this region, on a shard it has, with that
/// shard's pool; 404 otherwise.
pub fn intent_on_shard<'a>(
    state: &'a AppState,
    text: &str,
) -> Result<(PaymentIntentId, &'a sqlx::PgPool), ApiError> {
    let missing = || ApiError::resource_missing("payment_intent", text, "id");
    let intent = PaymentIntentId::parse(text)
        .ok()
        .filter(|i| i.region() == state.region)
        .ok_or_else(missing)?;
    let pool = state.store.shard(intent.shard()).map_err(|_| missing())?;
    Ok((intent, pool))
}

async fn story(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::resource_missing("payment_intent", &id, "id");
    let (_, pool) = intent_on_shard(&state, &id)?;
    let story = search::payment_story(pool, &id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(missing)?;
    Ok(Json(story).into_response())
}
