//! Shared test plumbing: starting a simulator, calling it, capturing logs and
//! receiving notifications.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reqwest::Response;
use serde_json::{Value, json};
use snakepay_processor_sim::{ProcessorSimSection, RunningSim, SimConfig};

pub const API_KEY: &str = "sk_sim_test_0123456789abcdef";
pub const NOTIFICATION_SECRET: &str = "whsec_sim_test_secret_0123456789";
/// A future expiry year the simulator accepts until 2099.
pub const EXP_YEAR: u32 = 2099;

/// Everything every test process logs, for the card-leak checks.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a subscriber that records every event at every level.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(Arc::clone(&buffer));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .json()
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    });
}

pub fn captured_logs() -> String {
    let buffer = LOGS.get().expect("capture_logs was called");
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

pub fn section() -> ProcessorSimSection {
    ProcessorSimSection {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        api_key: API_KEY.to_owned(),
        // Short enough that tests never wait long, long enough that a client
        // with a 200 ms timeout gives up first.
        timeout_ms: 1_500,
        slow_ms: 300,
        notification_backoff_ms: 20,
        notification_timeout_ms: 1_000,
        ..ProcessorSimSection::default()
    }
}

pub struct TestSim {
    pub sim: RunningSim,
    pub client: reqwest::Client,
}

impl TestSim {
    pub async fn start() -> TestSim {
        TestSim::start_with(section()).await
    }

    pub async fn start_with(section: ProcessorSimSection) -> TestSim {
        capture_logs();
        let config = SimConfig {
            processor_sim: section,
            ..SimConfig::default()
        };
        let sim = snakepay_processor_sim::start(config).await.unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        TestSim { sim, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    /// POSTs and returns the status and JSON body.
    pub async fn call(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.post(path, key, body).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn authorize(&self, card: &str, capture: bool, key: &str) -> (StatusCode, Value) {
        self.call(
            "/v1/authorizations",
            key,
            &authorization_body(card, 1_000, capture),
        )
        .await
    }

    pub async fn operations(&self) -> Value {
        let response = self.get("/_sim/operations").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// The operations recorded under `key`.
    pub async fn operations_with_key(&self, key: &str) -> Vec<Value> {
        self.operations().await["operations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|op| op["idempotency_key"] == key)
            .cloned()
            .collect()
    }

    pub async fn inquiry(&self, key: &str) -> (StatusCode, Value) {
        let response = self.get(&format!("/v1/operations/{key}")).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn configure(&self, patch: &Value) -> Value {
        let response = self
            .client
            .post(self.url("/_sim/config"))
            .bearer_auth(API_KEY)
            .json(patch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn stop(self) {
        self.sim.shutdown().await.unwrap();
    }
}

pub fn authorization_body(card: &str, amount: i64, capture: bool) -> Value {
    let cvc = if card.starts_with("37") {
        "1234"
    } else {
        "123"
    };
    json!({
        "amount": amount,
        "currency": "usd",
        "card": {"number": card, "exp_month": 12, "exp_year": EXP_YEAR, "cvc": cvc},
        "capture": capture,
        "reference": "att_test",
    })
}

/// A unique idempotency key.
pub fn key(label: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("{label}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A notification receiver: answers 500 to the first `fail_first` POSTs,
/// then 200, and keeps every request.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    fail_first: usize,
    seen: AtomicUsize,
    received: Mutex<Vec<(HeaderMap, Bytes, StatusCode)>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let state = Arc::new(ReceiverState {
            fail_first,
            seen: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    /// Every request so far: headers, body, and what we answered.
    pub fn received(&self) -> Vec<(HeaderMap, Bytes, StatusCode)> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests were answered 200, and returns those.
    pub async fn delivered(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        for _ in 0..250 {
            let delivered: Vec<(HeaderMap, Bytes)> = self
                .received()
                .into_iter()
                .filter(|(_, _, status)| *status == StatusCode::OK)
                .map(|(headers, body, _)| (headers, body))
                .collect();
            if delivered.len() >= count {
                return delivered;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "fewer than {count} notifications delivered: {:?}",
            self.received().len()
        );
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let index = state.seen.fetch_add(1, Ordering::SeqCst);
    let status = if index < state.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state.received.lock().unwrap().push((headers, body, status));
    status
}

/// A section that sends notifications to `receiver`.
pub fn section_notifying(receiver: &Receiver) -> ProcessorSimSection {
    ProcessorSimSection {
        notification_url: Some(receiver.url.parse().unwrap()),
        notification_secret: Some(NOTIFICATION_SECRET.to_owned()),
        ..section()
    }
}

/// Checks a `Sim-Signature` without the library: HMAC-SHA256 over
/// "<t>.<body>" computed here.
pub fn independently_verified(header: &str, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        let (name, value) = part.split_once('=').unwrap();
        match name {
            "t" => t = Some(value.to_owned()),
            "v1" => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = (t.unwrap(), v1.unwrap());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(NOTIFICATION_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}
