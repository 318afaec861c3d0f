//! Black-box tests of the External API over real HTTP, each with its own
//! databases (real PostgreSQL).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod caches;
mod customers_events;
mod errors;
mod hardening;
mod idempotency;
mod integration_double;
mod openapi;
mod payment_intents;
mod refunds_charges;
mod security;
mod shared_limits;
mod support;
mod waiting;
mod webhook_endpoints;
