use crate::support::TestApi;

#[tokio::test]
async fn partial_and_full_refunds_are_capped_by_what_was_received() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let intent = api.succeeded_payment(&m, 1_000).await;
    let first = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[
                ("payment_intent", &intent),
                ("amount", "400"),
                ("reason", "requested_by_customer"),
            ],
            Some("r1"),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["object"], "refund");
    assert_eq!(first.body["status"], "pending");
    assert_eq!(first.body["amount"], 400);
    assert_eq!(first.body["reason"], "requested_by_customer");
    assert_eq!(first.body["payment_intent"], intent.as_str());

    let too_much = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &intent), ("amount", "700")],
            None,
        )
        .await;
    assert_eq!(
        (too_much.status, too_much.error("code")),
        (400, "amount_too_large".into())
    );
    let rest = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &intent)],
            None,
        )
        .await;
    assert_eq!(rest.body["amount"], 600);
    let none_left = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &intent)],
            None,
        )
        .await;
    assert_eq!(
        (none_left.status, none_left.error("code")),
        (400, "charge_already_refunded".into())
    );

    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let commands: i64 =
        sqlx::query_scalar("select count(*) from outbox where routing_key = 'command.refund'")
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(commands, 2);
    let events: i64 =
        sqlx::query_scalar("select count(*) from events where type = 'refund.created'")
            .fetch_one(shard)
            .await
            .unwrap();
    assert_eq!(events, 2);
}

#[tokio::test]
async fn twenty_concurrent_refunds_never_reserve_more_than_was_received() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let intent = api.succeeded_payment(&m, 1_000).await;
    let keys: Vec<String> = (0..20).map(|n| format!("refund-{n}")).collect();
    let form = [("payment_intent", intent.as_str()), ("amount", "100")];
    let requests = keys
        .iter()
        .map(|key| api.post(&m.secret_key, "/v1/refunds", &form, Some(key)));
    let replies = futures_util::future::join_all(requests).await;
    let accepted = replies.iter().filter(|r| r.status == 200).count();
    let refused = replies
        .iter()
        .filter(|r| r.status == 400 && r.error("code") == "charge_already_refunded")
        .count();
    assert_eq!((accepted, refused), (10, 10));
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let reserved: i64 = sqlx::query_scalar("select sum(amount)::bigint from refunds")
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(reserved, 1_000);
    let pending: i64 = sqlx::query_scalar("select amount_refund_pending from payment_intents")
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(pending, 1_000);
}

#[tokio::test]
async fn a_refund_can_name_the_charge_and_is_retrieved_and_listed() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let intent = api.succeeded_payment(&m, 2_500).await;
    let fetched = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{intent}"))
        .await;
    let charge = fetched.body["latest_charge"].as_str().unwrap().to_owned();
    let refund = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[
                ("charge", &charge),
                ("amount", "500"),
                ("metadata[ticket]", "42"),
            ],
            None,
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.body);
    assert_eq!(refund.body["charge"], charge.as_str());
    assert_eq!(refund.body["metadata"]["ticket"], "42");
    let id = refund.body["id"].as_str().unwrap();
    assert_eq!(
        api.get(&m.secret_key, &format!("/v1/refunds/{id}"))
            .await
            .body,
        refund.body
    );
    let other = api.succeeded_payment(&m, 900).await;
    api.post(
        &m.secret_key,
        "/v1/refunds",
        &[("payment_intent", &other)],
        None,
    )
    .await;
    let all = api.get(&m.secret_key, "/v1/refunds").await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2);
    let filtered = api
        .get(
            &m.secret_key,
            &format!("/v1/refunds?payment_intent={intent}"),
        )
        .await;
    let data = filtered.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], id);
}

#[tokio::test]
async fn a_payment_that_has_not_succeeded_cannot_be_refunded() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    let intent = created.body["id"].as_str().unwrap();
    let refused = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", intent)],
            None,
        )
        .await;
    assert_eq!(
        (refused.status, refused.error("code")),
        (400, "payment_intent_unexpected_state".into())
    );
    let missing = api
        .post(&m.secret_key, "/v1/refunds", &[("amount", "100")], None)
        .await;
    assert_eq!(
        (missing.status, missing.error("code")),
        (400, "parameter_missing".into())
    );
}

#[tokio::test]
async fn the_latest_charge_shows_the_card_and_the_captured_amount() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let intent = api.succeeded_payment(&m, 3_000).await;
    let expanded = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents/{intent}?expand[]=latest_charge"),
        )
        .await;
    assert_eq!(expanded.body["status"], "succeeded");
    let charge = &expanded.body["latest_charge"];
    assert_eq!(charge["object"], "charge");
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["amount_captured"], 3_000);
    assert_eq!(charge["captured"], true);
    assert_eq!(charge["payment_method_details"]["card"]["last4"], "4242");
    assert_eq!(charge["payment_method_details"]["card"]["brand"], "visa");
    let id = charge["id"].as_str().unwrap();
    let direct = api.get(&m.secret_key, &format!("/v1/charges/{id}")).await;
    assert_eq!(&direct.body, charge);
    assert_eq!(
        api.get(&m.secret_key, "/v1/charges/ch_nope").await.status,
        404
    );

    // The books balance and say what the merchant is owed.
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let owed: i64 = sqlx::query_scalar(
        "select coalesce(sum(case side when 'credit' then amount else -amount end), 0)::bigint from journal_lines where account = 'merchant_payable'",
    )
    .fetch_one(shard)
    .await
    .unwrap();
    assert_eq!(owed, 3_000);
}
