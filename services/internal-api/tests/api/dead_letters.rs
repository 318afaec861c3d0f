//! Dead letters end to end: the whole pipeline (External API, broker,
//! integration service, processor simulator) with the Internal API over
//! the same databases and broker.

use std::time::Duration;

use serde_json::{Value, json};
use snakepay_bus::Topology;
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

#[tokio::test]
async fn a_poisoned_command_is_dead_lettered_and_its_replay_completes_the_payment() {
    let prefix = format!("test.{}.", random_hex(6));
    let broker = format!(
        "[broker]\nurl = \"{}\"\ntopology_prefix = \"{prefix}\"\ndelivery_limit = 2\n",
        amqp_url()
    );
    let api = TestApi::start_with("", &broker).await;
    let db = &api.db;
    let key_ring = api.dir.path().join("keyring.json");
    snakepay_vault::FileKeyProvider::create(
        &key_ring,
        &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
    )
    .unwrap();
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
    // The reconciler is held off: only the replay may complete the payment.
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
    let running = snakepay_integration::start(&integration).await.unwrap();
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

    // The cause: the shard refuses to record attempt outcomes (think of a
    // broken migration), so the integration service cannot commit.
    let (merchant, key) = merchant_with_key(&api, 1).await;
    let shard = db.store.shard(merchant.shard()).unwrap();
    for sql in [
        "create function poison() returns trigger language plpgsql as $$
         begin raise exception 'attempt outcomes cannot be recorded'; end $$",
        "create trigger poison before update on payment_attempts for each row execute function poison()",
    ] {
        sqlx::query(sql).execute(shard).await.unwrap();
    }
    let created: Value = api
        .client
        .post(format!("{}/v1/payment_intents", external.url()))
        .bearer_auth(&key)
        .form(&[
            ("amount", "4200"),
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
    let intent = created["id"].as_str().unwrap().to_owned();

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

    eventually("the replayed payment succeeds", || async {
        let status: String = sqlx::query_scalar("select status from payment_intents where id = $1")
            .bind(&intent)
            .fetch_one(shard)
            .await
            .unwrap();
        (status == "succeeded").then_some(())
    })
    .await;
    // Charged once, however often the command was delivered.
    let record: Value = api
        .client
        .get(format!("{}/_sim/operations", sim.base_url()))
        .bearer_auth(SIM_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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

    running.shutdown().await.unwrap();
    let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    Topology::new(&prefix, 2)
        .delete(&channel, &Topology::standard_queues())
        .await
        .unwrap();
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
