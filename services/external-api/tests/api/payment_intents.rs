use crate::support::TestApi;

const CARD: &[(&str, &str)] = &[
    ("payment_method_data[type]", "card"),
    ("payment_method_data[card][number]", "4242 4242 4242 4242"),
    ("payment_method_data[card][exp_month]", "12"),
    ("payment_method_data[card][exp_year]", "2034"),
    ("payment_method_data[card][cvc]", "123"),
];

fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

#[tokio::test]
async fn creating_an_intent_returns_it_in_the_stripe_format_with_request_id_and_version() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "eur"),
                ("metadata[order]", "7"),
            ],
            Some("k1"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let intent = &reply.body;
    assert_eq!(intent["object"], "payment_intent");
    assert!(intent["id"].as_str().unwrap().starts_with("pi_"));
    assert_eq!(intent["amount"], 2000);
    assert_eq!(intent["currency"], "eur");
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["capture_method"], "automatic_async");
    assert_eq!(intent["livemode"], false);
    assert_eq!(intent["metadata"]["order"], "7");
    assert!(
        intent["client_secret"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}_secret_", intent["id"].as_str().unwrap()))
    );
    assert!(reply.header("request-id").unwrap().starts_with("req_"));
    assert!(reply.header("stripe-version").is_some());

    let fetched = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents/{}", intent["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(fetched.body, reply.body);
}

#[tokio::test]
async fn confirming_with_a_card_leaves_the_intent_processing_with_its_command_in_the_outbox() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &with(
                CARD,
                &[("amount", "1500"), ("currency", "usd"), ("confirm", "true")],
            ),
            Some("k"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "processing");
    assert!(
        reply.body["payment_method"]
            .as_str()
            .unwrap()
            .starts_with("pm_")
    );

    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let commands: Vec<serde_json::Value> =
        sqlx::query_scalar("select payload from outbox where routing_key = 'command.authorize'")
            .fetch_all(shard)
            .await
            .unwrap();
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0]["payment_intent"], reply.body["id"]);
    assert_eq!(commands[0]["command"]["amount"]["minor"], 1500);
    let attempts: i64 = sqlx::query_scalar("select count(*) from payment_attempts")
        .fetch_one(shard)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    let events: Vec<String> = sqlx::query_scalar("select type from events order by id")
        .fetch_all(shard)
        .await
        .unwrap();
    assert_eq!(
        events,
        ["payment_intent.created", "payment_intent.processing"]
    );
    // Events are not announced: the command is the change's only message.
    let messages: Vec<String> = sqlx::query_scalar("select routing_key from outbox")
        .fetch_all(shard)
        .await
        .unwrap();
    assert_eq!(messages, ["command.authorize"]);
}

#[tokio::test]
async fn test_payment_method_ids_work_in_test_mode() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "990"), ("currency", "gbp")],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let confirmed = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[("payment_method", "pm_card_visa")],
            None,
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "processing");
}

#[tokio::test]
async fn update_changes_amount_and_metadata_before_confirmation_only() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("metadata[a]", "1"),
                ("metadata[b]", "2"),
            ],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let path = format!("/v1/payment_intents/{id}");
    let updated = api
        .post(
            &m.secret_key,
            &path,
            &[
                ("amount", "1200"),
                ("metadata[a]", ""),
                ("metadata[c]", "3"),
                ("description", "blue shoes"),
            ],
            None,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["amount"], 1200);
    assert_eq!(
        updated.body["metadata"],
        serde_json::json!({"b": "2", "c": "3"})
    );
    assert_eq!(updated.body["description"], "blue shoes");

    api.post(
        &m.secret_key,
        &format!("{path}/confirm"),
        &[("payment_method", "pm_card_visa")],
        None,
    )
    .await;
    let refused = api
        .post(&m.secret_key, &path, &[("amount", "1300")], None)
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error("code"), "payment_intent_unexpected_state");
    // Metadata can still change.
    assert_eq!(
        api.post(&m.secret_key, &path, &[("metadata[d]", "4")], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn cancel_records_the_reason_and_a_canceled_intent_cannot_be_confirmed() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd")],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let canceled = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/cancel"),
            &[("cancellation_reason", "abandoned")],
            None,
        )
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(canceled.body["cancellation_reason"], "abandoned");
    assert!(canceled.body["canceled_at"].as_i64().is_some());
    let again = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[("payment_method", "pm_card_visa")],
            None,
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(again.error("code"), "payment_intent_unexpected_state");
    assert_eq!(again.error("type"), "invalid_request_error");
}

