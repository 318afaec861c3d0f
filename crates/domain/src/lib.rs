//! Snakepay's payment core: pure functions and value types, no I/O.
//!
//! # Layout
//!
//! - [`currency`]: ISO 4217 currencies, their minor-unit exponents and Stripe's
//!   minimum charge amounts.
//! - [`money`]: [`Money`] (non-negative `i64` minor units with a currency),
//!   checked arithmetic, charge-amount validation.
//! - [`ids`]: typed, prefixed IDs (`pi_`, `ch_`, `re_`, ...) that encode region,
//!   shard and creation time.
//! - [`payment_intent`]: the PaymentIntent state machine, `apply(state, command)
//!   -> (state, effects) | error`.
//! - [`refund`]: the Refund state machine and the refund cap.
//! - [`ledger`]: accounts, balanced journals, and the posting rules.
//! - [`effects`]: what transitions ask the services to do: processor commands,
//!   events, journals.
//!
//! The services load a state, apply a command, and commit the new state with
//! its effects in one database transaction. Everything here is deterministic
//! given its inputs, except [`ids::Id::generate`], which reads the clock and the
//! OS random source and is kept apart from the state machines for that reason.

pub mod currency;
pub mod effects;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod payment_intent;
pub mod refund;

pub use currency::Currency;
pub use money::Money;
