//! Black-box tests of the External API over real HTTP, each with its own
//! databases (real PostgreSQL).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod customers_events;
mod errors;
mod idempotency;
mod payment_intents;
mod security;
mod support;
