//! Test support for tests that run the platform as processes (a
//! dev-dependency only; nothing here ships).
//!
//! # Layout
//!
//! - [`stack`]: processor-sim, the integration service and the External API
//!   as separate processes with one configuration file and a log file each;
//!   start, stop, kill (SIGKILL) and restart one by name, give one service
//!   its own settings, create merchants, read logs and metrics.
//! - [`deps`]: test-owned dependencies (a PostgreSQL cluster, a Redis
//!   server, a RabbitMQ node) that a test may stop and start without
//!   touching the shared servers other tests use.
//! - [`proxy`]: a TCP fault proxy between a service and a dependency that can
//!   cut every connection (and refuse new ones) or delay traffic.
//! - [`duplicator`]: re-publishes every command and event a second time, so
//!   consumers see duplicate deliveries.
//! - [`load`]: concurrent clients that create payments and retry like the
//!   Stripe SDKs (same `Idempotency-Key`, backoff), recording every answer.
//! - [`consistency`]: whether what a client saw agrees with the final state,
//!   per the PaymentIntent state machine.

pub mod consistency;
pub mod deps;
pub mod duplicator;
pub mod load;
pub mod proxy;
pub mod stack;

pub use stack::{ServiceName, Stack, StackBuilder};

/// A port free at the time of the call (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or(0)
}

/// `bytes` random bytes as hex, for unique names.
pub fn random_hex(bytes: usize) -> String {
    let mut random = vec![0_u8; bytes];
    // Without OS randomness, fall back on the time: names only need to be
    // unique among concurrent tests.
    if getrandom::fill(&mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        return format!("{nanos:x}");
    }
    hex::encode(random)
}
