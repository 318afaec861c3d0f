//! Black-box tests of the Internal API, one binary (STYLE.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod access;
mod merchants;
mod pipeline;
mod refunds;
mod search;
mod support;
