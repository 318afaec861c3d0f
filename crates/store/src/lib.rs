//! Snakepay's PostgreSQL store.
//!
//! # Layout
//!
//! - [`Store`] (this file): one pool for the region's control database and
//!   one per shard; [`Store::shard`] routes by the shard number that every ID
//!   carries, so no request needs a lookup to find its data.
//! - [`migrate`]: the embedded migrations (`migrations/control`,
//!   `migrations/shard`), run by `snakepay-admin migrate`.
//! - [`roles`]: the services' database roles (least privilege); the
//!   migrations create and grant them, services connect as theirs.
//! - [`retry`]: re-running transactions that lost a serialization conflict
//!   or a deadlock.
//! - [`ledger`]: posting domain journals as immutable rows (the database
//!   checks the balance at commit, see the shard migration).
//! - [`merchants`]: merchants and their API keys (control database).
//! - [`audit`]: the hash-chained, append-only audit trail (control
//!   database), appended to by every service and verified by the admin CLI.
//! - [`intents`]: PaymentIntents, attempts and tokenized cards; the list
//!   pagination shared by every list.
//! - [`customers`], [`events`]: customers; events written with their change.
//! - [`attempts`]: what the integration service reads and records of a
//!   payment attempt (sealed card, processor reference, outcome).
//! - [`effects`]: writing a transition's events, commands and journal.
//! - [`refund_requests`]: operator refunds with maker-checker, executed
//!   through the same refund path as the External API's.
//! - [`refunds`]; [`charges`] (a view of attempts, not a table);
//!   [`webhook_endpoints`] (with their sealed signing secrets).
//! - [`webhook_deliveries`]: the webhook dispatcher's durable schedule, one
//!   delivery per (event, endpoint) and every attempt at it.
//! - [`dead_letters`]: dead-lettered broker messages parked for operators.
//! - [`outbox`]: messages for the broker, committed with the change, and
//!   the payload of processor commands.
//! - [`objects`]: the Stripe JSON of each object, for responses, event
//!   snapshots and webhook bodies alike.
//! - [`idempotency`]: claiming keys, storing and replaying responses, reaping.
//! - [`search`]: back-office reads across shards: payment search with a
//!   region-wide cursor, a payment's story, ledger balances, trial balance.
//! - [`verify`]: read-only queries for `snakepay-admin verify`, the
//!   invariant checker, in one snapshot per shard.
//! - [`testing`] (feature `testing`): a fresh set of databases per test,
//!   cloned from migrated templates.
//!
//! Every state change commits together with its outbox rows and ledger lines
//! in one transaction (DESIGN.md §4); the repositories take a transaction
//! rather than a pool where they write, so callers compose them.

pub mod attempts;
pub mod audit;
pub mod charges;
pub mod compose;
pub mod customers;
pub mod dead_letters;
pub mod effects;
pub mod events;
pub mod idempotency;
pub mod intents;
pub mod ledger;
pub mod merchants;
pub mod migrate;
pub mod objects;
pub mod outbox;
pub mod refund_requests;
pub mod refunds;
pub mod retry;
pub mod roles;
pub mod search;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use snakepay_config::sections::DatabaseConfig;
use snakepay_domain::ids::ShardNumber;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The pools of one region.
#[derive(Clone, Debug)]
pub struct Store {
    control: PgPool,
    shards: Vec<PgPool>,
}

/// A shard number that this region does not have: an ID from a corrupt or
/// foreign source. Callers answer "no such object".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} does not exist in this region")]
pub struct UnknownShard(pub ShardNumber);

impl Store {
    /// Connects lazily: pools open connections on first use, so a service can
    /// start (and report not-ready) while a database is still coming up.
    /// Connects as the user of the URLs: the migrating role that owns the
    /// schema (the admin CLI). Services use [`Store::connect_lazy_as`].
    pub fn connect_lazy(config: &DatabaseConfig) -> anyhow::Result<Store> {
        Store::connect(config, None)
    }

    /// Connects as `user` (a service's own role, see [`roles`]) instead of
    /// the URLs' user, with the URLs' password.
    pub fn connect_lazy_as(config: &DatabaseConfig, user: &str) -> anyhow::Result<Store> {
        anyhow::ensure!(
            roles::is_valid_role_name(user),
            "database user {user:?} is not a plain PostgreSQL role name"
        );
        Store::connect(config, Some(user))
    }

