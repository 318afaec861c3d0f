//! The platform as it is deployed: processor-sim, the integration service
//! and the External API as separate processes (their release binaries' debug
//! builds), one configuration file, real PostgreSQL, Redis and RabbitMQ.
//! A short payment scenario runs through the public API; then every
//! service's `/metrics` is read and checked against docs/metrics.md's rules
//! and against what the alert rules and the dashboard use.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use snakepay_domain::ids::RegionNumber;
use snakepay_store::merchants::{self, KeyHasher, KeyKind, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};

const HASH_SECRET_BASE64: &str = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
const SIM_API_KEY: &str = "sk_sim_stack_0123456789abcdef";
const SIM_NOTIFICATION_SECRET: &str = "sim_notification_secret_stack_0123";
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0_u8; bytes];
    getrandom::fill(&mut random).unwrap();
    hex::encode(random)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A service binary built beside this package's (cargo builds every
/// package's binaries for a workspace test run).
fn binary(name: &str) -> PathBuf {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_snakepay-integration"));
    let path = ours.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// One service process, its log in a file; killed when dropped.
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Ports {
    pub api: u16,
    pub api_metrics: u16,
    pub integration: u16,
    pub integration_metrics: u16,
    pub sim: u16,
    pub sim_metrics: u16,
}

pub struct Stack {
    _db: TestDatabases,
    pub db_control: sqlx::PgPool,
    pub ports: Ports,
    services: Vec<Service>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Stack {
        let db = testing::fresh(2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_ring = dir.path().join("keyring.json");
        snakepay_vault::FileKeyProvider::create(
            &key_ring,
            &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
        )
        .unwrap();
        let ports = Ports {
            api: free_port(),
            api_metrics: free_port(),
            integration: free_port(),
            integration_metrics: free_port(),
            sim: free_port(),
            sim_metrics: free_port(),
        };
        let amqp = format!(
            "{}/snakepay_test",
            std::env::var("SNAKEPAY_TEST_AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
                .trim_end_matches('/')
        );
        let redis = std::env::var("SNAKEPAY_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
        let config = format!(
            r#"
[region]
code = "eu-1"
number = 1
public_api_url = "http://127.0.0.1:{api}"
[database]
control_url = "{control}"
shard_urls = [{shards}]
max_connections = 8
[redis]
url = "{redis}"
[broker]
url = "{amqp}"
topology_prefix = "stack.{prefix}."
[api_keys]
hash_secret_base64 = "{HASH_SECRET_BASE64}"
[vault]
key_ring_path = "{key_ring}"
[telemetry]
log_level = "info"
log_format = "json"
[external_api]
listen_addr = "127.0.0.1:{api}"
metrics_addr = "127.0.0.1:{api_metrics}"
rate_limit_test_per_second = 100000
[processor_sim]
listen_addr = "127.0.0.1:{sim}"
metrics_addr = "127.0.0.1:{sim_metrics}"
api_key = "{SIM_API_KEY}"
notification_url = "http://127.0.0.1:{integration}/v1/processor-notifications/sim"
notification_secret = "{SIM_NOTIFICATION_SECRET}"
[integration]
listen_addr = "127.0.0.1:{integration}"
metrics_addr = "127.0.0.1:{integration_metrics}"
relay_idle_poll_ms = 10
[integration.processor_sim]
base_url = "http://127.0.0.1:{sim}"
api_key = "{SIM_API_KEY}"
notification_secret = "{SIM_NOTIFICATION_SECRET}"
[integration.egress]
allowed_hosts = ["127.0.0.1"]
[integration.webhooks]
allow_private_networks = true
"#,
            api = ports.api,
            api_metrics = ports.api_metrics,
            sim = ports.sim,
            sim_metrics = ports.sim_metrics,
            integration = ports.integration,
            integration_metrics = ports.integration_metrics,
            control = db.control_url(),
            shards = shards.join(", "),
            prefix = random_hex(6),
            key_ring = key_ring.display(),
        );
        let config_path = dir.path().join("stack.toml");
        std::fs::write(&config_path, config).unwrap();

        let mut services = Vec::new();
        for (name, port) in [
            ("snakepay-processor-sim", ports.sim),
            ("snakepay-integration", ports.integration),
            ("snakepay-external-api", ports.api),
        ] {
            let log = dir.path().join(format!("{name}.log"));
            let child = Command::new(binary(name))
                .env("SNAKEPAY_CONFIG", &config_path)
                .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
                .stderr(Stdio::from(
                    std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
                ))
                .spawn()
                .unwrap();
            services.push(Service { name, child, log });
            wait_ready(port, &mut services).await;
        }
        let db_control = db.store.control().clone();
        Stack {
            _db: db,
            db_control,
            ports,
            services,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub async fn secret_key(&self) -> String {
        let shard = merchants::least_loaded_shard(&self.db_control, 2)
            .await
            .unwrap();
        let merchant = merchants::create_merchant(
            &self.db_control,
            "eu-1",
            RegionNumber(1),
            shard,
            &NewMerchant {
                legal_name: "Stack Shop".into(),
                country: "DE".into(),
            },
        )
        .await
        .unwrap();
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(HASH_SECRET_BASE64)
            .unwrap();
        merchants::create_api_key(
            &self.db_control,
            &KeyHasher::new(&secret).unwrap(),
            RegionNumber(1),
            merchant.id,
            KeyKind::Secret,
            false,
        )
        .await
        .unwrap()
        .key
    }

    pub async fn post(&self, key: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .client
            .post(format!("http://127.0.0.1:{}{path}", self.ports.api))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn get(&self, key: &str, path: &str) -> Value {
        self.client
            .get(format!("http://127.0.0.1:{}{path}", self.ports.api))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Each service's `/metrics` text, by service name.
    pub async fn scrape(&self) -> BTreeMap<&'static str, String> {
        let mut scrapes = BTreeMap::new();
        for (name, port) in [
            ("snakepay-external-api", self.ports.api_metrics),
            ("snakepay-integration", self.ports.integration_metrics),
            ("snakepay-processor-sim", self.ports.sim_metrics),
        ] {
            let text = self
                .client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            scrapes.insert(name, text);
        }
        scrapes
    }

    /// Every service's log, by service name.
    pub fn logs(&self) -> BTreeMap<&'static str, String> {
        self.services
            .iter()
            .map(|s| (s.name, std::fs::read_to_string(&s.log).unwrap()))
            .collect()
    }
}

async fn wait_ready(port: u16, services: &mut [Service]) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        for service in services.iter_mut() {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!(
                    "{} exited ({status}):\n{}",
                    service.name,
                    std::fs::read_to_string(&service.log).unwrap_or_default()
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {port} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Payments that touch every part: a success with automatic capture, a
/// decline, a manual capture, a refund.
async fn run_scenario(stack: &Stack) {
    let key = stack.secret_key().await;
    let (status, paid) = stack
        .post(
            &key,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let (status, declined) = stack
        .post(
            &key,
            "/v1/payment_intents",
            &[
                ("amount", "1500"),
                ("currency", "eur"),
                ("confirm", "true"),
                ("payment_method", "pm_card_chargeDeclinedInsufficientFunds"),
            ],
        )
        .await;
    assert_eq!(status, 402, "{declined}");
    let (status, refund) = stack
        .post(
            &key,
            "/v1/refunds",
            &[
                ("payment_intent", paid["id"].as_str().unwrap()),
                ("amount", "500"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{refund}");
    let intent = stack
        .get(
            &key,
            &format!("/v1/payment_intents/{}", paid["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(intent["status"], "succeeded");
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
                let digits = value.bytes().filter(u8::is_ascii_digit).count();
                if digits >= 12 || value.contains("pi_") || value.contains("sk_") {
                    problems.push(format!(
                        "{service}: {name}: label value {value} looks like an ID or card data"
                    ));
                }
            }
        }
    }
    problems
}

#[tokio::test]
async fn every_service_exports_conventional_metrics_covering_the_alerts_and_the_dashboard() {
    let stack = Stack::start().await;
    run_scenario(&stack).await;
    // The integration service's gauges refresh on a timer; the first round
    // runs at start-up, so every family is already registered.
    let scrapes = stack.scrape().await;

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
               snakepay_calls_total{route=\"/v1/payment_intents/pi_123\"} 1\n\
               # TYPE Weird counter\n";
    let problems = check_naming("test", bad).join("\n");
    for expected in [
        "snakepay_latency_ms: a histogram in base units",
        "snakepay_latency_ms: not a base unit",
        "snakepay_thing_total: only counters end in _total",
        "label merchant_id carries IDs",
        "looks like an ID",
        "Weird: not snake_case",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not found in:\n{problems}"
        );
    }
}
