//! A running External API on port 0 with its own databases and key ring.

use reqwest::header::HeaderMap;
use serde_json::Value;
use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use snakepay_external_api::{ExternalApiConfig, start};
use snakepay_http::ServerHandle;
use snakepay_store::merchants::{self, KeyHasher, KeyKind, KycStatus, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};

pub const HASH_SECRET_BASE64: &str =
    "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
pub const REGION: RegionNumber = RegionNumber(1);

pub struct TestApi {
    pub db: TestDatabases,
    pub server: ServerHandle,
    pub client: reqwest::Client,
    /// What the server was started with, for [`TestApi::another_instance`].
    pub config: ExternalApiConfig,
    _dir: tempfile::TempDir,
}

pub struct TestMerchant {
    pub id: MerchantId,
    pub secret_key: String,
    pub publishable_key: String,
    pub key_id: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error envelope's field, e.g. `error("code")`.
    pub fn error(&self, field: &str) -> Value {
        self.body["error"][field].clone()
    }
}

impl TestApi {
    pub async fn start() -> TestApi {
        // Generous limits: tests fire bursts from one key on purpose.
        TestApi::start_with("rate_limit_test_per_second = 100000").await
    }

    /// Starts with extra `[external_api]` settings (TOML lines).
    pub async fn start_with(external_api_settings: &str) -> TestApi {
        TestApi::launch(external_api_settings, "").await
    }

    /// Starts with a `[broker]` section for `broker_url` (outcome replies)
    /// and extra `[external_api]` settings.
    pub async fn start_with_broker(broker_url: &str, external_api_settings: &str) -> TestApi {
        let settings = format!("rate_limit_test_per_second = 100000\n{external_api_settings}");
        TestApi::launch(&settings, &format!("[broker]\nurl = \"{broker_url}\"\n")).await
    }

    /// Starts with a `[redis]` section for `redis_url` (shared rate limits)
    /// and extra `[external_api]` settings.
    pub async fn start_with_redis(redis_url: &str, external_api_settings: &str) -> TestApi {
        TestApi::launch(
            external_api_settings,
            &format!("[redis]\nurl = \"{redis_url}\"\ntimeout_ms = 100\n"),
        )
        .await
    }

    /// A second server over the same databases and configuration: another
    /// instance of the same deployment.
    pub async fn another_instance(&self) -> ServerHandle {
        start(&self.config).await.unwrap()
    }

