//! A fresh set of databases (one control, N shards) for every test, against
//! the real PostgreSQL that `scripts/stack.sh` brings up.
//!
//! Migrating per test would be slow, so each schema is migrated once into a
//! template database whose name carries a hash of the migrations; tests clone
//! it with `CREATE DATABASE … TEMPLATE`, which copies files and takes
//! milliseconds. Test databases are dropped when the handle is dropped, and
//! any left behind by a killed test run are dropped after two hours.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::{Store, migrate, unix_now};

/// The server tests use; `scripts/test.sh` sets it, and the default is what
/// `scripts/stack.sh` creates.
pub const POSTGRES_URL_VARIABLE: &str = "SNAKEPAY_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://snakepay:snakepay@127.0.0.1:5432";
const TEST_PREFIX: &str = "snakepay_t_";
const LEFTOVER_AGE_SECONDS: i64 = 2 * 60 * 60;
/// Connections per test pool: enough for concurrency tests, small enough
/// that many tests in parallel stay under the server's max_connections.
const TEST_POOL_CONNECTIONS: u32 = 12;

/// The databases of one test. Dropping it drops them.
#[derive(Debug)]
pub struct TestDatabases {
    pub store: Store,
    names: Vec<String>,
    server_url: String,
}

impl TestDatabases {
    /// The URLs of this test's databases, control first, for services that
    /// connect on their own (a service started in-process by a test).
    pub fn urls(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|name| format!("{}/{name}", self.server_url))
            .collect()
    }

    pub fn control_url(&self) -> String {
        format!(
            "{}/{}",
            self.server_url,
            self.names.first().map(String::as_str).unwrap_or_default()
        )
    }

    pub fn shard_urls(&self) -> Vec<String> {
        self.urls().into_iter().skip(1).collect()
    }
}

pub fn server_url() -> String {
    std::env::var(POSTGRES_URL_VARIABLE)
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Creates a control database and `shard_count` shard databases, migrated.
pub async fn fresh(shard_count: usize) -> anyhow::Result<TestDatabases> {
    let server_url = server_url();
    let mut admin = PgConnection::connect(&format!("{server_url}/postgres"))
        .await
        .with_context(|| {
            format!("connecting to {server_url}/postgres: is the stack up (scripts/stack.sh)?")
        })?;
    drop_leftovers(&mut admin).await;

    let control_template =
        ensure_template(&mut admin, &server_url, "control", &migrate::CONTROL).await?;
    let shard_template = ensure_template(&mut admin, &server_url, "shard", &migrate::SHARD).await?;

    let mut random = [0_u8; 6];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let base = format!("{TEST_PREFIX}{}_{}", unix_now(), hex::encode(random));
    let mut names = vec![format!("{base}_control")];
    names.extend((0..shard_count).map(|n| format!("{base}_shard_{n}")));
    for (index, name) in names.iter().enumerate() {
        let template = if index == 0 {
            &control_template
        } else {
            &shard_template
        };
        clone_database(&mut admin, template, name).await?;
    }
    admin.close().await.ok();

    let pool = |name: &str| -> anyhow::Result<PgPool> {
        let options = PgConnectOptions::from_str(&format!("{server_url}/{name}"))?;
        Ok(PgPoolOptions::new()
            .max_connections(TEST_POOL_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options))
    };
    let (control_name, shard_names) = names.split_first().context("no databases")?;
    let control = pool(control_name)?;
    let shards = shard_names
        .iter()
        .map(|name| pool(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TestDatabases {
        store: Store::from_pools(control, shards),
        names,
        server_url,
    })
}

/// The template for a schema, migrated once per distinct set of migrations.
async fn ensure_template(
    admin: &mut PgConnection,
    server_url: &str,
    kind: &str,
    migrator: &Migrator,
) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    for migration in migrator.iter() {
        hasher.update(migration.version.to_be_bytes());
        hasher.update(&*migration.checksum);
    }
    let digest = hex::encode(hasher.finalize());
    let name = format!(
        "snakepay_tpl_{kind}_{}",
        digest.get(..12).context("digest length")?
    );
    // Serialize template creation across concurrent test processes.
    let name_hash = Sha256::digest(name.as_bytes());
    let lock_key = i64::from_be_bytes(<[u8; 8]>::try_from(
        name_hash.get(..8).context("hash length")?,
    )?);
    sqlx::query("select pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut *admin)
        .await?;
    let result = async {
        if database_exists(admin, &name).await? {
            return Ok(name.clone());
        }
        let building = format!("{name}_building");
        sqlx::query(&format!("drop database if exists {building} with (force)"))
            .execute(&mut *admin)
            .await?;
        sqlx::query(&format!("create database {building}"))
            .execute(&mut *admin)
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{server_url}/{building}"))
            .await?;
        migrator
            .run(&pool)
            .await
            .with_context(|| format!("migrating template {building}"))?;
        pool.close().await;
        sqlx::query(&format!("alter database {building} rename to {name}"))
            .execute(&mut *admin)
            .await?;
        Ok(name.clone())
    }
    .await;
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(lock_key)
        .execute(&mut *admin)
        .await?;
    result
}

async fn database_exists(admin: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    let found: Option<(i32,)> = sqlx::query_as("select 1 from pg_database where datname = $1")
        .bind(name)
        .fetch_optional(&mut *admin)
        .await?;
    Ok(found.is_some())
}

async fn clone_database(
    admin: &mut PgConnection,
    template: &str,
    name: &str,
) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match sqlx::query(&format!("create database {name} template {template}"))
            .execute(&mut *admin)
            .await
        {
            Ok(_) => return Ok(()),
            // "source database is being accessed by other users": another
            // process is cloning the same template this very moment.
            Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some("55006") && tries < 50 =>
            {
                tokio::time::sleep(Duration::from_millis(20 * tries)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating {name} from {template}"));
            }
        }
    }
}

/// Drops test databases older than two hours, left by killed runs.
async fn drop_leftovers(admin: &mut PgConnection) {
    let Ok(rows) = sqlx::query_as::<_, (String,)>(
        "select datname from pg_database where datname like 'snakepay\\_t\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    else {
        return;
    };
    let cutoff = unix_now() - LEFTOVER_AGE_SECONDS;
    for (name,) in rows {
        let created: Option<i64> = name
            .strip_prefix(TEST_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse().ok());
        if created.is_some_and(|created| created < cutoff) {
            let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(&mut *admin)
                .await;
        }
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let url = format!("{}/postgres", self.server_url);
        // Drop cannot await; a short-lived thread with its own runtime does
        // the clean-up, and we wait for it so the next test starts clean.
        let handle = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut admin) = PgConnection::connect(&url).await else {
                    return;
                };
                for name in names {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}
