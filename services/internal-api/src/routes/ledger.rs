//! `/v1/ledger`: a merchant's balances per account and currency, and the
//! region's trial balance, which must sum to zero per currency.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use snakepay_http::ApiError;
use snakepay_store::search;

use crate::auth::Permission;
use crate::openapi::ApiRoutes;
use crate::routes::merchants::merchant_id;
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/ledger/merchants/{id}/balances",
        balances,
        Permission::Read,
        "A merchant's ledger balances per account, currency and mode (debits − credits)",
        &[],
    )
    .get(
        "/v1/ledger/trial_balance",
        trial_balance,
        Permission::Read,
        "The region's trial balance over every shard; balanced when every currency nets to zero",
        &[],
    )
}

async fn balances(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    let balances = search::merchant_balances(&state.store, merchant)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({ "merchant": id, "balances": balances })).into_response())
}

async fn trial_balance(State(state): State<AppState>) -> Result<Response, ApiError> {
    let trial = search::trial_balance(&state.store)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if !trial.balanced {
        tracing::error!(ledger.totals = ?trial.totals, "trial balance does not net to zero");
    }
    Ok(Json(trial).into_response())
}
