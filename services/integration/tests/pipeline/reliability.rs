//! Money safety under concurrency, redelivery and unknown outcomes.

use serde_json::Value;
use snakepay_bus::{Envelope, Publisher};
use snakepay_resilience::BreakerState;
use snakepay_store::outbox::CommandPayload;

use crate::lifecycle::latest_attempt;
use crate::support::{Pipeline, amqp_url, id};

#[tokio::test]
async fn twenty_concurrent_refunds_never_refund_more_than_was_received() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent_id = pipeline.succeeded_payment(&merchant, 1_000).await;

    let form = [("payment_intent", intent_id.as_str()), ("amount", "100")];
    let requests = (0..20).map(|_| pipeline.post(&merchant, "/v1/refunds", &form));
    let replies = futures_util::future::join_all(requests).await;
    let created: Vec<&Value> = replies
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body)
        .collect();
    for (status, body) in &replies {
        assert!(
            *status == 200
                || (*status == 400
                    && ["amount_too_large", "charge_already_refunded"]
                        .contains(&body["error"]["code"].as_str().unwrap_or_default())),
            "{status} {body}"
        );
    }
    assert_eq!(
        created.len(),
        10,
        "exactly what was received can be refunded"
    );
    for refund in created {
        assert_eq!(
            pipeline.wait_for_refund(&merchant, &id(refund)).await["status"],
            "succeeded"
        );
    }
    let settled = pipeline
        .get(&merchant, &format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(settled["amount_received"], 1_000);
    let attempt = latest_attempt(&pipeline, &merchant, &intent_id).await;
    assert_eq!(
        pipeline.sim_authorizations_for(&attempt).await[0]["amount_refunded"],
        1_000
    );
    pipeline.finish().await;
}

#[tokio::test]
async fn a_redelivered_command_charges_nothing_twice() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let mut tap = pipeline.tap().await;
    let intent_id = pipeline.succeeded_payment(&merchant, 1_500).await;
    let journals_before = pipeline
        .scalar_i64(merchant.id.shard(), "select count(*) from journals")
        .await;

    // The very command the API wrote, delivered again through the broker
    // and executed twice more, concurrently, by the handler itself.
    let payload = tap.the_one("command.authorize", &intent_id).await;
    let publisher = Publisher::connect(&amqp_url()).await.unwrap();
    publisher
        .publish(
            &format!("{}commands", pipeline.prefix),
            "command.authorize",
            &Envelope::new("command.authorize", payload.clone()).unwrap(),
        )
        .await
        .unwrap();
    publisher.close().await;
    let command: CommandPayload = serde_json::from_value(payload).unwrap();
    let handler = pipeline.integration.as_ref().unwrap().pipeline();
    let (first, second) = tokio::join!(handler.execute(&command), handler.execute(&command));
    first.unwrap();
    second.unwrap();

    let attempt = latest_attempt(&pipeline, &merchant, &intent_id).await;
    let at_sim = pipeline.sim_authorizations_for(&attempt).await;
    assert_eq!(at_sim.len(), 1, "{at_sim:?}");
    assert_eq!(at_sim[0]["amount_captured"], 1_500);
    let journals_after = pipeline
        .scalar_i64(merchant.id.shard(), "select count(*) from journals")
        .await;
    assert_eq!(journals_after, journals_before, "no second journal");
    pipeline.finish().await;
}

