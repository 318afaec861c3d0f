//! The Internal API's configuration: the shared sections plus its own.

use std::path::PathBuf;

use serde::Deserialize;
use snakepay_config::sections::{
    ApiKeysConfig, BrokerConfig, DatabaseConfig, HttpConfig, RedisConfig, RegionConfig,
    TelemetryConfig,
};
use snakepay_config::{ConfigError, Validate, key};
use url::Url;

#[derive(Debug, Clone, Deserialize)]
pub struct InternalApiConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    /// Issuing merchants' API keys needs the key-hashing secret.
    pub api_keys: ApiKeysConfig,
    /// With it, refunds invalidate the cached payment intent like the
    /// External API does.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// With it, the dead-letter queues can be listed, replayed and discarded.
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What outbound HTTPS calls (JWKS, the processor's record) trust
    /// besides the public roots.
    #[serde(default)]
    pub tls: snakepay_config::sections::OutboundTlsConfig,
    pub internal_api: InternalApiSection,
}

/// `[internal_api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalApiSection {
    #[serde(flatten)]
    pub http: HttpConfig,
    /// Where the staff tokens' public keys come from: a JWKS file path, or
    /// an `https://` (`http://` for local use) URL of an identity
    /// provider's JWKS.
    pub jwks: String,
    /// The `iss` every staff token must carry.
    #[serde(default = "default_issuer")]
    pub token_issuer: String,
    /// The `aud` every staff token must carry.
    #[serde(default = "default_audience")]
    pub token_audience: String,
    /// The local signing key `snakepay-admin token issue` signs with
    /// (development only: production tokens come from the identity
    /// provider, and this service never reads the file).
    #[serde(default)]
    pub token_signing_key_path: Option<PathBuf>,
    /// Refunds above this amount (minor units of the payment's currency)
    /// wait for a second operator's approval before they are sent.
    #[serde(default = "default_refund_threshold")]
    pub refund_approval_threshold: i64,
    /// The processor simulator's operations record, for reconciliation.
    #[serde(default)]
    pub processor_sim: Option<ProcessorSimAccess>,
    /// The PostgreSQL role this service connects as (least privilege,
    /// docs/security.md 7.2), with the password of `[database]`'s URLs. The
    /// migrations create it and grant it only what this service needs.
    #[serde(default = "default_database_user")]
    pub database_user: String,
}

fn default_database_user() -> String {
    snakepay_store::roles::INTERNAL_API.to_owned()
}

/// How reconciliation reads what the processor did.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSimAccess {
    pub base_url: Url,
    pub api_key: String,
}

fn default_issuer() -> String {
    "snakepay-local".to_owned()
}

fn default_audience() -> String {
    "snakepay-internal-api".to_owned()
}

fn default_refund_threshold() -> i64 {
    10_000
}

/// Where the keys come from, parsed from `internal_api.jwks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(Url),
}

impl InternalApiSection {
    pub fn jwks_source(&self) -> JwksSource {
        match Url::parse(&self.jwks) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => JwksSource::Url(url),
            _ => JwksSource::File(PathBuf::from(&self.jwks)),
        }
    }
}

impl Validate for InternalApiSection {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.http.validate(prefix)?;
        if !snakepay_store::roles::is_valid_role_name(&self.database_user) {
            return Err(ConfigError::invalid(
                key(prefix, "database_user"),
                "must be a PostgreSQL role name (a-z, 0-9, _)",
            ));
        }
        if self.jwks.trim().is_empty() {
            return Err(ConfigError::invalid(
                key(prefix, "jwks"),
                "must name a JWKS file or URL",
            ));
        }
        for (name, value) in [
            ("token_issuer", &self.token_issuer),
            ("token_audience", &self.token_audience),
        ] {
            if value.is_empty() || value.len() > 200 {
                return Err(ConfigError::invalid(
                    key(prefix, name),
                    "must be 1 to 200 characters",
                ));
            }
        }
        snakepay_config::sections::in_range(
            self.refund_approval_threshold,
            0,
            99_999_999,
            &key(prefix, "refund_approval_threshold"),
        )?;
        if let Some(sim) = &self.processor_sim {
            snakepay_config::sections::require_scheme(
                &sim.base_url,
                &["http", "https"],
                &key(prefix, "processor_sim.base_url"),
            )?;
        }
        Ok(())
    }
}

impl Validate for InternalApiConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.api_keys.validate("api_keys")?;
        self.tls.validate("tls")?;
        if let Some(redis) = &self.redis {
            redis.validate("redis")?;
        }
        if let Some(broker) = &self.broker {
            broker.validate("broker")?;
        }
        self.telemetry.validate("telemetry")?;
        self.internal_api.validate("internal_api")
    }
}
