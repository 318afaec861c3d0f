//! `/v1/audit`: query the trail and verify its chain (admins).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_http::ApiError;
use snakepay_store::audit::{self, AuditQuery};

use crate::auth::Permission;
use crate::openapi::ApiRoutes;
use crate::routes::{Params, page_limit};
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/audit/entries",
        list,
        Permission::Audit,
        "Query the audit trail, newest first",
        &[
            "actor",
            "action",
            "resource",
            "outcome",
            "from_ms",
            "to_ms",
            "before_id",
            "limit",
        ],
    )
    .post(
        "/v1/audit/verify",
        verify,
        Permission::Audit,
        "Recompute the hash chain; reports the first altered or missing row",
        &[],
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    actor: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let query = AuditQuery {
        actor_subject: params.actor,
        action: params.action,
        resource: params.resource,
        outcome: params.outcome,
        from_ms: params.from_ms,
        to_ms: params.to_ms,
        before_id: params.before_id,
        limit: page_limit(params.limit)?,
    };
    let (entries, has_more) = audit::query(state.store.control(), &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data: Vec<_> = entries
        .iter()
        .map(|entry| {
            let mut shown = json!(entry);
            if let Some(fields) = shown.as_object_mut() {
                fields.insert("details".to_owned(), entry.details_json());
            }
            shown
        })
        .collect();
    let next = if has_more {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(json!({ "data": data, "has_more": has_more, "next_before_id": next })).into_response())
}

async fn verify(State(state): State<AppState>) -> Result<Response, ApiError> {
    let verification = audit::verify_chain(state.store.control())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "intact": verification.intact(),
        "verified_rows": verification.verified_rows,
        "first_break": verification.first_break,
    }))
    .into_response())
}
