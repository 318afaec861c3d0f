//! `snakepay-admin keys …`: the card vault's key ring.
//!
//! - `init` creates a key ring file (local runs).
//! - `rotate` introduces a new key-encryption key (KEK) version and re-wraps
//!   every data key under it, online: small batches in key order, each
//!   batch one compare-and-set `UPDATE`, so payments keep being tokenized
//!   and opened throughout. Card data is never decrypted: only the 32-byte
//!   data keys are unwrapped and wrapped again (vault feature `rotate`).
//! - `retire` removes an old KEK once no record refers to it any more.
//! - `status` counts the records under each KEK.
//!
//! Why it is safe while services run: the old KEK stays in the ring until
//! `retire`, so every record opens whichever KEK wraps it; services reload
//! the ring (`Vault::reloading`), so they seal under the new KEK within the
//! reload interval and open records re-wrapped under it at once; a row
//! changed while its batch was being re-wrapped (its CVC deleted after the
//! authorization, say) fails the compare-and-set and is left as it is; and
//! `rotate` repeats its passes until one finds nothing left after the
//! services had time to reload, so records sealed by an instance that had
//! not reloaded yet are re-wrapped too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use snakepay_store::Store;
use snakepay_vault::{KeyProvider, KeyRing, SealedRecord, Vault};
use sqlx::PgPool;

use crate::AdminConfig;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a new key ring file (key-encryption key + fingerprint key) at
    /// the configured path, unless one exists.
    Init {
        /// Overrides vault.key_ring_path.
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Add a new key-encryption key version, make it active and re-wrap every
    /// data key under it, online. The old key stays until `keys retire`.
    Rotate {
        /// Only re-wrap (a rotation whose new key was added by hand, as with
        /// the environment provider, or one that was interrupted).
        #[arg(long)]
        rewrap_only: bool,
        /// Rows per batch (one UPDATE each).
        #[arg(long, default_value_t = 200)]
        batch_size: i64,
        /// Pause between batches, to leave the databases to payments.
        #[arg(long, default_value_t = 20)]
        pause_ms: u64,
        /// How long services may take to pick up the new key ring; the last
        /// pass starts after this (default: the vault's reload interval plus
        /// two seconds for requests in flight).
        #[arg(long)]
        settle_ms: Option<u64>,
    },
    /// Remove a key-encryption key that no record uses any more.
    Retire {
        /// The key ID, e.g. kek-1.
        #[arg(long)]
        kek: String,
    },
    /// Show the key IDs and how many records each one wraps.
    Status,
}

/// Every sealed value in a shard: table, then its key ID, wrapped data key
/// and ciphertext columns. The vault's `aad` for each is the row's `id`
/// (payment method ID, webhook endpoint ID). A test checks that the shard
/// schema has no other `*_key_id` column, so a new sealed column cannot be
/// forgotten here.
pub const SEALED_COLUMNS: &[SealedColumns] = &[
    SealedColumns {
        table: "payment_methods",
        key_id: "pan_key_id",
        wrapped: "pan_wrapped_key",
        ciphertext: "pan_ciphertext",
    },
    SealedColumns {
        table: "payment_methods",
        key_id: "cvc_key_id",
        wrapped: "cvc_wrapped_key",
        ciphertext: "cvc_ciphertext",
    },
    SealedColumns {
        table: "webhook_endpoints",
        key_id: "secret_key_id",
        wrapped: "secret_wrapped",
        ciphertext: "secret_ciphertext",
    },
];

/// Where one kind of sealed value lives.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumns {
    pub table: &'static str,
    pub key_id: &'static str,
    pub wrapped: &'static str,
    pub ciphertext: &'static str,
}

/// `rotate` stops after this many passes even if records keep appearing
/// under an old KEK (an instance that cannot reload its ring); it reports
/// them, and `retire` refuses until they are gone.
const MAX_PASSES: usize = 10;

