//! A running Internal API on port 0 with its own databases and signing key.

use reqwest::Method;
use serde_json::Value;
use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use snakepay_http::ServerHandle;
use snakepay_internal_api::tokens::{Role, SigningKey, TokenRequest};
use snakepay_internal_api::{InternalApiConfig, start};
use snakepay_store::merchants::{self, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};

pub const HASH_SECRET_BASE64: &str =
    "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
pub const REGION: RegionNumber = RegionNumber(1);
pub const ISSUER: &str = "snakepay-test";
pub const AUDIENCE: &str = "snakepay-internal-api";

pub struct TestApi {
    pub db: TestDatabases,
    pub server: ServerHandle,
    pub client: reqwest::Client,
    pub key: SigningKey,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl TestApi {
    pub async fn start() -> TestApi {
        TestApi::start_with("", "").await
    }

    /// Extra `[internal_api]` lines and extra sections.
    pub async fn start_with(section_extra: &str, other_sections: &str) -> TestApi {
        let db = testing::fresh(2).await.unwrap();
        TestApi::start_on(db, section_extra, other_sections).await
    }

    pub async fn start_on(db: TestDatabases, section_extra: &str, other_sections: &str) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let jwks = dir.path().join("jwks.json");
        key.create_files(&dir.path().join("signing-key.json"), &jwks)
            .unwrap();
        let toml = config_toml(&db, &jwks, section_extra, other_sections);
        let config: InternalApiConfig = snakepay_config::from_toml_str(&toml).unwrap();
        let server = start(&config).await.unwrap();
        TestApi {
            db,
            server,
            client: reqwest::Client::new(),
            key,
            dir,
        }
    }

    pub fn token_with(&self, role: Role, subject: &str, mfa: bool, now: i64, ttl: i64) -> String {
        self.key
            .issue(&TokenRequest {
                issuer: ISSUER,
                audience: AUDIENCE,
                subject,
                role,
                mfa,
                now,
                ttl_seconds: ttl,
            })
            .unwrap()
    }

    pub fn token(&self, role: Role, subject: &str) -> String {
        self.token_with(role, subject, false, snakepay_internal_api::now(), 600)
    }

    pub fn mfa_token(&self, role: Role, subject: &str) -> String {
        self.token_with(role, subject, true, snakepay_internal_api::now(), 600)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub async fn call(
        &self,
        method: Method,
        token: Option<&str>,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, Some(token), path, None).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::POST, Some(token), path, Some(body)).await
    }

    /// A merchant made directly in the store (not through the API).
    pub async fn merchant_on(&self, shard: u8) -> MerchantId {
        merchants::create_merchant(
            self.db.store.control(),
            "eu-1",
            REGION,
            ShardNumber(shard),
            &NewMerchant {
                legal_name: "Test Shop".into(),
                country: "DE".into(),
            },
        )
        .await
        .unwrap()
        .id
    }
}

pub fn config_toml(
    db: &TestDatabases,
    jwks: &std::path::Path,
    section_extra: &str,
    other_sections: &str,
) -> String {
    let shards: Vec<String> = db.shard_urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "http://127.0.0.1"
        [database]
        control_url = "{control}"
        shard_urls = [{shards}]
        max_connections = 8
        [api_keys]
        hash_secret_base64 = "{HASH_SECRET_BASE64}"
        [internal_api]
        listen_addr = "127.0.0.1:0"
        jwks = "{jwks}"
        token_issuer = "{ISSUER}"
        token_audience = "{AUDIENCE}"
        {section_extra}
        {other_sections}
        "#,
        control = db.control_url(),
        shards = shards.join(", "),
        jwks = jwks.display(),
    )
}

/// An External API over the same databases, started in-process.
pub async fn external_api(api: &TestApi) -> snakepay_http::ServerHandle {
    external_api_with(api, "").await
}

