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