    async fn launch(external_api_settings: &str, other_sections: &str) -> TestApi {
        let db = testing::fresh(2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_ring = dir.path().join("keyring.json");
        snakepay_vault::FileKeyProvider::create(
            &key_ring,
            &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
        )
        .unwrap();
        let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
        let toml = format!(
            r#"
            [region]
            code = "eu-1"
            number = 1
            public_api_url = "http://127.0.0.1"
            [database]
            control_url = "{control}"
            shard_urls = [{shards}]
            max_connections = 12
            [api_keys]
            hash_secret_base64 = "{HASH_SECRET_BASE64}"
            [vault]
            key_ring_path = "{key_ring}"
            [external_api]
            listen_addr = "127.0.0.1:0"
            metrics_addr = "127.0.0.1:0"
            {external_api_settings}
            [[external_api.other_regions]]
            code = "us-1"
            number = 2
            public_api_url = "https://api.us-1.snakepay.test"
            {other_sections}
            "#,
            control = db.control_url(),
            shards = shards.join(", "),
            key_ring = key_ring.display(),
        );
        let config: ExternalApiConfig = snakepay_config::from_toml_str(&toml).unwrap();
        let server = start(&config).await.unwrap();
        TestApi {
            db,
            server,
            client: reqwest::Client::new(),
            config,
            _dir: dir,
        }
    }

    pub fn hasher(&self) -> KeyHasher {
        KeyHasher::new(&base64_decode(HASH_SECRET_BASE64)).unwrap()
    }

    /// A merchant on the given shard (or the least loaded one), with test keys.
    pub async fn merchant_on(&self, shard: Option<u8>) -> TestMerchant {
        let control = self.db.store.control();
        let shard = match shard {
            Some(n) => ShardNumber(n),
            None => merchants::least_loaded_shard(control, 2).await.unwrap(),
        };
        let merchant = merchants::create_merchant(
            control,
            "eu-1",
            REGION,
            shard,
            &NewMerchant {
                legal_name: "Test Shop".into(),
                country: "DE".into(),
            },
        )
        .await
        .unwrap();
        let secret = merchants::create_api_key(
            control,
            &self.hasher(),
            REGION,
            merchant.id,
            KeyKind::Secret,
            false,
        )
        .await
        .unwrap();
        let publishable = merchants::create_api_key(
            control,
            &self.hasher(),
            REGION,
            merchant.id,
            KeyKind::Publishable,
            false,
        )
        .await
        .unwrap();
        TestMerchant {
            id: merchant.id,
            secret_key: secret.key,
            publishable_key: publishable.key,
            key_id: secret.key_id,
        }
    }

    pub async fn merchant(&self) -> TestMerchant {
        self.merchant_on(None).await
    }

    pub async fn live_key(&self, merchant: &TestMerchant, verified: bool) -> String {
        let control = self.db.store.control();
        if verified {
            merchants::set_kyc_status(control, merchant.id, KycStatus::Verified)
                .await
                .unwrap();
        }
        merchants::create_api_key(
            control,
            &self.hasher(),
            REGION,
            merchant.id,
            KeyKind::Secret,
            true,
        )
        .await
        .unwrap()
        .key
    }

    /// The value of one series (e.g. `name{label="value"}`) in the
    /// server's `/metrics`, 0 when absent (a counter not yet touched).
    pub async fn metric(&self, series: &str) -> f64 {
        let admin = self.server.admin_addr().expect("tests start with metrics");
        let text = self
            .client
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// A Redis client on the server's `[redis]`, as other services have.
    /// The test's own client of the API's Redis. Its timeout is generous:
    /// the service's 50 ms is for the service, which degrades to the
    /// database, while the test's calls (forgetting keys) must happen even
    /// on a loaded CI machine.
    pub fn redis(&self) -> std::sync::Arc<snakepay_cache::Redis> {
        let mut config = self.config.redis.clone().expect("started with redis");
        config.timeout_ms = 5_000;
        snakepay_cache::Redis::new(&config).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// POST to another instance (see [`TestApi::another_instance`]).
    pub async fn post_to(
        &self,
        instance: &ServerHandle,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        let request = self
            .client
            .post(format!("{}{path}", instance.url()))
            .bearer_auth(key)
            .body(encode(form))
            .header("content-type", "application/x-www-form-urlencoded");
        self.send(request).await
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap().to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            bytes,
            body,
        }
    }

    pub async fn post(
        &self,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(key)
            .body(encode(form))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        self.send(request).await
    }

    pub async fn get(&self, key: &str, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)).bearer_auth(key))
            .await
    }

    /// Every text value in every table of every database of this test, for
    /// searches of things that must not be stored.
    pub async fn dump_all_tables(&self) -> String {
        let mut dump = String::new();
        let pools =
            std::iter::once(self.db.store.control()).chain(self.db.store.shards().map(|(_, p)| p));
        for pool in pools {
            let tables: Vec<String> = sqlx::query_scalar(
                "select quote_ident(table_name) from information_schema.tables where table_schema = 'public' and table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("select t::text from {table} t"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                dump.push_str(&rows.join("\n"));
                dump.push('\n');
            }
        }
        dump
    }
}