/// [`external_api`] with extra sections (e.g. `[redis]`).
pub async fn external_api_with(api: &TestApi, other_sections: &str) -> snakepay_http::ServerHandle {
    let key_ring = api.dir.path().join("keyring.json");
    snakepay_vault::FileKeyProvider::create(
        &key_ring,
        &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
    )
    .unwrap();
    let shards: Vec<String> = api
        .db
        .shard_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let toml = format!(
        r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "http://127.0.0.1"
        [database]
        control_url = "{}"
        shard_urls = [{}]
        max_connections = 4
        [api_keys]
        hash_secret_base64 = "{HASH_SECRET_BASE64}"
        [vault]
        key_ring_path = "{}"
        [external_api]
        listen_addr = "127.0.0.1:0"
        {other_sections}
        "#,
        api.db.control_url(),
        shards.join(", "),
        key_ring.display()
    );
    let config: snakepay_external_api::ExternalApiConfig =
        snakepay_config::from_toml_str(&toml).unwrap();
    snakepay_external_api::start(&config).await.unwrap()
}

/// A succeeded USD payment of `amount` for the merchant with test key `key`:
/// created and confirmed through the External API, then approved the way
/// the integration service commits a processor's answer (domain
/// transition, intent, attempt and journal in one transaction).
pub async fn succeeded_payment(
    api: &TestApi,
    external: &ServerHandle,
    merchant: MerchantId,
    key: &str,
    amount: i64,
) -> String {
    use snakepay_domain::payment_intent::{
        self, AuthorizationOutcome, IntentCommand, PendingOperation,
    };
    use snakepay_store::intents;
    let reply = api
        .client
        .post(format!("{}/v1/payment_intents", external.url()))
        .bearer_auth(key)
        .form(&[
            ("amount", amount.to_string().as_str()),
            ("currency", "usd"),
            ("confirm", "true"),
            ("payment_method", "pm_card_visa"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let pool = api.db.store.shard(merchant.shard()).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let intent_id = snakepay_domain::ids::PaymentIntentId::parse(&id).unwrap();
    let mut record = intents::load_for_update(&mut tx, intent_id, merchant, false)
        .await
        .unwrap()
        .unwrap();
    let Some(PendingOperation::Authorize { attempt, .. }) = record.intent.pending else {
        panic!("no authorization pending on {id}: {body}");
    };
    let transition = payment_intent::apply(
        &record.intent,
        IntentCommand::AuthorizationResult {
            attempt,
            outcome: AuthorizationOutcome::Approved,
            now: 1_800_000_000,
        },
    )
    .unwrap();
    record.intent = transition.intent;
    intents::update(&mut tx, &mut record).await.unwrap();
    sqlx::query("update payment_attempts set status = 'approved' where id = $1")
        .bind(attempt.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    if let Some(journal) = &transition.effects.journal {
        let merchant_id = merchant.to_string();
        snakepay_store::ledger::post(
            &mut tx,
            snakepay_store::ledger::JournalContext {
                merchant_id: &merchant_id,
                livemode: false,
                payment_intent_id: Some(&id),
                refund_id: None,
                description: "test settlement",
            },
            journal,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    id
}

/// A merchant with a test secret key.
pub async fn merchant_with_key(api: &TestApi, shard: u8) -> (MerchantId, String) {
    let merchant = api.merchant_on(shard).await;
    let hasher = snakepay_store::merchants::KeyHasher::new(&{
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(HASH_SECRET_BASE64)
            .unwrap()
    })
    .unwrap();
    let key = merchants::create_api_key(
        api.db.store.control(),
        &hasher,
        REGION,
        merchant,
        snakepay_store::merchants::KeyKind::Secret,
        false,
    )
    .await
    .unwrap();
    (merchant, key.key)
}

/// A `[redis]` section for the test Redis.
pub fn redis_section() -> String {
    let url = std::env::var("SNAKEPAY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    format!(
        "[redis]\nurl = \"{}/0\"\ntimeout_ms = 200\n",
        url.trim_end_matches('/')
    )
}
