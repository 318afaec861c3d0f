//! Stripe's idempotency rules (API.md), each observed over HTTP.

use crate::support::TestApi;

const CREATE: &[(&str, &str)] = &[("amount", "2000"), ("currency", "usd")];

async fn intent_count(api: &TestApi, merchant: &crate::support::TestMerchant) -> i64 {
    let shard = api.db.store.shard(merchant.id.shard()).unwrap();
    sqlx::query_scalar("select count(*) from payment_intents")
        .fetch_one(shard)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeated_request_is_replayed_byte_for_byte_with_the_original_request_id() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let first = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            CREATE,
            Some("order-1"),
        )
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotency-key"), Some("order-1"));
    let second = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            CREATE,
            Some("order-1"),
        )
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        second.header("original-request"),
        first.header("request-id")
    );
    assert_ne!(second.header("request-id"), first.header("request-id"));
    assert_eq!(intent_count(&api, &m).await, 1);
}

#[tokio::test]
async fn the_same_parameters_in_another_order_or_as_json_are_the_same_request() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let first = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "2000"), ("currency", "usd")],
            Some("k"),
        )
        .await;
    let reordered = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("currency", "usd"), ("amount", "2000")],
            Some("k"),
        )
        .await;
    assert_eq!(reordered.header("idempotent-replayed"), Some("true"));
    assert_eq!(reordered.bytes, first.bytes);
}

#[tokio::test]
async fn a_different_request_under_a_used_key_is_refused() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("k"))
        .await;
    let other = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "2001"), ("currency", "usd")],
            Some("k"),
        )
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error("type"), "idempotency_error");
    let other_path = api
        .post(&m.secret_key, "/v1/customers", &[], Some("k"))
        .await;
    assert_eq!(other_path.status, 400);
    assert_eq!(other_path.error("type"), "idempotency_error");
    assert_eq!(intent_count(&api, &m).await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_merchant() {
    let api = TestApi::start().await;
    let a = api.merchant().await;
    let b = api.merchant().await;
    let from_a = api
        .post(&a.secret_key, "/v1/payment_intents", CREATE, Some("shared"))
        .await;
    let from_b = api
        .post(&b.secret_key, "/v1/payment_intents", CREATE, Some("shared"))
        .await;
    assert_eq!(from_b.status, 200);
    assert!(from_b.header("idempotent-replayed").is_none());
    assert_ne!(from_a.body["id"], from_b.body["id"]);
}

#[tokio::test]
async fn validation_failures_are_not_stored_so_a_corrected_request_may_reuse_the_key() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let bad = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("currency", "usd")],
            Some("k"),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error("code"), "parameter_missing");
    let good = api
        .post(&m.secret_key, "/v1/payment_intents", CREATE, Some("k"))
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(good.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn an_error_found_during_execution_is_stored_and_replayed() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(&m.secret_key, "/v1/payment_intents", CREATE, None)
        .await;
    let id = created.body["id"].as_str().unwrap();
    api.post(
        &m.secret_key,
        &format!("/v1/payment_intents/{id}/cancel"),
        &[],
        None,
    )
    .await;
    let path = format!("/v1/payment_intents/{id}/confirm");
    let first = api
        .post(
            &m.secret_key,
            &path,
            &[("payment_method", "pm_card_visa")],
            Some("c"),
        )
        .await;
    assert_eq!(first.status, 400);
    let replay = api
        .post(
            &m.secret_key,
            &path,
            &[("payment_method", "pm_card_visa")],
            Some("c"),
        )
        .await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.bytes, first.bytes);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_create_exactly_one_intent() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let requests =
        (0..50).map(|_| api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("burst")));
    let replies = futures_util::future::join_all(requests).await;
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 200 && r.header("idempotent-replayed").is_none())
        .collect();
    let replayed = replies
        .iter()
        .filter(|r| r.status == 200 && r.header("idempotent-replayed") == Some("true"))
        .count();
    let in_use = replies
        .iter()
        .filter(|r| r.status == 409 && r.error("code") == "idempotency_key_in_use")
        .count();
    assert_eq!(created.len(), 1, "exactly one request executed");
    assert_eq!(
        replayed + in_use,
        49,
        "every other request was a replay or a 409"
    );
    for reply in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(reply.bytes, created[0].bytes);
    }
    for reply in replies.iter().filter(|r| r.status == 409) {
        assert_eq!(reply.header("stripe-should-retry"), Some("true"));
    }
    assert_eq!(intent_count(&api, &m).await, 1);
}

