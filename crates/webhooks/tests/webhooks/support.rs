//! Per-test databases, a test vault and clock, and a receiver that checks
//! every signature with its own implementation of the scheme.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use snakepay_domain::effects::EventType;
use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber, WebhookEndpointId, fill_random};
use snakepay_store::events::{self, EventRecord, EventSource};
use snakepay_store::intents::SealedColumns;
use snakepay_store::testing::{self, TestDatabases};
use snakepay_store::webhook_deliveries::{self, AttemptRecord, DeliveryRecord};
use snakepay_store::webhook_endpoints::{self, EndpointStatus, WebhookEndpointRecord};
use snakepay_vault::{FileKeyProvider, KeyRing, Vault};
use snakepay_webhooks::{Clock, Dispatcher, TestClock, WebhookSettings};
use sqlx::PgPool;

pub const REGION: RegionNumber = RegionNumber(1);
/// How far a signature's timestamp may be from the receiver's clock
/// (Stripe's libraries default to 5 minutes).
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// One test's world: databases, a vault with its own key ring, a clock that
/// moves only when the test moves it.
pub struct World {
    pub db: TestDatabases,
    pub vault: Arc<Vault>,
    pub clock: TestClock,
    _keys: tempfile::TempDir,
}

/// Settings for tests: loopback receivers allowed, short timeouts, the
/// production backoff and window (the clock makes them instant).
pub fn settings() -> WebhookSettings {
    WebhookSettings {
        attempt_timeout_ms: 1_000,
        allow_private_networks: true,
        poll_interval_ms: 20,
        ..WebhookSettings::default()
    }
}

impl World {
    pub async fn new() -> World {
        let db = testing::fresh(2).await.unwrap();
        let keys = tempfile::tempdir().unwrap();
        let path = keys.path().join("keyring.json");
        let provider =
            FileKeyProvider::create(&path, &KeyRing::generate("kek-test").unwrap()).unwrap();
        let vault = Arc::new(Vault::load(&provider).unwrap());
        World {
            db,
            vault,
            clock: TestClock::starting_now(),
            _keys: keys,
        }
    }

    pub fn dispatcher(&self, settings: WebhookSettings) -> Dispatcher {
        Dispatcher::new(
            self.db.store.clone(),
            self.vault.clone(),
            Arc::new(self.clock.clone()),
            settings,
        )
        .unwrap()
    }

    pub fn shard(&self, merchant: MerchantId) -> &PgPool {
        self.db.store.shard(merchant.shard()).unwrap()
    }

    /// A new merchant on shard `shard` (no control database row: the
    /// dispatcher never looks there).
    pub fn merchant(shard: u8) -> MerchantId {
        MerchantId::generate(REGION, ShardNumber(shard)).unwrap()
    }

    /// Creates an endpoint through the store, its secret sealed by the test
    /// vault exactly as the External API seals it (aad = endpoint ID).
    /// `url` may contain `{id}`, replaced by the endpoint's ID, so that a
    /// receiver can tell endpoints apart by path. Returns the endpoint and
    /// its secret in clear.
    pub async fn endpoint(
        &self,
        merchant: MerchantId,
        livemode: bool,
        url: &str,
        events: &[&str],
    ) -> (WebhookEndpointRecord, String) {
        let id = WebhookEndpointId::generate(REGION, merchant.shard()).unwrap();
        let record = WebhookEndpointRecord {
            id,
            merchant_id: merchant,
            livemode,
            url: url.replace("{id}", &id.to_string()),
            enabled_events: events.iter().map(|e| (*e).to_owned()).collect(),
            description: None,
            metadata: BTreeMap::new(),
            status: EndpointStatus::Enabled,
            created: self.clock.now_ms() / 1000,
        };
        let mut random = [0_u8; 32];
        fill_random(&mut random).unwrap();
        let secret = format!("whsec_{}", hex::encode(random));
        let (key_id, wrapped_key, ciphertext) = self
            .vault
            .seal(secret.as_bytes(), id.to_string().as_bytes())
            .unwrap()
            .into_parts();
        let sealed = SealedColumns {
            key_id,
            wrapped_key,
            ciphertext,
        };
        let mut tx = self.shard(merchant).begin().await.unwrap();
        webhook_endpoints::insert(&mut tx, &record, &sealed)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (record, secret)
    }

