//! Snakepay's processor simulator: an HTTP server that behaves like an
//! external card processor (an acquirer), for the platform's tests and local
//! runs. It is the only simulated party in the tests, so it has a real
//! processor's failure modes: declines, 3-D Secure, 5xx before and after the
//! work, answers that time out after the work, slow answers, and signed
//! asynchronous notifications. It keeps a durable record of everything it
//! did so tests can prove each payment was charged exactly once.
//!
//! # Layout
//!
//! - `server.rs` — [`start`] / [`start_with_clock`] / [`run`],
//!   [`RunningSim`]: start-up (journal replay), the router and its
//!   middleware (API key, simulated latency, request log), shutdown.
//! - `config.rs` — [`SimConfig`], the `[processor_sim]` section and
//!   [`FaultSettings`], with defaults and validation.
//! - `api.rs` — the `/v1` acquirer API: request types, validation, handlers.
//! - `app.rs` — shared state and the path of every mutating request
//!   (idempotency claim → fault → commit → answer).
//! - `engine.rs` — the pure core: (books, command) → effect.
//! - `model.rs` — authorizations, refunds and journal records.
//! - `cards.rs` — the test cards and trigger cards.
//! - `idempotency.rs` — one answer and one worker per idempotency key.
//! - `faults.rs` — seeded fault rolls and latency.
//! - `journal.rs` — the fsynced JSON-lines journal and its replay.
//! - `notify.rs` — signed notifications, [`verify_signature`], delivery.
//! - `threeds.rs` — the 3-D Secure challenge pages.
//! - `admin.rs` — `/_sim/config` and `/_sim/operations`.
//! - `clock.rs`, `ids.rs`, `secret.rs`, `error.rs` — small helpers.
//!
//! Card numbers and CVCs exist only while a request is handled: responses,
//! the journal, notifications and logs carry the last four digits and the
//! brand, never more.

mod admin;
mod api;
mod app;
pub mod cards;
pub mod clock;
pub mod config;
mod engine;
mod error;
mod faults;
mod idempotency;
mod ids;
mod journal;
mod model;
mod notify;
mod secret;
mod server;
mod threeds;

pub use cards::*;
pub use clock::{Clock, FixedClock, SystemClock};
pub use config::{FaultSettings, ProcessorSimSection, SimConfig};
pub use notify::{SIGNATURE_HEADER, sign, verify_signature};
pub use server::{RunningSim, ShutdownHandle, run, start, start_with_clock};
