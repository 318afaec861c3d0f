//! A whole pipeline per test: databases, processor-sim, the integration
//! service (with the relay) and the External API, wired together.

use std::time::Duration;

use serde_json::Value;
use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use snakepay_integration::{IntegrationConfig, RunningIntegration};
use snakepay_processor_sim::{ProcessorSimSection, RunningSim, SimConfig};
use snakepay_store::merchants::{self, KeyHasher, KeyKind, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};

pub const HASH_SECRET_BASE64: &str =
    "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
pub const SIM_API_KEY: &str = "sk_sim_pipeline_0123456789abcdef";
pub const SIM_NOTIFICATION_SECRET: &str = "sim_notification_secret_0123456789";
/// Every wait in these tests ends; generous, so a slow machine never fails one.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Pipeline {
    pub db: TestDatabases,
    pub sim: RunningSim,
    pub integration: Option<RunningIntegration>,
    pub api: snakepay_http::ServerHandle,
    pub client: reqwest::Client,
    pub prefix: String,
    pub integration_config: IntegrationConfig,
    _dir: tempfile::TempDir,
}

pub struct Merchant {
    pub id: MerchantId,
    pub key: String,
}

pub fn amqp_url() -> String {
    let server = std::env::var("SNAKEPAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    format!("{}/snakepay_test", server.trim_end_matches('/'))
}

/// An object's `id`.
/// A CVC the simulator accepts for card `number`.
pub fn cvc_for(number: &str) -> &'static str {
    if number.len() == 15 { "1234" } else { "123" }
}

