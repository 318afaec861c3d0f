//! The integration service's configuration: the shared sections plus
//! `[integration]` (its listener, the processor, egress, timeouts, the
//! circuit breaker, the reconciler and the relay).

use serde::Deserialize;
use snakepay_config::sections::{
    BrokerConfig, DatabaseConfig, HttpConfig, OutboundTlsConfig, RedisConfig, RegionConfig,
    TelemetryConfig, VaultConfig, in_range, require_scheme,
};
use snakepay_config::{ConfigError, Validate, key};
use url::Url;

#[derive(Debug, Clone, Deserialize)]
pub struct IntegrationConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    pub broker: BrokerConfig,
    pub vault: VaultConfig,
    /// Optional: with it, every committed change invalidates the External
    /// API's cached copy of the intent.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What outbound HTTPS calls (processor, webhooks) trust besides the
    /// public roots.
    #[serde(default)]
    pub tls: OutboundTlsConfig,
    pub integration: IntegrationSection,
}

/// `[integration]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSection {
    /// The listener for processor notifications and health checks.
    #[serde(flatten)]
    pub http: HttpConfig,
    /// The PostgreSQL role this service connects as (least privilege,
    /// docs/security.md 7.2), with the password of `[database]`'s URLs. The
    /// migrations create it and grant it only what this service needs.
    #[serde(default = "default_database_user")]
    pub database_user: String,
    pub processor_sim: SimProcessorSettings,
    #[serde(default)]
    pub egress: EgressSettings,
    /// The timeout of one processor call.
    #[serde(default = "defaults::call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Calls per operation and command, counting the first; every retry
    /// reuses the operation's idempotency key.
    #[serde(default = "defaults::call_attempts")]
    pub call_attempts: u32,
    #[serde(default = "defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    #[serde(default = "defaults::retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Consecutive unknown outcomes that open a processor's circuit.
    #[serde(default = "defaults::breaker_failure_threshold")]
    pub breaker_failure_threshold: u32,
    /// How long an open circuit refuses calls before one trial call.
    #[serde(default = "defaults::breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// How often the reconciler looks for payments left in flight.
    #[serde(default = "defaults::reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
    /// How long a payment must have been in flight before the reconciler
    /// asks the processor about it (longer than a normal call with retries,
    /// so it does not race the command handler).
    #[serde(default = "defaults::reconcile_after_ms")]
    pub reconcile_after_ms: u64,
    /// Payments per shard and reconciler pass.
    #[serde(default = "defaults::reconcile_batch")]
    pub reconcile_batch: u32,
    /// Run the outbox relay in this process.
    #[serde(default = "defaults::enabled")]
    pub relay_enabled: bool,
    /// The relay's pause when every shard's outbox is drained; it bounds the
    /// delay between a commit and its publication.
    #[serde(default = "defaults::relay_idle_poll_ms")]
    pub relay_idle_poll_ms: u64,
    /// How often the region gauges (outbox backlog and age, payments in
    /// flight, the ledger's trial balance, queue depths) are read.
    #[serde(default = "defaults::gauges_interval_ms")]
    pub gauges_interval_ms: u64,
    /// Merchant webhook delivery (`[integration.webhooks]`).
    #[serde(default)]
    pub webhooks: snakepay_webhooks::WebhookSettings,
}

/// The simulated processor (services/processor-sim), the first processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProcessorSettings {
    pub base_url: Url,
    pub api_key: String,
    /// The secret that signs its notifications (`Sim-Signature`).
    pub notification_secret: String,
}

/// Outbound traffic to processors leaves through the egress: an optional
/// HTTP proxy (the NAT gateway of the cloud design) and a host allow-list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// `http://host:port` of a forward proxy; none means direct.
    #[serde(default)]
    pub proxy_url: Option<Url>,
    /// Host names (or IP literals) processors may be reached at; a call to
    /// any other host is refused before a connection is made.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

