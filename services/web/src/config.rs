//! The web service's configuration: `[region]` (whose `public_api_url` is
//! the External API the browser calls), `[telemetry]` and `[web]`.

use std::path::PathBuf;

use serde::Deserialize;
use snakepay_config::sections::{HttpConfig, OutboundTlsConfig, RegionConfig, TelemetryConfig};
use snakepay_config::{ConfigError, Validate, key};

#[derive(Debug, Clone, Deserialize)]
pub struct WebConfig {
    pub region: RegionConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// What the demo shop's calls to the External API trust besides the
    /// public roots.
    #[serde(default)]
    pub tls: OutboundTlsConfig,
    pub web: WebSection,
}

/// The longest merchant name the demo shop shows.
const MERCHANT_NAME_MAX_CHARS: usize = 100;

/// `[web]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    #[serde(flatten)]
    pub http: HttpConfig,
    /// The built assets (`web/build.mjs` writes `web/dist`), served as they
    /// are; relative paths are from the working directory.
    #[serde(default = "default_assets_dir")]
    pub assets_dir: PathBuf,
    /// The demo shop, for local runs only: deployments leave it out.
    #[serde(default)]
    pub demo: Option<DemoSection>,
}

/// `[web.demo]`: a shop that sells for the demo merchant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    /// The demo merchant's keys as `snakepay-admin merchant create` prints
    /// them (`{"merchant", "secret_key", "publishable_key", …}`); the secret
    /// key stays on the server.
    pub merchant_file: PathBuf,
    /// The name the checkout shows.
    #[serde(default = "default_merchant_name")]
    pub merchant_name: String,
}

fn default_assets_dir() -> PathBuf {
    PathBuf::from("web/dist")
}

fn default_merchant_name() -> String {
    "Demo Shop".to_owned()
}

impl Validate for WebConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.telemetry.validate("telemetry")?;
        self.tls.validate("tls")?;
        self.web.http.validate("web")?;
        if let Some(demo) = &self.web.demo {
            let name = demo.merchant_name.trim();
            if name.is_empty() || name.chars().count() > MERCHANT_NAME_MAX_CHARS {
                return Err(ConfigError::invalid(
                    key("web.demo", "merchant_name"),
                    format!("must be 1–{MERCHANT_NAME_MAX_CHARS} characters"),
                ));
            }
        }
        Ok(())
    }
}