    pub async fn delete_endpoint(&self, endpoint: &WebhookEndpointRecord) {
        let mut tx = self.shard(endpoint.merchant_id).begin().await.unwrap();
        let deleted = webhook_endpoints::soft_delete(
            &mut tx,
            endpoint.id,
            endpoint.merchant_id,
            endpoint.livemode,
            self.clock.now_ms() / 1000,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert!(deleted);
    }

    pub async fn disable_endpoint(&self, endpoint: &WebhookEndpointRecord) {
        let mut tx = self.shard(endpoint.merchant_id).begin().await.unwrap();
        let mut record = webhook_endpoints::load_for_update(
            &mut tx,
            endpoint.id,
            endpoint.merchant_id,
            endpoint.livemode,
        )
        .await
        .unwrap()
        .unwrap();
        record.status = EndpointStatus::Disabled;
        webhook_endpoints::update(&mut tx, &record).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Records an event (with its deliveries) as the
    /// services do.
    pub async fn event(
        &self,
        merchant: MerchantId,
        livemode: bool,
        event_type: EventType,
    ) -> EventRecord {
        let snapshot = serde_json::json!({
            "id": "pi_test",
            "object": "payment_intent",
            "amount": 2000,
            "currency": "eur",
            "metadata": { "order": "7", "note": "ünïcode ✓" },
            "status": "succeeded",
        });
        let source = EventSource {
            merchant_id: merchant,
            livemode,
            api_version: "2024-06-20",
            request_id: Some("req_test"),
            created: self.clock.now_ms() / 1000,
        };
        let records = events::for_types(source, &[event_type], &snapshot).unwrap();
        let mut tx = self.shard(merchant).begin().await.unwrap();
        events::record(&mut tx, &records).await.unwrap();
        tx.commit().await.unwrap();
        records.into_iter().next().unwrap()
    }

    pub async fn deliveries(&self, event: &EventRecord) -> Vec<DeliveryRecord> {
        webhook_deliveries::for_event(self.shard(event.merchant_id), event.id)
            .await
            .unwrap()
    }

    pub async fn only_delivery(&self, event: &EventRecord) -> DeliveryRecord {
        let mut deliveries = self.deliveries(event).await;
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        deliveries.pop().unwrap()
    }

    pub async fn attempts(&self, delivery: &DeliveryRecord) -> Vec<AttemptRecord> {
        webhook_deliveries::attempts(
            self.db.store.shard(delivery.merchant_id.shard()).unwrap(),
            delivery.id,
        )
        .await
        .unwrap()
    }
}

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// Answers 200, but only after this long (longer than the timeout).
    After(Duration),
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
    /// The signature header's `t`.
    pub timestamp: Option<i64>,
    /// Why the signature did not verify; `None` when it did.
    pub signature_problem: Option<String>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().unwrap().to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    /// The secret of each endpoint, by path.
    secrets: HashMap<String, String>,
    /// Replies to give, in order; 200 once they run out, unless
    /// `default_reply` says otherwise.
    script: VecDeque<Reply>,
    default_reply: Option<Reply>,
    delay: Duration,
    received: Vec<Received>,
}

/// A merchant's server on 127.0.0.1:0.
pub struct Receiver {
    pub base_url: String,
    state: Arc<Mutex<ReceiverState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(clock: &TestClock) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state((state.clone(), clock.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            task,
        }
    }

    /// The receiver's URL for a new endpoint (`{id}` is the endpoint's ID).
    pub fn url(&self) -> String {
        format!("{}/hooks/{{id}}", self.base_url)
    }

    /// Tells the receiver the secret of an endpoint created with [`url`].
    pub fn expect(&self, endpoint: &WebhookEndpointRecord, secret: &str) {
        let path = url::Url::parse(&endpoint.url).unwrap().path().to_owned();
        self.state
            .lock()
            .unwrap()
            .secrets
            .insert(path, secret.to_owned());
    }

