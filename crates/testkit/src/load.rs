//! Load: concurrent clients that pay the way a merchant's server does with
//! a Stripe SDK, and remember every answer they got.
//!
//! Each client loops until told to stop: it creates and confirms a payment
//! (most cards succeed, some are declined, some are for manual capture and
//! are then captured). Every POST carries an `Idempotency-Key`; like the
//! SDKs, a request is retried with the same key on a connection error or
//! timeout, on 409 (the first request still running) and on 5xx unless the
//! answer says `Stripe-Should-Retry: false`, with exponential backoff and
//! jitter, up to a bounded number of tries. Afterwards [`Load::finish`]
//! retries once more every request that never got an answer (a merchant
//! retrying later with the same key).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use snakepay_domain::payment_intent::PaymentIntentStatus;

use crate::consistency::Seen;

/// The test cards: (payment method, capture method, share of payments in
/// percent). Shares add up to 100.
const MIX: [(&str, &str, u64); 3] = [
    ("pm_card_visa", "automatic", 70),
    ("pm_card_chargeDeclinedInsufficientFunds", "automatic", 15),
    ("pm_card_visa", "manual", 15),
];

/// How long after the lock timeout a client still retries a locked key.
const KEY_TAKEOVER_MARGIN_SECONDS: u64 = 10;
const KEY_TAKEOVER_POLL_SECONDS: u64 = 2;

#[derive(Debug, Clone)]
pub struct LoadSettings {
    pub clients: usize,
    /// Pause between one client's payments.
    pub pause_ms: u64,
    /// Tries per request, the first included.
    pub max_tries: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// The client's timeout for one request (after it, the request is
    /// retried, as an SDK does on a network timeout).
    pub request_timeout_ms: u64,
    pub seed: u64,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            clients: 4,
            pause_ms: 50,
            max_tries: 8,
            backoff_initial_ms: 250,
            backoff_max_ms: 4_000,
            request_timeout_ms: 20_000,
            seed: 1,
        }
    }
}

/// One try of one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// No HTTP answer: connection refused or cut, or the client's timeout.
    Transport(String),
    Response {
        status: u16,
        should_retry: Option<bool>,
        body: Value,
    },
}

impl Answer {
    /// Whether an SDK would try again.
    fn retryable(&self) -> bool {
        match self {
            Answer::Transport(_) => true,
            Answer::Response {
                status,
                should_retry,
                ..
            } => match should_retry {
                Some(decided) => *decided,
                None => *status == 409 || *status >= 500,
            },
        }
    }

    /// The intent and its status in the body, if it shows one.
    pub fn intent(&self) -> Option<(String, PaymentIntentStatus)> {
        let Answer::Response { body, .. } = self else {
            return None;
        };
        let intent = if body.get("object").and_then(Value::as_str) == Some("payment_intent") {
            body
        } else {
            body.get("error")?.get("payment_intent")?
        };
        let id = intent.get("id")?.as_str()?.to_owned();
        let status = PaymentIntentStatus::parse(intent.get("status")?.as_str()?)?;
        Some((id, status))
    }
}

/// One request (create or capture) with all its tries.
#[derive(Debug, Clone)]
pub struct Request {
    pub what: &'static str,
    pub path: String,
    pub key: String,
    pub form: Vec<(String, String)>,
    pub tries: Vec<Answer>,
}

impl Request {
    /// Whether the last try got an answer no retry would change.
    pub fn answered(&self) -> bool {
        self.tries.last().is_some_and(|answer| !answer.retryable())
    }
}

/// Everything one client did for one payment.
#[derive(Debug, Clone)]
pub struct Payment {
    pub client: usize,
    pub requests: Vec<Request>,
}

impl Payment {
    /// Every intent status the client saw, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.requests
            .iter()
            .flat_map(|request| {
                request.tries.iter().filter_map(move |answer| {
                    let (intent_id, status) = answer.intent()?;
                    let http = match answer {
                        Answer::Response { status, .. } => *status,
                        Answer::Transport(_) => 0,
                    };
                    Some(Seen {
                        intent_id,
                        status,
                        what: format!("{} {http}", request.what),
                    })
                })
            })
            .collect()
    }

    pub fn intent_id(&self) -> Option<String> {
        self.seen().first().map(|seen| seen.intent_id.clone())
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays the
/// same sequence of cards and jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The HTTP side of a client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api_url: String,
    secret_key: String,
    settings: LoadSettings,
}

