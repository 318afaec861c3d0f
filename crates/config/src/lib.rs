//! Typed, layered configuration for every Snakepay service.
//!
//! # Layout
//!
//! - [`load`] / [`load_or_exit`]: read a TOML file (optional), overlay
//!   `SNAKEPAY_…` environment variables, deserialize into the service's own
//!   config type and validate it. `load_or_exit` is what `main` calls: a bad
//!   value stops the process with a message that names the key and exit code
//!   [`EXIT_CONFIG`] (64).
//! - [`sections`]: the sections services share (region, database, redis,
//!   broker, http, telemetry), each with defaults and validation.
//! - [`Validate`]: implemented by every section and every service config.
//! - [`tls`]: the `cacertfile` parameter of Redis and AMQP URLs.
//!
//! Environment overrides use `__` between nesting levels, so
//! `SNAKEPAY_DATABASE__MAX_CONNECTIONS=32` sets `database.max_connections`.
//! Values are parsed like TOML values (`[a, b]` is a list, `true` a boolean).
//!
//! Sections reject unknown keys (a typo must not silently fall back to a
//! default), but a service ignores other services' sections, so one file can
//! configure the whole local platform.

pub mod sections;
pub mod tls;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// The process exit code for an invalid configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// The environment variable that names the configuration file.
pub const CONFIG_PATH_VARIABLE: &str = "SNAKEPAY_CONFIG";

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "SNAKEPAY_";

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file `{path}` cannot be read: {reason}")]
    File { path: String, reason: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The dotted key at fault, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::File { .. } => None,
        }
    }
}

/// Checks the values that types alone cannot (ranges, non-empty lists, URL
/// schemes). `prefix` is the dotted path of the value, for error messages.
pub trait Validate {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError>;
}

/// Joins a section prefix and a key: `key("database", "max_connections")`.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Loads `T` from `file` (if given) overlaid with the process environment.
pub fn load<T: DeserializeOwned + Validate>(file: Option<&Path>) -> Result<T, ConfigError> {
    load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
}

/// The loader behind [`load`], with the overriding provider given, so that
/// unit tests can overlay values without touching the process environment.
pub fn load_from<T: DeserializeOwned + Validate>(
    file: Option<&Path>,
    overrides: impl figment::Provider,
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // Figment treats a missing file as empty; a named file that is not
        // there is a mistake we want to hear about.
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "no such file".to_owned(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let value: T = figment
        .merge(overrides)
        .extract()
        .map_err(|error| from_figment(error, file))?;
    value.validate("")?;
    Ok(value)
}

/// Loads `T` from TOML text alone (no file, no environment): for tests that
/// build a service's configuration.
pub fn from_toml_str<T: DeserializeOwned + Validate>(text: &str) -> Result<T, ConfigError> {
    load_from(None, Toml::string(text))
}

/// Turns figment's error into one that names the full dotted key.
fn from_figment(error: figment::Error, file: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let mut path = error.path.clone();
    // Figment's path ends at the section for a missing field, but already
    // includes the field for an unknown one.
    if let Kind::MissingField(field) = &error.kind {
        path.push(field.to_string());
    }
    if path.is_empty() {
        // A syntax error in the file has no key; say which file.
        return ConfigError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            reason: error.kind.to_string(),
        };
    }
    let message = match &error.kind {
        Kind::MissingField(_) => "is required but missing".to_owned(),
        Kind::UnknownField(_, expected) => {
            format!(
                "is not a known key (expected one of: {})",
                expected.join(", ")
            )
        }
        other => other.to_string(),
    };
    ConfigError::Invalid {
        key: path.join("."),
        message,
    }
}

/// Where `main` gets its configuration: the file named by `SNAKEPAY_CONFIG`
/// (if set) plus the environment. On error it prints one line naming the key
/// and exits with [`EXIT_CONFIG`]; a service must not start half-configured.
pub fn load_or_exit<T: DeserializeOwned + Validate>(service: &str) -> T {
    let file = std::env::var_os(CONFIG_PATH_VARIABLE).map(std::path::PathBuf::from);
    match load(file.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{service}: invalid configuration: {error}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}
