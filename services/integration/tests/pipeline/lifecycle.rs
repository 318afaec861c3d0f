//! Every test card's lifecycle through the public API.
use serde_json::Value;
use snakepay_telemetry::metrics::{OUTCOME_WAITS, labels};

use crate::support::{Pipeline, checkout_form, cvc_for, id};

#[tokio::test]
async fn every_test_card_reaches_its_outcome_through_the_public_api() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;

    let paid = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "automatic")
        .await;
    let paid = pipeline.settled(&merchant, &id(&paid)).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(paid["amount_received"], 1_000);

    let declines = [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
        ("4000000000000119", "processing_error", "processing_error"),
    ];
    for (number, code, decline_code) in declines {
        let intent = pipeline.pay(&merchant, number, 1_000, "automatic").await;
        let intent = pipeline.settled(&merchant, &id(&intent)).await;
        assert_eq!(
            intent["status"], "requires_payment_method",
            "{number}: {intent}"
        );
        assert_eq!(intent["last_payment_error"]["code"], code, "{number}");
        assert_eq!(
            intent["last_payment_error"]["decline_code"], decline_code,
            "{number}"
        );
        assert_eq!(intent["amount_received"], 0);
        // The customer tries again with a good card, on the same intent.
        let (status, _) = pipeline
            .post(
                &merchant,
                &format!("/v1/payment_intents/{}/confirm", id(&intent)),
                &[("payment_method", "pm_card_visa")],
            )
            .await;
        assert_eq!(status, 200);
        let retried = pipeline.settled(&merchant, &id(&intent)).await;
        assert_eq!(retried["status"], "succeeded", "{number} retry: {retried}");
    }
    pipeline.finish().await;
}

#[tokio::test]
async fn a_three_d_secure_card_waits_for_the_challenge_and_then_succeeds() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4000002760003184", 2_500, "automatic")
        .await;
    let intent = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(intent["status"], "requires_action", "{intent}");
    let cvcs_kept = pipeline
        .scalar_i64(
            merchant.id.shard(),
            "select count(*) from payment_methods where cvc_ciphertext is not null",
        )
        .await;
    assert_eq!(cvcs_kept, 1, "kept while the authorization is not complete");
    let url = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        intent["next_action"]["redirect_to_url"]["return_url"],
        "https://shop.example/return"
    );

    // The cardholder completes the challenge on the simulator's page; its
    // notification tells the integration service, which asks and commits.
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(&url)
        .form(&[("result", "complete")])
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_redirection() || answer.status().is_success());
    let done = pipeline
        .wait_for_intent(&merchant, &id(&intent), |i| i["status"] == "succeeded")
        .await;
    assert_eq!(done["amount_received"], 2_500);
    // The CVC was kept only until the authorization completed (PCI DSS 3.3.1).
    let cvcs_left = pipeline
        .scalar_i64(
            merchant.id.shard(),
            "select count(*) from payment_methods where cvc_ciphertext is not null",
        )
        .await;
    assert_eq!(cvcs_left, 0);
    pipeline.finish().await;
}

#[tokio::test]
async fn manual_capture_of_part_releases_the_rest() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "manual")
        .await;
    let intent = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(intent["status"], "requires_capture", "{intent}");
    assert_eq!(intent["amount_capturable"], 1_000);

    let (status, body) = pipeline
        .post(
            &merchant,
            &format!("/v1/payment_intents/{}/capture", id(&intent)),
            &[("amount_to_capture", "600")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let captured = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_received"], 600);
    assert_eq!(captured["amount_capturable"], 0);

    let attempt = latest_attempt(&pipeline, &merchant, &id(&intent)).await;
    let at_sim = pipeline.sim_authorizations_for(&attempt).await;
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0]["status"], "captured");
    assert_eq!(at_sim[0]["amount_captured"], 600);
    pipeline.finish().await;
}

