//! `snakepay-admin`: operator commands over a region.
//!
//! # Layout
//!
//! - [`AdminConfig`]: the sections the commands need.
//! - [`Command`] and [`run`]: the commands. `main.rs` parses arguments and
//!   calls `run`; tests call `run` directly.
//! - `keys.rs`: `keys init | rotate | retire | status`, the vault's key ring
//!   and online KEK rotation.
//! - `token.rs`: the local staff-token signing key and tokens for the
//!   Internal API; `audit.rs`: verifying the audit trail's chain.
//! - [`verify`]: the invariant checker behind `verify`, usable as a library
//!   (`verify::run(&store, &options)`), e.g. by fault-injection tests.
//!
//! Commands print what they did on stdout as JSON (so scripts can read the
//! created merchant's keys) and fail with a message on stderr. `verify`
//! prints a table (or JSON with `--json`) and exits 1 when it finds
//! violations, 2 when it cannot check.

pub mod audit;
pub mod keys;
mod token;
pub mod verify;

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use snakepay_config::sections::{ApiKeysConfig, DatabaseConfig, RegionConfig, VaultConfig};
use snakepay_config::{ConfigError, Validate};
use snakepay_domain::ids::RegionNumber;
use snakepay_internal_api::config::InternalApiSection;
use snakepay_store::Store;
use snakepay_store::merchants::{self, KeyHasher, KeyKind, KycStatus, NewMerchant};
use url::Url;

pub use keys::KeysCommand;
pub use token::TokenCommand;

#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    pub api_keys: ApiKeysConfig,
    pub vault: VaultConfig,
    /// What `verify`'s calls to the processor trust besides the public roots.
    #[serde(default)]
    pub tls: snakepay_config::sections::OutboundTlsConfig,
    /// For `token …`: where the local signing key and JWKS are.
    #[serde(default)]
    pub internal_api: Option<InternalApiSection>,
    /// What `verify` reads of the integration service's section, if the
    /// file has one.
    #[serde(default)]
    pub integration: Option<IntegrationView>,
}

/// The keys of `[integration]` that `verify` uses: where the processor is
/// and how long the reconciler leaves a payment in flight. The section's
/// other keys are the integration service's, checked by it and ignored here
/// (so no `deny_unknown_fields`).
#[derive(Debug, Clone, Deserialize)]
pub struct IntegrationView {
    #[serde(default)]
    pub reconcile_after_ms: Option<u64>,
    /// `base_url` and `api_key` (its `notification_secret` is ignored).
    #[serde(default)]
    pub processor_sim: Option<verify::ProcessorAccess>,
}

impl Validate for AdminConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.api_keys.validate("api_keys")?;
        if let Some(sim) = self
            .integration
            .as_ref()
            .and_then(|i| i.processor_sim.as_ref())
        {
            snakepay_config::sections::require_scheme(
                &sim.base_url,
                &["http", "https"],
                "integration.processor_sim.base_url",
            )?;
        }
        self.vault.validate("vault")?;
        if let Some(section) = &self.internal_api {
            section.validate("internal_api")?;
        }
        Ok(())
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "snakepay-admin",
    about = "Operator commands for one Snakepay region. Configuration: SNAKEPAY_CONFIG and SNAKEPAY_* variables."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the control database and every shard to the latest schema.
    Migrate,
    /// Merchant accounts.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// The card vault's key ring.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Staff tokens for the Internal API (local signing key).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check the region's invariants (docs/reliability.md) and list every
    /// violation. Exit code 0: none; 1: violations; 2: the check could not run.
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exits non-zero naming the first altered
    /// or missing row.
    Verify,
}