impl Client {
    pub fn new(api_url: &str, secret_key: &str, settings: LoadSettings) -> Client {
        Client {
            http: reqwest::Client::new(),
            api_url: api_url.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
            settings,
        }
    }

    async fn try_once(&self, request: &Request) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&request.form)
            .finish();
        let sent = self
            .http
            .post(format!("{}{}", self.api_url, request.path))
            .bearer_auth(&self.secret_key)
            .header("idempotency-key", &request.key)
            .header("content-type", "application/x-www-form-urlencoded")
            .timeout(Duration::from_millis(self.settings.request_timeout_ms))
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Answer::Transport(error.to_string()),
        };
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true");
        match response.json::<Value>().await {
            Ok(body) => Answer::Response {
                status,
                should_retry,
                body,
            },
            Err(error) => Answer::Transport(format!("{status}, body cut: {error}")),
        }
    }

    /// `GET /v1/payment_intents/{id}`, recorded like the other answers.
    pub async fn retrieve(&self, intent_id: &str) -> Answer {
        let sent = self
            .http
            .get(format!("{}/v1/payment_intents/{intent_id}", self.api_url))
            .bearer_auth(&self.secret_key)
            .timeout(Duration::from_millis(self.settings.request_timeout_ms))
            .send()
            .await;
        match sent {
            Err(error) => Answer::Transport(error.to_string()),
            Ok(response) => {
                let status = response.status().as_u16();
                match response.json::<Value>().await {
                    Ok(body) => Answer::Response {
                        status,
                        should_retry: None,
                        body,
                    },
                    Err(error) => Answer::Transport(format!("{status}, body cut: {error}")),
                }
            }
        }
    }

    /// Tries `request` until it gets an answer no retry would change or
    /// runs out of tries, backing off between tries.
    pub async fn send(&self, request: &mut Request, rng: &mut Rng) {
        let mut backoff_ms = self.settings.backoff_initial_ms;
        for attempt in 0..self.settings.max_tries {
            if attempt > 0 {
                // Half fixed, half random, as the SDKs' jittered backoff.
                let jitter = rng.below(backoff_ms / 2 + 1);
                tokio::time::sleep(Duration::from_millis(backoff_ms / 2 + jitter)).await;
                backoff_ms = (backoff_ms * 2).min(self.settings.backoff_max_ms);
            }
            let answer = self.try_once(request).await;
            let done = !answer.retryable();
            request.tries.push(answer);
            if done {
                return;
            }
        }
    }
}

fn create_request(key: String, payment_method: &str, capture_method: &str, amount: u64) -> Request {
    Request {
        what: "create",
        path: "/v1/payment_intents".to_owned(),
        key,
        form: vec![
            ("amount".into(), amount.to_string()),
            ("currency".into(), "usd".into()),
            ("confirm".into(), "true".into()),
            ("payment_method".into(), payment_method.into()),
            ("capture_method".into(), capture_method.into()),
        ],
        tries: Vec::new(),
    }
}

fn capture_request(key: String, intent_id: &str) -> Request {
    Request {
        what: "capture",
        path: format!("/v1/payment_intents/{intent_id}/capture"),
        key,
        form: Vec::new(),
        tries: Vec::new(),
    }
}

/// One payment: create and confirm; for manual capture, capture once the
/// intent waits for it.
async fn pay(client: &Client, index: usize, number: usize, run: &str, rng: &mut Rng) -> Payment {
    let roll = rng.below(100);
    let mut threshold = 0;
    let (payment_method, capture_method) = MIX
        .iter()
        .find(|(_, _, share)| {
            threshold += share;
            roll < threshold
        })
        .map(|(pm, capture, _)| (*pm, *capture))
        .unwrap_or(("pm_card_visa", "automatic"));
    let amount = 100 + rng.below(9_900);
    let key = format!("fault-{run}-{index}-{number}");
    let mut create = create_request(key.clone(), payment_method, capture_method, amount);
    client.send(&mut create, rng).await;
    let mut payment = Payment {
        client: index,
        requests: vec![create],
    };
    let waits_for_capture = payment
        .seen()
        .last()
        .filter(|seen| seen.status == PaymentIntentStatus::RequiresCapture)
        .map(|seen| seen.intent_id.clone());
    if let Some(intent_id) = waits_for_capture {
        let mut capture = capture_request(format!("{key}-capture"), &intent_id);
        client.send(&mut capture, rng).await;
        payment.requests.push(capture);
    }
    payment
}