#[tokio::test]
async fn cancelling_an_uncaptured_payment_releases_the_authorization() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "5555555555554444", 4_200, "manual")
        .await;
    let intent = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(intent["status"], "requires_capture");

    let (status, body) = pipeline
        .post(
            &merchant,
            &format!("/v1/payment_intents/{}/cancel", id(&intent)),
            &[("cancellation_reason", "requested_by_customer")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let canceled = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert_eq!(canceled["cancellation_reason"], "requested_by_customer");
    assert_eq!(canceled["amount_capturable"], 0);

    let attempt = latest_attempt(&pipeline, &merchant, &id(&intent)).await;
    let at_sim = pipeline.sim_authorizations_for(&attempt).await;
    assert_eq!(at_sim.len(), 1);
    assert_eq!(at_sim[0]["status"], "voided");
    // The hold is released in the ledger too: nothing left authorized.
    let held = pipeline
        .scalar_i64(
            merchant.id.shard(),
            "select coalesce(sum(case when side = 'debit' then amount else -amount end), 0)::bigint
             from journal_lines where account = 'authorized_funds'",
        )
        .await;
    assert_eq!(held, 0);
    pipeline.finish().await;
}

#[tokio::test]
async fn partial_and_full_refunds_complete_and_then_nothing_is_left_to_refund() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent_id = pipeline.succeeded_payment(&merchant, 1_000).await;

    let (status, partial) = pipeline
        .post(
            &merchant,
            "/v1/refunds",
            &[("payment_intent", &intent_id), ("amount", "300")],
        )
        .await;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(
        pipeline.wait_for_refund(&merchant, &id(&partial)).await["status"],
        "succeeded"
    );

    let (status, rest) = pipeline
        .post(&merchant, "/v1/refunds", &[("payment_intent", &intent_id)])
        .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["amount"], 700);
    assert_eq!(
        pipeline.wait_for_refund(&merchant, &id(&rest)).await["status"],
        "succeeded"
    );

    let (status, refused) = pipeline
        .post(&merchant, "/v1/refunds", &[("payment_intent", &intent_id)])
        .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "charge_already_refunded");

    let attempt = latest_attempt(&pipeline, &merchant, &intent_id).await;
    let at_sim = pipeline.sim_authorizations_for(&attempt).await;
    assert_eq!(at_sim[0]["amount_refunded"], 1_000);
    pipeline.finish().await;
}

/// The attempt behind an intent's latest charge (the processor knows the
/// payment by it).
pub async fn latest_attempt(
    pipeline: &Pipeline,
    merchant: &crate::support::Merchant,
    intent: &str,
) -> String {
    sqlx::query_scalar("select latest_attempt_id from payment_intents where id = $1")
        .bind(intent)
        .fetch_one(pipeline.db.store.shard(merchant.id.shard()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn processor_notifications_without_a_valid_signature_are_refused() {
    let pipeline = Pipeline::start().await;
    let url = format!(
        "{}/v1/processor-notifications/sim",
        pipeline.integration.as_ref().unwrap().url()
    );
    let body = r#"{"id":"ntf_1","type":"authorization.approved","data":{"authorization":{"reference":"pa_x"}}}"#;
    let client = reqwest::Client::new();
    let unsigned = client.post(&url).body(body).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let forged = client
        .post(&url)
        .header(
            "sim-signature",
            format!("t={},v1={}", snakepay_store::unix_now(), "ab".repeat(32)),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    pipeline.finish().await;
}

#[tokio::test]
async fn a_payments_events_are_its_history_and_none_is_announced_on_the_broker() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let mut tap = pipeline.tap().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "automatic")
        .await;
    let intent_id = id(&intent);
    pipeline.settled(&merchant, &intent_id).await;
    let pool = pipeline.db.store.shard(merchant.id.shard()).unwrap();

    let story = snakepay_store::search::payment_story(pool, &intent_id)
        .await
        .unwrap()
        .expect("the payment's story");
    let mut types: Vec<&str> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "charge.succeeded",
            "payment_intent.created",
            "payment_intent.processing",
            "payment_intent.succeeded"
        ],
        "{story}"
    );
    // Only the processor command went through the outbox: webhook
    // deliveries are created with their events, and nothing else needs an
    // announcement. (The relay took it out of the outbox once the broker
    // had it; `finish` waits for every outbox to drain.)
    let published = tap.about(&[&intent_id, &merchant.id.to_string()]).await;
    let keys: Vec<&str> = published.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["command.authorize"]);
    pipeline.finish().await;
}

