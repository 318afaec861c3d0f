//! Black-box tests of the Internal API, one binary (STYLE.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod access;
mod dead_letters;
mod merchants;
mod refunds;
mod search;
mod support;
