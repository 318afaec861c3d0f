//! Black-box tests of the processor simulator over real HTTP, each against
//! its own in-process simulator on 127.0.0.1:0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cards;
mod faults;
mod helpers;
mod idempotency;
mod journal;
mod lifecycle;
mod notifications;
mod process;
mod security;
mod threeds;
