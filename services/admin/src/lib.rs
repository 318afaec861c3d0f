//! `snakepay-admin`: operator commands over a region.
//!
//! # Layout
//!
//! - [`AdminConfig`]: the sections the commands need.
//! - [`Command`] and [`run`]: the commands. `main.rs` parses arguments and
//!   calls `run`; tests call `run` directly.
//! - `keys.rs`: `keys init | rotate | retire | status`, the vault's key ring
//!   and online KEK rotation.
//!
//! - `token.rs`: the local staff-token signing key and tokens for the
//!   Internal API; `audit.rs`: verifying the audit trail's chain.
//!
//! Commands print what they did on stdout as JSON (so scripts can read the
//! created merchant's keys) and fail with a message on stderr.

mod audit;
pub mod keys;
mod token;

use std::io::Write;

use clap::{Parser, Subcommand};
use serde::Deserialize;
use snakepay_config::sections::{ApiKeysConfig, DatabaseConfig, RegionConfig, VaultConfig};
use snakepay_config::{ConfigError, Validate};
use snakepay_domain::ids::RegionNumber;
use snakepay_internal_api::config::InternalApiSection;
use snakepay_store::Store;
use snakepay_store::merchants::{self, KeyHasher, KeyKind, KycStatus, NewMerchant};

pub use keys::KeysCommand;
pub use token::TokenCommand;

#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub region: RegionConfig,
    pub database: DatabaseConfig,
    pub api_keys: ApiKeysConfig,
    pub vault: VaultConfig,
    /// For `token …`: where the local signing key and JWKS are.
    #[serde(default)]
    pub internal_api: Option<InternalApiSection>,
}

impl Validate for AdminConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        self.region.validate("region")?;
        self.database.validate("database")?;
        self.api_keys.validate("api_keys")?;
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
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; exits non-zero naming the first altered
    /// or missing row.
    Verify,
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
) -> anyhow::Result<()> {
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
            if verified {
                merchants::set_kyc_status(control, merchant.id, KycStatus::Verified).await?;
                let live = merchants::create_api_key(
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
                        serde_json::Value::String(live.key),
                    );
                }
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
    }
    Ok(())
}
