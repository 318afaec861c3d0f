//! API keys of a merchant: list (masked), create (the key is shown once),
//! roll (a new key, the old one revoked in the same transaction), revoke.
//! All need a multi-factor login.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_http::ApiError;
use snakepay_store::merchants::{self, KeyKind, RollError};

use crate::auth::{Permission, noted};
use crate::openapi::ApiRoutes;
use crate::routes::Body;
use crate::routes::merchants::merchant_id;
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/merchants/{id}/keys",
        list,
        Permission::ManageKeys,
        "List a merchant's API keys, masked",
        &[],
    )
    .post(
        "/v1/merchants/{id}/keys",
        create,
        Permission::ManageKeys,
        "Create an API key; the key is in this response only",
        &["kind", "livemode"],
    )
    .post(
        "/v1/keys/{key_id}/roll",
        roll,
        Permission::ManageKeys,
        "Replace a key: a new one (shown once) and the old one revoked, atomically",
        &[],
    )
    .post(
        "/v1/keys/{key_id}/revoke",
        revoke,
        Permission::ManageKeys,
        "Revoke a key; it stops working on its next request",
        &[],
    )
}

fn key_missing(id: &str) -> ApiError {
    ApiError::resource_missing("api_key", id, "key_id")
}

async fn list(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    let keys = merchants::list_api_keys(state.store.control(), merchant)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    Ok(Json(json!({ "object": "list", "data": keys, "has_more": false })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    kind: String,
    livemode: bool,
}

async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(params): Body<CreateParams>,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    let kind = match params.kind.as_str() {
        "secret" => KeyKind::Secret,
        "publishable" => KeyKind::Publishable,
        _ => {
            return Err(ApiError::parameter_invalid(
                "parameter_invalid_string",
                "kind",
                "kind must be secret or publishable.",
            ));
        }
    };
    let control = state.store.control();
    if merchants::find_merchant(control, merchant)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .is_none()
    {
        return Err(ApiError::resource_missing("merchant", &id, "id"));
    }
    let created = merchants::create_api_key(
        control,
        &state.hasher,
        state.region,
        merchant,
        kind,
        params.livemode,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let info = merchants::find_api_key(control, &created.key_id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| key_missing(&created.key_id))?;
    Ok(noted(
        Json(json!({ "key": created.key, "api_key": info })),
        json!({ "key_id": created.key_id, "livemode": params.livemode, "kind": params.kind }),
    ))
}

async fn roll(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let (old, created) =
        merchants::roll_api_key(state.store.control(), &state.hasher, state.region, &key_id)
            .await
            .map_err(|error| match error {
                RollError::NotFound => key_missing(&key_id),
                RollError::Revoked => ApiError::invalid_request(
                    Some("api_key_revoked"),
                    None,
                    "This key is revoked; create a new one instead.",
                ),
                RollError::Other(e) => ApiError::internal(&e),
            })?;
    let cache = state.forget_api_keys(std::slice::from_ref(&old.id)).await;
    let info = merchants::find_api_key(state.store.control(), &created.key_id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| key_missing(&created.key_id))?;
    Ok(noted(
        Json(json!({ "key": created.key, "api_key": info, "revoked": old.id })),
        json!({ "revoked": old.id, "new_key_id": created.key_id, "merchant": old.merchant_id, "key_cache": cache }),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let control = state.store.control();
    let revoked = merchants::revoke_api_key(control, &key_id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let info = merchants::find_api_key(control, &key_id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| key_missing(&key_id))?;
    if !revoked {
        return Err(ApiError::invalid_request(
            Some("api_key_revoked"),
            None,
            "This key was already revoked.",
        ));
    }
    let cache = state.forget_api_keys(std::slice::from_ref(&key_id)).await;
    Ok(noted(
        Json(json!({ "api_key": info })),
        json!({ "revoked": key_id, "merchant": info.merchant_id, "key_cache": cache }),
    ))
}