#[tokio::test]
async fn the_recorder_writes_the_request_log_of_every_authenticated_request() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 1_000, "automatic")
        .await;
    let intent_id = id(&intent);
    pipeline.settled(&merchant, &intent_id).await;
    let pool = pipeline.db.store.shard(merchant.id.shard()).unwrap();
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let rows: Vec<(String, String, i16)> = sqlx::query_as(
            "select method, route, status from request_log where merchant_id = $1 and not livemode",
        )
        .bind(merchant.id.to_string())
        .fetch_all(pool)
        .await
        .unwrap();
        let created = rows
            .iter()
            .any(|r| r.0 == "POST" && r.1 == "/v1/payment_intents" && r.2 == 200);
        let read = rows
            .iter()
            .any(|r| r.0 == "GET" && r.1 == "/v1/payment_intents/{id}" && r.2 == 200);
        if created && read {
            // Route templates, never raw paths (which carry IDs).
            assert!(rows.iter().all(|r| !r.1.contains(&intent_id)), "{rows:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    pipeline.finish().await;
}

/// A checkout that waits is answered by its own outcome: the integration
/// service renders the request's final answer, stores it under the
/// request's key in the statement that commits the outcome, and sends it in
/// its reply; the API sends it as is. A replay of the key returns the same
/// bytes, a decline (402) as much as a success.
#[tokio::test]
async fn a_waited_checkout_is_answered_by_its_outcome_and_its_key_replays_it_byte_for_byte() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let shard = pipeline.db.store.shard(merchant.id.shard()).unwrap();
    let from_replies = || {
        OUTCOME_WAITS
            .get_or_create(&labels([("answer", "reply")]))
            .get()
    };
    let before = from_replies();
    let cards = [
        ("4242424242424242", 200, "succeeded"),
        ("4000000000000002", 402, "requires_payment_method"),
    ];
    for (number, status, intent_status) in cards {
        let key = format!("checkout-{number}");
        let form = checkout_form(number, cvc_for(number), 1_500, "automatic");
        let post = || {
            pipeline
                .client
                .post(format!("{}/v1/payment_intents", pipeline.api.url()))
                .bearer_auth(&merchant.key)
                .header("Idempotency-Key", &key)
                .form(&form)
                .send()
        };
        let first = post().await.unwrap();
        assert_eq!(first.status().as_u16(), status, "{number}");
        let body = first.bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let intent = if status == 402 {
            &answer["error"]["payment_intent"]
        } else {
            &answer
        };
        assert_eq!(intent["status"], intent_status, "{number}: {answer}");
        // Rendered by the integration service from the intent it committed:
        // exactly what the API shows of the intent afterwards.
        let shown = pipeline
            .get(&merchant, &format!("/v1/payment_intents/{}", id(intent)))
            .await;
        assert_eq!(intent, &shown, "{number}");

        let replay = post().await.unwrap();
        assert_eq!(replay.status().as_u16(), status, "{number}");
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(
            replay.bytes().await.unwrap(),
            body,
            "{number}: the same bytes"
        );
        let stage: String = sqlx::query_scalar(
            "select recovery_point from idempotency_keys where merchant_id = $1 and key = $2",
        )
        .bind(merchant.id.to_string())
        .bind(&key)
        .fetch_one(shard)
        .await
        .unwrap();
        assert_eq!(stage, "finished", "{number}: settled");
    }
    // Each process runs one test (nextest): only these two waited.
    assert!(
        from_replies() >= before + 2,
        "both were answered from their replies"
    );
}
