//! The error rows of API.md's table, each produced by a real request.

use crate::support::TestApi;

#[tokio::test]
async fn missing_invalid_and_revoked_keys_get_401() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let none = api
        .send(api.client.get(api.url("/v1/payment_intents")))
        .await;
    assert_eq!(none.status, 401);
    assert_eq!(none.error("type"), "invalid_request_error");
    let invalid = api.get("sk_test_invalid", "/v1/payment_intents").await;
    assert_eq!(invalid.status, 401);
    assert!(
        !invalid.body.to_string().contains("sk_test_invalid"),
        "the key is not echoed in full"
    );
    snakepay_store::merchants::revoke_api_key(api.db.store.control(), &m.key_id)
        .await
        .unwrap();
    let revoked = api.get(&m.secret_key, "/v1/payment_intents").await;
    assert_eq!(revoked.status, 401);
    // HTTP Basic with the key as user name works like Bearer.
    let other = api.merchant().await;
    let basic = api
        .send(
            api.client
                .get(api.url("/v1/payment_intents"))
                .basic_auth(&other.secret_key, Some("")),
        )
        .await;
    assert_eq!(basic.status, 200);
}

#[tokio::test]
async fn a_key_without_permission_gets_403() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api.get(&m.publishable_key, "/v1/payment_intents").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error("type"), "invalid_request_error");
}

#[tokio::test]
async fn a_live_key_of_an_unverified_merchant_is_refused_until_kyc_passes() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let live = api.live_key(&m, false).await;
    assert_eq!(api.get(&live, "/v1/payment_intents").await.status, 403);
    snakepay_store::merchants::set_kyc_status(
        api.db.store.control(),
        m.id,
        snakepay_store::merchants::KycStatus::Verified,
    )
    .await
    .unwrap();
    let reply = api.get(&live, "/v1/payment_intents").await;
    assert_eq!(reply.status, 200);
    // Live mode never accepts test cards.
    let card = api
        .post(
            &live,
            "/v1/payment_intents",
            &[
                ("amount", "500"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    assert_eq!(card.status, 404);
}

#[tokio::test]
async fn missing_unknown_and_invalid_parameters_get_400_naming_the_parameter() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let missing = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(
        (
            missing.status,
            missing.error("code"),
            missing.error("param")
        ),
        (400, "parameter_missing".into(), "amount".into())
    );
    let unknown = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", "4242424242424242"),
                ("payment_method_data[card][exp_month]", "12"),
                ("payment_method_data[card][exp_year]", "2034"),
                ("payment_method_data[card][colour]", "red"),
            ],
            None,
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error("code"), "parameter_unknown");
    assert_eq!(unknown.error("param"), "payment_method_data[card][colour]");
    let unknown_top = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usd"), ("colour", "red")],
            None,
        )
        .await;
    assert_eq!(
        (unknown_top.error("code"), unknown_top.error("param")),
        ("parameter_unknown".into(), "colour".into())
    );
    let integer = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "ten"), ("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(
        (integer.status, integer.error("code")),
        (400, "parameter_invalid_integer".into())
    );
    let small = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "10"), ("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(
        (small.status, small.error("code")),
        (400, "amount_too_small".into())
    );
    let large = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "100000000"), ("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(
        (large.status, large.error("code")),
        (400, "amount_too_large".into())
    );
    let currency = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usdx")],
            None,
        )
        .await;
    assert_eq!(
        (currency.status, currency.error("param")),
        (400, "currency".into())
    );
    let method = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("capture_method", "later"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (method.status, method.error("param")),
        (400, "capture_method".into())
    );
}

#[tokio::test]
async fn unknown_objects_get_404_resource_missing() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    for path in [
        "/v1/payment_intents/pi_nope",
        "/v1/customers/cus_nope",
        "/v1/events/evt_nope",
    ] {
        let reply = api.get(&m.secret_key, path).await;
        assert_eq!(
            (reply.status, reply.error("code")),
            (404, "resource_missing".into()),
            "{path}"
        );
    }
    // A well-formed ID of another merchant is just as missing.
    let other = api.merchant_on(Some(m.id.shard().0)).await;
    let theirs = api
        .post(
            &other.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usd")],
            None,
        )
        .await;
    let reply = api
        .get(
            &m.secret_key,
            &format!(
                "/v1/payment_intents/{}",
                theirs.body["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(reply.status, 404);
    let unknown_route = api.get(&m.secret_key, "/v1/nothing_here").await;
    assert_eq!(unknown_route.status, 404);
}

#[tokio::test]
async fn an_operation_in_the_wrong_state_gets_400_unexpected_state() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "100"), ("currency", "usd")],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let capture = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/capture"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (capture.status, capture.error("code")),
        (400, "payment_intent_unexpected_state".into())
    );
    let confirm = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (
            confirm.status,
            confirm.error("code"),
            confirm.error("param")
        ),
        (400, "parameter_missing".into(), "payment_method".into())
    );
}

