//! `/v1/webhook_endpoints`: the signing secret is shown once and stored only
//! sealed; validation; paging; update, disable and delete; isolation between
//! merchants; idempotent creates; publishable keys refused.

use serde_json::Value;

use crate::support::{Reply, TestApi, TestMerchant};

const PATH: &str = "/v1/webhook_endpoints";

async fn create(api: &TestApi, key: &str, form: &[(&str, &str)]) -> Reply {
    api.post(key, PATH, form, None).await
}

/// An endpoint with a valid URL and one event type; returns its JSON.
async fn create_ok(api: &TestApi, merchant: &TestMerchant, url: &str) -> Value {
    let reply = create(
        api,
        &merchant.secret_key,
        &[
            ("url", url),
            ("enabled_events[]", "payment_intent.succeeded"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

async fn delete(api: &TestApi, key: &str, path: &str) -> Reply {
    api.send(api.client.delete(api.url(path)).bearer_auth(key))
        .await
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(id_of).collect()
}

async fn count_rows(api: &TestApi, merchant: &TestMerchant) -> i64 {
    let pool = api.db.store.shard(merchant.id.shard()).unwrap();
    sqlx::query_scalar("select count(*) from webhook_endpoints where merchant_id = $1")
        .bind(merchant.id.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn creating_an_endpoint_returns_its_secret_once_and_stores_it_only_sealed() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    // With an idempotency key, as the official SDKs send on every POST: the
    // stored response must not hold the secret either.
    let created = api
        .post(
            &m.secret_key,
            PATH,
            &[
                ("url", "https://example.com/hooks"),
                ("enabled_events[]", "payment_intent.succeeded"),
                ("enabled_events[]", "charge.refunded"),
                ("description", "orders"),
                ("metadata[team]", "payments"),
            ],
            Some("create-endpoint-1"),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let body = &created.body;
    let id = id_of(body);
    assert!(id.starts_with("we_"), "{id}");
    assert_eq!(body["object"], "webhook_endpoint");
    assert_eq!(body["api_version"], Value::Null);
    assert_eq!(body["application"], Value::Null);
    assert!(body["created"].as_i64().unwrap() > 0);
    assert_eq!(body["description"], "orders");
    assert_eq!(
        body["enabled_events"],
        serde_json::json!(["payment_intent.succeeded", "charge.refunded"])
    );
    assert_eq!(body["livemode"], false);
    assert_eq!(body["metadata"]["team"], "payments");
    assert_eq!(body["status"], "enabled");
    assert_eq!(body["url"], "https://example.com/hooks");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let random = secret.strip_prefix("whsec_").unwrap();
    assert_eq!(random.len(), 64, "32 random bytes as hex");
    let secret_hex = hex::encode(secret.as_bytes());

    let retrieved = api.get(&m.secret_key, &format!("{PATH}/{id}")).await;
    assert_eq!(retrieved.status, 200, "{}", retrieved.body);
    let listed = api.get(&m.secret_key, PATH).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let updated = api
        .post(
            &m.secret_key,
            &format!("{PATH}/{id}"),
            &[("description", "renamed")],
            None,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    for reply in [&retrieved, &listed, &updated] {
        let text = String::from_utf8_lossy(&reply.bytes);
        assert!(!text.contains(random), "the secret leaked: {text}");
        assert!(!text.contains("\"secret\""), "{text}");
    }
    let mut without_secret = body.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(retrieved.body, without_secret);

    let dump = api.dump_all_tables().await;
    assert!(!dump.contains(random), "a table holds the secret in clear");
    assert!(
        !dump.contains(&secret_hex),
        "a bytea column holds the secret in clear"
    );

    // It is sealed on the merchant's shard instead.
    let pool = api.db.store.shard(m.id.shard()).unwrap();
    let (key_id, wrapped, ciphertext): (String, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "select secret_key_id, secret_wrapped, secret_ciphertext from webhook_endpoints where id = $1",
    )
    .bind(&id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(key_id, "kek-test");
    assert!(!wrapped.is_empty());
    assert!(ciphertext.len() > secret.len());
}

#[tokio::test]
async fn webhook_endpoints_live_on_the_shard_and_no_longer_in_the_control_database() {
    let api = TestApi::start().await;
    let in_control: Option<String> =
        sqlx::query_scalar("select to_regclass('webhook_endpoints')::text")
            .fetch_one(api.db.store.control())
            .await
            .unwrap();
    assert_eq!(in_control, None);
    for (_, pool) in api.db.store.shards() {
        let on_shard: Option<String> =
            sqlx::query_scalar("select to_regclass('webhook_endpoints')::text")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(on_shard.as_deref(), Some("webhook_endpoints"));
    }
}

#[tokio::test]
async fn creating_an_endpoint_without_a_url_is_refused_as_a_missing_parameter() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = create(&api, &m.secret_key, &[("enabled_events[]", "*")]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("type"), "invalid_request_error");
    assert_eq!(reply.error("code"), "parameter_missing");
    assert_eq!(reply.error("param"), "url");

    let reply = create(&api, &m.secret_key, &[("url", "https://example.com/h")]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("code"), "parameter_missing");
    assert_eq!(reply.error("param"), "enabled_events");
    assert_eq!(count_rows(&api, &m).await, 0);
}

#[tokio::test]
async fn bad_urls_unknown_event_types_and_empty_event_lists_are_refused() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let too_long = format!("https://example.com/{}", "a".repeat(2048));
    for url in [
        "not a url",
        "/relative/path",
        "ftp://example.com/hooks",
        "https://",
        too_long.as_str(),
    ] {
        let reply = create(
            &api,
            &m.secret_key,
            &[("url", url), ("enabled_events[]", "*")],
        )
        .await;
        assert_eq!(reply.status, 400, "{url}: {}", reply.body);
        assert_eq!(reply.error("param"), "url", "{url}");
        assert_eq!(reply.error("type"), "invalid_request_error");
    }

    let reply = create(
        &api,
        &m.secret_key,
        &[
            ("url", "https://example.com/h"),
            ("enabled_events[]", "payment_intent.succeeded"),
            ("enabled_events[]", "payment_intent.exploded"),
        ],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "enabled_events[1]");
    assert!(
        reply
            .error("message")
            .as_str()
            .unwrap()
            .contains("payment_intent.exploded")
    );

    let reply = create(
        &api,
        &m.secret_key,
        &[("url", "https://example.com/h"), ("enabled_events", "")],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "enabled_events");

    let reply = create(
        &api,
        &m.secret_key,
        &[
            ("url", "https://example.com/h"),
            ("enabled_events[]", "*"),
            ("secret", "whsec_mine"),
        ],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("code"), "parameter_unknown");
    assert_eq!(reply.error("param"), "secret");
    assert_eq!(count_rows(&api, &m).await, 0);
}

#[tokio::test]
async fn test_mode_accepts_http_urls_and_live_mode_requires_https() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let test_endpoint = create_ok(&api, &m, "http://localhost:4242/webhooks").await;
    assert_eq!(test_endpoint["livemode"], false);

    let live = api.live_key(&m, true).await;
    let reply = create(
        &api,
        &live,
        &[
            ("url", "http://example.com/webhooks"),
            ("enabled_events[]", "*"),
        ],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "url");

    let reply = create(
        &api,
        &live,
        &[
            ("url", "https://example.com/webhooks"),
            ("enabled_events[]", "*"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["livemode"], true);
    assert_eq!(reply.body["enabled_events"], serde_json::json!(["*"]));
    let live_id = id_of(&reply.body);

    // An update to plain HTTP is refused in live mode too.
    let reply = api
        .post(
            &live,
            &format!("{PATH}/{live_id}"),
            &[("url", "http://example.com/webhooks")],
            None,
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "url");

    // Modes do not see each other's endpoints.
    let test_list = api.get(&m.secret_key, PATH).await;
    assert_eq!(ids(&test_list.body), vec![id_of(&test_endpoint)]);
    let live_list = api.get(&live, PATH).await;
    assert_eq!(ids(&live_list.body), vec![live_id.clone()]);
    let reply = api.get(&m.secret_key, &format!("{PATH}/{live_id}")).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[tokio::test]
async fn endpoints_are_listed_newest_first_and_paged_with_cursors() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let mut created = Vec::new();
    for n in 0..5 {
        let body = create_ok(&api, &m, &format!("https://example.com/hooks/{n}")).await;
        created.push(id_of(&body));
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let all = api.get(&m.secret_key, PATH).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.body["object"], "list");
    assert_eq!(all.body["url"], PATH);
    assert_eq!(all.body["has_more"], false);
    assert_eq!(ids(&all.body), newest_first);
    assert!(
        all.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("secret").is_none())
    );

    let first = api.get(&m.secret_key, &format!("{PATH}?limit=2")).await;
    assert_eq!(ids(&first.body), newest_first[..2].to_vec());
    assert_eq!(first.body["has_more"], true);
    let second = api
        .get(
            &m.secret_key,
            &format!("{PATH}?limit=2&starting_after={}", newest_first[1]),
        )
        .await;
    assert_eq!(ids(&second.body), newest_first[2..4].to_vec());
    assert_eq!(second.body["has_more"], true);
    let third = api
        .get(
            &m.secret_key,
            &format!("{PATH}?limit=2&starting_after={}", newest_first[3]),
        )
        .await;
    assert_eq!(ids(&third.body), newest_first[4..].to_vec());
    assert_eq!(third.body["has_more"], false);

    let back = api
        .get(
            &m.secret_key,
            &format!("{PATH}?limit=2&ending_before={}", newest_first[4]),
        )
        .await;
    assert_eq!(ids(&back.body), newest_first[2..4].to_vec());
    assert_eq!(back.body["has_more"], true);

    let reply = api.get(&m.secret_key, &format!("{PATH}?limit=0")).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "limit");
    let reply = api
        .get(&m.secret_key, &format!("{PATH}?starting_after=pi_nonsense"))
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[tokio::test]
async fn updating_an_endpoint_changes_its_fields_and_can_disable_and_enable_it() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = create(
        &api,
        &m.secret_key,
        &[
            ("url", "https://example.com/old"),
            ("enabled_events[]", "payment_intent.succeeded"),
            ("description", "old"),
            ("metadata[keep]", "1"),
            ("metadata[drop]", "2"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = id_of(&reply.body);
    let path = format!("{PATH}/{id}");

    let updated = api
        .post(
            &m.secret_key,
            &path,
            &[
                ("url", "https://example.com/new"),
                ("enabled_events[]", "refund.created"),
                ("enabled_events[]", "refund.failed"),
                ("description", ""),
                ("metadata[drop]", ""),
                ("metadata[added]", "3"),
                ("disabled", "true"),
            ],
            Some("update-1"),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["url"], "https://example.com/new");
    assert_eq!(
        updated.body["enabled_events"],
        serde_json::json!(["refund.created", "refund.failed"])
    );
    assert_eq!(updated.body["description"], Value::Null);
    assert_eq!(
        updated.body["metadata"],
        serde_json::json!({"keep": "1", "added": "3"})
    );
    assert_eq!(updated.body["status"], "disabled");
    assert_eq!(updated.body["created"], reply.body["created"]);

    let retrieved = api.get(&m.secret_key, &path).await;
    assert_eq!(retrieved.body, updated.body);

    let enabled = api
        .post(&m.secret_key, &path, &[("disabled", "false")], None)
        .await;
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    assert_eq!(enabled.body["status"], "enabled");
    assert_eq!(enabled.body["url"], "https://example.com/new");

    let reply = api
        .post(&m.secret_key, &path, &[("disabled", "maybe")], None)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "disabled");
    let reply = api
        .post(&m.secret_key, &path, &[("enabled_events[]", "nope")], None)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("param"), "enabled_events[0]");
    let reply = api
        .post(
            &m.secret_key,
            &format!("{PATH}/we_0000000000000000000000000000"),
            &[("description", "x")],
            None,
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.error("code"), "resource_missing");
}

#[tokio::test]
async fn a_deleted_endpoint_is_not_found_and_not_listed_but_its_row_is_kept() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let kept = id_of(&create_ok(&api, &m, "https://example.com/kept").await);
    let gone = id_of(&create_ok(&api, &m, "https://example.com/gone").await);
    let path = format!("{PATH}/{gone}");

    let reply = delete(&api, &m.secret_key, &path).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body,
        serde_json::json!({"id": gone, "object": "webhook_endpoint", "deleted": true})
    );

    let reply = api.get(&m.secret_key, &path).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.error("code"), "resource_missing");
    let list = api.get(&m.secret_key, PATH).await;
    assert_eq!(ids(&list.body), vec![kept]);
    let reply = api
        .post(&m.secret_key, &path, &[("description", "back?")], None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = delete(&api, &m.secret_key, &path).await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // Soft-deleted: deliveries already recorded keep their reference.
    let pool = api.db.store.shard(m.id.shard()).unwrap();
    let deleted_at: Option<i64> =
        sqlx::query_scalar("select deleted_at from webhook_endpoints where id = $1")
            .bind(&gone)
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(deleted_at.is_some());
}

#[tokio::test]
async fn another_merchant_can_neither_see_nor_change_nor_delete_an_endpoint() {
    let api = TestApi::start().await;
    let owner = api.merchant_on(Some(0)).await;
    let same_shard = api.merchant_on(Some(0)).await;
    let other_shard = api.merchant_on(Some(1)).await;
    let id = id_of(&create_ok(&api, &owner, "https://example.com/mine").await);
    let path = format!("{PATH}/{id}");

    for intruder in [&same_shard, &other_shard] {
        let reply = api.get(&intruder.secret_key, &path).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        assert_eq!(reply.error("code"), "resource_missing");
        let reply = api
            .post(&intruder.secret_key, &path, &[("disabled", "true")], None)
            .await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        let reply = delete(&api, &intruder.secret_key, &path).await;
        assert_eq!(reply.status, 404, "{}", reply.body);
        let list = api.get(&intruder.secret_key, PATH).await;
        assert_eq!(ids(&list.body), Vec::<String>::new());
    }

    let reply = api.get(&owner.secret_key, &path).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "enabled");
}

#[tokio::test]
async fn replaying_a_create_returns_the_stored_response_and_creates_one_endpoint() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let form = [
        ("url", "https://example.com/once"),
        ("enabled_events[]", "customer.created"),
    ];
    let first = api
        .post(&m.secret_key, PATH, &form, Some("endpoint-once"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body["secret"].as_str().unwrap().starts_with("whsec_"));

    let second = api
        .post(&m.secret_key, PATH, &form, Some("endpoint-once"))
        .await;
    let third = api
        .post(&m.secret_key, PATH, &form, Some("endpoint-once"))
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.header("idempotency-key"), Some("endpoint-once"));
    assert_eq!(
        second.header("original-request"),
        first.header("request-id")
    );
    // Replays are byte for byte the stored response, which is the created
    // endpoint without its secret: keeping the secret replayable would mean
    // keeping it in clear (see routes/webhook_endpoints.rs).
    assert_eq!(second.bytes, third.bytes);
    let mut without_secret = first.body.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(second.body, without_secret);
    assert_eq!(count_rows(&api, &m).await, 1);

    // The same key with a different request is refused.
    let reply = api
        .post(
            &m.secret_key,
            PATH,
            &[
                ("url", "https://example.com/other"),
                ("enabled_events[]", "*"),
            ],
            Some("endpoint-once"),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error("type"), "idempotency_error");
    assert_eq!(count_rows(&api, &m).await, 1);
}

#[tokio::test]
async fn a_publishable_key_cannot_manage_webhook_endpoints() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let id = id_of(&create_ok(&api, &m, "https://example.com/h").await);
    let path = format!("{PATH}/{id}");
    let key = &m.publishable_key;
    let replies = [
        create(
            &api,
            key,
            &[("url", "https://example.com/h"), ("enabled_events[]", "*")],
        )
        .await,
        api.get(key, PATH).await,
        api.get(key, &path).await,
        api.post(key, &path, &[("disabled", "true")], None).await,
        delete(&api, key, &path).await,
    ];
    for reply in replies {
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert_eq!(reply.error("type"), "invalid_request_error");
    }
    assert_eq!(count_rows(&api, &m).await, 1);
}
