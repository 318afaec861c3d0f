//! The JSON log line: one event per line on stderr.
//!
//! ```json
//! {"timestamp":"2026-11-24T13:05:15.123456Z","level":"INFO","target":"snakepay_integration::pipeline",
//!  "message":"payment settled","payment.id":"pi_…","processor.latency_ms":12,
//!  "span":"POST /v1/payment_intents","trace_id":"4bf9…4736","span_id":"00f0…02b7"}
//! ```
//!
//! `trace_id` and `span_id` are the OpenTelemetry IDs of the span the event
//! happened in, so a log line leads to its trace and a trace to its lines.
//! Services do their work inside spans (requests, messages, passes of a
//! background task, the process's lifecycle); an event outside any span —
//! logged on a library's own thread — carries the lifecycle span's IDs
//! once a service has one, and neither field before.
//!
//! The event's own fields keep their dotted names (`payment.id`); values
//! are JSON numbers, booleans or strings. Card data never reaches a log
//! line: the vault's types print masks (see docs/security.md).

use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The trace and span ID of the process's lifecycle span, for events that
/// happen outside any span (a library's own threads, such as the broker
/// client's): they belong to the process, not to a request.
static LIFECYCLE_IDS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Records `span` as the lifecycle span (the first call wins).
pub(crate) fn set_lifecycle_span(span: &tracing::Span) {
    let context = tracing_opentelemetry::OpenTelemetrySpanExt::context(span);
    let started = context.span();
    let span_context = started.span_context();
    if span_context.is_valid() {
        let _ = LIFECYCLE_IDS.set((
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        ));
    }
}

/// The log layer writing [`JsonLines`] to a writer (stderr in services).
pub struct JsonLines<W> {
    make_writer: W,
    /// The subscriber this layer is part of, to ask the OpenTelemetry layer
    /// for a span's IDs (set when the subscriber is installed).
    dispatch: std::sync::OnceLock<WeakDispatch>,
}

impl JsonLines<fn() -> std::io::Stderr> {
    pub fn stderr() -> Self {
        Self::new(std::io::stderr)
    }
}

impl<W> JsonLines<W>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    pub fn new(make_writer: W) -> Self {
        JsonLines {
            make_writer,
            dispatch: std::sync::OnceLock::new(),
        }
    }

    /// The trace and span ID of the span `id`, if it has a valid context.
    fn ids_of(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        let mut line = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            line.insert("timestamp".to_owned(), Value::String(timestamp));
        }
        line.insert("level".to_owned(), metadata.level().as_str().into());
        line.insert("target".to_owned(), metadata.target().into());
        event.record(&mut Fields(&mut line));
        // The span's name and IDs last: an event field of the same name
        // cannot pass for them.
        let ids = match ctx.event_span(event) {
            Some(span) => {
                line.insert("span".to_owned(), span_name(&span).into());
                self.ids_of(&span.id())
            }
            None => LIFECYCLE_IDS.get().cloned(),
        };
        if let Some((trace_id, span_id)) = ids {
            line.insert("trace_id".to_owned(), trace_id.into());
            line.insert("span_id".to_owned(), span_id.into());
        }
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return;
        };
        bytes.push(b'\n');
        // One write per line, so lines from concurrent tasks never interleave.
        let _ = self.make_writer.make_writer().write_all(&bytes);
    }
}

/// The span's `otel.name` when it was given one (`POST /v1/refunds`), else
/// its static name.
fn span_name<S>(span: &tracing_subscriber::registry::SpanRef<'_, S>) -> String
where
    S: for<'a> LookupSpan<'a>,
{
    span.extensions()
        .get::<OtelName>()
        .map_or_else(|| span.name().to_owned(), |name| name.0.clone())
}

/// A span's `otel.name`, kept by [`SpanNames`] for the log lines.
struct OtelName(String);

/// Remembers each span's `otel.name` (set at creation or recorded later, as
/// the HTTP layer does once the route is known), so log lines name spans as
/// traces do.
pub struct SpanNames;

impl<S> Layer<S> for SpanNames
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut name = NameVisitor(None);
        attrs.record(&mut name);
        if let (Some(name), Some(span)) = (name.0, ctx.span(id)) {
            span.extensions_mut().insert(OtelName(name));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let mut name = NameVisitor(None);
        values.record(&mut name);
        if let (Some(name), Some(span)) = (name.0, ctx.span(id)) {
            let mut extensions = span.extensions_mut();
            extensions.remove::<OtelName>();
            extensions.insert(OtelName(name));
        }
    }
}

struct NameVisitor(Option<String>);

impl Visit for NameVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "otel.name" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "otel.name" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// An event's fields as JSON values under their own (dotted) names.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, as `{:#}` prints an anyhow error.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().to_owned(), text.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(f: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let tracer = crate::trace::Tracer::without_export("test");
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer.sdk_tracer("test")))
            .with(SpanNames)
            .with(JsonLines::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn an_event_in_a_span_carries_its_trace_and_span_ids_and_dotted_fields() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("request", otel.name = "POST /v1/refunds");
            let _entered = span.enter();
            let expected = crate::trace::current_traceparent().unwrap();
            tracing::info!(
                payment.id = "pi_1",
                processor.latency_ms = 12_u64,
                "settled"
            );
            tracing::warn!(traceparent = %expected, "for comparison");
        });
        assert_eq!(lines.len(), 2);
        let line = &lines[0];
        assert_eq!(line["message"], "settled");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["payment.id"], "pi_1");
        assert_eq!(line["processor.latency_ms"], 12);
        assert_eq!(line["span"], "POST /v1/refunds");
        let traceparent = lines[1]["traceparent"].as_str().unwrap();
        assert_eq!(
            traceparent,
            format!(
                "00-{}-{}-01",
                line["trace_id"].as_str().unwrap(),
                line["span_id"].as_str().unwrap()
            )
        );
    }

    #[test]
    fn nested_spans_share_the_trace_and_differ_in_span_id() {
        let lines = lines_of(|| {
            let outer = tracing::info_span!("outer");
            let _outer = outer.enter();
            tracing::info!("in outer");
            let inner = tracing::info_span!("inner");
            let _inner = inner.enter();
            tracing::info!("in inner");
        });
        assert_eq!(lines[0]["trace_id"], lines[1]["trace_id"]);
        assert_ne!(lines[0]["span_id"], lines[1]["span_id"]);
        assert_eq!(lines[1]["span"], "inner");
    }

    #[test]
    fn an_event_outside_any_span_has_no_ids() {
        let lines = lines_of(|| tracing::info!("alone"));
        assert_eq!(lines[0]["message"], "alone");
        assert!(lines[0].get("trace_id").is_none());
    }
}
