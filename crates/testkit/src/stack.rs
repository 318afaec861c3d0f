//! The platform as it is deployed: processor-sim, the integration service
//! and the External API as separate processes, one configuration file, JSON
//! logs to one file per service, real PostgreSQL, Redis and RabbitMQ.
//!
//! A test builds a [`Stack`] with [`StackBuilder`], then can stop, kill
//! (SIGKILL) and start each service by [`ServiceName`], give one service its
//! own settings (environment overrides such as pointing it at a fault proxy),
//! and read every service's log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use snakepay_domain::ids::RegionNumber;
use snakepay_store::Store;
use snakepay_store::merchants::{self, KeyHasher, KeyKind, NewMerchant};
use snakepay_store::testing::{self, TestDatabases};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::deps::OwnedPostgres;
use crate::{free_port, random_hex};

/// The API-key hash secret every stack uses (test data only).
pub const HASH_SECRET_BASE64: &str =
    "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=";
pub const SIM_API_KEY: &str = "sk_sim_stack_0123456789abcdef";
pub const SIM_NOTIFICATION_SECRET: &str = "sim_notification_secret_stack_0123";
/// How long a service may take to become ready after it is started.
pub const READY_WAIT: Duration = Duration::from_secs(60);
/// How long a stopped service may take to exit after SIGTERM before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
const SHARD_COUNT: usize = 2;

/// The services a stack runs, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceName {
    ProcessorSim,
    Integration,
    ExternalApi,
}

impl ServiceName {
    pub const ALL: [ServiceName; 3] = [
        ServiceName::ProcessorSim,
        ServiceName::Integration,
        ServiceName::ExternalApi,
    ];

    /// The binary's (and the log's) name.
    pub fn binary(self) -> &'static str {
        match self {
            ServiceName::ProcessorSim => "snakepay-processor-sim",
            ServiceName::Integration => "snakepay-integration",
            ServiceName::ExternalApi => "snakepay-external-api",
        }
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub api: u16,
    pub api_metrics: u16,
    pub integration: u16,
    pub integration_metrics: u16,
    pub sim: u16,
    pub sim_metrics: u16,
}

impl Ports {
    /// Free ports for every listener.
    pub fn pick() -> Ports {
        Ports {
            api: free_port(),
            api_metrics: free_port(),
            integration: free_port(),
            integration_metrics: free_port(),
            sim: free_port(),
            sim_metrics: free_port(),
        }
    }

    /// The port whose `/readyz` says the service is ready.
    pub fn ready(&self, service: ServiceName) -> u16 {
        match service {
            ServiceName::ProcessorSim => self.sim,
            ServiceName::Integration => self.integration,
            ServiceName::ExternalApi => self.api,
        }
    }

    pub fn metrics(&self, service: ServiceName) -> u16 {
        match service {
            ServiceName::ProcessorSim => self.sim_metrics,
            ServiceName::Integration => self.integration_metrics,
            ServiceName::ExternalApi => self.api_metrics,
        }
    }
}

/// Where the stack's dependencies are. The defaults are the shared servers
/// of the test environment (`SNAKEPAY_TEST_*`), with per-stack databases,
/// broker names and Redis keys.
#[derive(Debug, Default)]
pub struct StackBuilder {
    binaries: Option<PathBuf>,
    ports: Option<Ports>,
    postgres: Option<String>,
    redis_url: Option<String>,
    amqp_url: Option<String>,
    extra_integration: Vec<(String, String)>,
    env: BTreeMap<ServiceName, Vec<(String, String)>>,
}

impl StackBuilder {
    /// The directory holding the service binaries; by default the one above
    /// the running test's `deps/` directory (where cargo puts a workspace's
    /// binaries).
    pub fn binaries(mut self, dir: impl Into<PathBuf>) -> Self {
        self.binaries = Some(dir.into());
        self
    }

    /// Listen on these ports (picked beforehand, e.g. to put a fault proxy
    /// in front of one) instead of fresh ones.
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Databases on a test-owned PostgreSQL instead of the shared server.
    pub fn postgres(mut self, postgres: &OwnedPostgres) -> Self {
        self.postgres = Some(postgres.server_url());
        self
    }

    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// The broker URL including its vhost.
    pub fn amqp_url(mut self, url: impl Into<String>) -> Self {
        self.amqp_url = Some(url.into());
        self
    }

    /// An extra `key = value` (TOML value) in `[integration]`.
    pub fn integration_setting(mut self, key: &str, toml_value: &str) -> Self {
        self.extra_integration
            .push((key.to_owned(), toml_value.to_owned()));
        self
    }

