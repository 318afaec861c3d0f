//! The API's routes, one module per resource.

pub mod common;
pub mod customers;
pub mod events;
pub mod payment_intents;

use axum::Router;

use crate::state::AppState;

/// Every `/v1` route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(customers::router())
        .merge(payment_intents::router())
        .merge(events::router())
}
