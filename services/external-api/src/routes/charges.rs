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
    // A charge is a view of its intent: cached as a dependent entry, valid
    // only while the intent's cache entry has the version it was read at.
    if let Some(caches) = &state.caches
        && let Some((_, bytes)) = caches
            .charges
            .get_dependent(&charge.to_string(), &caches.intents)
            .await
        && let Some(object) = common::cached_object(&bytes, &auth)
    {
        return Ok(axum::Json(object).into_response());
    }
    let pool = state.shard(auth.0.shard())?;
    let view = charges::find(pool, charge, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing("charge", &id, "id"))?;
    let object = objects::charge(&view);
    if let Some(caches) = &state.caches
        && let Some(bytes) = common::cache_entry(&auth, &object)
    {
        caches
            .charges
            .populate_dependent(
                &charge.to_string(),
                view.intent_version,
                &view.payment_intent,
                &bytes,
                &caches.intents,
            )
            .await;
    }
    Ok(axum::Json(object).into_response())
}
