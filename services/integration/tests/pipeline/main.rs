//! Black-box tests of the whole payment pipeline: the External API, the
//! outbox relay, RabbitMQ, the integration service and processor-sim as a
//! real HTTP server, each test with its own databases and broker names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod audit;
mod lifecycle;
mod outcomes;
mod reliability;
mod support;
mod tls;
mod webhooks;
