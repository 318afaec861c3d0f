//! The simulator's configuration: the `[processor_sim]` section of the
//! platform's file (plus `SNAKEPAY_PROCESSOR_SIM__…` overrides) and the
//! shared `[telemetry]` section.
//!
//! Every key has a local default except that nothing is sent anywhere unless
//! `notification_url` is set, so `scripts/run.sh` can start the simulator
//! from a file that has no `[processor_sim]` section yet.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use snakepay_config::sections::{OutboundTlsConfig, ServerTlsConfig, TelemetryConfig};
use snakepay_config::{ConfigError, Validate, key};
use url::Url;

/// The development API key used when none is configured. Only for local runs:
/// the simulator logs a warning when it starts with it.
pub const DEFAULT_API_KEY: &str = "sim_local_development_key";
pub const API_KEY_MIN_CHARS: usize = 16;
pub const API_KEY_MAX_CHARS: usize = 256;
pub const NOTIFICATION_SECRET_MIN_CHARS: usize = 16;
/// An upper bound on every configurable delay: nothing a test needs sleeps
/// longer than ten minutes.
pub const MAX_DELAY_MS: u64 = 600_000;
pub const MAX_NOTIFICATION_ATTEMPTS: u32 = 20;

/// Everything the simulator reads from the configuration file.
///
/// Unknown top-level sections are ignored (they belong to other services);
/// unknown keys inside `[processor_sim]` are errors.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SimConfig {
    #[serde(default)]
    pub processor_sim: ProcessorSimSection,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What the notifications' HTTPS calls trust besides the public roots
    /// (`[tls]`, shared with the other services).
    #[serde(default)]
    pub tls: OutboundTlsConfig,
}

impl Validate for SimConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.processor_sim.validate("processor_sim")?;
        self.tls.validate("tls")?;
        self.telemetry.validate("telemetry")
    }
}

/// The `[processor_sim]` section.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSimSection {
    /// Where the API listens. Tests use `127.0.0.1:0`.
    #[serde(default = "defaults::listen_addr")]
    pub listen_addr: SocketAddr,
    /// The admin listener for Prometheus (`GET /metrics`); none by default.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the API and the admin listener over TLS (1.2 and 1.3 only)
    /// with this certificate (`[processor_sim.tls]`); none: plain HTTP.
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// The base URL browsers use to reach the simulator, for 3-D Secure
    /// `action_url`s. Defaults to `http://<bound address>`, which is right
    /// unless the simulator listens on `0.0.0.0` or sits behind a proxy.
    #[serde(default)]
    pub public_url: Option<Url>,
    /// The one API key every `/v1` and `/_sim` call must present as
    /// `Authorization: Bearer <api_key>`.
    #[serde(default = "defaults::api_key")]
    pub api_key: String,
    /// The append-only journal (JSON lines). Without it the record of
    /// operations lives in memory and dies with the process.
    #[serde(default)]
    pub journal_path: Option<PathBuf>,
    /// Where state changes are POSTed; notifications are off when unset.
    #[serde(default)]
    pub notification_url: Option<Url>,
    /// The HMAC-SHA256 key of the `Sim-Signature` header, used as UTF-8 bytes.
    #[serde(default)]
    pub notification_secret: Option<String>,
    /// Deliveries of one notification before it is given up (the first
    /// attempt included).
    #[serde(default = "defaults::notification_max_attempts")]
    pub notification_max_attempts: u32,
    /// The wait before the first retry; it doubles after each failure.
    #[serde(default = "defaults::notification_backoff_ms")]
    pub notification_backoff_ms: u64,
    /// The timeout of one delivery attempt.
    #[serde(default = "defaults::notification_timeout_ms")]
    pub notification_timeout_ms: u64,
    /// The fault settings in force at start-up (see [`FaultSettings`] for
    /// each key); `POST /_sim/config` changes them at run time.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default)]
    pub failure_after_work_rate: f64,
    #[serde(default)]
    pub timeout_after_work_rate: f64,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::slow_ms")]
    pub slow_ms: u64,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl ProcessorSimSection {
    /// The fault keys as one value. (They are plain fields of the section
    /// because serde cannot reject unknown keys around a flattened struct.)
    pub fn faults(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            failure_rate: self.failure_rate,
            failure_after_work_rate: self.failure_after_work_rate,
            timeout_after_work_rate: self.timeout_after_work_rate,
            timeout_ms: self.timeout_ms,
            slow_ms: self.slow_ms,
            seed: self.seed,
        }
    }

    /// Sets every fault key from `faults`.
    pub fn set_faults(&mut self, faults: FaultSettings) {
        self.latency_ms = faults.latency_ms;
        self.jitter_ms = faults.jitter_ms;
        self.failure_rate = faults.failure_rate;
        self.failure_after_work_rate = faults.failure_after_work_rate;
        self.timeout_after_work_rate = faults.timeout_after_work_rate;
        self.timeout_ms = faults.timeout_ms;
        self.slow_ms = faults.slow_ms;
        self.seed = faults.seed;
    }
}