#[tokio::test]
async fn lists_are_newest_first_with_cursors_and_created_filters() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let mut ids = Vec::new();
    for amount in ["100", "200", "300", "400", "500"] {
        let reply = api
            .post(
                &m.secret_key,
                "/v1/payment_intents",
                &[("amount", amount), ("currency", "usd")],
                None,
            )
            .await;
        ids.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let page = api.get(&m.secret_key, "/v1/payment_intents?limit=2").await;
    assert_eq!(page.body["object"], "list");
    assert_eq!(page.body["url"], "/v1/payment_intents");
    assert_eq!(page.body["has_more"], true);
    let first: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(first, [ids[4].as_str(), ids[3].as_str()]);

    let next = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents?limit=2&starting_after={}", ids[3]),
        )
        .await;
    let second: Vec<&str> = next.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(second, [ids[2].as_str(), ids[1].as_str()]);

    let back = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents?limit=2&ending_before={}", ids[1]),
        )
        .await;
    let previous: Vec<&str> = back.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(previous, [ids[3].as_str(), ids[2].as_str()]);

    let future = api
        .get(&m.secret_key, "/v1/payment_intents?created[gt]=4102444800")
        .await;
    assert_eq!(future.body["data"].as_array().unwrap().len(), 0);
    let all = api
        .get(
            &m.secret_key,
            "/v1/payment_intents?limit=100&created[gte]=0",
        )
        .await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 5);
    assert_eq!(all.body["has_more"], false);

    // Another merchant sees none of them.
    let other = api.merchant().await;
    let theirs = api.get(&other.secret_key, "/v1/payment_intents").await;
    assert_eq!(theirs.body["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn expand_customer_inlines_the_customer_object() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let customer = api
        .post(
            &m.secret_key,
            "/v1/customers",
            &[("email", "ada@example.com")],
            None,
        )
        .await;
    let customer_id = customer.body["id"].as_str().unwrap();
    let intent = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "700"),
                ("currency", "usd"),
                ("customer", customer_id),
                ("expand[]", "customer"),
            ],
            None,
        )
        .await;
    assert_eq!(intent.status, 200, "{}", intent.body);
    assert_eq!(intent.body["customer"]["object"], "customer");
    assert_eq!(intent.body["customer"]["email"], "ada@example.com");
    let id = intent.body["id"].as_str().unwrap();
    let plain = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
        .await;
    assert_eq!(plain.body["customer"], customer_id);
    let filtered = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents?customer={customer_id}"),
        )
        .await;
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 1);
    let bad = api
        .get(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}?expand[]=secrets"),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_publishable_key_confirms_and_reads_only_with_the_client_secret() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd")],
            None,
        )
        .await;
    let id = created.body["id"].as_str().unwrap();
    let secret = created.body["client_secret"].as_str().unwrap();

    let without = api
        .get(&m.publishable_key, &format!("/v1/payment_intents/{id}"))
        .await;
    assert_eq!(without.status, 400);
    assert_eq!(without.error("code"), "parameter_missing");
    let wrong = api
        .get(
            &m.publishable_key,
            &format!("/v1/payment_intents/{id}?client_secret={id}_secret_nope"),
        )
        .await;
    assert_eq!(wrong.status, 404);
    let read = api
        .get(
            &m.publishable_key,
            &format!("/v1/payment_intents/{id}?client_secret={secret}"),
        )
        .await;
    assert_eq!(read.status, 200);

    let confirmed = api
        .post(
            &m.publishable_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[
                ("client_secret", secret),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(confirmed.body["status"], "processing");

    let create = api
        .post(
            &m.publishable_key,
            "/v1/payment_intents",
            &[("amount", "1000"), ("currency", "usd")],
            None,
        )
        .await;
    assert_eq!(create.status, 403);
}

#[tokio::test]
async fn json_bodies_are_accepted_like_forms() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let reply = api
        .send(
            api.client
                .post(api.url("/v1/payment_intents"))
                .bearer_auth(&m.secret_key)
                .json(
                    &serde_json::json!({"amount": 1234, "currency": "jpy", "metadata": {"k": "v"}}),
                ),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["amount"], 1234);
    assert_eq!(reply.body["metadata"]["k"], "v");
}
