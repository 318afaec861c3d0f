//! The operations of the scenarios, through the public External API exactly
//! as a merchant's server calls it: form-encoded POSTs with an
//! `Idempotency-Key` (the official SDKs send one on every POST), each
//! operation followed until its answer is final.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// Every request's timeout: far above any healthy latency, below the
/// point where a stuck run would look like a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An intent still `processing` when the API's wait ran out is polled at
/// this interval until final, up to [`POLL_LIMIT`].
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const POLL_LIMIT: Duration = Duration::from_secs(20);
/// Idle keep-alive connections the client keeps per host: one per worker.
const MAX_IDLE_CONNECTIONS: usize = 4_096;

/// The amount of every payment (minor units) and what partial refunds take.
pub const AMOUNT_MINOR: i64 = 2_000;
pub const REFUND_MINOR: i64 = 500;

/// Why an operation did not finish as expected; the error table counts
/// these by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError(pub String);

impl OpError {
    fn new(kind: impl Into<String>) -> Self {
        OpError(kind.into())
    }
}

pub type OpResult<T> = Result<T, OpError>;

pub struct Api {
    client: reqwest::Client,
    base_url: String,
    authorization: String,
    /// Makes idempotency keys unique across runs and operations.
    run_id: u64,
    sequence: AtomicU64,
}

impl Api {
    pub fn new(base_url: &str, secret_key: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros() as u64)
            .unwrap_or(0);
        Ok(Api {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {secret_key}"),
            run_id,
            sequence: AtomicU64::new(0),
        })
    }

    /// One authenticated request, so a wrong key or a stopped server fails
    /// the run before any load.
    pub async fn check(&self) -> anyhow::Result<()> {
        let reply = self
            .client
            .get(format!("{}/v1/payment_intents?limit=1", self.base_url))
            .header("Authorization", &self.authorization)
            .send()
            .await
            .context("GET /v1/payment_intents")?;
        let status = reply.status();
        anyhow::ensure!(
            status.is_success(),
            "GET /v1/payment_intents answered {status}: {}",
            reply.text().await.unwrap_or_default()
        );
        Ok(())
    }

    fn idempotency_key(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("bench_{}_{n}", self.run_id)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> OpResult<Value> {
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Authorization", &self.authorization)
            .header("Idempotency-Key", self.idempotency_key())
            .form(form);
        answer(request.send().await).await
    }

    async fn get(&self, path: &str) -> OpResult<Value> {
        let request = self
            .client
            .get(format!("{}{path}", self.base_url))
            .header("Authorization", &self.authorization);
        answer(request.send().await).await
    }

    /// Create-and-confirm with the 4242 test card; returns the intent's id
    /// once it is `succeeded` (automatic) or `requires_capture` (manual).
    pub async fn checkout(&self, manual_capture: bool) -> OpResult<String> {
        let amount = AMOUNT_MINOR.to_string();
        let capture_method = if manual_capture {
            "manual"
        } else {
            "automatic"
        };
        let intent = self
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", &amount),
                    ("currency", "eur"),
                    ("capture_method", capture_method),
                    ("confirm", "true"),
                    ("payment_method_data[type]", "card"),
                    ("payment_method_data[card][number]", "4242424242424242"),
                    ("payment_method_data[card][exp_month]", "12"),
                    ("payment_method_data[card][exp_year]", "2034"),
                    ("payment_method_data[card][cvc]", "123"),
                ],
            )
            .await?;
        let expected = if manual_capture {
            "requires_capture"
        } else {
            "succeeded"
        };
        let intent = self.until_final(intent).await?;
        expect_status(&intent, expected)?;
        id_of(&intent)
    }

    /// Retrieves an intent (the read path: cache, then its shard).
    pub async fn retrieve(&self, id: &str) -> OpResult<()> {
        let intent = self.get(&format!("/v1/payment_intents/{id}")).await?;
        id_of(&intent).map(drop)
    }

    /// A manual-capture checkout, then its capture.
    pub async fn manual_capture(&self) -> OpResult<String> {
        let id = self.checkout(true).await?;
        let intent = self
            .post(&format!("/v1/payment_intents/{id}/capture"), &[])
            .await?;
        let intent = self.until_final(intent).await?;
        expect_status(&intent, "succeeded")?;
        Ok(id)
    }

    /// Refunds part of a succeeded intent, until the refund is final.
    pub async fn partial_refund(&self, intent_id: &str) -> OpResult<()> {
        let amount = REFUND_MINOR.to_string();
        let mut refund = self
            .post(
                "/v1/refunds",
                &[("payment_intent", intent_id), ("amount", &amount)],
            )
            .await?;
        let started = Instant::now();
        while status_of(&refund) == "pending" {
            if started.elapsed() > POLL_LIMIT {
                return Err(OpError::new("refund_still_pending"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            let id = id_of(&refund)?;
            refund = self.get(&format!("/v1/refunds/{id}")).await?;
        }
        expect_status(&refund, "succeeded")
    }

    /// Polls an intent the API answered as `processing` (its wait for the
    /// outcome ran out) until it has moved on.
    async fn until_final(&self, mut intent: Value) -> OpResult<Value> {
        let started = Instant::now();
        while status_of(&intent) == "processing" {
            if started.elapsed() > POLL_LIMIT {
                return Err(OpError::new("still_processing"));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            let id = id_of(&intent)?;
            intent = self.get(&format!("/v1/payment_intents/{id}")).await?;
        }
        Ok(intent)
    }
}

async fn answer(sent: reqwest::Result<reqwest::Response>) -> OpResult<Value> {
    let reply = sent.map_err(|error| {
        OpError::new(if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect"
        } else {
            "transport"
        })
    })?;
    let status = reply.status();
    let body = reply.bytes().await.map_err(|_| OpError::new("body_read"))?;
    if !status.is_success() {
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|value| value.get("error")?.get("code")?.as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(OpError::new(format!(
            "http_{}{}{code}",
            status.as_u16(),
            if code.is_empty() { "" } else { "_" }
        )));
    }
    serde_json::from_slice(&body).map_err(|_| OpError::new("invalid_json"))
}

fn status_of(object: &Value) -> &str {
    object
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn id_of(object: &Value) -> OpResult<String> {
    object
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| OpError::new("no_id"))
}

fn expect_status(object: &Value, expected: &str) -> OpResult<()> {
    let status = status_of(object);
    if status == expected {
        Ok(())
    } else {
        Err(OpError::new(format!("status_{status}")))
    }
}
