//! What the tests start: the web service over a small fixture of built
//! assets, or over the real build with the whole pipeline behind it
//! (processor-sim, the integration service and the External API, each on
//! its own port with fresh databases).

use std::path::{Path, PathBuf};

use serde_json::Value;
use snakepay_domain::ids::RegionNumber;
use snakepay_http::ServerHandle;
use snakepay_integration::RunningIntegration;
use snakepay_processor_sim::{ProcessorSimSection, RunningSim, SimConfig};
use snakepay_store::merchants::{self, KeyHasher, KeyKind, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};
use snakepay_web::WebConfig;

pub const HASH_SECRET_BASE64: &str =
    "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
const SIM_API_KEY: &str = "sk_sim_web_0123456789abcdef";
const SIM_NOTIFICATION_SECRET: &str = "sim_notification_secret_web_0123456789";

/// The repository's root (tests run in the crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port that was free a moment ago, for a listener whose address another
/// component must know before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The web service's configuration, with `[web]` lines added.
pub fn web_config(port: u16, api_url: &str, assets: &Path, web_settings: &str) -> WebConfig {
    snakepay_config::from_toml_str(&format!(
        r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "{api_url}"
        [web]
        listen_addr = "127.0.0.1:{port}"
        assets_dir = "{assets}"
        {web_settings}
        "#,
        assets = assets.display(),
    ))
    .unwrap()
}

/// A stand-in for `web/dist`: the build's layout with made-up content, so
/// the server's own tests need no Node.js.
pub fn fixture_assets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, content: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write(
        "checkout/index.html",
        "<!doctype html><title>Checkout</title><script type=\"module\" src=\"/assets/checkout.0123456789.js\"></script>",
    );
    write("checkout/index.html.gz", "gzip copy of the page");
    write("demo/index.html", "<!doctype html><title>Demo Shop</title>");
    write("assets/checkout.0123456789.js", "console.log('checkout');");
    write("assets/checkout.0123456789.js.gz", "gzip copy");
    write("assets/checkout.0123456789.js.br", "brotli copy");
    dir
}

pub struct Keys {
    pub secret_key: String,
    pub publishable_key: String,
}

/// The External API over fresh databases, with a test-mode merchant.
pub struct Api {
    pub db: TestDatabases,
    pub server: ServerHandle,
    pub keys: Keys,
    _dir: tempfile::TempDir,
}