/// A create inserts its key with its answer in the statement that writes
/// the intent. A key another transaction holds makes that statement wait,
/// then fail whole: the request then answers as the key says, and writes
/// nothing of its own.
#[tokio::test]
async fn a_create_waits_for_a_transaction_holding_its_key_and_writes_nothing_when_it_commits() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let hold = |key: &'static str| {
        let merchant = m.id.to_string();
        async move {
            let mut holder = shard.begin().await.unwrap();
            sqlx::query(
                "insert into idempotency_keys (merchant_id, livemode, key, fingerprint, request_id,
                     recovery_point, response_status, response_body)
                 values ($1, false, $2, 'another request', 'req_other', 'finished', 200, '{}')",
            )
            .bind(merchant)
            .bind(key)
            .execute(&mut *holder)
            .await
            .unwrap();
            holder
        }
    };
    let wait_then = |holder: sqlx::Transaction<'static, sqlx::Postgres>, commit: bool| async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let waiting: i64 = sqlx::query_scalar("select count(*) from payment_intents")
            .fetch_one(shard)
            .await
            .unwrap();
        if commit {
            holder.commit().await.unwrap();
        } else {
            holder.rollback().await.unwrap();
        }
        waiting
    };

    // The holder commits another request's answer: this one is refused.
    let holder = hold("held").await;
    let (refused, written_while_waiting) = tokio::join!(
        api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("held")),
        wait_then(holder, true),
    );
    assert_eq!(written_while_waiting, 0, "the create waited for the key");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.error("type"), "idempotency_error");
    assert_eq!(
        intent_count(&api, &m).await,
        0,
        "nothing written under a key not ours"
    );

    // The holder rolls back: the key is free, and the create goes ahead.
    let holder = hold("released").await;
    let (created, _) = tokio::join!(
        api.post(
            &m.secret_key,
            "/v1/payment_intents",
            CREATE,
            Some("released")
        ),
        wait_then(holder, false),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.header("idempotent-replayed").is_none());
    assert_eq!(intent_count(&api, &m).await, 1);
    let replay = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            CREATE,
            Some("released"),
        )
        .await;
    assert_eq!(replay.bytes, created.bytes);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn an_abandoned_claim_blocks_retries_only_until_its_lock_expires() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let fingerprint_of_a_crashed_request: String = {
        // Leave the key as an earlier version's request that died mid-way
        // left it: claimed in a commit of its own, without a response.
        api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("crash"))
            .await;
        sqlx::query_scalar("select fingerprint from idempotency_keys where key = 'crash'")
            .fetch_one(shard)
            .await
            .unwrap()
    };
    sqlx::query("update idempotency_keys set response_status = null, response_body = null, locked_at = now() where key = 'crash'")
        .execute(shard)
        .await
        .unwrap();
    sqlx::query("delete from payment_intents")
        .execute(shard)
        .await
        .unwrap();
    let blocked = api
        .post(&m.secret_key, "/v1/payment_intents", CREATE, Some("crash"))
        .await;
    assert_eq!(blocked.status, 409);
    sqlx::query(
        "update idempotency_keys set locked_at = now() - interval '10 minutes' where key = 'crash'",
    )
    .execute(shard)
    .await
    .unwrap();
    let resumed = api
        .post(&m.secret_key, "/v1/payment_intents", CREATE, Some("crash"))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let fingerprint: String =
        sqlx::query_scalar("select fingerprint from idempotency_keys where key = 'crash'")
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(fingerprint, fingerprint_of_a_crashed_request);
    assert_eq!(intent_count(&api, &m).await, 1);
}

#[tokio::test]
async fn the_reaper_deletes_only_keys_past_retention() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("old"))
        .await;
    api.post(&m.secret_key, "/v1/payment_intents", CREATE, Some("new"))
        .await;
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    sqlx::query(
        "update idempotency_keys set created_at = now() - interval '3 days' where key = 'old'",
    )
    .execute(shard)
    .await
    .unwrap();
    assert_eq!(snakepay_store::idempotency::reap(shard).await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("select key from idempotency_keys")
        .fetch_all(shard)
        .await
        .unwrap();
    assert_eq!(left, ["new"]);
}

/// A create whose one-statement write found its key taken, and which then
/// executed on the transaction path (here: taking over an earlier version's
/// stale claim, committed after the create had waited on it for over a
/// second), stamps its events with the intent's own creation time.
#[tokio::test]
async fn a_create_that_falls_back_to_the_transaction_stamps_its_events_with_the_intents_time() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let confirmed: &[(&str, &str)] = &[("amount", "2000"), ("currency", "usd")];
    // The request's fingerprint, from a first run under the key.
    api.post(
        &m.secret_key,
        "/v1/payment_intents",
        confirmed,
        Some("late"),
    )
    .await;
    let fingerprint: String =
        sqlx::query_scalar("select fingerprint from idempotency_keys where key = 'late'")
            .fetch_one(shard)
            .await
            .unwrap();
    for table in ["idempotency_keys", "events", "payment_intents"] {
        sqlx::query(&format!("delete from {table}"))
            .execute(shard)
            .await
            .unwrap();
    }
    // An earlier version's stale bare claim, committed only after a while.
    let mut holder = shard.begin().await.unwrap();
    sqlx::query(
        "insert into idempotency_keys (merchant_id, livemode, key, fingerprint, request_id, locked_at)
         values ($1, false, 'late', $2, 'req_crashed', now() - interval '10 minutes')",
    )
    .bind(m.id.to_string())
    .bind(&fingerprint)
    .execute(&mut *holder)
    .await
    .unwrap();
    let (created, ()) = tokio::join!(
        api.post(
            &m.secret_key,
            "/v1/payment_intents",
            confirmed,
            Some("late")
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            holder.commit().await.unwrap();
        },
    );
    assert_eq!(created.status, 200, "{}", created.body);
    let stamps: Vec<i64> = sqlx::query_scalar("select created from events order by id")
        .fetch_all(shard)
        .await
        .unwrap();
    assert!(!stamps.is_empty());
    let intent_created = created.body["created"].as_i64().unwrap();
    assert!(
        stamps.iter().all(|&stamp| stamp == intent_created),
        "events at {stamps:?}, the intent at {intent_created}"
    );
}
