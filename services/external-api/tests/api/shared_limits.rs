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
