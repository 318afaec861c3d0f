//! Tests of the web front over real HTTP: the server's headers, caching and
//! compression; the demo shop against a real External API; and the hosted
//! checkout in a real browser (Debian's Chromium driven by Playwright)
//! against the whole payment pipeline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod browser;
mod currency;
mod demo;
mod serving;
mod support;