    fn connect(config: &DatabaseConfig, user: Option<&str>) -> anyhow::Result<Store> {
        let control = pool(config, config.control_url.expose().as_str(), user)
            .context("database.control_url")?;
        let shards = config
            .shard_urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                pool(config, url.expose().as_str(), user)
                    .with_context(|| format!("database.shard_urls[{index}]"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Store { control, shards })
    }

    /// For tests and tools that built their own pools.
    pub fn from_pools(control: PgPool, shards: Vec<PgPool>) -> Store {
        Store { control, shards }
    }

    pub fn control(&self) -> &PgPool {
        &self.control
    }

    pub fn shard(&self, shard: ShardNumber) -> Result<&PgPool, UnknownShard> {
        self.shards
            .get(usize::from(shard.0))
            .ok_or(UnknownShard(shard))
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn shards(&self) -> impl Iterator<Item = (ShardNumber, &PgPool)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(index, pool)| u8::try_from(index).ok().map(|n| (ShardNumber(n), pool)))
    }

    /// Exports the pools' sizes (`snakepay_db_pool_*`), read at every
    /// scrape. Pools are cheap handles; the hook holds clones.
    pub fn export_pool_metrics(&self) {
        let mut pools = vec![("control".to_owned(), self.control.clone())];
        pools.extend(
            self.shards()
                .map(|(shard, pool)| (format!("shard_{}", shard.0), pool.clone())),
        );
        snakepay_telemetry::metrics::on_scrape(move || {
            let metrics = &*snakepay_telemetry::metrics::DB_POOLS;
            for (name, pool) in &pools {
                let label = |key: &'static str, value: &str| {
                    snakepay_telemetry::metrics::labels([("pool", name.as_str()), (key, value)])
                };
                let size = i64::from(pool.size());
                let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
                metrics
                    .connections
                    .get_or_create(&label("state", "idle"))
                    .set(idle);
                metrics
                    .connections
                    .get_or_create(&label("state", "in_use"))
                    .set(size.saturating_sub(idle));
                metrics
                    .max_connections
                    .get_or_create(&snakepay_telemetry::metrics::labels([(
                        "pool",
                        name.as_str(),
                    )]))
                    .set(i64::from(pool.options().get_max_connections()));
            }
        });
    }

    /// Checks every database answers; for `/readyz`.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("select 1")
            .execute(&self.control)
            .await
            .context("control database")?;
        for (shard, pool) in self.shards() {
            sqlx::query("select 1")
                .execute(pool)
                .await
                .with_context(|| format!("shard {shard}"))?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.control.close().await;
        for pool in &self.shards {
            pool.close().await;
        }
    }
}

fn pool(config: &DatabaseConfig, url: &str, user: Option<&str>) -> anyhow::Result<PgPool> {
    let statement_timeout_ms = config.statement_timeout_ms.to_string();
    let mut options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
    if let Some(user) = user {
        options = options.username(user);
    }
    let options = options
        // A runaway query must not hold a connection (and its locks) forever.
        .options([("statement_timeout", statement_timeout_ms.as_str())])
        .application_name("snakepay");
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        // sqlx pings every connection it hands out (and again when it takes
        // it back): a round trip, with a wake-up of the backend and of the
        // service, per use of the pool. Under load that doubled the round
        // trips of a payment (docs/performance.md). The ping on release
        // stays (sqlx always does it), so a connection in the pool was alive
        // when it went back; one that waited there briefly is handed out
        // as is, one that waited longer is pinged first.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// How long a connection may wait in the pool and still be handed out
/// without a ping. Shorter than a restart of the server takes, so a
/// connection that a restart broke is pinged (and replaced) before use: it
/// went back to the pool alive, before the server went down. A connection
/// killed on its own (`pg_terminate_backend`, a proxy) within that time
/// fails its one use, as it could between a ping and a query anyway.
const PING_IF_IDLE_FOR: Duration = Duration::from_millis(250);

/// Unix seconds now. The one place the store reads the clock for
/// `created` columns; the domain gets times passed in.
/// Unix milliseconds now.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
