//! Dead letters and reconciliation end to end: the whole pipeline
//! (External API, broker, integration service, processor simulator) with
//! the Internal API over the same databases and broker.

use std::time::Duration;

use serde_json::{Value, json};
use snakepay_bus::Topology;
use snakepay_domain::ids::MerchantId;
use snakepay_internal_api::tokens::Role;
use snakepay_processor_sim::{ProcessorSimSection, SimConfig};

use crate::support::{HASH_SECRET_BASE64, TestApi, merchant_with_key};

const SIM_API_KEY: &str = "sk_sim_dead_letters_0123456789abcdef";
const WAIT: Duration = Duration::from_secs(60);

fn amqp_url() -> String {
    let server = std::env::var("SNAKEPAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    format!("{}/snakepay_test", server.trim_end_matches('/'))
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0_u8; bytes];
    getrandom::fill(&mut random).unwrap();
    hex::encode(random)
}

/// Polls `check` until it returns `Some`, or panics after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole pipeline plus the Internal API, over one set of databases and
/// one broker topology (its own prefix).
pub struct Pipeline {
    pub api: TestApi,
    pub sim: snakepay_processor_sim::RunningSim,
    pub integration: Option<snakepay_integration::RunningIntegration>,
    pub external: snakepay_http::ServerHandle,
    prefix: String,
}

