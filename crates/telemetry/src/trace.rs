//! Traces: the tracer behind `tracing`'s spans, their export over OTLP, and
//! W3C trace context (`traceparent`) across process boundaries.
//!
//! Every span gets a trace and span ID whether or not traces are exported:
//! the JSON log lines carry them, so a log line leads to its trace. Export
//! is OTLP/HTTP with protobuf bodies to `{otlp_endpoint}/v1/traces`, batched
//! off the request path (the SDK's batch processor, tuned by the standard
//! `OTEL_BSP_*` variables); a full queue drops spans, never blocks a
//! payment.
//!
//! # Context across boundaries
//!
//! - HTTP: [`inject_http`] on outbound requests, [`extract_http`] on
//!   inbound ones (the `snakepay_http` request layer does this).
//! - The outbox and the broker: [`current_traceparent`] is written into the
//!   outbox row's `headers` and travels as the message's `traceparent`
//!   header; consumers call [`set_parent`] on their span.
//!
//! Instrumentation uses `tracing` spans with the OpenTelemetry conventions:
//! `otel.name` (the span's name), `otel.kind` (`server`, `client`,
//! `producer`, `consumer`), `otel.status_code` (`error` on failure).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header and outbox/message field name.
pub const TRACEPARENT: &str = "traceparent";

/// How long one export may take before the batch is given up; the collector
/// is observability, not the payment path.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The process's tracer provider.
pub(crate) struct Tracer {
    provider: SdkTracerProvider,
}

impl Tracer {
    /// A tracer exporting to `endpoint` (the collector's base URL, e.g.
    /// `http://127.0.0.1:4318`), or keeping spans local when `None`.
    pub(crate) fn new(service: &'static str, endpoint: Option<&url::Url>) -> anyhow::Result<Self> {
        let Some(endpoint) = endpoint else {
            return Ok(Self::without_export(service));
        };
        let traces_url = endpoint.join("v1/traces")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(ExportClient::new()?)
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource(service))
            .with_batch_exporter(exporter)
            .build();
        Ok(Tracer { provider })
    }

    /// Spans with IDs for the logs, exported nowhere.
    pub(crate) fn without_export(service: &'static str) -> Self {
        Tracer {
            provider: SdkTracerProvider::builder()
                .with_resource(resource(service))
                .build(),
        }
    }

    pub(crate) fn sdk_tracer(&self, service: &'static str) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer(service)
    }

    /// Exports what is queued, then stops.
    pub(crate) fn shutdown(self) {
        let _ = self.provider.shutdown();
    }
}

fn resource(service: &'static str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// The exporter's HTTP client: our reqwest, driven by the service's Tokio
/// runtime. The SDK's batch processor runs on its own thread and blocks on
/// the export future, so the request is spawned onto the runtime captured at
/// start-up and its handle awaited.
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    fn new() -> anyhow::Result<Self> {
        Ok(ExportClient {
            client: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
            runtime: tokio::runtime::Handle::try_current()?,
        })
    }
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportClient")
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The current span's context as a `traceparent` value, if it has one.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// A span's context as a `traceparent` value, if it has one.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// Names `span` after it was entered (the HTTP server span learns its route
/// only once the router matched). Recording `otel.name` alone is not enough:
/// the bridge starts the OpenTelemetry span when it is first entered and
/// ignores later names, so the started span is renamed too.
pub fn rename(span: &tracing::Span, name: String) {
    span.record("otel.name", name.as_str());
    let context = span.context();
    let started = context.span();
    if started.span_context().is_valid() {
        started.update_name(name);
    }
}

/// Makes `span` a child of the remote span named by `traceparent` (from a
/// message or an outbox row). A malformed or absent value leaves `span` a
/// root: a bad header never fails the work it came with.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    adopt_parent(span, &carrier);
}

/// Makes `span` a child of the context `carrier` holds, if it is valid.
fn adopt_parent(span: &tracing::Span, carrier: &dyn Extractor) {
    let context = TraceContextPropagator::new().extract(carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Headers carrying the current span's context, for an outbound request
/// (`reqwest::RequestBuilder::headers`).
pub fn outbound_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    inject_http(&mut headers);
    headers
}

/// Writes the current span's context into an outbound request's headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Makes `span` a child of the caller's span named by an inbound request's
/// `traceparent` header, if it has a valid one.
pub fn extract_http(span: &tracing::Span, headers: &http::HeaderMap) {
    adopt_parent(span, &HeaderExtractor(headers));
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn with_tracing<T>(f: impl FnOnce() -> T) -> T {
        let tracer = Tracer::without_export("test");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer.sdk_tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    const REMOTE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_child_of_a_remote_parent_keeps_its_trace_and_gets_its_own_span_id() {
        let traceparent = with_tracing(|| {
            let span = tracing::info_span!("consume");
            set_parent(&span, Some(REMOTE));
            traceparent_of(&span)
        })
        .unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[2], "00f067aa0ba902b7");
        assert_eq!(parts[2].len(), 16);
    }

    #[test]
    fn a_malformed_traceparent_leaves_the_span_a_root() {
        let traceparent = with_tracing(|| {
            let span = tracing::info_span!("consume");
            set_parent(&span, Some("00-not-a-trace-01"));
            traceparent_of(&span)
        })
        .unwrap();
        assert!(!traceparent.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(traceparent.len(), 55);
    }

    #[test]
    fn http_headers_carry_the_context_both_ways() {
        with_tracing(|| {
            let outer = tracing::info_span!("client");
            let _entered = outer.enter();
            let mut headers = http::HeaderMap::new();
            inject_http(&mut headers);
            let sent = headers
                .get(TRACEPARENT)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(Some(sent.clone()), current_traceparent());

            let server = tracing::info_span!("server");
            extract_http(&server, &headers);
            let received = traceparent_of(&server).unwrap();
            assert_eq!(received[..35], sent[..35], "same trace ID");
            assert_ne!(received, sent, "a span of its own");
        });
    }

    #[test]
    fn no_span_no_traceparent() {
        assert_eq!(with_tracing(current_traceparent), None);
    }
}
