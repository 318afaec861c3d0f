//! Telemetry every service shares (DESIGN.md §9).
//!
//! # Layout
//!
//! - [`init_logging`] (this file): one event per line on stderr, JSON in
//!   deployments (`[telemetry] log_format = "json"`), readable text locally,
//!   at the configured level.
//!
//! - [`metrics`]: the process's Prometheus registry, the metric families of
//!   docs/metrics.md, and [`metrics::render`] for the admin port's
//!   `/metrics` (served by `snakepay_http::admin`).
//!
//! Traces (OpenTelemetry) arrive with the rest of the observability issue.

pub mod metrics;

use snakepay_config::sections::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Installs the process's log subscriber. A second call (tests starting
/// several services in one process) keeps the first.
pub fn init_logging(telemetry: &TelemetryConfig) {
    // The level was validated with the configuration; fall back to `info`
    // rather than run blind.
    let filter =
        EnvFilter::try_new(&telemetry.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match telemetry.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
