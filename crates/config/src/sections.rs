//! The configuration sections services share. Every limit has a name and a
//! unit, and a default that suits the local run on a 2-core machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use crate::{ConfigError, Validate, key};

/// A URL that may carry a password (database, Redis, broker). `Debug` and
/// `Display` mask the password so a logged config never leaks it; the
/// connection code calls [`SecretUrl::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn expose(&self) -> &Url {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.scheme()
    }

    fn masked(&self) -> String {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only fails for URLs that cannot have credentials, which have none.
            let _ = shown.set_password(Some("****"));
        }
        shown.to_string()
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretUrl({})", self.masked())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Which regional deployment this process belongs to. Regions never talk to
/// each other; IDs carry the region number so a request for another region's
/// object is recognised and redirected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Short lower-case code, e.g. `eu-1`.
    pub code: String,
    /// The number encoded in IDs (0–255); unique per region.
    pub number: u8,
    /// The public base URL of this region's External API, named in errors
    /// that send a merchant to its home region.
    pub public_api_url: Url,
}

impl Validate for RegionConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let valid_code = !self.code.is_empty()
            && self.code.len() <= 16
            && self
                .code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_code {
            return Err(ConfigError::invalid(
                key(prefix, "code"),
                format!(
                    "must be 1–16 characters of a-z, 0-9 and '-' (got {:?})",
                    self.code
                ),
            ));
        }
        require_scheme(
            &self.public_api_url,
            &["https", "http"],
            &key(prefix, "public_api_url"),
        )
    }
}

/// PostgreSQL: the region's control database and its shard databases.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub control_url: SecretUrl,
    /// One URL per shard; shard N is `shard_urls[N]`.
    pub shard_urls: Vec<SecretUrl>,
    /// Connections per pool (each shard and the control database has one).
    /// About 16 per database server saturates 2 cores (DESIGN.md §11).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    #[serde(default = "defaults::acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    #[serde(default = "defaults::statement_timeout_ms")]
    pub statement_timeout_ms: u64,
}

/// Shards are numbered by one byte in every ID.
pub const MAX_SHARDS: usize = 256;
pub const MAX_POOL_CONNECTIONS: u32 = 256;

impl Validate for DatabaseConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        require_scheme(
            self.control_url.expose(),
            &["postgres", "postgresql"],
            &key(prefix, "control_url"),
        )?;
        if self.shard_urls.is_empty() || self.shard_urls.len() > MAX_SHARDS {
            return Err(ConfigError::invalid(
                key(prefix, "shard_urls"),
                format!(
                    "must list 1 to {MAX_SHARDS} shard databases (got {})",
                    self.shard_urls.len()
                ),
            ));
        }
        for (index, url) in self.shard_urls.iter().enumerate() {
            require_scheme(
                url.expose(),
                &["postgres", "postgresql"],
                &format!("{}[{index}]", key(prefix, "shard_urls")),
            )?;
        }
        in_range(
            self.max_connections,
            1,
            MAX_POOL_CONNECTIONS,
            &key(prefix, "max_connections"),
        )?;
        in_range(
            self.acquire_timeout_ms,
            1,
            60_000,
            &key(prefix, "acquire_timeout_ms"),
        )?;
        in_range(
            self.statement_timeout_ms,
            1,
            600_000,
            &key(prefix, "statement_timeout_ms"),
        )
    }
}

/// Redis, the cache: a short timeout, because a slow cache must degrade to
/// the database rather than slow every request down.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: SecretUrl,
    #[serde(default = "defaults::redis_timeout_ms")]
    pub timeout_ms: u64,
}

impl Validate for RedisConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        require_scheme(self.url.expose(), &["redis", "rediss"], &key(prefix, "url"))?;
        in_range(self.timeout_ms, 1, 10_000, &key(prefix, "timeout_ms"))
    }
}

/// RabbitMQ, the broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub url: SecretUrl,
    /// Unacknowledged messages per consumer: bounds memory and redelivery work.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: u16,
    /// Deliveries before a message goes to the dead-letter queue.
    #[serde(default = "defaults::delivery_limit")]
    pub delivery_limit: u32,
    /// Put before every exchange and queue name. Empty in deployments; tests
    /// give each run its own prefix so runs never share queues.
    #[serde(default)]
    pub topology_prefix: String,
}

impl Validate for BrokerConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        require_scheme(self.url.expose(), &["amqp", "amqps"], &key(prefix, "url"))?;
        in_range(self.prefetch, 1, 10_000, &key(prefix, "prefetch"))?;
        in_range(self.delivery_limit, 1, 100, &key(prefix, "delivery_limit"))?;
        let valid_prefix = self.topology_prefix.len() <= 64
            && self.topology_prefix.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
            });
        if !valid_prefix {
            return Err(ConfigError::invalid(
                key(prefix, "topology_prefix"),
                "must be at most 64 characters of a-z, 0-9, '.', '-' and '_'".to_owned(),
            ));
        }
        Ok(())
    }
}

