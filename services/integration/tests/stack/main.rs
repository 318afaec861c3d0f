//! The platform as it is deployed: processor-sim, the integration service
//! and the External API as separate processes (their release binaries' debug
//! builds), one configuration file, real PostgreSQL, Redis and RabbitMQ.
//! A short payment scenario runs through the public API; then every
//! service's `/metrics` is read and checked against docs/metrics.md's rules
//! and against what the alert rules and the dashboard use. [`traces`]
//! follows one payment's trace and checks every log line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use snakepay_testkit::Stack;

mod traces;

const WAIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The stack from the binaries cargo built beside this package's.
async fn start_stack() -> Stack {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_snakepay-integration"));
    Stack::builder()
        .binaries(ours.parent().unwrap())
        .start()
        .await
        .unwrap()
}

/// Each service's `/metrics`, by binary name.
async fn scrape(stack: &Stack) -> BTreeMap<&'static str, String> {
    stack
        .scrape()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, text)| (name.binary(), text))
        .collect()
}

/// Payments that touch every part: a success with automatic capture, a
/// decline, a refund. Returns the paid intent's ID.
async fn run_scenario(stack: &Stack, key: &str) -> String {
    let (status, paid) = stack
        .post(
            key,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let (status, declined) = stack
        .post(
            key,
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "eur"),
                ("confirm", "true"),
                ("payment_method", "pm_card_chargeDeclinedInsufficientFunds"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 402, "{declined}");
    let (status, refund) = stack
        .post(
            key,
            "/v1/refunds",
            &[
                ("payment_intent", paid["id"].as_str().unwrap()),
                ("amount", "500"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{refund}");
    let intent = stack
        .get(
            key,
            &format!("/v1/payment_intents/{}", paid["id"].as_str().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(intent["status"], "succeeded");
    paid["id"].as_str().unwrap().to_owned()
}

/// The metric names the alert rules and the dashboard read.
fn names_used_by_alerts_and_dashboard() -> BTreeSet<String> {
    let script = repo_root().join("deploy/observability/metric_names.py");
    let output = Command::new("python3").arg(&script).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A scrape's families: name → type, from the `# TYPE` lines; and the
/// sample lines.
fn families(text: &str) -> (BTreeMap<String, String>, Vec<&str>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            samples.push(line);
        }
    }
    (types, samples)
}

/// The names a family's samples carry in Prometheus (a counter `x` is
/// sampled as `x_total`; a histogram as `x_bucket`, `x_sum`, `x_count`).
fn exported_name(name: &str, kind: &str) -> String {
    match kind {
        "counter" => format!("{name}_total"),
        _ => name.to_owned(),
    }
}

/// Labels whose values would be IDs or card data: never allowed.
const FORBIDDEN_LABELS: [&str; 8] = [
    "id",
    "merchant",
    "merchant_id",
    "payment_intent",
    "key",
    "card",
    "trace_id",
    "request_id",
];

fn check_naming(service: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (types, samples) = families(text);
    assert!(!types.is_empty(), "{service} exports no metrics");
    for (name, kind) in &types {
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid || !(name.starts_with("snakepay_") || name.starts_with("process_")) {
            problems.push(format!("{service}: {name}: not snake_case with our prefix"));
        }
        if kind != "counter" && name.ends_with("_total") {
            problems.push(format!("{service}: {name}: only counters end in _total"));
        }
        if kind == "histogram" && !(name.ends_with("_seconds") || name.ends_with("_bytes")) {
            problems.push(format!("{service}: {name}: a histogram in base units"));
        }
        for unit in ["_milliseconds", "_ms", "_kilobytes", "_minutes"] {
            if name.contains(unit) {
                problems.push(format!("{service}: {name}: not a base unit ({unit})"));
            }
        }
    }
    for sample in samples {
        let name_end = sample.find(['{', ' ']).unwrap_or(sample.len());
        let name = &sample[..name_end];
        let family = types.keys().find(|family| {
            name == family.as_str()
                || name.strip_prefix(family.as_str()).is_some_and(|suffix| {
                    ["_total", "_bucket", "_sum", "_count", "_created"].contains(&suffix)
                })
        });
        if family.is_none() {
            problems.push(format!("{service}: sample {name} has no TYPE"));
        }
        if let (Some(open), Some(close)) = (sample.find('{'), sample.rfind('}')) {
            for pair in sample[open + 1..close].split("\",") {
                let (label, value) = pair.split_once('=').unwrap();
                if FORBIDDEN_LABELS.contains(&label) {
                    problems.push(format!("{service}: {name}: label {label} carries IDs"));
                }
                if looks_like_id_or_card(value) {
                    problems.push(format!(
                        "{service}: {name}: label value {value} looks like an ID or card data"
                    ));
                }
            }
        }
    }
    problems
}

/// A label value holding an object ID (`pi_038gd8…`, `sk_test_…`) or a
/// card number (a long digit run).
fn looks_like_id_or_card(value: &str) -> bool {
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    let id_like = value
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|token| {
            token.split_once('_').is_some_and(|(prefix, rest)| {
                prefix.len() <= 5
                    && rest.len() >= 10
                    && rest.bytes().any(|b| b.is_ascii_digit())
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        });
    digits >= 12 || id_like
}

#[tokio::test]
async fn every_service_exports_conventional_metrics_covering_the_alerts_and_the_dashboard() {
    let stack = start_stack().await;
    let key = stack.secret_key().await.unwrap();
    run_scenario(&stack, &key).await;
    // The integration service's gauges refresh on a timer: wait for the
    // round that sees the scenario's ledger lines.
    let deadline = tokio::time::Instant::now() + WAIT;
    let scrapes = loop {
        let scrapes = scrape(&stack).await;
        if scrapes["snakepay-integration"]
            .contains(r#"snakepay_ledger_trial_balance_minor_units{currency="usd"} 0"#)
        {
            break scrapes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trial balance never showed usd at 0:\n{}",
            scrapes["snakepay-integration"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut problems = Vec::new();
    let mut exported = BTreeSet::new();
    for (service, text) in &scrapes {
        problems.extend(check_naming(service, text));
        let (types, _) = families(text);
        exported.extend(types.iter().map(|(name, kind)| exported_name(name, kind)));
        assert!(
            text.contains("snakepay_http_requests_total{"),
            "{service} counts its requests:\n{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{service}");
    }
    assert!(
        problems.is_empty(),
        "naming rules broken:\n{}",
        problems.join("\n")
    );

    let missing: Vec<String> = names_used_by_alerts_and_dashboard()
        .into_iter()
        .filter(|name| !exported.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "used by alerts or the dashboard but exported by no service: {missing:?}"
    );

    // The scenario shows in the numbers it should move.
    let integration = &scrapes["snakepay-integration"];
    assert!(
        integration.contains(r#"outcome="declined",decline_code="insufficient_funds""#)
            || integration.contains(r#"decline_code="insufficient_funds""#),
        "{integration}"
    );
    let api = &scrapes["snakepay-external-api"];
    assert!(
        api.contains(r#"route="/v1/payment_intents",status="200""#)
            || api.contains(r#"method="POST",route="/v1/payment_intents",status="200""#),
        "{api}"
    );
}

#[test]
fn the_naming_check_catches_what_the_rules_forbid() {
    let bad = "# TYPE snakepay_latency_ms histogram\n\
               snakepay_latency_ms_bucket{le=\"1\"} 1\n\
               # TYPE snakepay_thing_total gauge\n\
               snakepay_thing_total{merchant_id=\"acct_1\"} 1\n\
               # TYPE snakepay_calls counter\n\
               snakepay_calls_total{route=\"/v1/payment_intents/pi_038gd8kqmw080nvte\"} 1\n\
               snakepay_calls_total{cache=\"api_key\",card=\"4242 4242 4242 4242\"} 1\n\
               # TYPE Weird counter\n";
    let problems = check_naming("test", bad).join("\n");
    assert!(
        !problems.contains("api_key"),
        "a fixed label value is fine:\n{problems}"
    );
    assert_eq!(
        problems.matches("looks like an ID").count(),
        2,
        "{problems}"
    );
    for expected in [
        "snakepay_latency_ms: a histogram in base units",
        "snakepay_latency_ms: not a base unit",
        "snakepay_thing_total: only counters end in _total",
        "label merchant_id carries IDs",
        "looks like an ID",
        "Weird: not snake_case",
        "label card carries IDs",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not found in:\n{problems}"
        );
    }
}
