//! The API's routes, one module per resource.

pub mod charges;
pub mod common;
pub mod customers;
pub mod events;
pub mod payment_intents;
pub mod refunds;
pub mod webhook_endpoints;

use axum::Router;
use axum::response::IntoResponse;

use crate::openapi::{self, ApiRoutes};
use crate::state::AppState;

/// Every `/v1` route, and their documentation (served at
/// `/v1/openapi.json`, which documents itself too).
pub fn router() -> Router<AppState> {
    let api = ApiRoutes::default();
    let api = customers::routes(api);
    let api = payment_intents::routes(api);
    let api = refunds::routes(api);
    let api = charges::routes(api);
    let api = events::routes(api);
    let api = webhook_endpoints::routes(api);
    let api = api.get("/v1/openapi.json", serve_document, "This document", &[]);
    let (router, endpoints) = api.finish();
    let document = openapi::document(&endpoints);
    router.layer(axum::Extension(std::sync::Arc::new(document)))
}

async fn serve_document(
    axum::Extension(document): axum::Extension<std::sync::Arc<serde_json::Value>>,
) -> axum::response::Response {
    axum::Json(document.as_ref().clone()).into_response()
}
