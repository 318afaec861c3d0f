//! Black-box tests of the HTTP edge: a real server on port 0 with a small demo
//! router, spoken to over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod app;
mod auth;
mod errors;
mod health;
mod layers;
mod params;
mod proptests;
mod shutdown;
