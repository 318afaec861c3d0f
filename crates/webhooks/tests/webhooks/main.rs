//! The webhook dispatcher against the real PostgreSQL (a fresh set of
//! databases per test) and a real HTTP receiver on 127.0.0.1 that verifies
//! every signature with its own implementation.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod delivery;
mod fan_out;
mod retries;
mod safety;
mod support;