/// The form of a create that confirms at once, paying with card `number`.
pub fn checkout_form(
    number: &str,
    cvc: &str,
    amount: i64,
    capture_method: &str,
) -> Vec<(&'static str, String)> {
    [
        ("amount", amount.to_string().as_str()),
        ("currency", "usd"),
        ("confirm", "true"),
        ("capture_method", capture_method),
        ("return_url", "https://shop.example/return"),
        ("payment_method_data[type]", "card"),
        ("payment_method_data[card][number]", number),
        ("payment_method_data[card][exp_month]", "12"),
        ("payment_method_data[card][exp_year]", "2034"),
        ("payment_method_data[card][cvc]", cvc),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

pub fn id(object: &Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0_u8; bytes];
    getrandom::fill(&mut random).unwrap();
    hex::encode(random)
}

/// A port that was free a moment ago, for a listener whose address another
/// component must know before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pipeline {
    pub async fn start() -> Pipeline {
        Pipeline::start_with(|_| {}, "").await
    }

    /// `sim` adjusts the simulator; `integration` adds `[integration]` lines.
    pub async fn start_with(
        sim: impl FnOnce(&mut ProcessorSimSection),
        integration: &str,
    ) -> Pipeline {
        // SNAKEPAY_TEST_LOG=snakepay_integration=debug shows the services' logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SNAKEPAY_TEST_LOG"))
            .with_test_writer()
            .try_init();
        let db = testing::fresh(2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_ring = dir.path().join("keyring.json");
        snakepay_vault::FileKeyProvider::create(
            &key_ring,
            &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
        )
        .unwrap();
        let prefix = format!("test.{}.", random_hex(6));
        let integration_port = free_port();

        let mut section = ProcessorSimSection {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            api_key: SIM_API_KEY.to_owned(),
            timeout_ms: 2_000,
            slow_ms: 300,
            notification_url: Some(
                format!("http://127.0.0.1:{integration_port}/v1/processor-notifications/sim")
                    .parse()
                    .unwrap(),
            ),
            notification_secret: Some(SIM_NOTIFICATION_SECRET.to_owned()),
            notification_backoff_ms: 50,
            ..ProcessorSimSection::default()
        };
        sim(&mut section);
        let sim = snakepay_processor_sim::start(SimConfig {
            processor_sim: section,
            ..SimConfig::default()
        })
        .await
        .unwrap();

        let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
        let shared = format!(
            r#"
            [region]
            code = "eu-1"
            number = 1
            public_api_url = "http://127.0.0.1"
            [database]
            control_url = "{control}"
            shard_urls = [{shards}]
            max_connections = 12
            [broker]
            url = "{amqp}"
            topology_prefix = "{prefix}"
            [vault]
            key_ring_path = "{key_ring}"
            [redis]
            url = "{redis}"
            "#,
            redis = std::env::var("SNAKEPAY_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
            control = db.control_url(),
            shards = shards.join(", "),
            amqp = amqp_url(),
            key_ring = key_ring.display(),
        );
        let integration_toml = format!(
            r#"{shared}
            [integration]
            listen_addr = "127.0.0.1:{integration_port}"
            call_timeout_ms = 1000
            call_attempts = 2
            retry_backoff_ms = 20
            retry_backoff_max_ms = 100
            reconcile_interval_ms = 200
            reconcile_after_ms = 1000
            relay_idle_poll_ms = 10
            egress.allowed_hosts = ["127.0.0.1"]
            {integration}
            [integration.processor_sim]
            base_url = "{sim_url}"
            api_key = "{SIM_API_KEY}"
            notification_secret = "{SIM_NOTIFICATION_SECRET}"
            "#,
            sim_url = sim.base_url(),
        );
        let integration_config: IntegrationConfig =
            snakepay_config::from_toml_str(&integration_toml).unwrap();
        let running = snakepay_integration::start(&integration_config)
            .await
            .unwrap();

        let api_toml = format!(
            r#"{shared}
            [api_keys]
            hash_secret_base64 = "{HASH_SECRET_BASE64}"
            [external_api]
            listen_addr = "127.0.0.1:0"
            rate_limit_test_per_second = 100000
            "#
        );
        let api_config: snakepay_external_api::ExternalApiConfig =
            snakepay_config::from_toml_str(&api_toml).unwrap();
        let api = snakepay_external_api::start(&api_config).await.unwrap();
        Pipeline {
            db,
            sim,
            integration: Some(running),
            api,
            // Trusts what the integration service trusts, so it can read a
            // processor served over TLS (tests/pipeline/tls.rs).
            client: snakepay_http::tls::client_builder(&integration_config.tls)
                .unwrap()
                .build()
                .unwrap(),
            prefix,
            integration_config,
            _dir: dir,
        }
    }

    pub async fn merchant(&self) -> Merchant {
        let control = self.db.store.control();
        let shard = merchants::least_loaded_shard(control, 2).await.unwrap();
        let merchant = merchants::create_merchant(
            control,
            "eu-1",
            RegionNumber(1),
            shard,
            &NewMerchant {
                legal_name: "Pipeline Shop".into(),
                country: "DE".into(),
            },
        )
        .await
        .unwrap();
        let hasher = KeyHasher::new(&base64_decode(HASH_SECRET_BASE64)).unwrap();
        let key = merchants::create_api_key(
            control,
            &hasher,
            RegionNumber(1),
            merchant.id,
            KeyKind::Secret,
            false,
        )
        .await
        .unwrap();
        Merchant {
            id: merchant.id,
            key: key.key,
        }
    }

    pub async fn post(
        &self,
        merchant: &Merchant,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.api.url()))
            .bearer_auth(&merchant.key)
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, merchant: &Merchant, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.api.url()))
            .bearer_auth(&merchant.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Creates and confirms an intent paying with card `number`.
    pub async fn pay(
        &self,
        merchant: &Merchant,
        number: &str,
        amount: i64,
        capture_method: &str,
    ) -> Value {
        self.pay_with_cvc(merchant, number, cvc_for(number), amount, capture_method)
            .await
    }

    /// [`Self::pay`] with the CVC given.
    pub async fn pay_with_cvc(
        &self,
        merchant: &Merchant,
        number: &str,
        cvc: &str,
        amount: i64,
        capture_method: &str,
    ) -> Value {
        let form = checkout_form(number, cvc, amount, capture_method);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = self.post(merchant, "/v1/payment_intents", &form).await;
        assert!(status == 200 || status == 402, "{status} {body}");
        if status == 402 {
            body["error"]["payment_intent"].clone()
        } else {
            body
        }
    }

    /// A payment with the 4242 card and automatic capture that succeeded;
    /// its intent's ID.
    pub async fn succeeded_payment(&self, merchant: &Merchant, amount: i64) -> String {
        let intent = self
            .pay(merchant, "4242424242424242", amount, "automatic")
            .await;
        let intent_id = id(&intent);
        assert_eq!(
            self.settled(merchant, &intent_id).await["status"],
            "succeeded"
        );
        intent_id
    }

    /// Polls the intent until `done` holds; panics after [`WAIT`].
    pub async fn wait_for_intent(
        &self,
        merchant: &Merchant,
        id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let intent = self
                .get(merchant, &format!("/v1/payment_intents/{id}"))
                .await;
            if done(&intent) {
                return intent;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "intent never got there: {intent}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the intent leaves `processing`.
    pub async fn settled(&self, merchant: &Merchant, id: &str) -> Value {
        self.wait_for_intent(merchant, id, |i| i["status"] != "processing")
            .await
    }

    pub async fn wait_for_refund(&self, merchant: &Merchant, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let refund = self.get(merchant, &format!("/v1/refunds/{id}")).await;
            if refund["status"] != "pending" {
                return refund;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "refund never settled: {refund}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the simulator did: `{operations: [...], authorizations: [...]}`.
    pub async fn sim_record(&self) -> Value {
        self.client
            .get(format!("{}/_sim/operations", self.sim.base_url()))
            .bearer_auth(SIM_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The simulator's authorizations made for `attempt`.
    pub async fn sim_authorizations_for(&self, attempt: &str) -> Vec<Value> {
        self.sim_record().await["authorizations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["reference"] == attempt)
            .cloned()
            .collect()
    }

    /// The merchant's shard.
    pub fn shard_of(&self, merchant: &Merchant) -> sqlx::PgPool {
        self.db.store.shard(merchant.id.shard()).unwrap().clone()
    }

    pub async fn scalar_i64(&self, shard: ShardNumber, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(self.db.store.shard(shard).unwrap())
            .await
            .unwrap()
    }

    /// The invariants every test ends with (STYLE.md: check at teardown):
    /// the outbox drains; nothing is left in flight; every succeeded payment
    /// has exactly one capture at the processor and every capture there
    /// belongs to exactly one succeeded payment, for the same amount; the
    /// processor's refunds match ours; the ledger balances.
    pub async fn assert_invariants(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for (shard, _) in self.db.store.shards() {
            loop {
                let unsent = self.scalar_i64(shard, "select count(*) from outbox").await;
                let in_flight = self
                    .scalar_i64(
                        shard,
                        "select (select count(*) from payment_intents where status = 'processing')
                              + (select count(*) from refunds where status = 'pending')",
                    )
                    .await;
                if unsent == 0 && in_flight == 0 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "shard {shard}: {unsent} outbox rows unsent, {in_flight} payments in flight"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        // Our view: authorized attempt → amount received and refunded.
        let mut ours = std::collections::BTreeMap::new();
        for (_, pool) in self.db.store.shards() {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "select authorized_attempt_id, amount_received, amount_refunded from payment_intents
                 where status = 'succeeded'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for (attempt, received, refunded) in rows {
                assert!(ours.insert(attempt, (received, refunded)).is_none());
            }
            let imbalance: Vec<(String, i64)> = sqlx::query_as(
                "select currency, sum(case when side = 'debit' then amount else -amount end)::bigint
                 from journal_lines group by currency
                 having sum(case when side = 'debit' then amount else -amount end) <> 0",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(imbalance.is_empty(), "ledger imbalance: {imbalance:?}");
        }
        let record = self.sim_record().await;
        let mut captured = std::collections::BTreeMap::new();
        for authorization in record["authorizations"].as_array().unwrap() {
            let amount_captured = authorization["amount_captured"].as_i64().unwrap();
            if amount_captured > 0 {
                let reference = authorization["reference"].as_str().unwrap().to_owned();
                let refunded = authorization["amount_refunded"].as_i64().unwrap();
                assert!(
                    captured
                        .insert(reference.clone(), (amount_captured, refunded))
                        .is_none(),
                    "two captured authorizations for {reference}"
                );
            }
        }
        assert_eq!(
            ours, captured,
            "our succeeded payments against the processor's captures"
        );
    }

    /// `snakepay-admin verify` finds nothing wrong with what the test did
    /// (run after [`Pipeline::assert_invariants`] has waited for quiet).
    pub async fn assert_verify_is_clean(&self) {
        let options = snakepay_admin::verify::Options {
            settle_seconds: 0.0,
            reconcile_window_seconds: self.integration_config.integration.reconcile_after_ms as f64
                / 1000.0,
            processor: Some(snakepay_admin::verify::ProcessorAccess {
                base_url: self.sim.base_url().parse().unwrap(),
                api_key: SIM_API_KEY.to_owned(),
                trust: self.integration_config.tls.clone(),
            }),
        };
        let report = snakepay_admin::verify::run(&self.db.store, &options)
            .await
            .unwrap();
        assert!(report.is_clean(), "verify: {:#?}", report.violations);
    }

    /// Changes the simulator's fault settings while it runs.
    pub async fn sim_faults(&self, settings: Value) {
        let response = self
            .client
            .post(format!("{}/_sim/config", self.sim.base_url()))
            .bearer_auth(SIM_API_KEY)
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Ends a test: checks the invariants, stops the services and deletes
    /// the test's queues and exchanges (quorum queues are heavy; a broker
    /// collecting hundreds slows down).
    pub async fn finish(self) {
        self.assert_invariants().await;
        self.assert_verify_is_clean().await;
        self.discard().await;
    }

    /// Stops the pipeline and removes its broker names, checking nothing
    /// (for tests that wrote outcomes no processor performed).
    pub async fn discard(mut self) {
        self.stop_integration().await;
        let topology = snakepay_bus::Topology::new(&self.prefix, 5);
        let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology
            .delete(&channel, &snakepay_bus::Topology::standard_queues())
            .await
            .unwrap();
        let _ = connection.close(200, "test done".into()).await;
    }

    /// From now on, a copy of every message the relay publishes: the
    /// outbox keeps nothing once the broker has it.
    pub async fn tap(&self) -> Tap {
        let topology = snakepay_bus::Topology::new(&self.prefix, 5);
        let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        // Exclusive and server-named, like a reply queue: gone with the
        // connection.
        let queue = snakepay_bus::reply::declare_reply_queue(&channel)
            .await
            .unwrap();
        for exchange in [topology.commands_exchange(), topology.events_exchange()] {
            channel
                .queue_bind(
                    snakepay_bus::short(&queue).unwrap(),
                    snakepay_bus::short(&exchange).unwrap(),
                    "#".into(),
                    lapin::options::QueueBindOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Tap {
            _connection: connection,
            channel,
            queue,
            seen: Vec::new(),
        }
    }

    /// Stops the integration service (for tests that restart it).
    pub async fn stop_integration(&mut self) {
        if let Some(running) = self.integration.take() {
            running.shutdown().await.unwrap();
        }
    }

    pub async fn restart_integration(&mut self) {
        self.stop_integration().await;
        self.integration = Some(
            snakepay_integration::start(&self.integration_config)
                .await
                .unwrap(),
        );
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// What the relay published since [`Pipeline::tap`]: routing keys and
/// payloads, in the order the broker routed them.
pub struct Tap {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
    seen: Vec<(String, Value)>,
}

impl Tap {
    /// Every message published so far whose payload names any of `ids`.
    pub async fn about(&mut self, ids: &[&str]) -> Vec<(String, Value)> {
        while let Some(message) = self
            .channel
            .basic_get(
                snakepay_bus::short(&self.queue).unwrap(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let envelope = snakepay_bus::Envelope::parse(&message.delivery.data).unwrap();
            self.seen.push((envelope.kind, envelope.payload));
        }
        self.seen
            .iter()
            .filter(|(_, payload)| {
                let text = payload.to_string();
                ids.iter().any(|id| text.contains(id))
            })
            .cloned()
            .collect()
    }

    /// The payload of the one `routing_key` message about `object_id`.
    pub async fn the_one(&mut self, routing_key: &str, object_id: &str) -> Value {
        let mut found: Vec<Value> = self
            .about(&[object_id])
            .await
            .into_iter()
            .filter(|(key, _)| key == routing_key)
            .map(|(_, payload)| payload)
            .collect();
        assert_eq!(found.len(), 1, "{routing_key} about {object_id}: {found:?}");
        found.remove(0)
    }
}