/// An HTTP listener and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen_addr: SocketAddr,
    #[serde(default = "defaults::body_limit_bytes")]
    pub body_limit_bytes: usize,
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests the listener works on at once; more are answered 503
    /// (retryable) at once instead of queueing (load shedding).
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests before closing.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// The admin listener for Prometheus (`GET /metrics`), on a port of its
    /// own that no public load balancer reaches. None: no metrics served.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve TLS (1.2 and 1.3 only) on the listener and the admin listener
    /// (`[….tls]`). None: plain HTTP, for tests and behind a load balancer
    /// that terminates TLS.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

impl Validate for HttpConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Some(tls) = &self.tls {
            tls.validate(&key(prefix, "tls"))?;
        }
        in_range(
            self.body_limit_bytes,
            1,
            16 * 1024 * 1024,
            &key(prefix, "body_limit_bytes"),
        )?;
        in_range(
            self.request_timeout_ms,
            1,
            300_000,
            &key(prefix, "request_timeout_ms"),
        )?;
        in_range(
            self.max_in_flight,
            1,
            1_000_000,
            &key(prefix, "max_in_flight"),
        )?;
        in_range(
            self.shutdown_grace_ms,
            0,
            300_000,
            &key(prefix, "shutdown_grace_ms"),
        )
    }
}

/// A listener's certificate and key, PEM files. The paths are checked here;
/// the files are parsed when the listener starts (crates/http, `tls.rs`), so
/// a bad certificate stops the service at start-up, never at the first
/// handshake.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The leaf certificate first, then its intermediates.
    pub cert_chain_path: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key of the leaf certificate.
    pub private_key_path: PathBuf,
}

impl Validate for ServerTlsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        require_file(&self.cert_chain_path, &key(prefix, "cert_chain_path"))?;
        require_file(&self.private_key_path, &key(prefix, "private_key_path"))
    }
}

/// What outbound HTTPS calls trust (`[tls]`, shared by every service of a
/// process): the public web roots always, plus `ca_path` when set (the local
/// run's own certificate authority). Certificate verification cannot be
/// turned off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundTlsConfig {
    /// A PEM file of extra trusted certificate authorities.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
}

impl Validate for OutboundTlsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        match &self.ca_path {
            Some(path) => require_file(path, &key(prefix, "ca_path")),
            None => Ok(()),
        }
    }
}

fn require_file(path: &std::path::Path, key: &str) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "must name a readable file (got {:?})",
                path.display().to_string()
            ),
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// A level (`info`) or per-target directives (`info,sqlx=warn`).
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector; traces are exported only when set.
    #[serde(default)]
    pub otlp_endpoint: Option<Url>,
    /// Where Prometheus scrapes `/metrics`, apart from the public listener.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_level: defaults::log_level(),
            log_format: defaults::log_format(),
            otlp_endpoint: None,
            metrics_addr: None,
        }
    }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl Validate for TelemetryConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        // Each directive is `level` or `target=level`.
        let valid = !self.log_level.is_empty()
            && self.log_level.split(',').all(|directive| {
                let level = directive.rsplit('=').next().unwrap_or_default().trim();
                LOG_LEVELS.contains(&level)
            });
        if !valid {
            return Err(ConfigError::invalid(
                key(prefix, "log_level"),
                format!(
                    "must be a level ({}) or `target=level` directives separated by commas (got {:?})",
                    LOG_LEVELS.join(", "),
                    self.log_level
                ),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            require_scheme(endpoint, &["http", "https"], &key(prefix, "otlp_endpoint"))?;
        }
        Ok(())
    }
}

pub fn require_scheme(url: &Url, schemes: &[&str], key: &str) -> Result<(), ConfigError> {
    if schemes.contains(&url.scheme()) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "must be a {} URL (got scheme `{}`)",
                schemes.join(" or "),
                url.scheme()
            ),
        ))
    }
}

pub fn in_range<T: PartialOrd + std::fmt::Display>(
    value: T,
    min: T,
    max: T,
    key: &str,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        Err(ConfigError::invalid(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ))
    } else {
        Ok(())
    }
}

mod defaults {
    use super::LogFormat;

