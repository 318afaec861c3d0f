//! Snakepay's merchant webhook dispatcher (DESIGN.md §5 step 6, §8;
//! API.md "Webhooks").
//!
//! Events reach merchants in two steps, each durable before the next:
//! the **fan-out** creates one pending delivery per subscribed endpoint in
//! the transaction that records the event (`snakepay_store::events::record`),
//! and the **dispatcher** works through the
//! deliveries that are due, POSTing the event's JSON signed with the
//! endpoint's secret, retrying with capped exponential backoff and jitter
//! for up to 3 days after the first attempt — the same event ID and body on
//! every attempt, a fresh timestamp and signature.
//!
//! # Layout
//!
//! - [`settings`]: [`WebhookSettings`], every limit with its unit.
//! - [`clock`]: the injected [`Clock`]; [`SystemClock`], and [`TestClock`]
//!   for tests that move time.
//! - [`dispatch`]: [`Dispatcher`], [`dispatch_once`] (one pass over every
//!   shard: claim, send, record) and [`run_dispatcher`] (passes until
//!   shutdown).
//! - [`schedule`]: backoff and the retry window, pure functions.
//! - [`signature`]: the `Stripe-Signature` header.
//! - [`egress`]: the HTTP client and its guard against server-side request
//!   forgery (literal addresses checked before sending, names by a
//!   resolver that lets only public addresses through).
//!
//! The schedule itself — deliveries and their attempts — is the store's
//! [`snakepay_store::webhook_deliveries`].
//!
//! Logs are one event per line with dotted fields (`webhook.delivery_id`,
//! `webhook.endpoint_id`, `webhook.event_id`, `webhook.attempt`,
//! `http.status`, `webhook.latency_ms`); secrets and signatures are never
//! logged.

pub mod clock;
pub mod dispatch;
pub mod egress;
pub mod schedule;
pub mod settings;
pub mod signature;

pub use clock::{Clock, SystemClock, TestClock};
pub use dispatch::{Dispatcher, dispatch_once, run_dispatcher};
pub use settings::WebhookSettings;