/// Running load; [`Load::stop`] ends it.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Payment>>>,
    client: Client,
    started: Instant,
}

impl Load {
    /// Starts `settings.clients` clients against the External API at
    /// `api_url`. `run` makes the idempotency keys unique to this load.
    pub fn start(api_url: &str, secret_key: &str, run: &str, settings: LoadSettings) -> Load {
        let client = Client::new(api_url, secret_key, settings.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..settings.clients)
            .map(|index| {
                let client = client.clone();
                let stop = Arc::clone(&stop);
                let run = run.to_owned();
                let mut rng = Rng::new(settings.seed ^ (index as u64 + 1) << 32);
                tokio::spawn(async move {
                    let mut payments = Vec::new();
                    let mut number = 0;
                    while !stop.load(Ordering::Relaxed) {
                        payments.push(pay(&client, index, number, &run, &mut rng).await);
                        number += 1;
                        tokio::time::sleep(Duration::from_millis(client.settings.pause_ms)).await;
                    }
                    payments
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            client,
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the clients after their current payment and returns what they
    /// did.
    pub async fn stop(self) -> Vec<Payment> {
        self.stop.store(true, Ordering::Relaxed);
        let mut payments = Vec::new();
        for task in self.tasks {
            if let Ok(done) = task.await {
                payments.extend(done);
            }
        }
        payments
    }

    /// The client, for [`finish`] after the faults cleared.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// Retries, once the faults are gone, every request that never got a
/// definite answer, with its own key: a merchant's retry later. A manual
/// capture payment whose capture was never sent (its create was not
/// answered) is captured now if it waits for capture.
pub async fn finish(client: &Client, payments: &mut [Payment], seed: u64) {
    let mut rng = Rng::new(seed ^ 0xF1_7154);
    for payment in payments.iter_mut() {
        for request in &mut payment.requests {
            if !request.answered() {
                client.send(request, &mut rng).await;
            }
        }
    }
    // A key whose request died with its API instance stays locked (409)
    // until another request takes it over after the lock timeout: keep
    // retrying those, as an SDK user retrying later would.
    let takeover = Duration::from_secs(
        u64::try_from(snakepay_store::idempotency::LOCK_TIMEOUT_SECONDS).unwrap_or(90)
            + KEY_TAKEOVER_MARGIN_SECONDS,
    );
    let started = Instant::now();
    while started.elapsed() < takeover {
        let mut waiting = 0;
        for request in payments.iter_mut().flat_map(|p| p.requests.iter_mut()) {
            let in_use = matches!(
                request.tries.last(),
                Some(Answer::Response { status: 409, .. })
            );
            if in_use {
                waiting += 1;
                let answer = client.try_once(request).await;
                request.tries.push(answer);
            }
        }
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(KEY_TAKEOVER_POLL_SECONDS)).await;
    }
    for payment in payments.iter_mut() {
        let is_manual = payment.requests.first().is_some_and(|create| {
            create
                .form
                .iter()
                .any(|(k, v)| k == "capture_method" && v == "manual")
        });
        // The create's answer may have left the outcome open (`processing`):
        // look at the intent now, as the merchant's server would.
        let unknown = payment
            .seen()
            .last()
            .filter(|seen| seen.status == PaymentIntentStatus::Processing)
            .map(|seen| seen.intent_id.clone());
        if is_manual
            && payment.requests.len() == 1
            && let Some(intent_id) = unknown
        {
            let answer = client.retrieve(&intent_id).await;
            payment.requests.push(Request {
                what: "retrieve",
                path: format!("/v1/payment_intents/{intent_id}"),
                key: String::new(),
                form: Vec::new(),
                tries: vec![answer],
            });
        }
        let capture_missing = is_manual
            && !payment
                .requests
                .iter()
                .any(|request| request.what == "capture");
        let waiting = payment
            .seen()
            .last()
            .filter(|seen| seen.status == PaymentIntentStatus::RequiresCapture)
            .map(|seen| seen.intent_id.clone());
        if capture_missing && let Some(intent_id) = waiting {
            let key = payment
                .requests
                .first()
                .map(|create| format!("{}-capture", create.key))
                .unwrap_or_default();
            let mut capture = capture_request(key, &intent_id);
            client.send(&mut capture, &mut rng).await;
            payment.requests.push(capture);
        }
    }
}
