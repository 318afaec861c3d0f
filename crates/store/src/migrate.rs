//! The embedded migrations. Control and shard databases have different
//! schemas; every shard has the same one.

use anyhow::Context;
use sqlx::migrate::Migrator;

use crate::Store;

pub static CONTROL: Migrator = sqlx::migrate!("./migrations/control");
pub static SHARD: Migrator = sqlx::migrate!("./migrations/shard");

/// Brings the control database and every shard to the latest schema.
/// Safe to run concurrently and repeatedly: sqlx takes an advisory lock and
/// skips applied migrations.
pub async fn run_all(store: &Store) -> anyhow::Result<()> {
    CONTROL
        .run(store.control())
        .await
        .context("migrating the control database")?;
    for (shard, pool) in store.shards() {
        SHARD
            .run(pool)
            .await
            .with_context(|| format!("migrating shard {shard}"))?;
    }
    Ok(())
}
