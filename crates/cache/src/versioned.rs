//! Cache-aside with versions: a client never reads an older state than one
//! it was already given.
//!
//! Every cached object carries its row version (`payment_intents.version`
//! and friends, bumped by every committed change). An entry is either a
//! value (`<version>:v:<bytes>`) or a tombstone (`<version>:t:`):
//!
//! - **read**: a value is a hit; a tombstone or nothing is a miss, and the
//!   reader loads the row from PostgreSQL and **populates** it;
//! - **populate** (one script) writes only if the entry holds an older
//!   version, or a tombstone of the same version: a reader that loaded the
//!   row before a write committed cannot put it back after the writer's
//!   invalidation;
//! - **invalidate**, after every committed change, writes a tombstone of the
//!   new version unless something newer is there.
//!
//! A **dependent** entry (a charge, a view of its intent) carries its
//! parent's ID and the parent's version when it was loaded; it is served
//! only while the parent's entry (value or tombstone) holds that same
//! version, so every invalidation of the parent invalidates it too.
//!
//! If an invalidation cannot reach Redis, the cached value may be stale once
//! Redis is back. The client remembers that and, on the first call that
//! works again, bumps the namespace's generation (part of every key, read in
//! the same script), which makes everything cached before unreachable. TTLs
//! bound the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Script;

use snakepay_telemetry::metrics::{CACHE, labels};

use crate::client::{Redis, Unavailable};

const GET: &str = r"
local generation = redis.call('GET', KEYS[1]) or '0'
return redis.call('GET', KEYS[2] .. generation .. ':' .. ARGV[1])
";

/// Writes `ARGV[2]` at version `ARGV[1]` if nothing newer is there; kind
/// `ARGV[4]` is `v` (populate) or `t` (invalidate).
const PUT: &str = r"
local generation = redis.call('GET', KEYS[1]) or '0'
local key = KEYS[2] .. generation .. ':' .. ARGV[5]
local new_version = tonumber(ARGV[1])
local current = redis.call('GET', key)
if current then
  local sep = string.find(current, ':', 1, true)
  local version = tonumber(string.sub(current, 1, sep - 1))
  local kind = string.sub(current, sep + 1, sep + 1)
  if version > new_version then return 0 end
  -- The same version: only a value replacing its own tombstone (the state
  -- the write committed, loaded after the invalidation) changes anything.
  if version == new_version and not (ARGV[4] == 'v' and kind == 't') then return 0 end