pub async fn run(
    config: &AdminConfig,
    command: KeysCommand,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let provider = || {
        snakepay_vault::key_provider(&config.vault.key_provider, &config.vault.key_ring_path)
            .context("vault.key_provider")
    };
    match command {
        KeysCommand::Init { path } => init(config, path, out),
        KeysCommand::Rotate {
            rewrap_only,
            batch_size,
            pause_ms,
            settle_ms,
        } => {
            anyhow::ensure!(
                (1..=10_000).contains(&batch_size),
                "--batch-size must be between 1 and 10000"
            );
            let settle = settle_ms.map_or(
                snakepay_vault::DEFAULT_RELOAD_INTERVAL + Duration::from_secs(2),
                Duration::from_millis,
            );
            let store = Store::connect_lazy(&config.database)?;
            let result = rotate(
                &store,
                provider()?.as_ref(),
                &Rotation {
                    add_kek: !rewrap_only,
                    batch_size,
                    pause: Duration::from_millis(pause_ms),
                    settle,
                },
            )
            .await;
            let (outcome, details) = match &result {
                Ok(report) if report.failed.is_empty() => ("succeeded", report.to_json()),
                Ok(report) => ("incomplete", report.to_json()),
                Err(error) => (
                    "failed",
                    serde_json::json!({ "error": format!("{error:#}") }),
                ),
            };
            let resource = result
                .as_ref()
                .ok()
                .map(|report| report.active_kek_id.clone());
            let recorded = crate::audit::record(
                &store,
                if rewrap_only {
                    "keys.rewrap"
                } else {
                    "keys.rotate"
                },
                resource.as_deref(),
                outcome,
                &details,
            )
            .await;
            store.close().await;
            let report = result?;
            recorded?;
            writeln!(out, "{}", report.to_json())?;
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} records could not be re-wrapped (first: {:?})",
                report.failed.len(),
                report.failed.iter().next()
            );
            Ok(())
        }
        KeysCommand::Retire { kek } => {
            let store = Store::connect_lazy(&config.database)?;
            let result = retire(&store, provider()?.as_ref(), &kek).await;
            let (outcome, details) = match &result {
                Ok(remaining) => ("succeeded", serde_json::json!({ "kek_ids": remaining })),
                Err(error) => (
                    "refused",
                    serde_json::json!({ "error": format!("{error:#}") }),
                ),
            };
            let recorded =
                crate::audit::record(&store, "keys.retire", Some(&kek), outcome, &details).await;
            store.close().await;
            let remaining = result?;
            recorded?;
            writeln!(
                out,
                "{}",
                serde_json::json!({ "retired": kek, "kek_ids": remaining })
            )?;
            Ok(())
        }
        KeysCommand::Status => {
            let store = Store::connect_lazy(&config.database)?;
            let ring = provider()?.load_key_ring();
            let counts = count_by_key(&store).await;
            store.close().await;
            let ring = ring?;
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "active_kek_id": ring.active_kek_id(),
                    "kek_ids": ring.kek_ids().collect::<Vec<_>>(),
                    "records": counts?,
                })
            )?;
            Ok(())
        }
    }
}

fn init(
    config: &AdminConfig,
    path: Option<PathBuf>,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let path = path.unwrap_or_else(|| config.vault.key_ring_path.clone());
    if path.exists() {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "key_ring": path, "created": false })
        )?;
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let ring = KeyRing::generate("kek-1")?;
    snakepay_vault::FileKeyProvider::create(&path, &ring)?;
    writeln!(
        out,
        "{}",
        serde_json::json!({ "key_ring": path, "created": true })
    )?;
    Ok(())
}

/// How to run a rotation.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// Add a new KEK version first (otherwise only re-wrap).
    pub add_kek: bool,
    pub batch_size: i64,
    pub pause: Duration,
    /// The last pass starts at least this long after the new ring is stored.
    pub settle: Duration,
}

