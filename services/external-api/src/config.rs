//! The External API's configuration: the shared sections plus its own.

use std::num::NonZeroU32;

use serde::Deserialize;
use snakepay_config::sections::{
    ApiKeysConfig, BrokerConfig, DatabaseConfig, HttpConfig, RedisConfig, RegionConfig,
    TelemetryConfig, VaultConfig,
};
use snakepay_config::{ConfigError, Validate, key};

#[derive(Debug, Clone, Deserialize)]
pub struct ExternalApiConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    pub api_keys: ApiKeysConfig,
    pub vault: VaultConfig,
    /// Optional: with it, rate limits are shared by every instance.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Where outcome replies come from (DESIGN.md §5, step 4). Without it
    /// the API answers `processing` at once and clients poll or take webhooks.
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    pub external_api: ExternalApiSection,
}

/// The longest `wait_for_outcome_ms` accepted: a client holding a connection
/// longer than this is better served by `processing` and a webhook.
pub const MAX_WAIT_FOR_OUTCOME_MS: u64 = 20_000;

/// What a waiting request keeps of its request timeout for the work before
/// and after the wait (claim, transaction, reload, settling the stored response), so the
/// edge's timeout never cuts off an answer whose change already committed.
pub const WAIT_HEADROOM_MS: u64 = 2_000;

/// `[external_api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalApiSection {
    #[serde(flatten)]
    pub http: HttpConfig,
    /// A base path in front of `/v1` (e.g. `/api`), when a gateway adds one.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The other regions, so a request for a merchant or object homed
    /// elsewhere is told where to go.
    #[serde(default)]
    pub other_regions: Vec<RegionDirectoryEntry>,
    /// Requests per second per live-mode API key (Stripe's default: 100).
    #[serde(default = "default_live_rate")]
    pub rate_limit_live_per_second: NonZeroU32,
    /// Requests per second per test-mode API key (Stripe's default: 25).
    #[serde(default = "default_test_rate")]
    pub rate_limit_test_per_second: NonZeroU32,
    /// Failed authentications allowed per second per client address (a
    /// burst of as many); beyond, the client gets 429 instead of 401, so
    /// keys cannot be guessed at speed.
    #[serde(default = "default_auth_failure_rate")]
    pub auth_failures_per_second: NonZeroU32,
    /// How long confirm, capture, cancel and refund requests wait for the
    /// processor's outcome before answering `processing` (or a `pending`
    /// refund). Used only with `[broker]`; 0 answers at once and opens no
    /// broker connection at all.
    #[serde(default = "default_wait_for_outcome_ms")]
    pub wait_for_outcome_ms: u64,
    /// Publish one request log entry per authenticated request (with
    /// `[broker]`), for the recorder to write to the merchant's shard.
    #[serde(default = "default_request_log")]
    pub request_log: bool,
    /// The origins of the hosted checkout (`https://checkout.example.com`),
    /// the only pages a browser may call the API from, and only for what a
    /// publishable key can do: retrieve and confirm an intent with its
    /// client secret. Empty (the default) allows no cross-origin calls.
    #[serde(default)]
    pub checkout_origins: Vec<String>,
    /// The PostgreSQL role this service connects as (least privilege,
    /// docs/security.md 7.2), with the password of `[database]`'s URLs. The
    /// migrations create it and grant it only what this service needs.
    #[serde(default = "default_database_user")]
    pub database_user: String,
}

fn default_database_user() -> String {
    snakepay_store::roles::EXTERNAL_API.to_owned()
}

fn default_request_log() -> bool {
    true
}

fn default_wait_for_outcome_ms() -> u64 {
    5_000
}

fn default_live_rate() -> NonZeroU32 {
    NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN)
}

fn default_auth_failure_rate() -> NonZeroU32 {
    NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN)
}

fn default_test_rate() -> NonZeroU32 {
    NonZeroU32::new(25).unwrap_or(NonZeroU32::MIN)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDirectoryEntry {
    pub code: String,
    pub number: u8,
    pub public_api_url: String,
}

impl Validate for ExternalApiConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.api_keys.validate("api_keys")?;
        self.vault.validate("vault")?;
        if let Some(redis) = &self.redis {
            redis.validate("redis")?;
        }
        self.telemetry.validate("telemetry")?;
        self.external_api.http.validate("external_api")?;
        if !snakepay_store::roles::is_valid_role_name(&self.external_api.database_user) {
            return Err(ConfigError::invalid(
                key("external_api", "database_user"),
                "must be a PostgreSQL role name (a-z, 0-9, _)",
            ));
        }
        // A request still running must never have its idempotency key taken
        // over by a retry: the key's lock must outlive the request timeout.
        let lock_ms =
            u64::try_from(snakepay_store::idempotency::LOCK_TIMEOUT_SECONDS).unwrap_or(0) * 1_000;
        if self.external_api.http.request_timeout_ms >= lock_ms {
            return Err(ConfigError::invalid(
                key("external_api", "request_timeout_ms"),
                format!("must be below the idempotency lock timeout of {lock_ms} ms"),
            ));
        }
        if let Some(broker) = &self.broker {
            broker.validate("broker")?;
        }
        let wait_ms = self.external_api.wait_for_outcome_ms;
        let wait_key = key("external_api", "wait_for_outcome_ms");
        if wait_ms > MAX_WAIT_FOR_OUTCOME_MS {
            return Err(ConfigError::invalid(
                wait_key,
                format!("must be at most {MAX_WAIT_FOR_OUTCOME_MS} ms"),
            ));
        }
        let request_ms = self.external_api.http.request_timeout_ms;
        if wait_ms > 0 && wait_ms.saturating_add(WAIT_HEADROOM_MS) > request_ms {
            return Err(ConfigError::invalid(
                wait_key,
                format!(
                    "must be below the request timeout ({request_ms} ms) by at least {WAIT_HEADROOM_MS} ms"
                ),
            ));
        }
        for (index, origin) in self.external_api.checkout_origins.iter().enumerate() {
            if !is_origin(origin) {
                return Err(ConfigError::invalid(
                    format!("{}[{index}]", key("external_api", "checkout_origins")),
                    format!(
                        "must be an origin such as `https://checkout.example.com` (scheme, host, optional port; no path), got {origin:?}"
                    ),
                ));
            }
        }
        for (index, entry) in self.external_api.other_regions.iter().enumerate() {
            if entry.number == self.region.number {
                return Err(ConfigError::invalid(
                    format!("{}[{index}].number", key("external_api", "other_regions")),
                    "must differ from this region's number",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `text` is a serialized web origin as browsers send it in
/// `Origin`: `http(s)://host[:port]`, nothing after, so that comparing it
/// with the header byte for byte is the right test.
fn is_origin(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.origin().ascii_serialization() == text
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn checkout_origins_are_bare_origins() {
        assert!(super::is_origin("https://checkout.snakepay.test"));
        assert!(super::is_origin("http://127.0.0.1:8083"));
        assert!(!super::is_origin("https://checkout.snakepay.test/"));
        assert!(!super::is_origin("https://checkout.snakepay.test/pay"));
        assert!(!super::is_origin("HTTPS://Checkout.snakepay.test"));
        assert!(!super::is_origin("*"));
        assert!(!super::is_origin("ftp://files.snakepay.test"));
    }
}