impl Default for ProcessorSimSection {
    fn default() -> Self {
        let mut section = ProcessorSimSection {
            listen_addr: defaults::listen_addr(),
            metrics_addr: None,
            tls: None,
            public_url: None,
            api_key: defaults::api_key(),
            journal_path: None,
            notification_url: None,
            notification_secret: None,
            notification_max_attempts: defaults::notification_max_attempts(),
            notification_backoff_ms: defaults::notification_backoff_ms(),
            notification_timeout_ms: defaults::notification_timeout_ms(),
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_after_work_rate: 0.0,
            timeout_after_work_rate: 0.0,
            timeout_ms: 0,
            slow_ms: 0,
            seed: None,
        };
        section.set_faults(FaultSettings::default());
        section
    }
}

impl std::fmt::Debug for ProcessorSimSection {
    // Written by hand so the API key and the signing secret never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorSimSection")
            .field("listen_addr", &self.listen_addr)
            .field("tls", &self.tls)
            .field("public_url", &self.public_url)
            .field("api_key", &"****")
            .field("journal_path", &self.journal_path)
            .field("notification_url", &self.notification_url)
            .field(
                "notification_secret",
                &self.notification_secret.as_ref().map(|_| "****"),
            )
            .field("notification_max_attempts", &self.notification_max_attempts)
            .field("notification_backoff_ms", &self.notification_backoff_ms)
            .field("notification_timeout_ms", &self.notification_timeout_ms)
            .field("faults", &self.faults())
            .finish()
    }
}

impl Validate for ProcessorSimSection {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key_chars = self.api_key.chars().count();
        if !(API_KEY_MIN_CHARS..=API_KEY_MAX_CHARS).contains(&key_chars)
            || !self.api_key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::invalid(
                key(prefix, "api_key"),
                format!(
                    "must be {API_KEY_MIN_CHARS} to {API_KEY_MAX_CHARS} printable ASCII characters without spaces"
                ),
            ));
        }
        if let Some(url) = &self.public_url {
            http_url(url, &key(prefix, "public_url"))?;
        }
        if let Some(tls) = &self.tls {
            tls.validate(&key(prefix, "tls"))?;
        }
        match (&self.notification_url, &self.notification_secret) {
            (Some(url), Some(secret)) => {
                http_url(url, &key(prefix, "notification_url"))?;
                if secret.chars().count() < NOTIFICATION_SECRET_MIN_CHARS {
                    return Err(ConfigError::invalid(
                        key(prefix, "notification_secret"),
                        format!("must have at least {NOTIFICATION_SECRET_MIN_CHARS} characters"),
                    ));
                }
            }
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    key(prefix, "notification_secret"),
                    "is required when notification_url is set (notifications are always signed)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    key(prefix, "notification_url"),
                    "is required when notification_secret is set",
                ));
            }
            (None, None) => {}
        }
        if !(1..=MAX_NOTIFICATION_ATTEMPTS).contains(&self.notification_max_attempts) {
            return Err(ConfigError::invalid(
                key(prefix, "notification_max_attempts"),
                format!(
                    "must be between 1 and {MAX_NOTIFICATION_ATTEMPTS} (got {})",
                    self.notification_max_attempts
                ),
            ));
        }
        delay(
            self.notification_backoff_ms,
            0,
            &key(prefix, "notification_backoff_ms"),
        )?;
        delay(
            self.notification_timeout_ms,
            1,
            &key(prefix, "notification_timeout_ms"),
        )?;
        self.faults()
            .check()
            .map_err(|error| ConfigError::invalid(key(prefix, error.field), error.message))
    }
}

fn http_url(url: &Url, key: &str) -> Result<(), ConfigError> {
    if matches!(url.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "must be an http or https URL (got scheme `{}`)",
                url.scheme()
            ),
        ))
    }
}

fn delay(value_ms: u64, min_ms: u64, key: &str) -> Result<(), ConfigError> {
    if (min_ms..=MAX_DELAY_MS).contains(&value_ms) {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("must be between {min_ms} and {MAX_DELAY_MS} (got {value_ms})"),
        ))
    }
}

/// The injected faults and delays. The same shape is the body of
/// `GET /_sim/config`; `POST /_sim/config` takes any subset of it.
///
/// The three rates are probabilities from one roll per fresh operation, so
/// their sum must not exceed 1. Probabilities are the one place this crate
/// uses floats; money never is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Added to every `/v1` request before it is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// A uniformly random extra delay in `0..=jitter_ms`.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability of a 500 before the work is done (nothing recorded).
    #[serde(default)]
    pub failure_rate: f64,
    /// Probability of a 500 after the work is done and recorded.
    #[serde(default)]
    pub failure_after_work_rate: f64,
    /// Probability of doing the work and then answering only after
    /// `timeout_ms` (longer than any client waits).
    #[serde(default)]
    pub timeout_after_work_rate: f64,
    /// How long a "timeout after work" sleeps before it answers.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// How long the slow-approval test card takes.
    #[serde(default = "defaults::slow_ms")]
    pub slow_ms: u64,
    /// Seeds the fault and jitter generators; random when unset.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Default for FaultSettings {
    fn default() -> Self {
        FaultSettings {
            latency_ms: 0,
            jitter_ms: 0,
            failure_rate: 0.0,
            failure_after_work_rate: 0.0,
            timeout_after_work_rate: 0.0,
            timeout_ms: defaults::timeout_ms(),
            slow_ms: defaults::slow_ms(),
            seed: None,
        }
    }
}