    pub fn max_connections() -> u32 {
        16
    }
    pub fn acquire_timeout_ms() -> u64 {
        2_000
    }
    pub fn statement_timeout_ms() -> u64 {
        5_000
    }
    pub fn redis_timeout_ms() -> u64 {
        50
    }
    pub fn prefetch() -> u16 {
        64
    }
    pub fn delivery_limit() -> u32 {
        5
    }
    pub fn body_limit_bytes() -> usize {
        64 * 1024
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_in_flight() -> usize {
        1024
    }
    pub fn shutdown_grace_ms() -> u64 {
        10_000
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Json
    }
}

/// How API keys are hashed. The secret is server-side only: stored key
/// hashes are useless without it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// At least 32 bytes, base64 (standard alphabet).
    pub hash_secret_base64: String,
}

impl ApiKeysConfig {
    /// The decoded secret; validated at start-up, so decoding succeeds.
    pub fn hash_secret(&self) -> Vec<u8> {
        decode_base64(&self.hash_secret_base64).unwrap_or_default()
    }
}

impl std::fmt::Debug for ApiKeysConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeysConfig { hash_secret_base64: \"****\" }")
    }
}

impl Validate for ApiKeysConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        match decode_base64(&self.hash_secret_base64) {
            Some(bytes) if bytes.len() >= 32 => Ok(()),
            _ => Err(ConfigError::invalid(
                key(prefix, "hash_secret_base64"),
                "must be at least 32 bytes, base64-encoded",
            )),
        }
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// The card vault's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Where the keys come from: `"file"` (the key ring file below; local
    /// runs and tests) or `"environment"` (the cloud: two Secrets Manager
    /// secrets injected as `VAULT_KEK_RING` and `VAULT_FINGERPRINT_KEY`; see
    /// crates/vault, `provider.rs`).
    #[serde(default = "default_key_provider")]
    pub key_provider: String,
    /// The key ring file (key-encryption keys and the fingerprint key);
    /// `snakepay-admin keys init` creates one for local use. Required with
    /// the `file` provider.
    #[serde(default)]
    pub key_ring_path: std::path::PathBuf,
}

fn default_key_provider() -> String {
    "file".to_owned()
}

impl Validate for VaultConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !matches!(self.key_provider.as_str(), "file" | "environment") {
            return Err(ConfigError::invalid(
                key(prefix, "key_provider"),
                "must be \"file\" or \"environment\"",
            ));
        }
        if self.key_provider == "file" && self.key_ring_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "key_ring_path"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// Every shared section, as the whole local platform's file has them. The
/// `snakepay-config-check` command validates a file against it before a
/// deployment; services define their own, smaller configs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PlatformConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub broker: BrokerConfig,
    pub api_keys: ApiKeysConfig,
    pub vault: VaultConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

