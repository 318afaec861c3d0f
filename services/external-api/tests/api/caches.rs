//! The Redis caches in front of the databases: API-key authentication
//! (revocation and KYC changes take effect on the very next request) and
//! read-through retrieval of refunds, customers and charges, never older
//! than a finished write.

use snakepay_store::merchants::{self, KycStatus};

use crate::support::{TestApi, redis_url};

const KEY_HITS: &str = r#"snakepay_cache_requests_total{cache="api_key",result="hit"}"#;

async fn api() -> TestApi {
    TestApi::start_with_redis(&redis_url(), "rate_limit_test_per_second = 100000").await
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let api = api().await;
    let m = api.merchant().await;
    for _ in 0..3 {
        let reply = api.get(&m.secret_key, "/v1/refunds").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert!(
        api.metric(KEY_HITS).await >= 2.0,
        "the key was checked from the cache after its first use"
    );

    // What every revoker does (the Internal API, the admin CLI): revoke in
    // the control database, then make the cache forget the key.
    assert!(
        merchants::revoke_api_key(api.db.store.control(), &m.key_id)
            .await
            .unwrap()
    );
    snakepay_cache::forget_api_keys(&api.redis(), std::slice::from_ref(&m.key_id))
        .await
        .unwrap();
    let reply = api.get(&m.secret_key, "/v1/refunds").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(
        reply.body["error"]["message"],
        "This API key has been revoked."
    );
    // Forgotten for good: the refusal is not cached away either.
    let reply = api.get(&m.secret_key, "/v1/refunds").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn the_cache_is_what_makes_forgetting_necessary() {
    // Shows the cache is really in the path: a revocation that only reaches
    // the database is not seen while the key is cached. (This is why
    // revokers must call `forget_api_keys`; the test above proves that is
    // enough.)
    let api = api().await;
    let m = api.merchant().await;
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
    merchants::revoke_api_key(api.db.store.control(), &m.key_id)
        .await
        .unwrap();
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
    snakepay_cache::forget_api_keys(&api.redis(), std::slice::from_ref(&m.key_id))
        .await
        .unwrap();
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 401);
}

#[tokio::test]
async fn a_kyc_rejection_stops_live_keys_on_the_very_next_request() {
    let api = api().await;
    let m = api.merchant().await;
    let live_key = api.live_key(&m, true).await;
    for _ in 0..2 {
        let reply = api.get(&live_key, "/v1/refunds").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let control = api.db.store.control();
    merchants::set_kyc_status(control, m.id, KycStatus::Rejected)
        .await
        .unwrap();
    let keys = merchants::key_ids_of(control, m.id).await.unwrap();
    assert!(keys.len() >= 2, "test and live keys: {keys:?}");
    snakepay_cache::forget_api_keys(&api.redis(), &keys)
        .await
        .unwrap();
    let reply = api.get(&live_key, "/v1/refunds").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Test mode does not depend on KYC.
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
}

#[tokio::test]
async fn a_cached_key_entry_never_authenticates_another_secret() {
    let api = api().await;
    let m = api.merchant().await;
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
    // Same key ID (so the same cache entry), another secret part.
    let mut forged = m.secret_key.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let reply = api.get(&forged, "/v1/refunds").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
}

#[tokio::test]
async fn customers_and_refunds_are_served_from_the_cache_and_charges_follow_their_intent() {
    let api = api().await;
    let m = api.merchant().await;
    let other = api.merchant().await;

    let customer = api
        .post(
            &m.secret_key,
            "/v1/customers",
            &[("email", "a@example.com")],
            None,
        )
        .await;
    let customer_id = customer.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/customers/{customer_id}");
    for _ in 0..3 {
        let reply = api.get(&m.secret_key, &path).await;
        assert_eq!(reply.body, customer.body);
    }
    let hits = r#"snakepay_cache_requests_total{cache="customer",result="hit"}"#;
    assert!(api.metric(hits).await >= 2.0);
    // Another merchant's key never reads the cached entry.
    assert_eq!(api.get(&other.secret_key, &path).await.status, 404);

    // A charge is a view of its intent: after the intent changes (here its
    // description, which the charge shows), the next charge read shows it.
    let intent = api.succeeded_payment(&m, 5000).await;
    let intent_body = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{intent}"))
        .await
        .body;
    let charge_id = intent_body["latest_charge"].as_str().unwrap().to_owned();
    let charge_path = format!("/v1/charges/{charge_id}");
    for _ in 0..3 {
        let charge = api.get(&m.secret_key, &charge_path).await;
        assert_eq!(charge.body["amount_refunded"], 0, "{}", charge.body);
    }
    let charge_hits = r#"snakepay_cache_requests_total{cache="charge",result="hit"}"#;
    assert!(api.metric(charge_hits).await >= 2.0);
    let updated = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{intent}"),
            &[("description", "order 42")],
            None,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let charge = api.get(&m.secret_key, &charge_path).await;
    assert_eq!(charge.body["description"], "order 42", "{}", charge.body);
    assert_eq!(api.get(&other.secret_key, &charge_path).await.status, 404);

    let refund = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", intent.as_str()), ("amount", "1200")],
            None,
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.body);

    let refund_path = format!("/v1/refunds/{}", refund.body["id"].as_str().unwrap());
    for _ in 0..3 {
        let reply = api.get(&m.secret_key, &refund_path).await;
        assert_eq!(reply.body["status"], "pending");
    }
    let refund_hits = r#"snakepay_cache_requests_total{cache="refund",result="hit"}"#;
    assert!(api.metric(refund_hits).await >= 2.0);
}

/// A redis-server of the test's own, on a spare port, so it can be killed.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = OwnRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/stack.sh installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

const INTENT_HITS: &str = r#"snakepay_cache_requests_total{cache="payment_intent",result="hit"}"#;
const INTENT_MISSES: &str =
    r#"snakepay_cache_requests_total{cache="payment_intent",result="miss"}"#;

/// Runs `rounds` rounds of reads over every intent (and one update per
/// round), asserting every request succeeds.
async fn load(api: &std::sync::Arc<TestApi>, key: &str, intents: &[String], rounds: usize) {
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for id in intents {
            let (api, key, path) = (
                api.clone(),
                key.to_owned(),
                format!("/v1/payment_intents/{id}"),
            );
            tasks.push(tokio::spawn(async move {
                let reply = api.get(&key, &path).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                reply.body["metadata"]["round"].as_str().map(str::to_owned)
            }));
        }
        let first = &intents[round % intents.len()];
        let update = api
            .post(
                key,
                &format!("/v1/payment_intents/{first}"),
                &[("metadata[round]", round.to_string().as_str())],
                None,
            )
            .await;
        assert_eq!(update.status, 200, "{}", update.body);
        for task in tasks {
            task.await.unwrap();
        }
        // A read after the update answered shows it, Redis or not.
        let reply = api.get(key, &format!("/v1/payment_intents/{first}")).await;
        assert_eq!(reply.body["metadata"]["round"], round.to_string());
    }
}

