//! Telemetry every service shares (DESIGN.md §9).
//!
//! # Layout
//!
//! - [`init`] (this file): installs the process's subscriber — the
//!   OpenTelemetry bridge first, so every span has a trace and span ID, then
//!   the log output at the configured level — and returns the [`Telemetry`]
//!   guard that flushes traces at shutdown.
//!
//! - [`logs`]: the JSON log line (one event per line, `trace_id` and
//!   `span_id` of the span it happened in, the event's dotted fields).
//!
//! - [`trace`]: the tracer (OTLP/HTTP export when `[telemetry]
//!   otlp_endpoint` is set) and W3C trace context: reading and writing
//!   `traceparent` for HTTP headers, outbox rows and broker messages, so one
//!   trace follows a payment from the API through the broker to the
//!   processor and the merchant's webhook.
//!
//! - [`metrics`]: the process's Prometheus registry, the metric families of
//!   docs/metrics.md, and [`metrics::render`] for the admin port's
//!   `/metrics` (served by `snakepay_http::admin`).
//!
//! docs/observability.md describes the log fields and span names.

pub mod logs;
pub mod metrics;
pub mod trace;

use snakepay_config::sections::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Runs a service's whole life — start-up, serving, shutdown — with its
/// telemetry installed and inside its lifecycle span, so the lines it logs
/// outside any request or message carry a trace ID too. Background tasks
/// join that span with `.in_current_span()`; requests and messages start
/// traces of their own. The tracer is flushed when `service_life` ends.
pub async fn run_instrumented<T>(
    service: &'static str,
    telemetry: &TelemetryConfig,
    service_life: impl std::future::Future<Output = T>,
) -> T {
    let _telemetry = init(service, telemetry);
    let lifecycle = tracing::info_span!(
        parent: None,
        "lifecycle",
        otel.name = %format_args!("{service} lifecycle"),
    );
    logs::set_lifecycle_span(&lifecycle);
    tracing::Instrument::instrument(service_life, lifecycle).await
}

/// Keeps the tracer alive; dropping it exports the spans still queued
/// (bounded by the exporter's timeout), so a graceful shutdown loses none.
#[must_use = "dropping the guard shuts the tracer down"]
pub struct Telemetry {
    tracer: Option<trace::Tracer>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            tracer.shutdown();
        }
    }
}

/// Installs the process's subscriber for `service` (the OpenTelemetry
/// `service.name`). Call once, inside the Tokio runtime (the trace exporter
/// sends through it). A second call — tests starting several services in
/// one process — keeps the first subscriber and returns an inert guard.
pub fn init(service: &'static str, telemetry: &TelemetryConfig) -> Telemetry {
    // The level was validated with the configuration; fall back to `info`
    // rather than run blind.
    let filter =
        EnvFilter::try_new(&telemetry.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let tracer = match trace::Tracer::new(service, telemetry.otlp_endpoint.as_ref()) {
        Ok(tracer) => tracer,
        Err(error) => {
            // Tracing is observability, not the payment path: run without
            // export rather than refuse to start, and say so once.
            eprintln!("{{\"level\":\"ERROR\",\"message\":\"trace export disabled: {error:#}\"}}");
            trace::Tracer::without_export(service)
        }
    };
    // Spans at `info` and above are traced whatever the log level, so a
    // quieter log never breaks a trace. (Each layer filters on its own: a
    // layer without a filter would switch on every dependency's `trace`
    // spans.)
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.sdk_tracer(service))
        .with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry()
        .with(otel)
        .with(logs::SpanNames.with_filter(LevelFilter::INFO));
    let installed = match telemetry.log_format {
        LogFormat::Json => registry
            .with(logs::JsonLines::stderr().with_filter(filter))
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    Telemetry {
        tracer: installed.is_ok().then_some(tracer),
    }
}