/// A fault setting out of range, with the field's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSettingError {
    pub field: &'static str,
    pub message: String,
}

impl FaultSettings {
    /// Checks ranges; shared by start-up validation and `POST /_sim/config`.
    pub fn check(&self) -> Result<(), FaultSettingError> {
        let delays = [
            ("latency_ms", self.latency_ms),
            ("jitter_ms", self.jitter_ms),
            ("timeout_ms", self.timeout_ms),
            ("slow_ms", self.slow_ms),
        ];
        for (field, value_ms) in delays {
            if value_ms > MAX_DELAY_MS {
                return Err(FaultSettingError {
                    field,
                    message: format!("must be between 0 and {MAX_DELAY_MS} (got {value_ms})"),
                });
            }
        }
        let rates = [
            ("failure_rate", self.failure_rate),
            ("failure_after_work_rate", self.failure_after_work_rate),
            ("timeout_after_work_rate", self.timeout_after_work_rate),
        ];
        for (field, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultSettingError {
                    field,
                    message: format!("must be a probability between 0 and 1 (got {rate})"),
                });
            }
        }
        let total = self.failure_rate + self.failure_after_work_rate + self.timeout_after_work_rate;
        if total > 1.0 {
            return Err(FaultSettingError {
                field: "failure_rate",
                message: format!(
                    "failure_rate + failure_after_work_rate + timeout_after_work_rate must not exceed 1 (got {total})"
                ),
            });
        }
        Ok(())
    }
}

mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};

    pub fn listen_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 8090))
    }
    pub fn api_key() -> String {
        super::DEFAULT_API_KEY.to_owned()
    }
    pub fn notification_max_attempts() -> u32 {
        5
    }
    pub fn notification_backoff_ms() -> u64 {
        500
    }
    pub fn notification_timeout_ms() -> u64 {
        5_000
    }
    pub fn timeout_ms() -> u64 {
        30_000
    }
    pub fn slow_ms() -> u64 {
        5_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Toml};

    fn load(toml: &str) -> Result<SimConfig, ConfigError> {
        snakepay_config::load_from(None, Toml::string(toml))
    }

    #[test]
    fn starts_with_no_section_at_all() {
        let config = load("[region]\ncode = \"x\"").unwrap();
        assert_eq!(config.processor_sim.api_key, DEFAULT_API_KEY);
        assert_eq!(config.processor_sim.timeout_ms, 30_000);
        assert!(config.processor_sim.journal_path.is_none());
    }

    #[test]
    fn reads_every_key() {
        let config = load(
            r#"
            [processor_sim]
            listen_addr = "127.0.0.1:0"
            api_key = "sk_sim_0123456789abcdef"
            journal_path = "/tmp/sim.jsonl"
            notification_url = "http://127.0.0.1:9000/hook"
            notification_secret = "whsec_0123456789abcdef"
            latency_ms = 5
            jitter_ms = 2
            failure_rate = 0.1
            failure_after_work_rate = 0.2
            timeout_after_work_rate = 0.3
            timeout_ms = 200
            slow_ms = 100
            seed = 7
            "#,
        )
        .unwrap();
        let section = config.processor_sim;
        assert_eq!(section.seed, Some(7));
        assert_eq!(section.timeout_ms, 200);
        assert!((section.timeout_after_work_rate - 0.3).abs() < 1e-9);
        assert!(!format!("{section:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("api_key = \"short\"", "processor_sim.api_key"),
            ("failure_rate = 1.5", "processor_sim.failure_rate"),
            (
                "failure_rate = 0.6\nfailure_after_work_rate = 0.6",
                "processor_sim.failure_rate",
            ),
            ("timeout_ms = 9999999", "processor_sim.timeout_ms"),
            (
                "notification_url = \"http://127.0.0.1:1/\"",
                "processor_sim.notification_secret",
            ),
            (
                "notification_url = \"ftp://x/\"\nnotification_secret = \"0123456789abcdefg\"",
                "processor_sim.notification_url",
            ),
            ("latency = 5", "processor_sim.latency"),
            ("listen_addr = \"nowhere\"", "processor_sim.listen_addr"),
        ];
        for (body, expected) in cases {
            let error = load(&format!("[processor_sim]\n{body}")).unwrap_err();
            assert_eq!(error.key(), Some(expected), "{body}: {error}");
        }
    }
}
