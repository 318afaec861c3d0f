//! Snakepay's HTTP edge, shared by the External and Internal APIs: the Stripe
//! wire format and HTTP hygiene, no business logic.
//!
//! # Layout
//!
//! - [`params`]: bracket-notation forms, query strings and JSON bodies decoded
//!   into one tree ([`Params`]); [`ParamReader`] reads it by name and refuses
//!   unknown parameters; [`MetadataUpdate`] for Stripe metadata.
//! - [`error`]: [`ApiError`], the Stripe error envelope and its statuses.
//! - [`extract`]: the [`StripeParams`] extractor, [`api_key`] and
//!   [`idempotency_key`] header readers.
//! - [`layers`]: [`stripe_edge`] wraps a router with request IDs,
//!   `Stripe-Version`, path canonicalisation, body limit, timeout, panic
//!   catching and envelope-shaped 404/405/413.
//! - [`health`]: `/livez` and `/readyz` with concurrent, time-limited checks.
//! - [`outcome`]: [`outcome::intent_answer`], the final answer to a change
//!   that waited for the processor (the 200 or the 402 card error).
//! - [`net`]: [`net::is_public_ip`], the one rule for which addresses a
//!   merchant-given URL may reach (server-side request forgery).
//! - [`admin`]: the admin port (`/metrics`) and the HTTP request metrics.
//! - [`server`]: [`serve`] with graceful shutdown, [`shutdown_signal`], and
//!   [`spawn`] for servers on port 0 (tests, in-process services);
//!   [`serve_tls`] and [`spawn_tls`] speak TLS.
//! - [`tls`]: listener TLS (1.2 and 1.3 only) and [`tls::client_builder`],
//!   where every outbound HTTP client starts; [`test_pki`] (feature
//!   `testing`) makes certificates for tests.
//!
//! A service builds `stripe_edge(routes.merge(health_routes(checks)), limits)`
//! and passes it to `serve`.

pub mod admin;
pub mod error;
pub mod extract;
pub mod health;
pub mod layers;
pub mod net;
pub mod outcome;
pub mod params;
pub mod server;
#[cfg(feature = "testing")]
pub mod test_pki;
pub mod tls;

pub use error::{ApiError, ErrorType};
pub use extract::{StripeParams, api_key, idempotency_key, require_api_key};
pub use health::{Health, HealthState, ReadinessCheck, health_routes};
pub use layers::{API_VERSION, EdgeLimits, RequestIdExt, stripe_edge};
pub use params::{MetadataUpdate, Param, ParamReader, Params};
pub use server::{ServerHandle, serve, serve_tls, shutdown_signal, spawn, spawn_tls};
