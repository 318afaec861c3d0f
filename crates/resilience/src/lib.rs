//! What every client of a remote dependency (processor, Redis, broker)
//! needs to fail well (DESIGN.md §8).
//!
//! # Layout
//!
//! - [`breaker`]: a circuit breaker with an injected clock.
//! - [`backoff`]: capped exponential backoff with "equal jitter".

pub mod backoff;
pub mod breaker;

pub use backoff::equal_jitter_backoff_ms;
pub use breaker::{Breaker, BreakerState, Clock, SystemClock};