/// What a rotation did. Row IDs are safe to print; key material never is.
#[derive(Debug, Default)]
pub struct RotationReport {
    pub active_kek_id: String,
    pub added_kek_id: Option<String>,
    pub passes: usize,
    pub rewrapped: u64,
    /// Rows changed by someone else between read and update (left alone).
    pub changed_meanwhile: u64,
    /// Row (table, column, ID) → reason, for records that did not unwrap.
    pub failed: BTreeMap<String, String>,
    /// Records per KEK ID afterwards.
    pub remaining: BTreeMap<String, i64>,
}

impl RotationReport {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "active_kek_id": self.active_kek_id,
            "added_kek_id": self.added_kek_id,
            "passes": self.passes,
            "rewrapped": self.rewrapped,
            "changed_meanwhile": self.changed_meanwhile,
            "failed": self.failed.len(),
            "records": self.remaining,
        })
    }
}

/// Adds a KEK version (unless `rewrap_only`) and re-wraps every record not
/// under the active KEK, in batches, until a pass after `settle` finds none.
pub async fn rotate(
    store: &Store,
    provider: &dyn KeyProvider,
    rotation: &Rotation,
) -> anyhow::Result<RotationReport> {
    let mut ring = provider
        .load_key_ring()
        .with_context(|| format!("loading the {}", provider.describe()))?;
    let mut report = RotationReport::default();
    if rotation.add_kek {
        let id = ring.next_kek_id();
        ring.add_active_kek(&id)?;
        provider.store_key_ring(&ring).context(
            "storing the new key ring; with the environment provider, add the KEK to the \
             secret by hand and run `keys rotate --rewrap-only` (docs/security.md)",
        )?;
        report.added_kek_id = Some(id);
    }
    let stored_at = Instant::now();
    let vault = Vault::new(ring);
    report.active_kek_id = vault.active_key_id();

    while report.passes < MAX_PASSES {
        report.passes += 1;
        let pass_started = Instant::now();
        let mut found = 0;
        for (_, pool) in store.shards() {
            for columns in SEALED_COLUMNS {
                found += rewrap_all(pool, &vault, columns, rotation, &mut report).await?;
            }
        }
        // Done when a pass that began after the services had time to pick
        // up the new ring found nothing left to do.
        let settled = pass_started.duration_since(stored_at) >= rotation.settle;
        if found == 0 && settled {
            break;
        }
        if found == 0 {
            tokio::time::sleep(rotation.settle.saturating_sub(stored_at.elapsed())).await;
        }
    }
    report.remaining = count_by_key(store).await?;
    Ok(report)
}

/// Re-wraps every record in `columns` whose KEK is not the active one, in
/// primary-key order (keyset pagination: each batch starts after the last
/// ID, so the whole pass reads each row once without an index on the key
/// ID column). Returns how many such records it found.
async fn rewrap_all(
    pool: &PgPool,
    vault: &Vault,
    columns: &SealedColumns,
    rotation: &Rotation,
    report: &mut RotationReport,
) -> anyhow::Result<u64> {
    let SealedColumns {
        table,
        key_id,
        wrapped,
        ciphertext,
    } = *columns;
    // Names come from SEALED_COLUMNS, never from input.
    let select = format!(
        "select id, {key_id}, {wrapped}, {ciphertext} from {table}
         where id > $1 and {key_id} is not null and {key_id} <> $2
         order by id limit $3"
    );
    let update = format!(
        "update {table} set {key_id} = u.new_key, {wrapped} = u.new_wrapped
         from unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bytea[])
             as u(id, old_key, old_wrapped, new_key, new_wrapped)
         where {table}.id = u.id and {table}.{key_id} = u.old_key
           and {table}.{wrapped} = u.old_wrapped"
    );
    let active = vault.active_key_id();
    let mut after = String::new();
    let mut found = 0;
    loop {
        let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(&select)
            .bind(&after)
            .bind(&active)
            .bind(rotation.batch_size)
            .fetch_all(pool)
            .await
            .with_context(|| format!("reading {table}.{key_id}"))?;
        let Some(last) = rows.last() else {
            return Ok(found);
        };
        after.clone_from(&last.0);

        let mut batch = Batch::default();
        for (id, old_key, old_wrapped, sealed) in rows {
            let rewrapped = SealedRecord::from_parts(old_key.clone(), old_wrapped.clone(), sealed)
                .and_then(|record| vault.rewrap(&record, id.as_bytes()));
            match rewrapped {
                Ok(record) => {
                    let (new_key, new_wrapped, _) = record.into_parts();
                    batch.push(id, old_key, old_wrapped, new_key, new_wrapped);
                }
                Err(error) => {
                    report
                        .failed
                        .insert(format!("{table}.{key_id} {id}"), error.to_string());
                }
            }
        }
        let attempted = batch.ids.len() as u64;
        // Records that do not unwrap are reported, not counted as work
        // found: another pass would fail on them again.
        found += attempted;
        let updated = sqlx::query(&update)
            .bind(&batch.ids)
            .bind(&batch.old_keys)
            .bind(&batch.old_wrapped)
            .bind(&batch.new_keys)
            .bind(&batch.new_wrapped)
            .execute(pool)
            .await
            .with_context(|| format!("re-wrapping {table}.{key_id}"))?
            .rows_affected();
        report.rewrapped += updated;
        report.changed_meanwhile += attempted.saturating_sub(updated);
        tokio::time::sleep(rotation.pause).await;
    }
}

