//! `/v1/merchants`: create, list, read and update merchants, and the KYC
//! workflow (pending → verified or rejected, with reviewer and reason).

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_domain::ids::{MerchantId, ShardNumber};
use snakepay_http::ApiError;
use snakepay_store::merchants::{self, KycError, KycStatus, NewMerchant};

use crate::auth::{Authed, Permission, noted};
use crate::openapi::ApiRoutes;
use crate::routes::{Body, Params, page_limit};
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/merchants",
        list,
        Permission::Read,
        "List merchants, newest first",
        &["kyc_status", "starting_after", "limit"],
    )
    .post(
        "/v1/merchants",
        create,
        Permission::ManageMerchants,
        "Create a merchant in this region (KYC pending), on the given or the least loaded shard",
        &["legal_name", "country", "shard", "home_region"],
    )
    .get(
        "/v1/merchants/{id}",
        retrieve,
        Permission::Read,
        "Retrieve a merchant",
        &[],
    )
    .post(
        "/v1/merchants/{id}",
        update,
        Permission::ManageMerchants,
        "Update a merchant's legal name or country (shard and home region are fixed: IDs encode them)",
        &["legal_name", "country"],
    )
    .post(
        "/v1/merchants/{id}/kyc",
        review,
        Permission::ManageMerchants,
        "Record a KYC decision: verified, rejected (reason required) or pending (reopen)",
        &["status", "reason"],
    )
}

/// A merchant ID of this region, or 404.
pub fn merchant_id(state: &AppState, text: &str) -> Result<MerchantId, ApiError> {
    MerchantId::parse(text)
        .ok()
        .filter(|id| id.region() == state.region && state.store.shard(id.shard()).is_ok())
        .ok_or_else(|| ApiError::resource_missing("merchant", text, "id"))
}

fn missing(id: &str) -> ApiError {
    ApiError::resource_missing("merchant", id, "id")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    kyc_status: Option<String>,
    starting_after: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let status = params
        .kyc_status
        .as_deref()
        .map(|text| {
            KycStatus::parse(text).ok_or_else(|| {
                ApiError::parameter_invalid(
                    "parameter_invalid_string",
                    "kyc_status",
                    "kyc_status must be pending, verified or rejected.",
                )
            })
        })
        .transpose()?;
    let (data, has_more) = merchants::list_profiles(
        state.store.control(),
        status,
        params.starting_after.as_deref(),
        page_limit(params.limit)?,
    )
    .await
    .map_err(|e| ApiError::internal(&e.into()))?;
    Ok(Json(json!({ "object": "list", "data": data, "has_more": has_more })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    legal_name: String,
    country: String,
    shard: Option<u8>,
    /// Accepted only when it is this region: a merchant is created in the
    /// region that will hold its data.
    home_region: Option<String>,
}

fn check_legal_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "legal_name",
            "legal_name must be 1 to 200 characters.",
        ));
    }
    Ok(())
}

fn parse_country(country: &str) -> Result<String, ApiError> {
    let upper = country.to_ascii_uppercase();
    if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "country",
            "country must be an ISO 3166-1 alpha-2 code such as DE.",
        ));
    }
    Ok(upper)
}

async fn create(
    State(state): State<AppState>,
    Body(params): Body<CreateParams>,
) -> Result<Response, ApiError> {
    check_legal_name(&params.legal_name)?;
    let country = parse_country(&params.country)?;
    if let Some(region) = &params.home_region
        && *region != state.region_code
    {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "home_region",
            format!(
                "This is region {}: create the merchant through its home region's Internal API.",
                state.region_code
            ),
        ));
    }
    let control = state.store.control();
    let shard = match params.shard {
        Some(n) if usize::from(n) < state.store.shard_count() => ShardNumber(n),
        Some(_) => {
            return Err(ApiError::parameter_invalid(
                "parameter_invalid_integer",
                "shard",
                format!(
                    "This region has shards 0 to {}.",
                    state.store.shard_count().saturating_sub(1)
                ),
            ));
        }
        None => merchants::least_loaded_shard(control, state.store.shard_count())
            .await
            .map_err(|e| ApiError::internal(&e.into()))?,
    };
    let merchant = merchants::create_merchant(
        control,
        &state.region_code,
        state.region,
        shard,
        &NewMerchant {
            legal_name: params.legal_name,
            country,
        },
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let profile = merchants::find_profile(control, merchant.id)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| missing(&merchant.id.to_string()))?;
    Ok(noted(
        Json(&profile),
        json!({ "merchant": profile.id, "shard": profile.shard }),
    ))
}

async fn retrieve(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    let profile = merchants::find_profile(state.store.control(), merchant)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| missing(&id))?;
    Ok(Json(profile).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateParams {
    legal_name: Option<String>,
    country: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(params): Body<UpdateParams>,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    if let Some(name) = &params.legal_name {
        check_legal_name(name)?;
    }
    let country = params.country.as_deref().map(parse_country).transpose()?;
    let profile = merchants::update_profile(
        state.store.control(),
        merchant,
        params.legal_name.as_deref(),
        country.as_deref(),
    )
    .await
    .map_err(|e| ApiError::internal(&e.into()))?
    .ok_or_else(|| missing(&id))?;
    Ok(noted(
        Json(&profile),
        json!({ "legal_name": params.legal_name, "country": country }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewParams {
    status: String,
    reason: Option<String>,
}

async fn review(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    Body(params): Body<ReviewParams>,
) -> Result<Response, ApiError> {
    let merchant = merchant_id(&state, &id)?;
    let status = KycStatus::parse(&params.status).ok_or_else(|| {
        ApiError::parameter_invalid(
            "parameter_invalid_string",
            "status",
            "status must be verified, rejected or pending.",
        )
    })?;
    let reason = params.reason.as_deref().filter(|r| !r.trim().is_empty());
    if reason.is_some_and(|r| r.len() > 2000) {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "reason",
            "reason must be at most 2000 characters.",
        ));
    }
    let profile = merchants::review_kyc(
        state.store.control(),
        merchant,
        status,
        &authed.0.subject,
        reason,
    )
    .await
    .map_err(|error| match error {
        KycError::NotFound => missing(&id),
        KycError::ReasonRequired => ApiError::parameter_missing("reason"),
        KycError::Transition { .. } => ApiError::invalid_request(
            Some("kyc_unexpected_state"),
            Some("status"),
            format!("{error}."),
        ),
        KycError::Database(e) => ApiError::internal(&e.into()),
    })?;
    // Live keys follow the new status on their next request: the External
    // API's key cache forgets every key of the merchant.
    let keys = merchants::key_ids_of(state.store.control(), merchant)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let cache = state.forget_api_keys(&keys).await;
    Ok(noted(
        Json(&profile),
        json!({ "kyc_status": profile.kyc_status, "reason": reason, "key_cache": cache }),
    ))
}