end
redis.call('SET', key, ARGV[1] .. ':' .. ARGV[4] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// A dependent entry (`<version>:v:<parent id>\n<bytes>`), returned only
/// while the parent's entry has the same version.
const GET_DEPENDENT: &str = r"
local generation = redis.call('GET', KEYS[1]) or '0'
local entry = redis.call('GET', KEYS[2] .. generation .. ':' .. ARGV[1])
if not entry then return false end
local sep = string.find(entry, ':', 1, true)
if not sep or string.sub(entry, sep + 1, sep + 2) ~= 'v:' then return false end
local version = string.sub(entry, 1, sep - 1)
local body = string.sub(entry, sep + 3)
local newline = string.find(body, '\n', 1, true)
if not newline then return false end
local parent_generation = redis.call('GET', KEYS[3]) or '0'
local parent = redis.call('GET', KEYS[4] .. parent_generation .. ':' .. string.sub(body, 1, newline - 1))
if not parent then return false end
local parent_sep = string.find(parent, ':', 1, true)
if not parent_sep or string.sub(parent, 1, parent_sep - 1) ~= version then return false end
return version .. ':v:' .. string.sub(body, newline + 1)
";

pub struct VersionedCache {
    redis: Arc<Redis>,
    /// E.g. `pi:` — keys are `<namespace><generation>:<id>`.
    namespace: String,
    ttl: Duration,
    /// The `cache` label of `snakepay_cache_requests_total`.
    label: &'static str,
}

impl VersionedCache {
    pub fn new(
        redis: Arc<Redis>,
        namespace: &str,
        ttl: Duration,
        label: &'static str,
    ) -> VersionedCache {
        VersionedCache {
            redis,
            namespace: namespace.to_owned(),
            ttl,
            label,
        }
    }

    /// The cache of one kind of object ([`crate::PAYMENT_INTENTS`], …).
    pub fn of(redis: Arc<Redis>, kind: &crate::CacheKind) -> VersionedCache {
        VersionedCache::new(redis, kind.prefix, kind.ttl, kind.label)
    }

    fn count(&self, result: &str) {
        CACHE
            .requests
            .get_or_create(&labels([("cache", self.label), ("result", result)]))
            .inc();
    }

    fn generation_key(&self) -> String {
        format!("{}generation", self.namespace)
    }

    /// Makes every entry of the namespace unreachable if a write was lost.
    async fn heal(&self) -> Result<(), Unavailable> {
        if self.redis.take_dirty() {
            let key = self.generation_key();
            let result = self
                .redis
                .call(|mut c| async move {
                    redis::cmd("INCR").arg(key).query_async::<i64>(&mut c).await
                })
                .await;
            if let Err(error) = result {
                self.redis.mark_dirty();
                return Err(error);
            }
            tracing::info!(cache.namespace = %self.namespace, "cache generation bumped after lost writes");
        }
        Ok(())
    }

    /// The cached value and its version, or `None` (miss, or Redis
    /// unavailable: the caller reads PostgreSQL either way).
    pub async fn get(&self, id: &str) -> Option<(i64, Vec<u8>)> {
        let (generation, prefix) = (self.generation_key(), self.namespace.clone());
        let id = id.to_owned();
        self.lookup(|mut c| async move {
            Script::new(GET)
                .key(generation)
                .key(prefix)
                .arg(id)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// A dependent entry of this cache whose parent lives in `parent` (a
    /// charge and its intent): a hit only while the parent's entry carries
    /// the version the dependent was loaded at.
    pub async fn get_dependent(&self, id: &str, parent: &VersionedCache) -> Option<(i64, Vec<u8>)> {
        if parent.heal().await.is_err() {
            return None;
        }
        let (generation, prefix) = (self.generation_key(), self.namespace.clone());
        let (parent_generation, parent_prefix) =
            (parent.generation_key(), parent.namespace.clone());
        let id = id.to_owned();
        self.lookup(|mut c| async move {
            Script::new(GET_DEPENDENT)
                .key(generation)
                .key(prefix)
                .key(parent_generation)
                .key(parent_prefix)
                .arg(id)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    /// Caches a dependent entry loaded at its parent's version `version`,
    /// and marks the parent's entry with that version if it has none, so
    /// the dependent can be validated (a tombstone: the parent's value is
    /// not cached by this).
    pub async fn populate_dependent(
        &self,
        id: &str,
        version: i64,
        parent_id: &str,
        bytes: &[u8],
        parent: &VersionedCache,
    ) {
        let mut entry = Vec::with_capacity(parent_id.len() + 1 + bytes.len());
        entry.extend_from_slice(parent_id.as_bytes());
        entry.push(b'\n');
        entry.extend_from_slice(bytes);
        if self.put(id, version, &entry, 'v').await.is_ok() {
            let _ = parent.put(parent_id, version, b"", 't').await;
        }
    }

    /// One read: heals first, counts the hit, miss or error.
    async fn lookup<F, Fut>(&self, call: F) -> Option<(i64, Vec<u8>)>
    where
        F: FnOnce(redis::aio::ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<Option<Vec<u8>>>>,
    {
        if self.heal().await.is_err() {
            self.count("error");
            return None;
        }
        match self.redis.call(call).await {
            Ok(entry) => {
                let value = entry.and_then(|bytes| parse(&bytes));
                let stats = &self.redis.stats;
                if value.is_some() {
                    stats.hits.fetch_add(1, Ordering::Relaxed);
                    self.count("hit");
                } else {
                    stats.misses.fetch_add(1, Ordering::Relaxed);
                    self.count("miss");
                }
                value
            }
            Err(_) => {
                self.count("error");
                None
            }
        }
    }

    /// Caches what a reader loaded, unless something newer is cached.
    pub async fn populate(&self, id: &str, version: i64, bytes: &[u8]) {
        let _ = self.put(id, version, bytes, 'v').await;
    }

    /// After a committed change to version `version`: no older value may be
    /// served or cached again. A failure is remembered (see the module).
    pub async fn invalidate(&self, id: &str, version: i64) {
        if self.put(id, version, b"", 't').await.is_err() {
            self.redis.mark_dirty();
        }
    }

    /// For a state that can never become valid again (a revoked key) or
    /// whose version is unknown: nothing is cached under `id` until the
    /// entry expires. Unlike [`VersionedCache::invalidate`], a failure is
    /// returned, for the caller to report.
    pub async fn forget(&self, id: &str) -> Result<(), Unavailable> {
        self.put(id, i64::MAX, b"", 't').await
    }

    async fn put(
        &self,
        id: &str,
        version: i64,
        bytes: &[u8],
        kind: char,
    ) -> Result<(), Unavailable> {
        self.heal().await?;
        let (generation, prefix) = (self.generation_key(), self.namespace.clone());
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let (id, bytes) = (id.to_owned(), bytes.to_vec());
        self.redis
            .call(|mut c| async move {
                Script::new(PUT)
                    .key(generation)
                    .key(prefix)
                    .arg(version)
                    .arg(bytes)
                    .arg(ttl_ms)
                    .arg(kind.to_string())
                    .arg(id)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(drop)
    }
}

/// `<version>:v:<bytes>` → the value; tombstones and garbage → `None`.
fn parse(entry: &[u8]) -> Option<(i64, Vec<u8>)> {
    let sep = entry.iter().position(|&b| b == b':')?;
    let version: i64 = std::str::from_utf8(entry.get(..sep)?).ok()?.parse().ok()?;
    match entry.get(sep + 1..sep + 3)? {
        b"v:" => Some((version, entry.get(sep + 3..)?.to_vec())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn entries_parse_to_values_and_tombstones_to_nothing() {
        assert_eq!(parse(b"7:v:{\"a\":1}"), Some((7, b"{\"a\":1}".to_vec())));
        assert_eq!(parse(b"7:v:"), Some((7, Vec::new())));
        assert_eq!(parse(b"8:t:"), None);
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"x:v:1"), None);
    }
}