impl Command {
    /// The exit code when the command fails with an error.
    pub fn error_exit_code(&self) -> u8 {
        match self {
            Command::Verify(_) => verify::EXIT_CANNOT_RUN,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Ignore what changed in the last SECONDS where a check needs a quiet
    /// system (the processor's newest work, unpublished outbox rows).
    #[arg(long, value_name = "SECONDS", default_value_t = verify::DEFAULT_SETTLE_SECONDS)]
    pub settle_seconds: f64,
    /// How long a payment may stay in flight before the reconciler takes it
    /// up [default: integration.reconcile_after_ms, else 60].
    #[arg(long, value_name = "SECONDS")]
    pub reconcile_window_seconds: Option<f64>,
    /// The processor simulator's base URL [default:
    /// integration.processor_sim.base_url]; its key is
    /// integration.processor_sim.api_key.
    #[arg(long, value_name = "URL")]
    pub processor_url: Option<Url>,
    /// Skip the checks against the processor's record.
    #[arg(long, conflicts_with = "processor_url")]
    pub skip_processor: bool,
}

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Done,
    /// `verify` found violations (and listed them).
    ViolationsFound,
}

impl Finished {
    pub fn exit_code(self) -> u8 {
        match self {
            Finished::Done => 0,
            Finished::ViolationsFound => verify::EXIT_VIOLATIONS,
        }
    }
}

/// `verify`'s options from its arguments and the configuration.
pub fn verify_options(config: &AdminConfig, args: &VerifyArgs) -> anyhow::Result<verify::Options> {
    let integration = config.integration.as_ref();
    let configured = integration.and_then(|i| i.processor_sim.as_ref());
    let processor = if args.skip_processor {
        None
    } else {
        let mut access = configured.cloned().context(
            "no processor to check against: set [integration.processor_sim] base_url and api_key \
             (as the integration service has them), or pass --skip-processor",
        )?;
        if let Some(url) = &args.processor_url {
            access.base_url = url.clone();
        }
        access.trust = config.tls.clone();
        Some(access)
    };
    let reconcile_window_seconds = match args.reconcile_window_seconds {
        Some(seconds) => seconds,
        None => integration
            .and_then(|i| i.reconcile_after_ms)
            .map_or(verify::DEFAULT_RECONCILE_WINDOW_SECONDS, |ms| {
                ms as f64 / 1000.0
            }),
    };
    Ok(verify::Options {
        settle_seconds: args.settle_seconds,
        reconcile_window_seconds,
        processor,
    })
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant on the least loaded shard and print its test keys.
    Create {
        /// Legal name.
        #[arg(long)]
        name: String,
        /// ISO 3166-1 alpha-2 country code, e.g. DE.
        #[arg(long)]
        country: String,
        /// Mark KYC verified (local development only) and issue live keys too.
        #[arg(long)]
        verified: bool,
    },
}

pub async fn run(
    config: &AdminConfig,
    command: Command,
    out: &mut impl Write,
) -> anyhow::Result<Finished> {
    match command {
        Command::Migrate => {
            let store = Store::connect_lazy(&config.database)?;
            snakepay_store::migrate::run_all(&store).await?;
            writeln!(
                out,
                "{}",
                serde_json::json!({ "migrated": { "control": 1, "shards": store.shard_count() } })
            )?;
            store.close().await;
        }
        Command::Merchant(MerchantCommand::Create {
            name,
            country,
            verified,
        }) => {
            let country = country.to_ascii_uppercase();
            anyhow::ensure!(
                country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()),
                "--country must be an ISO 3166-1 alpha-2 code such as DE"
            );
            anyhow::ensure!(
                !name.trim().is_empty() && name.len() <= 200,
                "--name must be 1 to 200 characters"
            );
            let store = Store::connect_lazy(&config.database)?;
            let hasher = KeyHasher::new(&config.api_keys.hash_secret())?;
            let region = RegionNumber(config.region.number);
            let control = store.control();
            let shard = merchants::least_loaded_shard(control, store.shard_count()).await?;
            let merchant = merchants::create_merchant(
                control,
                &config.region.code,
                region,
                shard,
                &NewMerchant {
                    legal_name: name,
                    country,
                },
            )
            .await?;
            let secret = merchants::create_api_key(
                control,
                &hasher,
                region,
                merchant.id,
                KeyKind::Secret,
                false,
            )
            .await?;
            let publishable = merchants::create_api_key(
                control,
                &hasher,
                region,
                merchant.id,
                KeyKind::Publishable,
                false,
            )
            .await?;
            let mut shown = serde_json::json!({
                "merchant": merchant.id.to_string(),
                "shard": shard.0,
                "secret_key": secret.key,
                "publishable_key": publishable.key,
            });
            let mut live = None;
            if verified {
                merchants::set_kyc_status(control, merchant.id, KycStatus::Verified).await?;
                let key = merchants::create_api_key(
                    control,
                    &hasher,
                    region,
                    merchant.id,
                    KeyKind::Secret,
                    true,
                )
                .await?;
                if let Some(fields) = shown.as_object_mut() {
                    fields.insert(
                        "live_secret_key".to_owned(),
                        serde_json::Value::String(key.key.clone()),
                    );
                }
                live = Some(key);
            }
            // The keys issued (PCI DSS 10.2.2: key creation is audited like
            // the Internal API's), recorded before they are shown.
            let mut issued = vec![
                (&secret, "secret", false),
                (&publishable, "publishable", false),
            ];
            if let Some(live) = &live {
                issued.push((live, "secret", true));
            }
            for (key, kind, livemode) in issued {
                audit::record(
                    &store,
                    "api_key.create",
                    Some(&key.key_id),
                    "succeeded",
                    &serde_json::json!({
                        "merchant": merchant.id.to_string(),
                        "kind": kind,
                        "livemode": livemode,
                        "kyc_verified": verified,
                    }),
                )
                .await?;
            }
            writeln!(out, "{shown}")?;
            store.close().await;
        }
        Command::Token(command) => token::run(config.internal_api.as_ref(), command, out)?,
        Command::Audit(AuditCommand::Verify) => {
            let store = Store::connect_lazy(&config.database)?;
            let result = audit::verify(&store, out).await;
            store.close().await;
            result?;
        }
        Command::Keys(command) => keys::run(config, command, out).await?,
        Command::Verify(args) => {
            let options = verify_options(config, &args)?;
            let store = Store::connect_lazy(&config.database)?;
            let report = verify::run(&store, &options).await;
            store.close().await;
            let report = report?;
            if args.json {
                verify::write_json(out, &report)?;
            } else {
                verify::write_table(out, &report)?;
            }
            if !report.is_clean() {
                return Ok(Finished::ViolationsFound);
            }
        }
    }
    Ok(Finished::Done)
}
