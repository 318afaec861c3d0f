//! `/v1/charges/{id}`: an intent's `latest_charge` (or an earlier one).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use snakepay_domain::ids::ChargeKind;
use snakepay_http::{ApiError, StripeParams};
use snakepay_store::charges;

use crate::auth::Auth;
use crate::openapi::ApiRoutes;
use crate::routes::common::{self, owned_id};
use crate::state::AppState;
use snakepay_store::objects;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/charges/{id}",
        retrieve,
        "Retrieve a charge",
        &["expand"],
    )
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    let charge = owned_id::<ChargeKind>(&state, &auth, &id, "charge", "id")?;
    let pool = state.shard(auth.0.shard())?;
    let view = charges::find(pool, charge, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing("charge", &id, "id"))?;
    Ok(axum::Json(objects::charge(&view)).into_response())
}