    pub fn script(&self, replies: &[Reply]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(replies.iter().copied());
    }

    pub fn always(&self, reply: Reply) {
        self.state.lock().unwrap().default_reply = Some(reply);
    }

    /// Every answer waits this long first (well within the timeout).
    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Fails the test unless every request carried a valid signature.
    pub fn assert_all_signed(&self) {
        for request in self.received() {
            assert_eq!(
                request.signature_problem, None,
                "request to {} had a bad signature",
                request.path
            );
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = (Arc<Mutex<ReceiverState>>, TestClock);

async fn receive(
    State((state, clock)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let (reply, delay) = {
        let mut state = state.lock().unwrap();
        let secret = state.secrets.get(&path).cloned();
        let header = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let verified = match (secret, header) {
            (Some(secret), Some(header)) => {
                verify(&header, &body, secret.as_bytes(), clock.now_ms() / 1000)
            }
            (None, _) => Err("no secret known for this path".to_owned()),
            (_, None) => Err("no Stripe-Signature header".to_owned()),
        };
        let (timestamp, signature_problem) = match verified {
            Ok(timestamp) => (Some(timestamp), None),
            Err(problem) => (None, Some(problem)),
        };
        state.received.push(Received {
            path,
            body: body.to_vec(),
            headers,
            timestamp,
            signature_problem,
        });
        let reply = state
            .script
            .pop_front()
            .or(state.default_reply)
            .unwrap_or(Reply::Status(200));
        (reply, state.delay)
    };
    tokio::time::sleep(delay).await;
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status).unwrap(),
        Reply::After(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK
        }
    }
}

/// The receiver's own check of `Stripe-Signature`, written from API.md
/// without the dispatcher's code: `t=<seconds>,v1=<hex>` (several `v1`
/// allowed, no spaces), HMAC-SHA256 over `"<t>.<body>"` keyed with the
/// secret's UTF-8 bytes, and `t` within the tolerance of `now_seconds`.
/// Returns `t`.
pub fn verify(header: &str, body: &[u8], secret: &[u8], now_seconds: i64) -> Result<i64, String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("malformed item {item:?}"))?;
        match name {
            "t" => {
                if timestamp.is_some() {
                    return Err("two timestamps".to_owned());
                }
                timestamp = Some(value.parse::<i64>().map_err(|_| "t is not a number")?);
            }
            "v1" => signatures.push(value.to_owned()),
            other => return Err(format!("unexpected item {other:?}")),
        }
    }
    let timestamp = timestamp.ok_or("no timestamp")?;
    if signatures.is_empty() {
        return Err("no v1 signature".to_owned());
    }
    if (now_seconds - timestamp).abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(format!(
            "timestamp {timestamp} is outside the tolerance around {now_seconds}"
        ));
    }
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(&signed);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if signatures.contains(&expected) {
        Ok(timestamp)
    } else {
        Err("no v1 signature matches".to_owned())
    }
}

/// Moves the clock to when `delivery` is next due.
pub fn advance_to(clock: &TestClock, delivery: &DeliveryRecord) {
    assert!(delivery.next_attempt_at_ms >= clock.now_ms());
    clock.set(delivery.next_attempt_at_ms);
}

/// The dispatcher's pass count must be exactly `expected`.
pub async fn pass(dispatcher: &Dispatcher, expected: usize) {
    assert_eq!(snakepay_webhooks::dispatch_once(dispatcher).await, expected);
}

#[test]
fn the_receivers_check_refuses_tampering() {
    let header = |t: i64, body: &[u8], secret: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    let good = header(1_000, b"{}", b"whsec_a");
    assert_eq!(verify(&good, b"{}", b"whsec_a", 1_000), Ok(1_000));
    assert!(verify(&good, b"{ }", b"whsec_a", 1_000).is_err());
    assert!(verify(&good, b"{}", b"whsec_b", 1_000).is_err());
    assert!(verify(&good, b"{}", b"whsec_a", 1_000 + 301).is_err());
    assert!(verify(&good.replace(',', ", "), b"{}", b"whsec_a", 1_000).is_err());
    assert!(verify("t=1000", b"{}", b"whsec_a", 1_000).is_err());
}