impl Pipeline {
    pub async fn start() -> Pipeline {
        let prefix = format!("test.{}.", random_hex(6));
        let broker = format!(
            "[broker]\nurl = \"{}\"\ntopology_prefix = \"{prefix}\"\ndelivery_limit = 2\n",
            amqp_url()
        );
        let sim = snakepay_processor_sim::start(SimConfig {
            processor_sim: ProcessorSimSection {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                api_key: SIM_API_KEY.to_owned(),
                ..ProcessorSimSection::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let api = TestApi::start_with(
            &format!(
                "processor_sim.base_url = \"{}\"\nprocessor_sim.api_key = \"{SIM_API_KEY}\"",
                sim.base_url()
            ),
            &broker,
        )
        .await;
        let db = &api.db;
        let key_ring = api.dir.path().join("keyring.json");
        snakepay_vault::FileKeyProvider::create(
            &key_ring,
            &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
        )
        .unwrap();
        let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
        let shared = format!(
            r#"
            [region]
            code = "eu-1"
            number = 1
            public_api_url = "http://127.0.0.1"
            [database]
            control_url = "{}"
            shard_urls = [{}]
            max_connections = 6
            {broker}
            [vault]
            key_ring_path = "{}"
            "#,
            db.control_url(),
            shards.join(", "),
            key_ring.display()
        );
        // The reconciler is held off: only a replay may complete a payment
        // whose command was dead-lettered.
        let integration: snakepay_integration::IntegrationConfig =
            snakepay_config::from_toml_str(&format!(
                r#"{shared}
                [integration]
                listen_addr = "127.0.0.1:0"
                call_timeout_ms = 2000
                reconcile_after_ms = 600000
                relay_idle_poll_ms = 10
                egress.allowed_hosts = ["127.0.0.1"]
                [integration.processor_sim]
                base_url = "{}"
                api_key = "{SIM_API_KEY}"
                notification_secret = "unused_notification_secret_000000"
                "#,
                sim.base_url()
            ))
            .unwrap();
        let integration = snakepay_integration::start(&integration).await.unwrap();
        let external: snakepay_external_api::ExternalApiConfig =
            snakepay_config::from_toml_str(&format!(
                r#"{shared}
                [api_keys]
                hash_secret_base64 = "{HASH_SECRET_BASE64}"
                [external_api]
                listen_addr = "127.0.0.1:0"
                wait_for_outcome_ms = 0
                request_log = false
                "#
            ))
            .unwrap();
        let external = snakepay_external_api::start(&external).await.unwrap();
        Pipeline {
            api,
            sim,
            integration: Some(integration),
            external,
            prefix,
        }
    }

    /// Creates and confirms a USD payment with the test card.
    pub async fn pay(&self, key: &str, amount: i64) -> String {
        let created: Value = self
            .api
            .client
            .post(format!("{}/v1/payment_intents", self.external.url()))
            .bearer_auth(key)
            .form(&[
                ("amount", amount.to_string().as_str()),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(created["status"], "processing", "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    pub async fn wait_for_status(&self, merchant: MerchantId, intent: &str, wanted: &str) {
        let shard = self.api.db.store.shard(merchant.shard()).unwrap();
        eventually(&format!("{intent} is {wanted}"), || async {
            let status: String =
                sqlx::query_scalar("select status from payment_intents where id = $1")
                    .bind(intent)
                    .fetch_one(shard)
                    .await
                    .unwrap();
            (status == wanted).then_some(())
        })
        .await;
    }

    /// Everything the simulator did.
    pub async fn sim_record(&self) -> Value {
        self.api
            .client
            .get(format!("{}/_sim/operations", self.sim.base_url()))
            .bearer_auth(SIM_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Stops the integration service and deletes this test's queues.
    pub async fn finish(mut self) {
        if let Some(integration) = self.integration.take() {
            integration.shutdown().await.unwrap();
        }
        let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        Topology::new(&self.prefix, 2)
            .delete(&channel, &Topology::standard_queues())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_poisoned_command_is_dead_lettered_and_its_replay_completes_the_payment() {
    let pipeline = Pipeline::start().await;
    let api = &pipeline.api;
    let db = &api.db;
    // The cause: the shard refuses to record attempt outcomes (think of a
    // broken migration), so the integration service cannot commit.
    let (merchant, key) = merchant_with_key(api, 1).await;
    let shard = db.store.shard(merchant.shard()).unwrap();
    for sql in [
        "create function poison() returns trigger language plpgsql as $$
         begin raise exception 'attempt outcomes cannot be recorded'; end $$",
        "create trigger poison before update on payment_attempts for each row execute function poison()",
    ] {
        sqlx::query(sql).execute(shard).await.unwrap();
    }
    let intent = pipeline.pay(&key, 4200).await;

    let operator = api.mfa_token(Role::Operator, "olga");
    let dead = eventually("the command reaches the dead-letter queue", || async {
        let listed = api.get(&operator, "/v1/dead_letters?status=pending").await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["queue"] == "integration.commands")
            .cloned()
    })
    .await;
    assert_eq!(dead["message_type"], "command.authorize");
    let id = dead["id"].as_i64().unwrap();
    let inspected = api.get(&operator, &format!("/v1/dead_letters/{id}")).await;
    assert_eq!(inspected.status, 200, "{}", inspected.body);
    assert_eq!(
        inspected.body["message"]["payload"]["payment_intent"],
        intent.as_str()
    );
    assert!(
        inspected.body["headers"]["x-death"].is_array(),
        "{}",
        inspected.body
    );
    // Inspecting needs a multi-factor login.
    let without_mfa = api.token(Role::Operator, "olga");
    assert_eq!(
        api.get(&without_mfa, &format!("/v1/dead_letters/{id}"))
            .await
            .status,
        403
    );

    // Still processing: nothing committed the outcome.
    let status: String = sqlx::query_scalar("select status from payment_intents where id = $1")
        .bind(&intent)
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(status, "processing");

    // The fix, then the replay.
    sqlx::query("drop trigger poison on payment_attempts")
        .execute(shard)
        .await
        .unwrap();
    let replayed = api
        .post(
            &operator,
            &format!("/v1/dead_letters/{id}/replay"),
            json!({}),
        )
        .await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.body["status"], "replayed");
    assert_eq!(replayed.body["decided_by"], "olga");
    let again = api
        .post(
            &operator,
            &format!("/v1/dead_letters/{id}/replay"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.body);

    pipeline
        .wait_for_status(merchant, &intent, "succeeded")
        .await;
    // Charged once, however often the command was delivered.
    let record = pipeline.sim_record().await;
    let attempt: String =
        sqlx::query_scalar("select authorized_attempt_id from payment_intents where id = $1")
            .bind(&intent)
            .fetch_one(shard)
            .await
            .unwrap();
    let charges = record["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["reference"] == attempt.as_str())
        .count();
    assert_eq!(charges, 1, "{record}");

    pipeline.finish().await;
}

#[tokio::test]
async fn without_a_broker_dead_letters_answer_503_and_discard_needs_a_pending_letter() {
    let api = TestApi::start().await;
    let operator = api.mfa_token(Role::Operator, "olga");
    let listed = api.get(&operator, "/v1/dead_letters").await;
    assert_eq!(listed.status, 503, "{}", listed.body);
    let parked = snakepay_store::dead_letters::park(
        api.db.store.control(),
        &snakepay_store::dead_letters::NewDeadLetter {
            queue: "recorder.events",
            message_id: Some("m1"),
            message_type: Some("event.x"),
            body: br#"{"card":{"number":"4242424242424242"}}"#,
            headers: &json!({}),
            reason: Some("rejected"),
        },
    )
    .await
    .unwrap();
    assert!(parked);
    let (rows, _) =
        snakepay_store::dead_letters::list(api.db.store.control(), None, None, None, 10)
            .await
            .unwrap();
    let id = rows[0].id;
    let shown = api.get(&operator, &format!("/v1/dead_letters/{id}")).await;
    assert_eq!(shown.body["message"]["card"]["number"], "[masked]");
    assert!(!shown.body.to_string().contains("4242424242424242"));
    let discarded = api
        .post(
            &operator,
            &format!("/v1/dead_letters/{id}/discard"),
            json!({}),
        )
        .await;
    assert_eq!(discarded.status, 200, "{}", discarded.body);
    assert_eq!(discarded.body["status"], "discarded");
    let twice = api
        .post(
            &operator,
            &format!("/v1/dead_letters/{id}/discard"),
            json!({}),
        )
        .await;
    assert_eq!(twice.status, 400, "{}", twice.body);
}

#[tokio::test]
async fn reconciliation_matches_a_clean_region_and_names_each_mismatch_it_finds() {
    let pipeline = Pipeline::start().await;
    let api = &pipeline.api;
    let viewer = api.token(Role::Viewer, "victor");
    let (merchant, key) = merchant_with_key(api, 0).await;
    let first = pipeline.pay(&key, 2500).await;
    let second = pipeline.pay(&key, 700).await;
    pipeline
        .wait_for_status(merchant, &first, "succeeded")
        .await;
    pipeline
        .wait_for_status(merchant, &second, "succeeded")
        .await;

    let clean = api.get(&viewer, "/v1/reconciliation").await;
    assert_eq!(clean.status, 200, "{}", clean.body);
    assert_eq!(clean.body["reconciled"], true, "{}", clean.body);
    assert_eq!(clean.body["matched"], 2, "{}", clean.body);

    // The processor refunds behind our back...
    let shard = api.db.store.shard(merchant.shard()).unwrap();
    let attempt: String =
        sqlx::query_scalar("select authorized_attempt_id from payment_intents where id = $1")
            .bind(&first)
            .fetch_one(shard)
            .await
            .unwrap();
    let record = pipeline.sim_record().await;
    let authorization = record["authorizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["reference"] == attempt.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refunded = api
        .client
        .post(format!("{}/v1/refunds", pipeline.sim.base_url()))
        .bearer_auth(SIM_API_KEY)
        .header("idempotency-key", "behind-our-back-1")
        .json(&json!({ "authorization": authorization, "amount": 100 }))
        .send()
        .await
        .unwrap();
    assert!(
        refunded.status().is_success(),
        "{:?}",
        refunded.text().await
    );
    // ...and a payment is recorded as paid that the processor never saw.
    let ghost = snakepay_domain::ids::PaymentIntentId::generate(
        snakepay_domain::ids::RegionNumber(1),
        merchant.shard(),
    )
    .unwrap()
    .to_string();
    let ghost_attempt = format!("pa_{}", &ghost[3..]);
    for sql in [
        "insert into payment_intents (id, merchant_id, livemode, amount, currency, status, capture_method,
             amount_received, authorized_attempt_id, payment_method_id, client_secret, created)
         select $1, merchant_id, false, 900, 'usd', 'succeeded', 'automatic', 900, $2, payment_method_id, 's', 1
         from payment_intents where id = $3",
        "insert into payment_attempts (id, payment_intent_id, merchant_id, charge_id, payment_method_id,
             amount, currency, capture, status, created)
         select $2, $1, merchant_id, 'ch_' || $2, payment_method_id, 900, 'usd', true, 'approved', 1
         from payment_intents where id = $3",
    ] {
        sqlx::query(sql)
            .bind(&ghost)
            .bind(&ghost_attempt)
            .bind(&first)
            .execute(shard)
            .await
            .unwrap();
    }

    let report = api.get(&viewer, "/v1/reconciliation").await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["reconciled"], false);
    let mut found: Vec<(String, String)> = report.body["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["reason"].as_str().unwrap().to_owned(),
                m["payment_intent"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        ("refund_mismatch".to_owned(), first.clone()),
        ("missing_at_processor".to_owned(), ghost.clone()),
        ("ledger_mismatch".to_owned(), ghost.clone()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{}", report.body);
    assert_eq!(report.body["matched"], 1);
    pipeline.finish().await;
}