#[tokio::test]
async fn a_command_whose_outcome_is_already_committed_still_wakes_its_waiting_request() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let mut tap = pipeline.tap().await;
    let intent_id = pipeline.succeeded_payment(&merchant, 1_500).await;
    // As when a processor notification committed the outcome before the
    // command's own answer came back: the command finds nothing to do, and
    // the request waiting on the queue it names must still be told.
    let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = snakepay_bus::reply::declare_reply_queue(&channel)
        .await
        .unwrap();
    let mut payload = tap.the_one("command.authorize", &intent_id).await;
    payload["reply_to"] = Value::from(queue.clone());
    let command: CommandPayload = serde_json::from_value(payload).unwrap();
    let handler = pipeline.integration.as_ref().unwrap().pipeline();
    handler.execute(&command).await.unwrap();

    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let reply = loop {
        let got = channel
            .basic_get(
                snakepay_bus::short(&queue).unwrap(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if let Some(message) = got {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reply");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let envelope = Envelope::parse(&reply.delivery.data).unwrap();
    let reply = snakepay_bus::reply::OutcomeReply::from_envelope(&envelope).unwrap();
    assert_eq!(reply.payment_intent, intent_id);
    assert_eq!(reply.refund, None);
    let _ = connection.close(200, "done".into()).await;
    pipeline.finish().await;
}

#[tokio::test]
async fn a_processor_timeout_stays_processing_until_the_reconciler_resolves_it_with_one_charge() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    // The simulator approves and captures, then holds its answer for 2 s;
    // our calls time out after 1 s, twice: the outcome is unknown.
    let intent = pipeline
        .pay(&merchant, "4000000000004087", 777, "automatic")
        .await;
    let intent_id = id(&intent);
    let done = pipeline
        .wait_for_intent(&merchant, &intent_id, |i| i["status"] == "succeeded")
        .await;
    assert_eq!(done["amount_received"], 777);
    let attempt = latest_attempt(&pipeline, &merchant, &intent_id).await;
    let at_sim = pipeline.sim_authorizations_for(&attempt).await;
    assert_eq!(at_sim.len(), 1, "exactly one charge at the processor");
    assert_eq!(at_sim[0]["amount_captured"], 777);
    pipeline.finish().await;
}

#[tokio::test]
async fn a_processor_error_after_the_work_is_resolved_by_a_retry_with_the_same_key() {
    let pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4000000000005019", 1_234, "automatic")
        .await;
    let done = pipeline.settled(&merchant, &id(&intent)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let attempt = latest_attempt(&pipeline, &merchant, &id(&intent)).await;
    assert_eq!(pipeline.sim_authorizations_for(&attempt).await.len(), 1);
    pipeline.finish().await;
}

#[tokio::test]
async fn payments_confirmed_while_the_integration_service_is_down_complete_after_it_returns() {
    let mut pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    pipeline.stop_integration().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 900, "automatic")
        .await;
    let intent_id = id(&intent);
    let waiting = pipeline
        .get(&merchant, &format!("/v1/payment_intents/{intent_id}"))
        .await;
    assert_eq!(waiting["status"], "processing");
    pipeline.restart_integration().await;
    let done = pipeline.settled(&merchant, &intent_id).await;
    assert_eq!(done["status"], "succeeded");
    pipeline.finish().await;
}

#[test]
fn a_processor_outside_the_egress_allow_list_is_refused_at_start_up() {
    let toml = r#"
        [region]
        code = "eu-1"
        number = 1
        public_api_url = "http://127.0.0.1"
        [database]
        control_url = "postgres://localhost/c"
        shard_urls = ["postgres://localhost/s"]
        [broker]
        url = "amqp://localhost/snakepay"
        [vault]
        key_ring_path = "/tmp/none.json"
        [integration]
        listen_addr = "127.0.0.1:0"
        [integration.processor_sim]
        base_url = "https://processor.example"
        api_key = "sk_sim_0123456789abcdef"
        notification_secret = "secret_0123456789abcdef"
        [integration.egress]
        allowed_hosts = ["127.0.0.1"]
    "#;
    let error = snakepay_config::from_toml_str::<snakepay_integration::IntegrationConfig>(toml)
        .unwrap_err();
    assert_eq!(error.key(), Some("integration.egress.allowed_hosts"));
}

#[tokio::test]
async fn when_the_processor_fails_every_call_the_circuit_opens_and_payments_complete_after_it_recovers()
 {
    let pipeline = Pipeline::start_with(
        |_| {},
        "breaker_failure_threshold = 2\nbreaker_open_ms = 300",
    )
    .await;
    let merchant = pipeline.merchant().await;
    pipeline
        .sim_faults(serde_json::json!({"failure_rate": 1.0}))
        .await;
    // The circuit opens under the failures (and may close again briefly
    // whenever an inquiry gets a definite "never performed"): watch it.
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let handler = std::sync::Arc::clone(pipeline.integration.as_ref().unwrap().pipeline());
        let opened = std::sync::Arc::clone(&opened);
        tokio::spawn(async move {
            loop {
                if !matches!(handler.gateway.breaker.state(), BreakerState::Closed { .. }) {
                    opened.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let first = pipeline
        .pay(&merchant, "4242424242424242", 500, "automatic")
        .await;
    let second = pipeline
        .pay(&merchant, "4242424242424242", 600, "automatic")
        .await;
    // Every call fails before the work: nothing can be decided yet.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    for intent in [&first, &second] {
        let now = pipeline
            .get(&merchant, &format!("/v1/payment_intents/{}", id(intent)))
            .await;
        assert_eq!(now["status"], "processing", "{now}");
    }
    assert!(
        pipeline.sim_record().await["authorizations"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was authorized while the processor failed"
    );
    assert!(
        opened.load(std::sync::atomic::Ordering::SeqCst),
        "the circuit opened"
    );
    watcher.abort();
    // The processor recovers; the reconciler finishes both, each charged once.
    pipeline
        .sim_faults(serde_json::json!({"failure_rate": 0.0}))
        .await;
    for intent in [&first, &second] {
        let done = pipeline
            .wait_for_intent(&merchant, &id(intent), |i| i["status"] == "succeeded")
            .await;
        let attempt = latest_attempt(&pipeline, &merchant, &id(&done)).await;
        assert_eq!(pipeline.sim_authorizations_for(&attempt).await.len(), 1);
    }
    pipeline.finish().await;
}

#[tokio::test]
async fn processor_calls_leave_through_the_configured_egress_proxy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // A minimal forward proxy for plain HTTP: it receives absolute-form
    // requests and forwards them, counting what passes.
    let forwarded = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&forwarded);
    let proxy = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut outbound = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .request(parts.method.clone(), parts.uri.to_string())
                .body(body);
            for (name, value) in &parts.headers {
                if name != "host" && name != "proxy-connection" {
                    outbound = outbound.header(name, value);
                }
            }
            let answer = outbound.send().await.unwrap();
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap();
            let mut response = axum::response::Response::new(axum::body::Body::from(bytes));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
    });
    let proxy = snakepay_http::spawn("127.0.0.1:0", proxy, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    let pipeline =
        Pipeline::start_with(|_| {}, &format!("egress.proxy_url = \"{}\"", proxy.url())).await;
    let merchant = pipeline.merchant().await;
    let intent = pipeline
        .pay(&merchant, "4242424242424242", 800, "automatic")
        .await;
    assert_eq!(
        pipeline.settled(&merchant, &id(&intent)).await["status"],
        "succeeded"
    );
    assert!(
        forwarded.load(Ordering::SeqCst) >= 1,
        "the call went through the proxy"
    );
    pipeline.finish().await;
}

#[tokio::test]
async fn an_abandoned_authorization_whose_void_was_lost_is_released_by_the_reconciler() {
    let mut pipeline = Pipeline::start().await;
    let merchant = pipeline.merchant().await;
    // The cardholder never completes 3-D Secure…
    let intent = pipeline
        .pay(&merchant, "4000002760003184", 3_000, "automatic")
        .await;
    let intent_id = id(&intent);
    let waiting = pipeline.settled(&merchant, &intent_id).await;
    assert_eq!(waiting["status"], "requires_action");
    let abandoned = latest_attempt(&pipeline, &merchant, &intent_id).await;

    // …and pays with another card instead, while the void of the first
    // authorization is lost (as if dead-lettered).
    pipeline.stop_integration().await;
    let (status, _) = pipeline
        .post(
            &merchant,
            &format!("/v1/payment_intents/{intent_id}/confirm"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    assert_eq!(status, 200);
    let lost = sqlx::query(
        "delete from outbox where routing_key = 'command.void' and payload->>'payment_intent' = $1",
    )
    .bind(&intent_id)
    .execute(pipeline.db.store.shard(merchant.id.shard()).unwrap())
    .await
    .unwrap();
    assert_eq!(lost.rows_affected(), 1);
    pipeline.restart_integration().await;

    let paid = pipeline
        .wait_for_intent(&merchant, &intent_id, |i| i["status"] == "succeeded")
        .await;
    assert_eq!(paid["amount_received"], 3_000);
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        let at_sim = pipeline.sim_authorizations_for(&abandoned).await;
        if at_sim[0]["status"] == "voided" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never released: {at_sim:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    pipeline.finish().await;
}
