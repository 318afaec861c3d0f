//! Traces and logs of the running platform (docs/observability.md): the
//! services export their spans to an OTLP receiver in this test, and one
//! payment — API request, outbox, broker, integration, processor, webhook —
//! must be one trace; then every line every service logged must be JSON
//! with a trace ID.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use prost::Message as _;
use serde_json::Value;
use snakepay_testkit::{ServiceName, Stack};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const WAIT: Duration = Duration::from_secs(60);

/// One exported span, as the receiver got it.
#[derive(Debug, Clone)]
struct SpanRecord {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: SpanKind,
}

/// An OTLP/HTTP (protobuf) trace receiver on a free port.
struct OtlpReceiver {
    url: String,
    spans: Arc<Mutex<Vec<SpanRecord>>>,
}

impl OtlpReceiver {
    async fn start() -> OtlpReceiver {
        let spans: Arc<Mutex<Vec<SpanRecord>>> = Arc::default();
        let sink = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    sink.lock().unwrap().extend(records_of(request));
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        OtlpReceiver { url, spans }
    }

    fn spans(&self) -> Vec<SpanRecord> {
        self.spans.lock().unwrap().clone()
    }
}

fn records_of(request: ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut records = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|attribute| attribute.key == "service.name")
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| match &value.value {
                Some(any_value::Value::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                records.push(SpanRecord {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: span.kind(),
                    name: span.name,
                });
            }
        }
    }
    records
}

/// A merchant's webhook endpoint on a free port: the event bodies it got.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Multi-threaded: the receivers must keep answering while the harness
// waits for a stopping service, which exports its last spans on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payment_is_one_trace_from_the_api_to_the_processor_and_the_webhook_and_every_log_line_has_a_trace_id()
 {
    let receiver = OtlpReceiver::start().await;
    let ours = std::path::PathBuf::from(env!("CARGO_BIN_EXE_snakepay-integration"));
    let mut builder = Stack::builder().binaries(ours.parent().unwrap());
    for service in ServiceName::ALL {
        builder = builder.service_setting(service, "telemetry.otlp_endpoint", &receiver.url);
    }
    let mut stack = builder.start().await.unwrap();
    let key = stack.secret_key().await.unwrap();
    let (hook_url, hooks) = webhook_receiver().await;
    let (status, endpoint) = stack
        .post(
            &key,
            "/v1/webhook_endpoints",
            &[
                ("url", hook_url.as_str()),
                ("enabled_events[]", "payment_intent.succeeded"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{endpoint}");

    // A success (the payment whose trace is followed), a decline and a
    // refund, so the logs cover more of the flow.
    let intent_id = super::run_scenario(&stack, &key).await;

    wait_for("the succeeded event at the merchant's endpoint", || {
        hooks
            .lock()
            .unwrap()
            .iter()
            .any(|event| event["data"]["object"]["id"] == intent_id.as_str())
            .then_some(())
    })
    .await;
    // A graceful stop exports every span still queued.
    for service in [
        ServiceName::ExternalApi,
        ServiceName::Integration,
        ServiceName::ProcessorSim,
    ] {
        stack.stop_service(service).await.unwrap();
    }

    // The merchant's endpoint takes only `payment_intent.succeeded`, so the
    // one delivery is the paid intent's: its trace must start at the API.
    let webhook = wait_for("the webhook attempt's span", || {
        receiver
            .spans()
            .into_iter()
            .find(|span| span.service == "integration" && span.name == "POST webhook")
    })
    .await;
    let spans = receiver.spans();
    let trace: Vec<&SpanRecord> = spans
        .iter()
        .filter(|span| span.trace_id == webhook.trace_id)
        .collect();
    let describe = || {
        trace
            .iter()
            .map(|span| format!("{} {:?} {}", span.service, span.kind, span.name))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let find = |service: &str, kind: SpanKind, name: &dyn Fn(&str) -> bool| {
        trace
            .iter()
            .find(|span| span.service == service && span.kind == kind && name(&span.name))
            .copied()
            .unwrap_or_else(|| {
                panic!(
                    "no {service} {kind:?} span in the payment's trace:\n{}",
                    describe()
                )
            })
    };
    let request = find("external-api", SpanKind::Server, &|name| {
        name == "POST /v1/payment_intents"
    });
    find("external-api", SpanKind::Client, &|name| {
        name == "write payment state"
    });
    // The outbox relay runs in the integration service.
    find("integration", SpanKind::Producer, &|name| {
        name.ends_with(" publish")
    });
    find("integration", SpanKind::Consumer, &|name| {
        name.ends_with(" process")
    });
    let processor_call = find("integration", SpanKind::Client, &|name| {
        name.starts_with("POST v1/")
    });
    let processor_side = find("processor-sim", SpanKind::Server, &|name| {
        name.starts_with("POST ")
    });
    assert_eq!(
        processor_side.parent_span_id, processor_call.span_id,
        "the processor's span is the call's child (traceparent over HTTP)"
    );
    find("integration", SpanKind::Client, &|name| {
        name == "commit authorization" || name == "commit intent"
    });

    // One tree: every span's parent is in the trace, except the request's.
    let ids: BTreeSet<&str> = trace.iter().map(|span| span.span_id.as_str()).collect();
    let orphans: Vec<String> = trace
        .iter()
        .filter(|span| span.span_id != request.span_id)
        .filter(|span| !ids.contains(span.parent_span_id.as_str()))
        .map(|span| format!("{} {}", span.service, span.name))
        .collect();
    assert!(
        orphans.is_empty(),
        "spans whose parent is not in the trace: {orphans:?}\n{}",
        describe()
    );
    assert!(
        request.parent_span_id.is_empty(),
        "the request started the trace"
    );

    check_every_log_line(&stack.logs());
}

fn check_every_log_line(logs: &BTreeMap<ServiceName, String>) {
    let mut problems = Vec::new();
    for (service, log) in logs {
        let mut lines = 0;
        for line in log.lines().filter(|line| !line.trim().is_empty()) {
            lines += 1;
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                problems.push(format!("{service:?}: not JSON: {line}"));
                continue;
            };
            let hex_of = |field: &str, len: usize| {
                entry[field].as_str().is_some_and(|id| {
                    id.len() == len
                        && id.bytes().all(|b| b.is_ascii_hexdigit())
                        && id.bytes().any(|b| b != b'0')
                })
            };
            if !(hex_of("trace_id", 32) && hex_of("span_id", 16)) {
                problems.push(format!("{service:?}: no trace ID: {line}"));
            }
        }
        assert!(lines > 0, "{service:?} logged nothing");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_log_check_refuses_plain_text_and_lines_without_a_trace() {
    for bad in [
        "starting up\n",
        r#"{"message":"no trace","trace_id":"","span_id":"00f067aa0ba902b7"}"#,
        r#"{"message":"zero trace","trace_id":"00000000000000000000000000000000","span_id":"00f067aa0ba902b7"}"#,
    ] {
        let logs = BTreeMap::from([(ServiceName::ExternalApi, bad.to_owned())]);
        assert!(
            std::panic::catch_unwind(|| check_every_log_line(&logs)).is_err(),
            "{bad}"
        );
    }
    let good = r#"{"message":"ok","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}"#;
    check_every_log_line(&BTreeMap::from([(
        ServiceName::ExternalApi,
        good.to_owned(),
    )]));
}