impl Validate for PlatformConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.redis.validate("redis")?;
        self.broker.validate("broker")?;
        self.api_keys.validate("api_keys")?;
        self.vault.validate("vault")?;
        self.telemetry.validate("telemetry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_from;
    use figment::providers::{Format, Toml};

    const VALID: &str = r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "https://api.eu-1.snakepay.test"

        [database]
        control_url = "postgres://localhost/snakepay_control"
        shard_urls = ["postgres://localhost/shard_0", "postgres://localhost/shard_1"]

        [redis]
        url = "redis://127.0.0.1:6379"

        [broker]
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"

        [api_keys]
        hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="

        [vault]
        key_ring_path = "/tmp/keyring.json"

        [other_service]
        anything = "is ignored at the top level"
    "#;

    fn load_toml(text: &str) -> Result<PlatformConfig, ConfigError> {
        load_from(None, Toml::string(text))
    }

    fn with(extra: &str) -> String {
        // Adds keys to a section by putting them right after its header
        // (`extra` starts with the header line).
        VALID.replacen(
            extra.split_once('\n').map(|(h, _)| h).unwrap_or(extra),
            extra,
            1,
        )
    }

    #[test]
    fn a_complete_file_loads_with_defaults_filled_in() {
        let config = load_toml(VALID).unwrap();
        assert_eq!(config.region.number, 1);
        assert_eq!(config.database.shard_urls.len(), 2);
        assert_eq!(config.database.max_connections, 16);
        assert_eq!(config.redis.timeout_ms, 50);
        assert_eq!(config.broker.delivery_limit, 5);
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn a_missing_key_is_named() {
        let error = load_toml(&VALID.replace("number = 1\n", "")).unwrap_err();
        assert_eq!(error.key(), Some("region.number"), "{error}");
    }

    #[test]
    fn the_vault_key_provider_is_file_by_default_and_checked() {
        assert_eq!(load_toml(VALID).unwrap().vault.key_provider, "file");
        let cloud = VALID.replace(
            "key_ring_path = \"/tmp/keyring.json\"",
            "key_provider = \"environment\"",
        );
        assert_eq!(load_toml(&cloud).unwrap().vault.key_provider, "environment");
        let error =
            load_toml(&VALID.replace("key_ring_path = \"/tmp/keyring.json\"", "")).unwrap_err();
        assert_eq!(error.key(), Some("vault.key_ring_path"), "{error}");
        let error = load_toml(&with("[vault]\nkey_provider = \"kms\"")).unwrap_err();
        assert_eq!(error.key(), Some("vault.key_provider"), "{error}");
    }

    #[test]
    fn an_unknown_key_in_a_section_is_named_not_ignored() {
        let error = load_toml(&with("[redis]\ntimout_ms = 5")).unwrap_err();
        assert_eq!(error.key(), Some("redis.timout_ms"), "{error}");
    }

    #[test]
    fn a_wrongly_typed_value_is_named() {
        let error = load_toml(&VALID.replace("number = 1", "number = 300")).unwrap_err();
        assert_eq!(error.key(), Some("region.number"), "{error}");
        let error = load_toml(&VALID.replace("number = 1", "number = \"one\"")).unwrap_err();
        assert_eq!(error.key(), Some("region.number"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_named_with_their_limits() {
        let error = load_toml(&with("[database]\nmax_connections = 0")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`database.max_connections`: must be between 1 and 256 (got 0)"
        );
        let error = load_toml(&with("[broker]\nprefetch = 0")).unwrap_err();
        assert_eq!(error.key(), Some("broker.prefetch"));
    }

    #[test]
    fn urls_must_have_the_right_scheme() {
        let error = load_toml(&VALID.replace("redis://127.0.0.1:6379", "http://127.0.0.1:6379"))
            .unwrap_err();
        assert_eq!(error.key(), Some("redis.url"), "{error}");
        let error =
            load_toml(&VALID.replace("postgres://localhost/shard_1", "mysql://localhost/shard_1"))
                .unwrap_err();
        assert_eq!(error.key(), Some("database.shard_urls[1]"), "{error}");
        let error = load_toml(&VALID.replace(
            "[\"postgres://localhost/shard_0\", \"postgres://localhost/shard_1\"]",
            "[]",
        ))
        .unwrap_err();
        assert_eq!(error.key(), Some("database.shard_urls"), "{error}");
    }

    #[test]
    fn passwords_in_urls_never_reach_debug_output() {
        let config = load_toml(&VALID.replace("guest:guest@", "snakepay:hunter2@")).unwrap();
        let shown = format!("{config:?} {}", config.broker.url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("snakepay:****@"), "{shown}");
        assert_eq!(config.broker.url.expose().password(), Some("hunter2"));
    }

    #[test]
    fn the_key_hashing_secret_must_be_long_enough_and_is_never_shown() {
        let config = load_toml(VALID).unwrap();
        assert_eq!(
            config.api_keys.hash_secret(),
            b"snakepay-local-development-only-key-hash-secret"
        );
        assert!(!format!("{config:?}").contains("c25ha2"));
        let error = load_toml(&VALID.replace(
            "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=",
            "c2hvcnQ=",
        ))
        .unwrap_err();
        assert_eq!(error.key(), Some("api_keys.hash_secret_base64"));
        let error = load_toml(&VALID.replace(
            "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ=",
            "not base64!",
        ))
        .unwrap_err();
        assert_eq!(error.key(), Some("api_keys.hash_secret_base64"));
    }

    #[test]
    fn log_levels_are_checked() {
        assert!(
            load_toml(&format!(
                "{VALID}\n[telemetry]\nlog_level = \"info,sqlx=warn\""
            ))
            .is_ok()
        );
        let error = load_toml(&format!("{VALID}\n[telemetry]\nlog_level = \"loud\"")).unwrap_err();
        assert_eq!(error.key(), Some("telemetry.log_level"));
    }

    #[test]
    fn region_codes_are_restricted() {
        let error = load_toml(&VALID.replace("code = \"eu-1\"", "code = \"EU 1\"")).unwrap_err();
        assert_eq!(error.key(), Some("region.code"));
    }

    #[test]
    fn overrides_take_precedence_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snakepay.toml");
        std::fs::write(&path, VALID).unwrap();
        let config: PlatformConfig = load_from(
            Some(&path),
            Toml::string("[database]\nmax_connections = 32"),
        )
        .unwrap();
        assert_eq!(config.database.max_connections, 32);
        assert_eq!(
            config.database.shard_urls.len(),
            2,
            "the rest of the section is kept"
        );
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error() {
        let error = load_from::<PlatformConfig>(
            Some(std::path::Path::new("/nonexistent/snakepay.toml")),
            Toml::string(""),
        )
        .unwrap_err();
        assert!(matches!(error, ConfigError::File { .. }), "{error}");
    }
}