/// One batch's columns, as arrays for `unnest`.
#[derive(Default)]
struct Batch {
    ids: Vec<String>,
    old_keys: Vec<String>,
    old_wrapped: Vec<Vec<u8>>,
    new_keys: Vec<String>,
    new_wrapped: Vec<Vec<u8>>,
}

impl Batch {
    fn push(
        &mut self,
        id: String,
        old_key: String,
        old_wrapped: Vec<u8>,
        new_key: String,
        new_wrapped: Vec<u8>,
    ) {
        self.ids.push(id);
        self.old_keys.push(old_key);
        self.old_wrapped.push(old_wrapped);
        self.new_keys.push(new_key);
        self.new_wrapped.push(new_wrapped);
    }
}

/// Records per KEK ID, over every shard and every sealed column.
pub async fn count_by_key(store: &Store) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for (shard, pool) in store.shards() {
        for SealedColumns { table, key_id, .. } in SEALED_COLUMNS {
            let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                "select {key_id}, count(*) from {table} where {key_id} is not null group by 1"
            ))
            .fetch_all(pool)
            .await
            .with_context(|| format!("counting {table}.{key_id} on shard {shard}"))?;
            for (id, count) in rows {
                *counts.entry(id).or_insert(0) += count;
            }
        }
    }
    Ok(counts)
}

/// Removes `kek` from the key ring if no record uses it. Returns the KEK IDs
/// left.
pub async fn retire(
    store: &Store,
    provider: &dyn KeyProvider,
    kek: &str,
) -> anyhow::Result<Vec<String>> {
    let mut ring = provider
        .load_key_ring()
        .with_context(|| format!("loading the {}", provider.describe()))?;
    anyhow::ensure!(
        ring.kek_ids().any(|id| id == kek),
        "{kek} is not in the key ring"
    );
    anyhow::ensure!(
        ring.active_kek_id() != kek,
        "{kek} is the active key and cannot be retired"
    );
    let in_use = count_by_key(store)
        .await?
        .get(kek)
        .copied()
        .unwrap_or_default();
    anyhow::ensure!(
        in_use == 0,
        "{kek} still wraps {in_use} records: run `snakepay-admin keys rotate --rewrap-only` first"
    );
    ring.remove_kek(kek)?;
    provider.store_key_ring(&ring).with_context(|| {
        format!(
            "storing the key ring; with the environment provider, remove {kek} from the secret \
             by hand (docs/security.md)"
        )
    })?;
    Ok(ring.kek_ids().map(str::to_owned).collect())
}