#[tokio::test]
async fn an_invalid_card_number_gets_402_incorrect_number_and_nothing_is_written() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", "4242424242424241"),
                ("payment_method_data[card][exp_month]", "12"),
                ("payment_method_data[card][exp_year]", "2034"),
            ],
            Some("bad-card"),
        )
        .await;
    assert_eq!(reply.status, 402, "{}", reply.body);
    assert_eq!(reply.error("type"), "card_error");
    assert_eq!(reply.error("code"), "incorrect_number");
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let written: i64 = sqlx::query_scalar(
        "select (select count(*) from payment_intents) + (select count(*) from payment_methods)",
    )
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(written, 0, "nothing half-written");
    let expired = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", "4242424242424242"),
                ("payment_method_data[card][exp_month]", "1"),
                ("payment_method_data[card][exp_year]", "2020"),
            ],
            None,
        )
        .await;
    assert_eq!(
        (expired.status, expired.error("code")),
        (402, "expired_card".into())
    );
}

#[tokio::test]
async fn the_same_key_with_a_running_first_request_gets_409_and_a_mismatch_400() {
    // Both rows are covered in idempotency.rs; this checks their envelope.
    let api = TestApi::start().await;
    let m = api.merchant().await;
    api.post(
        &m.secret_key,
        "/v1/payment_intents",
        &[("amount", "100"), ("currency", "usd")],
        Some("x"),
    )
    .await;
    let mismatch = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "101"), ("currency", "usd")],
            Some("x"),
        )
        .await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.error("type"), "idempotency_error");
    assert!(mismatch.error("message").as_str().is_some());
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not() {
    let api = TestApi::start_with("rate_limit_test_per_second = 3").await;
    let m = api.merchant().await;
    let replies = futures_util::future::join_all(
        (0..10).map(|_| api.get(&m.secret_key, "/v1/payment_intents")),
    )
    .await;
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(
        !limited.is_empty() && limited.len() <= 7,
        "{} limited",
        limited.len()
    );
    let reply = limited[0];
    assert_eq!(reply.error("type"), "invalid_request_error");
    assert_eq!(reply.error("code"), "rate_limit");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(reply.header("stripe-should-retry"), Some("false"));
    // Another merchant's key has its own quota.
    let other = api.merchant().await;
    assert_eq!(
        api.get(&other.secret_key, "/v1/payment_intents")
            .await
            .status,
        200
    );
    // Nothing of a limited POST is stored: after waiting, the key is free.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let created = api
        .post(&m.secret_key, "/v1/customers", &[], Some("after-limit"))
        .await;
    assert_eq!(created.status, 200);
}

#[tokio::test]
async fn a_database_failure_is_a_500_api_error_that_reveals_nothing() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    // Drop the merchant's shard database from under the running service.
    let shard_url = api.db.shard_urls()[usize::from(m.id.shard().0)].clone();
    let (server, name) = shard_url.rsplit_once('/').unwrap();
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&mut admin)
        .await
        .unwrap();

    let reply = api.get(&m.secret_key, "/v1/payment_intents").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(reply.error("type"), "api_error");
    let message = reply.error("message").as_str().unwrap().to_owned();
    assert!(
        !message.contains(name) && !message.contains("database"),
        "{message}"
    );
    assert!(reply.header("request-id").is_some());
}

#[tokio::test]
async fn an_unknown_setting_in_the_services_own_section_is_refused() {
    let toml = crate::support::minimal_config_toml("rate_limit_tset_per_second = 5");
    let error = snakepay_config::from_toml_str::<snakepay_external_api::ExternalApiConfig>(&toml)
        .unwrap_err();
    assert!(
        error.to_string().contains("rate_limit_tset_per_second"),
        "{error}"
    );
}