mod defaults {
    pub fn call_timeout_ms() -> u64 {
        10_000
    }
    pub fn call_attempts() -> u32 {
        3
    }
    pub fn retry_backoff_ms() -> u64 {
        200
    }
    pub fn retry_backoff_max_ms() -> u64 {
        2_000
    }
    pub fn breaker_failure_threshold() -> u32 {
        5
    }
    pub fn breaker_open_ms() -> u64 {
        10_000
    }
    pub fn reconcile_interval_ms() -> u64 {
        5_000
    }
    pub fn reconcile_after_ms() -> u64 {
        60_000
    }
    pub fn reconcile_batch() -> u32 {
        100
    }
    pub fn enabled() -> bool {
        true
    }
    pub fn relay_idle_poll_ms() -> u64 {
        20
    }
    pub fn gauges_interval_ms() -> u64 {
        15_000
    }
}

impl Validate for IntegrationConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.broker.validate("broker")?;
        self.vault.validate("vault")?;
        if let Some(redis) = &self.redis {
            redis.validate("redis")?;
        }
        self.telemetry.validate("telemetry")?;
        self.tls.validate("tls")?;
        self.integration.validate("integration")
    }
}

fn default_database_user() -> String {
    snakepay_store::roles::INTEGRATION.to_owned()
}

impl Validate for IntegrationSection {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http.validate(prefix)?;
        if !snakepay_store::roles::is_valid_role_name(&self.database_user) {
            return Err(ConfigError::invalid(
                key(prefix, "database_user"),
                "must be a PostgreSQL role name (a-z, 0-9, _)",
            ));
        }
        let k = |name: &str| key(prefix, name);
        in_range(self.call_timeout_ms, 10, 120_000, &k("call_timeout_ms"))?;
        in_range(self.call_attempts, 1, 10, &k("call_attempts"))?;
        in_range(self.retry_backoff_ms, 1, 60_000, &k("retry_backoff_ms"))?;
        in_range(
            self.retry_backoff_max_ms,
            self.retry_backoff_ms,
            600_000,
            &k("retry_backoff_max_ms"),
        )?;
        in_range(
            self.breaker_failure_threshold,
            1,
            1_000,
            &k("breaker_failure_threshold"),
        )?;
        in_range(self.breaker_open_ms, 10, 3_600_000, &k("breaker_open_ms"))?;
        in_range(
            self.reconcile_interval_ms,
            10,
            3_600_000,
            &k("reconcile_interval_ms"),
        )?;
        in_range(
            self.reconcile_after_ms,
            self.call_timeout_ms,
            86_400_000,
            &k("reconcile_after_ms"),
        )?;
        in_range(self.reconcile_batch, 1, 10_000, &k("reconcile_batch"))?;
        in_range(self.relay_idle_poll_ms, 1, 10_000, &k("relay_idle_poll_ms"))?;
        in_range(
            self.gauges_interval_ms,
            100,
            600_000,
            &k("gauges_interval_ms"),
        )?;

        self.webhooks.validate(&k("webhooks"))?;
        let sim = &self.processor_sim;
        let sim_prefix = k("processor_sim");
        require_scheme(
            &sim.base_url,
            &["http", "https"],
            &key(&sim_prefix, "base_url"),
        )?;
        if sim.api_key.len() < 16 {
            return Err(ConfigError::invalid(
                key(&sim_prefix, "api_key"),
                "must be at least 16 characters",
            ));
        }
        if sim.notification_secret.len() < 16 {
            return Err(ConfigError::invalid(
                key(&sim_prefix, "notification_secret"),
                "must be at least 16 characters",
            ));
        }
        let egress_prefix = k("egress");
        if let Some(proxy) = &self.egress.proxy_url {
            require_scheme(proxy, &["http"], &key(&egress_prefix, "proxy_url"))?;
        }
        let host = sim.base_url.host_str().unwrap_or_default();
        if !self.egress.allows(host) {
            return Err(ConfigError::invalid(
                key(&egress_prefix, "allowed_hosts"),
                format!("must include the processor host {host:?}"),
            ));
        }
        Ok(())
    }
}

impl EgressSettings {
    pub fn allows(&self, host: &str) -> bool {
        !host.is_empty()
            && self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }
}
