//! The cache against a real Redis: the version protocol under concurrent
//! readers and writers, the shared limiter, and degradation when Redis dies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use snakepay_cache::{Decision, Redis, SharedRateLimiter, VersionedCache};
use snakepay_config::sections::RedisConfig;

fn redis_url() -> String {
    std::env::var("SNAKEPAY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn config(url: &str, timeout_ms: u64) -> RedisConfig {
    snakepay_config::from_toml_str::<Wrapper>(&format!(
        "[redis]\nurl = \"{url}\"\ntimeout_ms = {timeout_ms}\n"
    ))
    .unwrap()
    .redis
}

#[derive(serde::Deserialize)]
struct Wrapper {
    redis: RedisConfig,
}

impl snakepay_config::Validate for Wrapper {
    fn validate(&self, _prefix: &str) -> Result<(), snakepay_config::ConfigError> {
        self.redis.validate("redis")
    }
}

fn unique(prefix: &str) -> String {
    let mut random = [0_u8; 6];
    getrandom::fill(&mut random).unwrap();
    format!("test:{prefix}:{}:", hex::encode(random))
}

#[tokio::test]
async fn a_populate_that_lost_the_race_with_a_write_never_puts_the_older_state_back() {
    let redis = Redis::new(&config(&redis_url(), 200)).unwrap();
    let cache = VersionedCache::new(
        redis,
        &unique("pi"),
        Duration::from_secs(60),
        "payment_intent",
    );
    cache.populate("pi_1", 1, b"one").await;
    assert_eq!(cache.get("pi_1").await, Some((1, b"one".to_vec())));
    // A write commits version 2 and invalidates; a reader that loaded
    // version 1 before the write populates late.
    cache.invalidate("pi_1", 2).await;
    cache.populate("pi_1", 1, b"one").await;
    assert_eq!(
        cache.get("pi_1").await,
        None,
        "the stale populate was refused"
    );
    cache.populate("pi_1", 2, b"two").await;
    assert_eq!(cache.get("pi_1").await, Some((2, b"two".to_vec())));
    // A late invalidation of the same version keeps the current value; an
    // older one changes nothing.
    cache.invalidate("pi_1", 2).await;
    cache.invalidate("pi_1", 1).await;
    assert_eq!(cache.get("pi_1").await, Some((2, b"two".to_vec())));
}

#[tokio::test]
async fn under_concurrent_writers_and_readers_no_read_is_older_than_a_finished_write() {
    let redis = Redis::new(&config(&redis_url(), 500)).unwrap();
    let cache = Arc::new(VersionedCache::new(
        redis,
        &unique("race"),
        Duration::from_secs(60),
        "payment_intent",
    ));
    // The "database": the committed version of one row.
    let committed = Arc::new(AtomicI64::new(1));
    // The newest version whose write (commit and invalidation) finished.
    let finished = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (cache, committed, finished) = (cache.clone(), committed.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let version = committed.fetch_add(1, Ordering::SeqCst) + 1;
                cache.invalidate("row", version).await;
                finished.fetch_max(version, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        }));
    }
    for _ in 0..8 {
        let (cache, committed, finished) = (cache.clone(), committed.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let mut last_seen = 0;
            for _ in 0..300 {
                let floor = finished.load(Ordering::SeqCst);
                let version = match cache.get("row").await {
                    Some((version, _)) => version,
                    None => {
                        let version = committed.load(Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        cache.populate("row", version, b"row").await;
                        version
                    }
                };
                assert!(
                    version >= floor,
                    "read {version} after write {floor} finished"
                );
                assert!(
                    version >= last_seen,
                    "read {version} after having read {last_seen}"
                );
                last_seen = version;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn two_limiters_share_one_limit_and_tell_when_to_retry() {
    let key = unique("rate");
    let first = SharedRateLimiter::new(Redis::new(&config(&redis_url(), 500)).unwrap(), &key);
    let second = SharedRateLimiter::new(Redis::new(&config(&redis_url(), 500)).unwrap(), &key);
    let mut allowed = 0;
    let mut retry_after_ms = None;
    for i in 0..20 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        match limiter.check("sk_1", 10).await.unwrap() {
            Decision::Allowed => allowed += 1,
            Decision::Limited { retry_after_ms: ms } => {
                retry_after_ms.get_or_insert(ms);
            }
        }
    }
    assert!(
        (10..=11).contains(&allowed),
        "one burst of 10 across both: {allowed}"
    );
    let wait = retry_after_ms.expect("the rest was limited");
    assert!((1..=100).contains(&wait), "{wait} ms");
    tokio::time::sleep(Duration::from_millis(wait + 5)).await;
    assert_eq!(first.check("sk_1", 10).await.unwrap(), Decision::Allowed);
    // Another key has its own limit.
    assert_eq!(second.check("sk_2", 10).await.unwrap(), Decision::Allowed);
}

/// A redis-server of the test's own, on a spare port, so it can be killed.
struct OwnRedis {
    port: u16,
    child: KilledOnDrop,
    _dir: tempfile::TempDir,
}

/// The server process, killed when the test ends however it ends, so no
/// run leaves a redis-server behind.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl OwnRedis {
    fn start(port: u16, dir: tempfile::TempDir) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/stack.sh)");
        OwnRedis {
            port,
            child: KilledOnDrop(child),
            _dir: dir,
        }
    }

    fn kill(mut self) -> (u16, tempfile::TempDir) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
        (self.port, self._dir)
    }
}

async fn wait_until(mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn when_redis_dies_calls_fail_fast_and_caching_resumes_by_itself_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = OwnRedis::start(port, tempfile::tempdir().unwrap());
    let redis = Redis::new(&config(&format!("redis://127.0.0.1:{port}/0"), 100)).unwrap();
    let cache = VersionedCache::new(
        redis.clone(),
        "pi:",
        Duration::from_secs(60),
        "payment_intent",
    );
    wait_until(async || {
        cache.populate("pi_1", 1, b"one").await;
        cache.get("pi_1").await.is_some()
    })
    .await;
    assert!(redis.degraded_reason().is_none());

    let (port, dir) = server.kill();
    // Every call now fails within the timeout, then the circuit opens and
    // calls are not even tried; readers simply miss.
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(cache.get("pi_1").await, None);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(redis.degraded_reason().is_some());
    // A write while Redis is down cannot invalidate: remembered.
    cache.invalidate("pi_1", 2).await;

    let _server = OwnRedis::start(port, dir);
    let (hits_before, _, _) = redis.stats.snapshot();
    wait_until(async || {
        cache.populate("pi_1", 2, b"two").await;
        cache.get("pi_1").await == Some((2, b"two".to_vec()))
    })
    .await;
    assert!(
        redis.degraded_reason().is_none(),
        "the circuit closed by itself"
    );
    for _ in 0..10 {
        assert_eq!(cache.get("pi_1").await, Some((2, b"two".to_vec())));
    }
    let (hits_after, _, _) = redis.stats.snapshot();
    assert!(hits_after >= hits_before + 10, "hits resumed");
}