#[tokio::test]
async fn with_redis_killed_mid_load_every_request_succeeds_and_caching_recovers_after_restart() {
    use std::sync::Arc;

    let mut redis = OwnRedis::start();
    let api = Arc::new(
        TestApi::start_with_redis(&redis.url(), "rate_limit_test_per_second = 100000").await,
    );
    let m = api.merchant().await;
    let mut intents = Vec::new();
    for _ in 0..10 {
        let reply = api
            .post(
                &m.secret_key,
                "/v1/payment_intents",
                &[("amount", "1000"), ("currency", "usd")],
                None,
            )
            .await;
        intents.push(reply.body["id"].as_str().unwrap().to_owned());
    }

    load(&api, &m.secret_key, &intents, 5).await;
    let hits_before = api.metric(INTENT_HITS).await;
    assert!(hits_before > 20.0, "warm cache: {hits_before} hits");

    redis.kill();
    load(&api, &m.secret_key, &intents, 5).await;
    let degraded = r#"snakepay_dependency_degraded_total{dependency="redis"}"#;
    assert!(api.metric(degraded).await > 0.0, "degradation is counted");
    let ready = api.send(api.client.get(api.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "degraded, never down: {}", ready.body);
    assert!(
        ready.body.to_string().contains("degraded"),
        "{}",
        ready.body
    );

    redis.restart();
    // The breaker lets a trial call through within a second; then reads
    // fill the cache again (after the generation bump that the writes
    // lost during the outage require).
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    load(&api, &m.secret_key, &intents, 2).await;
    let (hits, misses) = (
        api.metric(INTENT_HITS).await,
        api.metric(INTENT_MISSES).await,
    );
    load(&api, &m.secret_key, &intents, 10).await;
    let new_hits = api.metric(INTENT_HITS).await - hits;
    let new_misses = api.metric(INTENT_MISSES).await - misses;
    let ratio = new_hits / (new_hits + new_misses);
    assert!(
        ratio > 0.7,
        "hit ratio after recovery {ratio:.2} ({new_hits} hits, {new_misses} misses)"
    );
    let ready = api.send(api.client.get(api.url("/readyz"))).await;
    assert!(
        !ready.body.to_string().contains("degraded"),
        "{}",
        ready.body
    );
}