impl Api {
    /// `checkout_origin` is allowed CORS; `extra` adds sections (a broker).
    pub async fn start(checkout_origin: &str, external_api: &str, extra: &str) -> Api {
        let db = testing::fresh(2).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_ring = key_ring(dir.path());
        let config: snakepay_external_api::ExternalApiConfig =
            snakepay_config::from_toml_str(&format!(
                r#"{shared}
                [api_keys]
                hash_secret_base64 = "{HASH_SECRET_BASE64}"
                [external_api]
                listen_addr = "127.0.0.1:0"
                rate_limit_test_per_second = 100000
                checkout_origins = ["{checkout_origin}"]
                {external_api}
                {extra}
                "#,
                shared = shared_sections(&db, &key_ring),
            ))
            .unwrap();
        let server = snakepay_external_api::start(&config).await.unwrap();
        let keys = merchant(&db).await;
        Api {
            db,
            server,
            keys,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The demo merchant's key file, as `snakepay-admin merchant create`
    /// writes it.
    pub fn write_merchant_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("demo-merchant.json");
        std::fs::write(
            &path,
            serde_json::json!({
                "merchant": "acct_test",
                "shard": 0,
                "secret_key": self.keys.secret_key,
                "publishable_key": self.keys.publishable_key,
            })
            .to_string(),
        )
        .unwrap();
        path
    }

    /// `GET` with the secret key.
    pub async fn get(&self, path: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(&self.keys.secret_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn key_ring(dir: &Path) -> PathBuf {
    let path = dir.join("keyring.json");
    snakepay_vault::FileKeyProvider::create(
        &path,
        &snakepay_vault::KeyRing::generate("kek-test").unwrap(),
    )
    .unwrap();
    path
}

fn shared_sections(db: &TestDatabases, key_ring: &Path) -> String {
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
        [vault]
        key_ring_path = "{key_ring}"
        "#,
        control = db.control_url(),
        shards = shards.join(", "),
        key_ring = key_ring.display(),
    )
}

async fn merchant(db: &TestDatabases) -> Keys {
    let control = db.store.control();
    let shard = merchants::least_loaded_shard(control, 2).await.unwrap();
    let merchant = merchants::create_merchant(
        control,
        "eu-1",
        RegionNumber(1),
        shard,
        &NewMerchant {
            legal_name: "Demo Shop".into(),
            country: "DE".into(),
        },
    )
    .await
    .unwrap();
    use base64::Engine;
    let hasher = KeyHasher::new(
        &base64::engine::general_purpose::STANDARD
            .decode(HASH_SECRET_BASE64)
            .unwrap(),
    )
    .unwrap();
    let key = |kind| {
        let hasher = &hasher;
        async move {
            merchants::create_api_key(control, hasher, RegionNumber(1), merchant.id, kind, false)
                .await
                .unwrap()
                .key
        }
    };
    Keys {
        secret_key: key(KeyKind::Secret).await,
        publishable_key: key(KeyKind::Publishable).await,
    }
}

pub fn amqp_url() -> String {
    let server = std::env::var("SNAKEPAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    format!("{}/snakepay_test", server.trim_end_matches('/'))
}

fn random_hex(bytes: usize) -> String {
    let mut random = vec![0_u8; bytes];
    getrandom::fill(&mut random).unwrap();
    hex::encode(random)
}

/// How long the External API waits for an outcome in [`Stack`]: short, so
/// that the slow test card is answered `processing` and the page polls.
pub const WAIT_FOR_OUTCOME_MS: u64 = 1_500;
/// How long the simulator takes over the slow test card.
pub const SLOW_APPROVAL_MS: u64 = 4_000;

/// The whole platform behind a web service on `web_port`.
pub struct Stack {
    pub api: Api,
    pub web: ServerHandle,
    integration: RunningIntegration,
    _sim: RunningSim,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Serves the assets in `assets` (a real build).
    pub async fn start(assets: &Path) -> Stack {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SNAKEPAY_TEST_LOG"))
            .with_test_writer()
            .try_init();
        let integration_port = free_port();
        let web_port = free_port();
        let sim = snakepay_processor_sim::start(SimConfig {
            processor_sim: ProcessorSimSection {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                api_key: SIM_API_KEY.to_owned(),
                slow_ms: SLOW_APPROVAL_MS,
                notification_url: Some(
                    format!("http://127.0.0.1:{integration_port}/v1/processor-notifications/sim")
                        .parse()
                        .unwrap(),
                ),
                notification_secret: Some(SIM_NOTIFICATION_SECRET.to_owned()),
                notification_backoff_ms: 50,
                ..ProcessorSimSection::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();

        let prefix = format!("test.{}.", random_hex(6));
        let broker = format!(
            "[broker]\nurl = \"{amqp}\"\ntopology_prefix = \"{prefix}\"\n[redis]\nurl = \"{redis}\"\n",
            amqp = amqp_url(),
            redis = std::env::var("SNAKEPAY_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into()),
        );
        let api = Api::start(
            &format!("http://127.0.0.1:{web_port}"),
            &format!("wait_for_outcome_ms = {WAIT_FOR_OUTCOME_MS}"),
            &broker,
        )
        .await;

        let dir = tempfile::tempdir().unwrap();
        let integration_config: snakepay_integration::IntegrationConfig =
            snakepay_config::from_toml_str(&format!(
                r#"{shared}
                {broker}
                [integration]
                listen_addr = "127.0.0.1:{integration_port}"
                call_timeout_ms = 10000
                reconcile_interval_ms = 500
                relay_idle_poll_ms = 10
                egress.allowed_hosts = ["127.0.0.1"]
                [integration.processor_sim]
                base_url = "{sim_url}"
                api_key = "{SIM_API_KEY}"
                notification_secret = "{SIM_NOTIFICATION_SECRET}"
                "#,
                shared = shared_sections(&api.db, &api._dir.path().join("keyring.json")),
                sim_url = sim.base_url(),
            ))
            .unwrap();
        let integration = snakepay_integration::start(&integration_config)
            .await
            .unwrap();

        let merchant_file = api.write_merchant_file(dir.path());
        let web = snakepay_web::start(&web_config(
            web_port,
            &api.url(),
            assets,
            &format!(
                "[web.demo]\nmerchant_file = \"{}\"",
                merchant_file.display()
            ),
        ))
        .await
        .unwrap();
        Stack {
            api,
            web,
            integration,
            _sim: sim,
            _dir: dir,
        }
    }

    /// Stops the integration service's background work before the
    /// databases it polls are dropped.
    pub async fn stop(self) {
        self.integration.shutdown().await.unwrap();
    }
}