/// The test broker's vhost: `SNAKEPAY_TEST_AMQP_URL` names the server, as
/// for the bus crate's tests.
pub fn redis_url() -> String {
    std::env::var("SNAKEPAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn amqp_url() -> String {
    let server = std::env::var("SNAKEPAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    format!("{}/snakepay_test", server.trim_end_matches('/'))
}

/// A complete External API configuration that needs no running database,
/// for tests of start-up validation; `external_api_extra` adds TOML lines to
/// the service's own section.
pub fn minimal_config_toml(external_api_extra: &str) -> String {
    format!(
        r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "http://127.0.0.1"
        [database]
        control_url = "postgres://localhost/c"
        shard_urls = ["postgres://localhost/s"]
        [api_keys]
        hash_secret_base64 = "{HASH_SECRET_BASE64}"
        [vault]
        key_ring_path = "/tmp/none.json"
        [external_api]
        listen_addr = "127.0.0.1:0"
        {external_api_extra}
        "#
    )
}

pub fn encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

impl TestApi {
    /// Applies a processor's authorization outcome to an intent the way the
    /// integration service does (which lands with the pipeline): domain
    /// transition, intent, attempt status and journal in one transaction.
    pub async fn settle_authorization(
        &self,
        merchant: &TestMerchant,
        intent: &str,
        outcome: snakepay_domain::payment_intent::AuthorizationOutcome,
    ) {
        use snakepay_domain::payment_intent::{IntentCommand, PendingOperation};
        let pool = self.db.store.shard(merchant.id.shard()).unwrap();
        apply_intent_outcome(pool, merchant.id, intent, |current| {
            let Some(PendingOperation::Authorize { attempt, .. }) = current.pending else {
                panic!("no authorization pending on {intent}");
            };
            IntentCommand::AuthorizationResult {
                attempt,
                outcome,
                now: 1_800_000_000,
            }
        })
        .await;
    }

    /// A payment of `amount` USD that has succeeded (confirmed, approved).
    pub async fn succeeded_payment(&self, merchant: &TestMerchant, amount: i64) -> String {
        let amount = amount.to_string();
        let reply = self
            .post(
                &merchant.secret_key,
                "/v1/payment_intents",
                &[
                    ("amount", &amount),
                    ("currency", "usd"),
                    ("confirm", "true"),
                    ("payment_method", "pm_card_visa"),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let id = reply.body["id"].as_str().unwrap().to_owned();
        self.settle_authorization(
            merchant,
            &id,
            snakepay_domain::payment_intent::AuthorizationOutcome::Approved,
        )
        .await;
        id
    }
}

/// Applies a processor outcome (`command`, built from the locked intent) to
/// an intent the way the integration service does: domain transition,
/// intent, attempt status and journal in one transaction. Returns the intent
/// as committed.
pub async fn apply_intent_outcome(
    pool: &sqlx::PgPool,
    merchant: MerchantId,
    intent: &str,
    command: impl FnOnce(
        &snakepay_domain::payment_intent::PaymentIntent,
    ) -> snakepay_domain::payment_intent::IntentCommand,
) -> snakepay_domain::payment_intent::PaymentIntent {
    use snakepay_domain::payment_intent::{self, AuthorizationOutcome, IntentCommand};
    use snakepay_store::intents;
    let mut tx = pool.begin().await.unwrap();
    let id = snakepay_domain::ids::PaymentIntentId::parse(intent).unwrap();
    let mut record = intents::load_for_update(&mut tx, id, merchant, false)
        .await
        .unwrap()
        .unwrap();
    let command = command(&record.intent);
    let t = payment_intent::apply(&record.intent, command.clone()).unwrap();
    record.intent = t.intent;
    intents::update(&mut tx, &mut record).await.unwrap();
    post_journal(&mut tx, merchant, intent, None, t.effects.journal.as_ref()).await;
    if let IntentCommand::AuthorizationResult {
        attempt, outcome, ..
    } = &command
    {
        let (status, error) = match outcome {
            AuthorizationOutcome::Approved => ("approved", None),
            AuthorizationOutcome::Declined(error) => ("declined", Some(error)),
            AuthorizationOutcome::RequiresAction(_) => ("requires_action", None),
            AuthorizationOutcome::Unknown => ("pending", None),
        };
        let code = error.map(|e| {
            serde_json::to_value(e.code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        });
        sqlx::query(
            "update payment_attempts set status = $2, failure_code = $3, decline_code = $4,
                 failure_message = $5
             where id = $1",
        )
        .bind(attempt.to_string())
        .bind(status)
        .bind(code)
        .bind(error.and_then(|e| e.decline_code.clone()))
        .bind(error.map(|e| e.message.clone()))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    record.intent
}

/// Applies a processor's answer to a refund the way the integration service
/// does: refund status, the intent's refund totals and the journal in one
/// transaction, under the intent's row lock.
pub async fn apply_refund_outcome(
    pool: &sqlx::PgPool,
    merchant: MerchantId,
    refund: &str,
    outcome: snakepay_domain::payment_intent::ProcessorOutcome,
) {
    use snakepay_store::{intents, refunds};
    let refund_id = snakepay_domain::ids::RefundId::parse(refund).unwrap();
    let found = refunds::find(pool, refund_id, merchant, false)
        .await
        .unwrap()
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let mut record =
        intents::load_for_update(&mut tx, found.refund.payment_intent, merchant, false)
            .await
            .unwrap()
            .unwrap();
    let t = snakepay_domain::refund::apply_outcome(&record.intent, &found.refund, outcome).unwrap();
    record.intent = t.intent;
    intents::update(&mut tx, &mut record).await.unwrap();
    refunds::update_outcome(&mut tx, &t.refund).await.unwrap();
    let intent = found.refund.payment_intent.to_string();
    post_journal(
        &mut tx,
        merchant,
        &intent,
        Some(refund),
        t.effects.journal.as_ref(),
    )
    .await;
    tx.commit().await.unwrap();
}

async fn post_journal(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    merchant: MerchantId,
    intent: &str,
    refund: Option<&str>,
    journal: Option<&snakepay_domain::ledger::Journal>,
) {
    let Some(journal) = journal else {
        return;
    };
    let merchant_id = merchant.to_string();
    let context = snakepay_store::ledger::JournalContext {
        merchant_id: &merchant_id,
        livemode: false,
        payment_intent_id: Some(intent),
        refund_id: refund,
        description: "test settlement",
    };
    snakepay_store::ledger::post(tx, context, journal)
        .await
        .unwrap();
}