    /// A setting for one service only, as its environment override: the
    /// dotted key `redis.url` becomes `SNAKEPAY_REDIS__URL`.
    pub fn service_setting(mut self, service: ServiceName, key: &str, value: &str) -> Self {
        self.env
            .entry(service)
            .or_default()
            .push(setting_variable(key, value));
        self
    }

    pub async fn start(self) -> anyhow::Result<Stack> {
        Stack::start(self).await
    }
}

fn setting_variable(key: &str, value: &str) -> (String, String) {
    (
        format!("SNAKEPAY_{}", key.replace('.', "__").to_uppercase()),
        value.to_owned(),
    )
}

/// The default binaries directory: `target/<profile>/` above the test
/// executable's `deps/`.
fn default_binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let deps = exe
        .parent()
        .context("test executable without a directory")?;
    let dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().context("deps without a parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// One service process; its output appends to its log file.
struct Process {
    child: Child,
}

/// A service slot: how to start it, and its process while it runs.
struct Service {
    name: ServiceName,
    binary: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    process: Option<Process>,
}

impl Service {
    fn spawn(&mut self, config: &Path) -> anyhow::Result<()> {
        if !self.binary.exists() {
            bail!(
                "{} is missing: build the workspace's binaries (cargo build --workspace --bins)",
                self.binary.display()
            );
        }
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
        };
        let child = Command::new(&self.binary)
            .env("SNAKEPAY_CONFIG", config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?))
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.process = Some(Process { child });
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// Where the stack's databases live: per-test databases on the shared server
/// (dropped with the stack), or databases on a test-owned server.
enum Databases {
    Shared(#[allow(dead_code)] TestDatabases),
    Owned,
}

pub struct Stack {
    pub ports: Ports,
    pub store: Store,
    /// The processor-sim's base URL and API key (for `/_sim`).
    pub sim_url: String,
    pub redis_url: String,
    pub amqp_url: String,
    /// The broker names' prefix (`stack.<hex>.`).
    pub topology_prefix: String,
    config_path: PathBuf,
    services: Vec<Service>,
    client: reqwest::Client,
    _databases: Databases,
    dir: tempfile::TempDir,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// Every service on the shared dependencies.
    pub async fn start_default() -> anyhow::Result<Stack> {
        StackBuilder::default().start().await
    }

    async fn start(builder: StackBuilder) -> anyhow::Result<Stack> {
        let (databases, store, control_url, shard_urls) = match &builder.postgres {
            None => {
                let db = testing::fresh(SHARD_COUNT).await?;
                let store = db.store.clone();
                let control = db.control_url();
                let shards = db.shard_urls();
                (Databases::Shared(db), store, control, shards)
            }
            Some(server) => {
                let (store, control, shards) = owned_databases(server).await?;
                (Databases::Owned, store, control, shards)
            }
        };
        let dir = tempfile::tempdir()?;
        let key_ring = dir.path().join("keyring.json");
        snakepay_vault::FileKeyProvider::create(
            &key_ring,
            &snakepay_vault::KeyRing::generate("kek-test")?,
        )?;
        let ports = builder.ports.unwrap_or_else(Ports::pick);
        let amqp_url = builder.amqp_url.clone().unwrap_or_else(|| {
            format!(
                "{}/snakepay_test",
                std::env::var("SNAKEPAY_TEST_AMQP_URL")
                    .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned())
                    .trim_end_matches('/')
            )
        });
        let redis_url = builder.redis_url.clone().unwrap_or_else(|| {
            std::env::var("SNAKEPAY_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
        });
        let topology_prefix = format!("stack.{}.", random_hex(6));
        let shards: Vec<String> = shard_urls.iter().map(|u| format!("\"{u}\"")).collect();
        let extra: String = builder
            .extra_integration
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let config = format!(
            r#"
[region]
code = "eu-1"
number = 1
public_api_url = "http://127.0.0.1:{api}"
[database]
control_url = "{control_url}"
shard_urls = [{shards}]
max_connections = 8
[redis]
url = "{redis_url}"
[broker]
url = "{amqp_url}"
topology_prefix = "{topology_prefix}"
[api_keys]
hash_secret_base64 = "{HASH_SECRET_BASE64}"
[vault]
key_ring_path = "{key_ring}"
[telemetry]
log_level = "info"
log_format = "json"
[external_api]
listen_addr = "127.0.0.1:{api}"
metrics_addr = "127.0.0.1:{api_metrics}"
rate_limit_test_per_second = 100000
[processor_sim]
listen_addr = "127.0.0.1:{sim}"
metrics_addr = "127.0.0.1:{sim_metrics}"
api_key = "{SIM_API_KEY}"
journal_path = "{journal}"
notification_url = "http://127.0.0.1:{integration}/v1/processor-notifications/sim"
notification_secret = "{SIM_NOTIFICATION_SECRET}"
[integration]
listen_addr = "127.0.0.1:{integration}"
metrics_addr = "127.0.0.1:{integration_metrics}"
relay_idle_poll_ms = 10
gauges_interval_ms = 200
{extra}
[integration.processor_sim]
base_url = "http://127.0.0.1:{sim}"
api_key = "{SIM_API_KEY}"
notification_secret = "{SIM_NOTIFICATION_SECRET}"
[integration.egress]
allowed_hosts = ["127.0.0.1"]
[integration.webhooks]
allow_private_networks = true
"#,
            api = ports.api,
            api_metrics = ports.api_metrics,
            sim = ports.sim,
            sim_metrics = ports.sim_metrics,
            integration = ports.integration,
            integration_metrics = ports.integration_metrics,
            shards = shards.join(", "),
            key_ring = key_ring.display(),
            // The processor keeps its record across restarts, as a real one
            // does.
            journal = dir.path().join("sim-journal.jsonl").display(),
        );
        let config_path = dir.path().join("stack.toml");
        std::fs::write(&config_path, config)?;

        let binaries = match builder.binaries {
            Some(dir) => dir,
            None => default_binaries()?,
        };
        let services = ServiceName::ALL
            .into_iter()
            .map(|name| Service {
                name,
                binary: binaries.join(name.binary()),
                log: dir.path().join(format!("{}.log", name.binary())),
                env: builder.env.get(&name).cloned().unwrap_or_default(),
                process: None,
            })
            .collect();
        let mut stack = Stack {
            ports,
            store,
            sim_url: format!("http://127.0.0.1:{}", ports.sim),
            redis_url,
            amqp_url,
            topology_prefix,
            config_path,
            services,
            client: reqwest::Client::new(),
            _databases: databases,
            dir,
        };
        for name in ServiceName::ALL {
            stack.start_service(name).await?;
        }
        Ok(stack)
    }

    /// The stack's working directory (config, key ring, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    fn service(&mut self, name: ServiceName) -> &mut Service {
        let index = ServiceName::ALL
            .iter()
            .position(|n| *n == name)
            .unwrap_or_default();
        // `services` holds one slot per ServiceName, in ALL's order.
        #[allow(clippy::indexing_slicing)]
        &mut self.services[index]
    }

    /// Starts a stopped service and waits until it is ready.
    pub async fn start_service(&mut self, name: ServiceName) -> anyhow::Result<()> {
        let config = self.config_path.clone();
        let service = self.service(name);
        if service.process.is_some() {
            bail!("{name} is already running");
        }
        service.spawn(&config)?;
        self.wait_ready(name).await
    }

    /// Kills a service with SIGKILL: no shutdown, in-flight work is cut.
    pub fn kill_service(&mut self, name: ServiceName) -> anyhow::Result<()> {
        if let Some(mut process) = self.service(name).process.take() {
            process.child.kill()?;
            process.child.wait()?;
        }
        Ok(())
    }

    /// Stops a service with SIGTERM (its graceful shutdown), killing it if
    /// it has not exited within a grace period.
    pub async fn stop_service(&mut self, name: ServiceName) -> anyhow::Result<()> {
        if let Some(mut process) = self.service(name).process.take() {
            signal(process.child.id(), "TERM")?;
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while process.child.try_wait()?.is_none() {
                if tokio::time::Instant::now() > deadline {
                    process.child.kill()?;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// SIGKILL, then start again and wait until ready.
    pub async fn kill_and_restart(&mut self, name: ServiceName) -> anyhow::Result<()> {
        self.kill_service(name)?;
        self.start_service(name).await
    }

    /// Sets (or, with `None`, removes) a setting for one service; it takes
    /// effect at the service's next start.
    pub fn set_service_setting(&mut self, name: ServiceName, key: &str, value: Option<&str>) {
        let (variable, value_text) = setting_variable(key, value.unwrap_or_default());
        let env = &mut self.service(name).env;
        env.retain(|(k, _)| *k != variable);
        if value.is_some() {
            env.push((variable, value_text));
        }
    }

    pub fn is_running(&self, name: ServiceName) -> bool {
        self.services
            .iter()
            .any(|s| s.name == name && s.process.is_some())
    }

    async fn wait_ready(&mut self, name: ServiceName) -> anyhow::Result<()> {
        let port = self.ports.ready(name);
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            let ready = self
                .client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            for service in &mut self.services {
                if let Some(process) = &mut service.process
                    && let Some(status) = process.child.try_wait()?
                {
                    bail!(
                        "{} exited ({status}):\n{}",
                        service.name,
                        std::fs::read_to_string(&service.log).unwrap_or_default()
                    );
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} (port {port}) never became ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new merchant with a test-mode secret key.
    pub async fn secret_key(&self) -> anyhow::Result<String> {
        let control = self.store.control();
        let shard = merchants::least_loaded_shard(control, SHARD_COUNT).await?;
        let merchant = merchants::create_merchant(
            control,
            "eu-1",
            RegionNumber(1),
            shard,
            &NewMerchant {
                legal_name: "Stack Shop".into(),
                country: "DE".into(),
            },
        )
        .await?;
        use base64::Engine as _;
        let secret = base64::engine::general_purpose::STANDARD.decode(HASH_SECRET_BASE64)?;
        Ok(merchants::create_api_key(
            control,
            &KeyHasher::new(&secret)?,
            RegionNumber(1),
            merchant.id,
            KeyKind::Secret,
            false,
        )
        .await?
        .key)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.api)
    }

    /// A form POST to the External API: status and JSON body.
    pub async fn post(
        &self,
        key: &str,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .client
            .post(self.api_url(path))
            .bearer_auth(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    pub async fn get(&self, key: &str, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(self.api_url(path))
            .bearer_auth(key)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Changes processor-sim's fault settings (`POST /_sim/config`).
    pub async fn sim_config(&self, patch: Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}/_sim/config", self.sim_url))
            .bearer_auth(SIM_API_KEY)
            .json(&patch)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("/_sim/config answered {status}: {body}");
        }
        Ok(body)
    }

    /// Each running service's `/metrics` text, by service.
    pub async fn scrape(&self) -> anyhow::Result<BTreeMap<ServiceName, String>> {
        let mut scrapes = BTreeMap::new();
        for name in ServiceName::ALL {
            let text = self
                .client
                .get(format!(
                    "http://127.0.0.1:{}/metrics",
                    self.ports.metrics(name)
                ))
                .send()
                .await?
                .text()
                .await?;
            scrapes.insert(name, text);
        }
        Ok(scrapes)
    }

    /// The path of a service's log (every run of it, appended).
    pub fn log_path(&self, name: ServiceName) -> PathBuf {
        self.dir.path().join(format!("{}.log", name.binary()))
    }

    /// A service's log so far.
    pub fn log(&self, name: ServiceName) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Every service's log, by service.
    pub fn logs(&self) -> BTreeMap<ServiceName, String> {
        ServiceName::ALL
            .into_iter()
            .map(|name| (name, self.log(name)))
            .collect()
    }

    /// A service's log as JSON lines (lines that are not JSON are skipped).
    pub fn log_lines(&self, name: ServiceName) -> Vec<Value> {
        self.log(name)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for Stack {
    /// A failing test keeps the directory (config and every service's log)
    /// and says where it is.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = std::mem::replace(
                &mut self.dir,
                match tempfile::tempdir() {
                    Ok(dir) => dir,
                    Err(_) => return,
                },
            );
            eprintln!("stack logs kept in {}", kept.keep().display());
        }
    }
}

/// Sends a signal with kill(1): the workspace forbids `unsafe`, so no libc.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid}: {status}");
    }
    Ok(())
}

/// A control database and the shards on a test-owned server, migrated.
async fn owned_databases(server: &str) -> anyhow::Result<(Store, String, Vec<String>)> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    let mut names = vec!["snakepay_control".to_owned()];
    names.extend((0..SHARD_COUNT).map(|n| format!("snakepay_shard_{n}")));
    for name in &names {
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await.ok();
    let pool = |name: &str| -> anyhow::Result<sqlx::PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(PgConnectOptions::from_str(&format!("{server}/{name}"))?))
    };
    let (control_name, shard_names) = names.split_first().context("no databases")?;
    let control = pool(control_name)?;
    let shards = shard_names
        .iter()
        .map(|name| pool(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = Store::from_pools(control, shards);
    snakepay_store::migrate::run_all(&store).await?;
    Ok((
        store,
        format!("{server}/{control_name}"),
        shard_names
            .iter()
            .map(|name| format!("{server}/{name}"))
            .collect(),
    ))
}
