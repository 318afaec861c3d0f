//! `/v1/events`: retrieve and list.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use snakepay_domain::effects::EventType;
use snakepay_domain::ids::EventKind;
use snakepay_http::{ApiError, StripeParams};
use snakepay_store::events;

use crate::auth::Auth;
use crate::openapi::ApiRoutes;
use crate::routes::common::{self, owned_id};
use crate::state::AppState;
use snakepay_store::objects;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/events",
        list,
        "List events, newest first",
        &[
            "limit",
            "starting_after",
            "ending_before",
            "created",
            "type",
            "types",
        ],
    )
    .get("/v1/events/{id}", retrieve, "Retrieve an event", &[])
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    params.reader().finish()?;
    let event = owned_id::<EventKind>(&state, &auth, &id, "event", "id")?;
    let pool = state.shard(auth.0.shard())?;
    let record = events::find(pool, event, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing("event", &id, "id"))?;
    Ok(axum::Json(objects::event(&record, None)).into_response())
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let query = common::list_query(&mut reader)?;
    let mut types = reader.string_list("types")?;
    if let Some(single) = reader.string("type")? {
        types.push(single);
    }
    reader.finish()?;
    for name in &types {
        if EventType::parse(name).is_none() {
            return Err(ApiError::parameter_invalid(
                "parameter_invalid_string",
                "type",
                format!("Invalid event type: {name}"),
            ));
        }
    }
    common::check_cursors::<EventKind>(&state, &auth, &query, "event")?;
    let pool = state.shard(auth.0.shard())?;
    let page = events::list(pool, auth.0.merchant_id, auth.0.livemode, &types, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data = page.items.iter().map(|e| objects::event(e, None)).collect();
    Ok(axum::Json(objects::list("/v1/events", data, page.has_more)).into_response())
}
