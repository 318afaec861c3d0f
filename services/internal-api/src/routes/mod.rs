//! The API's routes, one module per resource.

mod audit;
mod dead_letters;
mod keys;
mod ledger;
mod merchants;
mod payments;
mod reconciliation;
mod refunds;

use axum::response::IntoResponse;
use axum::{Json, Router};
use serde_json::json;

use crate::auth::{Authed, Permission};
use crate::openapi::{self, ApiRoutes};
use crate::state::AppState;

/// Every `/v1` route behind the token check and the audit layer, and the
/// document (served without a token: it describes, it reveals nothing).
pub fn router(state: AppState) -> Router {
    let api = ApiRoutes::default().get(
        "/v1/me",
        me,
        Permission::Read,
        "Who the token says you are",
        &[],
    );
    let api = merchants::routes(api);
    let api = keys::routes(api);
    let api = payments::routes(api);
    let api = refunds::routes(api);
    let api = ledger::routes(api);
    let api = reconciliation::routes(api);
    let api = dead_letters::routes(api);
    let api = audit::routes(api);
    let (router, endpoints) = api.finish();
    let document = std::sync::Arc::new(openapi::document(&endpoints));
    // The fallback is inside the audit layer, so probes of unknown paths
    // are audited too; the document is added after it, outside.
    router
        .fallback(unknown_route)
        .route_layer(axum::middleware::from_fn(crate::auth::remember_route))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate_and_audit,
        ))
        .with_state(state)
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = std::sync::Arc::clone(&document);
                async move { Json(document.as_ref().clone()).into_response() }
            }),
        )
}

async fn unknown_route(method: http::Method, uri: http::Uri) -> snakepay_http::ApiError {
    snakepay_http::ApiError::not_found_route(&method, uri.path())
}

async fn me(authed: Authed) -> impl IntoResponse {
    Json(json!({
        "subject": authed.0.subject,
        "role": authed.0.role.as_str(),
        "mfa": authed.0.mfa,
    }))
}

/// The `limit` of a list: 1–100, default 20.
pub fn page_limit(limit: Option<i64>) -> Result<i64, snakepay_http::ApiError> {
    match limit {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(_) => Err(snakepay_http::ApiError::parameter_invalid(
            "parameter_invalid_integer",
            "limit",
            "limit must be between 1 and 100.",
        )),
    }
}

/// A JSON body; a malformed one or one with unknown fields is a 400 in the
/// error envelope, naming the problem.
pub struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = snakepay_http::ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(snakepay_http::ApiError::invalid_request(
                Some("parameter_invalid"),
                None,
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters, with the same 400 for unknown or malformed ones.
pub struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = snakepay_http::ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(snakepay_http::ApiError::invalid_request(
                Some("parameter_invalid"),
                None,
                rejection.body_text(),
            )),
        }
    }
}
