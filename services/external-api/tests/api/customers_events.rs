use crate::support::TestApi;

#[tokio::test]
async fn a_customer_is_created_retrieved_and_announced_by_an_event() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    let created = api
        .post(
            &m.secret_key,
            "/v1/customers",
            &[
                ("email", "grace@example.com"),
                ("name", "Grace"),
                ("address[city]", "Berlin"),
                ("address[country]", "DE"),
                ("metadata[tier]", "gold"),
            ],
            Some("c1"),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["object"], "customer");
    assert_eq!(created.body["address"]["city"], "Berlin");
    let id = created.body["id"].as_str().unwrap();
    assert!(id.starts_with("cus_"));
    let fetched = api.get(&m.secret_key, &format!("/v1/customers/{id}")).await;
    assert_eq!(fetched.body, created.body);

    let events = api
        .get(&m.secret_key, "/v1/events?type=customer.created")
        .await;
    let data = events.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "event");
    assert_eq!(data[0]["data"]["object"]["id"], id);
    assert_eq!(
        data[0]["request"]["id"],
        created.header("request-id").unwrap()
    );
    let event_id = data[0]["id"].as_str().unwrap();
    let one = api
        .get(&m.secret_key, &format!("/v1/events/{event_id}"))
        .await;
    assert_eq!(one.body["type"], "customer.created");
    let bad = api
        .post(
            &m.secret_key,
            "/v1/customers",
            &[("address[planet]", "Mars")],
            None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.error("param")),
        (400, "address[planet]".into())
    );
}

#[tokio::test]
async fn events_filter_by_types_and_page_newest_first() {
    let api = TestApi::start().await;
    let m = api.merchant().await;
    api.post(&m.secret_key, "/v1/customers", &[], None).await;
    api.post(
        &m.secret_key,
        "/v1/payment_intents",
        &[("amount", "100"), ("currency", "usd")],
        None,
    )
    .await;
    api.post(&m.secret_key, "/v1/customers", &[], None).await;
    let all = api.get(&m.secret_key, "/v1/events").await;
    let types: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "customer.created",
            "payment_intent.created",
            "customer.created"
        ]
    );
    let intents = api
        .get(&m.secret_key, "/v1/events?types[]=payment_intent.created")
        .await;
    assert_eq!(intents.body["data"].as_array().unwrap().len(), 1);
    let limited = api.get(&m.secret_key, "/v1/events?limit=1").await;
    assert_eq!(limited.body["has_more"], true);
    let invalid = api
        .get(&m.secret_key, "/v1/events?type=nonsense.happened")
        .await;
    assert_eq!(invalid.status, 400);
    let limit = api.get(&m.secret_key, "/v1/events?limit=101").await;
    assert_eq!(limit.status, 400);
}
