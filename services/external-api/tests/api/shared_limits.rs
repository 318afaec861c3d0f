//! Rate limits shared through Redis by every instance, and what happens
//! when Redis is not there.

use crate::support::{TestApi, redis_url};

#[tokio::test]
async fn two_instances_enforce_one_shared_limit_with_retry_after() {
    let api = TestApi::start_with_redis(&redis_url(), "rate_limit_test_per_second = 5").await;
    let second = api.another_instance().await;
    let m = api.merchant().await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..12 {
        let base = if i % 2 == 0 {
            api.server.url()
        } else {
            second.url()
        };
        let reply = api
            .send(
                api.client
                    .get(format!("{base}/v1/payment_intents"))
                    .bearer_auth(&m.secret_key),
            )
            .await;
        if reply.status == 429 {
            assert_eq!(reply.error("code"), "rate_limit");
            retry_after.get_or_insert(reply.header("retry-after").unwrap().to_owned());
        }
        statuses.push(reply.status);
    }
    let allowed = statuses.iter().filter(|s| **s == 200).count();
    // One quota of 5 across both instances (6 if 200 ms passed meanwhile);
    // two separate limiters would have let 10 through.
    assert!((5..=6).contains(&allowed), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another key has its own quota.
    let other = api.merchant().await;
    assert_eq!(
        api.get(&other.secret_key, "/v1/payment_intents")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn without_redis_requests_are_served_and_limited_per_instance_and_readiness_says_degraded() {
    // Nothing listens on port 1: every Redis call fails fast.
    let api =
        TestApi::start_with_redis("redis://127.0.0.1:1/0", "rate_limit_test_per_second = 3").await;
    let m = api.merchant().await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(api.get(&m.secret_key, "/v1/payment_intents").await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let ready = api.send(api.client.get(api.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "degraded, not down: {}", ready.body);
    assert!(ready.body.to_string().contains("redis"), "{}", ready.body);
}

#[tokio::test]
async fn with_the_cache_a_read_never_returns_an_older_state_than_a_finished_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    let api = Arc::new(
        TestApi::start_with_redis(&redis_url(), "rate_limit_test_per_second = 100000").await,
    );
    let m = Arc::new(api.merchant().await);
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd")],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    // The newest sequence number whose update answered.
    let finished = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    {
        let (api, m, id, finished) = (api.clone(), m.clone(), id.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 1..=40_i64 {
                let value = seq.to_string();
                let reply = api
                    .post(
                        &m.secret_key,
                        &format!("/v1/payment_intents/{id}"),
                        &[("metadata[seq]", value.as_str())],
                        None,
                    )
                    .await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                finished.store(seq, Ordering::SeqCst);
            }
        }));
    }
    for _ in 0..4 {
        let (api, m, id, finished) = (api.clone(), m.clone(), id.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let mut last_seen = 0;
            for _ in 0..80 {
                let floor = finished.load(Ordering::SeqCst);
                let reply = api
                    .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
                    .await;
                assert_eq!(reply.status, 200);
                let seen: i64 = reply.body["metadata"]["seq"]
                    .as_str()
                    .map(|s| s.parse().unwrap())
                    .unwrap_or(0);
                assert!(seen >= floor, "read {seen} after update {floor} answered");
                assert!(
                    seen >= last_seen,
                    "read {seen} after having read {last_seen}"
                );
                last_seen = seen;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The cache served reads: the final state is what a fresh read shows.
    let last = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
        .await;
    assert_eq!(last.body["metadata"]["seq"], "40");
}

#[tokio::test]
async fn a_merchants_own_limit_applies_from_the_next_request_and_reads_and_writes_have_their_own_buckets()
 {
    let api = TestApi::start_with_redis(&redis_url(), "rate_limit_test_per_second = 50").await;
    let m = api.merchant().await;
    // The key is cached with the default limit first.
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
    let control = api.db.store.control();
    assert!(
        snakepay_store::merchants::set_rate_limits(control, m.id, None, Some(2))
            .await
            .unwrap()
    );
    let keys = snakepay_store::merchants::key_ids_of(control, m.id)
        .await
        .unwrap();
    snakepay_cache::forget_api_keys(&api.redis(), &keys)
        .await
        .unwrap();

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = api
            .post(
                &m.secret_key,
                "/v1/customers",
                &[("email", "w@example.com")],
                None,
            )
            .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert!(reply.header("retry-after").is_some());
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the merchant's own 2/s for writes"
    );
    // Reads draw from their own bucket.
    assert_eq!(api.get(&m.secret_key, "/v1/refunds").await.status, 200);
}
