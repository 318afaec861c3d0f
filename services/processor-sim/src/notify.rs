//! Signed asynchronous notifications of state changes.
//!
//! The API answer never waits for a delivery: a change is queued on a
//! bounded channel and a dispatcher delivers it in the background, retrying
//! with doubling backoff. Every attempt carries the same notification ID and
//! body with a fresh timestamp and signature:
//!
//! `Sim-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//!
//! Pending notifications live only in memory: a restart drops them, as a
//! real processor's outage would delay them. Receivers reconcile with the
//! status inquiry.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc, watch};
use url::Url;

use crate::clock::SharedClock;
use crate::model::{Authorization, OperationKind, Record};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "Sim-Signature";
/// Notifications waiting for a delivery slot; beyond this new ones are
/// dropped with a warning rather than slowing the API down.
pub const NOTIFICATION_QUEUE_CAPACITY: usize = 10_000;
/// Deliveries in flight at once.
pub const MAX_CONCURRENT_DELIVERIES: usize = 32;
/// The longest wait between two attempts, however many failed.
pub const MAX_BACKOFF_MS: u64 = 60_000;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The `Sim-Signature` header value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = mac(secret, timestamp, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={signature}")
}

/// Checks a `Sim-Signature` header: one `t=` and at least one `v1=` that
/// matches `body` under `secret` (compared in constant time), with `t` within
/// `tolerance_seconds` of `now_unix_seconds` either way.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_unix_seconds: i64,
    tolerance_seconds: u64,
) -> bool {
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => {
                if timestamp.is_some() {
                    return false;
                }
                match value.parse() {
                    Ok(t) => timestamp = Some(t),
                    Err(_) => return false,
                }
            }
            Some(("v1", value)) => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            // Other schemes may be added; they are not ours to check.
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now_unix_seconds.abs_diff(timestamp) > tolerance_seconds {
        return false;
    }
    signatures.iter().any(|signature| {
        mac(secret, timestamp, body).is_some_and(|mac| mac.verify_slice(signature).is_ok())
    })
}

/// The notification body for a journaled state change.
pub fn notification_for(id: &str, record: &Record) -> Option<Value> {
    let authorization = record.authorization.as_ref()?;
    let event_type = match record.kind {
        OperationKind::Refund => "refund.succeeded".to_owned(),
        _ => format!("authorization.{}", authorization.status.as_str()),
    };
    Some(json!({
        "id": id,
        "object": "notification",
        "type": event_type,
        "operation": record.kind.as_str(),
        "created": record.at,
        "idempotency_key": record.idempotency_key,
        "data": {
            "authorization": authorization_value(authorization),
            "refund": record.refund,
        },
    }))
}

fn authorization_value(authorization: &Authorization) -> Value {
    serde_json::to_value(authorization).unwrap_or(Value::Null)
}

/// Where and how notifications are delivered.
#[derive(Clone)]
pub struct NotifierSettings {
    pub url: Url,
    pub secret: String,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub timeout_ms: u64,
    /// What the HTTPS calls trust besides the public roots.
    pub trust: snakepay_config::sections::OutboundTlsConfig,
}

/// The sending side, held by the API.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<(String, Vec<u8>)>,
}

impl Notifier {
    /// Starts the dispatcher; it stops when `shutdown` turns true.
    pub fn start(
        settings: NotifierSettings,
        clock: SharedClock,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Notifier> {
        let client = snakepay_http::tls::client_builder(&settings.trust)?
            .timeout(Duration::from_millis(settings.timeout_ms))
            .build()?;
        let (queue, receiver) = mpsc::channel(NOTIFICATION_QUEUE_CAPACITY);
        tokio::spawn(
            dispatch(receiver, Arc::new(settings), client, clock, shutdown).in_current_span(),
        );
        Ok(Notifier { queue })
    }

    /// Queues a notification without waiting.
    pub fn send(&self, id: String, body: &Value) {
        let bytes = match serde_json::to_vec(body) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(notification.id = %id, %error, "cannot serialize a notification");
                return;
            }
        };
        if let Err(error) = self.queue.try_send((id, bytes)) {
            tracing::warn!(%error, "notification queue full or closed; dropping a notification");
        }
    }
}

async fn dispatch(
    mut receiver: mpsc::Receiver<(String, Vec<u8>)>,
    settings: Arc<NotifierSettings>,
    client: reqwest::Client,
    clock: SharedClock,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    loop {
        let next = tokio::select! {
            next = receiver.recv() => next,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some((id, body)) = next else {
            return;
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let delivery = deliver(
            id,
            body,
            Arc::clone(&settings),
            client.clone(),
            Arc::clone(&clock),
            shutdown.clone(),
        );
        tokio::spawn(
            async move {
                delivery.await;
                drop(permit);
            }
            .in_current_span(),
        );
    }
}

async fn deliver(
    id: String,
    body: Vec<u8>,
    settings: Arc<NotifierSettings>,
    client: reqwest::Client,
    clock: SharedClock,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff_ms = settings.backoff_ms;
    for attempt in 1..=settings.max_attempts {
        let timestamp = clock.now_unix_seconds();
        let result = client
            .post(settings.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&settings.secret, timestamp, &body))
            .body(body.clone())
            .headers(snakepay_telemetry::trace::outbound_headers())
            .send()
            .await;
        let failure = match result {
            Ok(response) if response.status().is_success() => {
                tracing::info!(notification.id = %id, notification.attempt = attempt, "notification delivered");
                return;
            }
            Ok(response) => format!("status {}", response.status().as_u16()),
            Err(error) => error.without_url().to_string(),
        };
        if attempt == settings.max_attempts {
            tracing::warn!(
                notification.id = %id,
                notification.attempt = attempt,
                notification.error = %failure,
                "notification given up after the last attempt"
            );
            return;
        }
        tracing::info!(
            notification.id = %id,
            notification.attempt = attempt,
            notification.error = %failure,
            notification.retry_in_ms = backoff_ms,
            "notification delivery failed; will retry"
        );
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(MAX_BACKOFF_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let header = sign("whsec_test_secret", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify_signature(
            "whsec_test_secret",
            &header,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        // Wrong body, wrong secret, stale, garbage.
        assert!(!verify_signature(
            "whsec_test_secret",
            &header,
            b"{\"a\":2}",
            1_700_000_000,
            300
        ));
        assert!(!verify_signature(
            "whsec_other",
            &header,
            b"{\"a\":1}",
            1_700_000_000,
            300
        ));
        assert!(!verify_signature(
            "whsec_test_secret",
            &header,
            b"{\"a\":1}",
            1_700_000_301,
            300
        ));
        assert!(!verify_signature("whsec_test_secret", "v1=00", b"", 0, 300));
        assert!(!verify_signature("whsec_test_secret", "", b"", 0, 300));
        // A second, matching v1 among bad ones is accepted (secret rotation).
        let v1 = header.split(",v1=").nth(1).unwrap();
        let rotated = format!("t=1700000000,v1=deadbeef,v1={v1}");
        assert!(verify_signature(
            "whsec_test_secret",
            &rotated,
            b"{\"a\":1}",
            1_700_000_000,
            0
        ));
    }
}
