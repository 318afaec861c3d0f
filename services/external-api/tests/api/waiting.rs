//! The External API waits for the processor's outcome (DESIGN.md §5, step
//! 4), with a stand-in integration service replying over real RabbitMQ.

use std::time::Duration;

use snakepay_domain::effects::ProcessorCommand;
use snakepay_store::compose::Statement;
use snakepay_store::idempotency::{self, ResponseBytes};

use crate::integration_double::{Answer, IntegrationDouble, Plan};
use crate::support::{Reply, TestApi, TestMerchant, amqp_url};

/// Long enough that a slow machine never answers `processing` where an
/// outcome was sent; a request that gets its outcome answers at once.
const LONG_WAIT: &str = "wait_for_outcome_ms = 15000";

async fn waiting_api(settings: &str) -> TestApi {
    let api = TestApi::start_with_broker(&amqp_url(), settings).await;
    wait_for_broker(&api, &api.server.url()).await;
    api
}

/// Waits until the instance at `base_url` has its reply queue.
async fn wait_for_broker(api: &TestApi, base_url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = api.send(api.client.get(format!("{base_url}/readyz"))).await;
        let broker = ready.body["checks"]
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["name"] == "broker"))
            .cloned()
            .unwrap_or_default();
        if broker["state"] == "ok" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply queue: {}",
            ready.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stand_in(
    api: &TestApi,
    merchant: &TestMerchant,
    plan: impl Fn(&ProcessorCommand) -> Plan + Send + Sync + 'static,
) -> IntegrationDouble {
    IntegrationDouble::start(api, merchant.id.shard(), plan).await
}

/// An intent with a card attached, ready to confirm.
async fn intent(api: &TestApi, merchant: &TestMerchant, capture_method: &str) -> String {
    let reply = api
        .post(
            &merchant.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("capture_method", capture_method),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "requires_confirmation");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn confirm(api: &TestApi, merchant: &TestMerchant, id: &str, key: Option<&str>) -> Reply {
    api.post(
        &merchant.secret_key,
        &format!("/v1/payment_intents/{id}/confirm"),
        &[],
        key,
    )
    .await
}

#[tokio::test]
async fn a_confirm_answers_succeeded_when_the_outcome_arrives_within_the_wait() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let id = intent(&api, &m, "automatic").await;

    let reply = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[("expand[]", "latest_charge")],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "succeeded");
    assert_eq!(reply.body["amount_received"], 1000);
    // `expand[]` holds for the answer given after the wait.
    assert_eq!(reply.body["latest_charge"]["object"], "charge");
    let command = double.command_for(&id).await;
    assert_eq!(command.routing_key, "command.authorize");
    assert!(command.reply_to.is_some(), "{command:?}");
}

#[tokio::test]
async fn a_declined_confirm_answers_402_with_the_intent_back_in_requires_payment_method() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| {
        Plan::soon(Answer::Decline("insufficient_funds"))
    })
    .await;
    let id = intent(&api, &m, "automatic").await;

    let reply = confirm(&api, &m, &id, None).await;
    assert_eq!(reply.status, 402, "{}", reply.body);
    assert_eq!(reply.header("stripe-should-retry"), Some("false"));
    let error = &reply.body["error"];
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["decline_code"], "insufficient_funds");
    assert_eq!(error["message"], "Your card was declined.");
    assert!(error["param"].is_null(), "{error}");
    let intent = &error["payment_intent"];
    assert_eq!(intent["id"], id.as_str());
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(
        intent["last_payment_error"]["decline_code"],
        "insufficient_funds"
    );
    let charge = error["charge"].as_str().unwrap();
    assert!(charge.starts_with("ch_"), "{charge}");
    assert_eq!(intent["latest_charge"], charge);
}

#[tokio::test]
async fn a_confirm_that_needs_3d_secure_answers_requires_action_with_next_action() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| Plan::soon(Answer::RequireAction)).await;
    let id = intent(&api, &m, "automatic").await;

    let reply = confirm(&api, &m, &id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "requires_action");
    assert_eq!(reply.body["next_action"]["type"], "redirect_to_url");
    assert!(
        reply.body["next_action"]["redirect_to_url"]["url"]
            .as_str()
            .unwrap()
            .starts_with("https://processor.test/3ds/")
    );
}

#[tokio::test]
async fn a_confirm_with_a_publishable_key_waits_too() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
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

    let reply = api
        .post(
            &m.publishable_key,
            &format!("/v1/payment_intents/{id}/confirm"),
            &[
                ("client_secret", secret),
                ("payment_method", "pm_card_visa"),
            ],
            Some("browser-confirm"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "succeeded");
}

#[tokio::test]
async fn creating_with_confirm_true_waits_like_a_confirm() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| Plan::soon(Answer::Decline("generic_decline"))).await;
    let reply = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 402, "{}", reply.body);
    assert_eq!(reply.error("decline_code"), "generic_decline");
    assert_eq!(
        reply.body["error"]["payment_intent"]["status"],
        "requires_payment_method"
    );
}

#[tokio::test]
async fn a_confirm_without_an_outcome_in_time_answers_processing() {
    let api = waiting_api("wait_for_outcome_ms = 300").await;
    let m = api.merchant().await;
    let double = stand_in(&api, &m, |_| Plan::Silent).await;
    let id = intent(&api, &m, "automatic").await;

    let reply = confirm(&api, &m, &id, Some("no-outcome")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "processing");
    let command = double.command_for(&id).await;
    assert!(command.reply_to.is_some());
    // The command names the waiting request, so that its outcome could
    // answer it; but the wait ran out first and settled phase 1's answer,
    // so an outcome committed now no longer changes what the key replays.
    let answer_to = command.answer_to.expect("the waiting request is named");
    assert_eq!(answer_to.idempotency_key.as_deref(), Some("no-outcome"));
    let mut late = Statement::new();
    late.push("with ");
    idempotency::push_outcome_answer(
        &mut late,
        m.id,
        false,
        &answer_to,
        "no-outcome",
        ResponseBytes {
            status: 200,
            body: b"{\"status\":\"succeeded\"}",
        },
        "true",
    )
    .unwrap();
    late.push(" select exists (select 1 from answered)");
    let shard = api.db.store.shard(m.id.shard()).unwrap();
    let stored: Option<bool> = late.fetch_scalar(shard).await.unwrap();
    assert_eq!(stored, Some(false), "settled when the wait ran out");
    let replay = confirm(&api, &m, &id, Some("no-outcome")).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.bytes, reply.bytes);
}

#[tokio::test]
async fn a_reply_that_leaves_the_intent_processing_keeps_the_request_waiting() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| Plan::UnknownThen {
        answer: Answer::Succeed,
        delay: Duration::from_millis(300),
    })
    .await;
    let id = intent(&api, &m, "automatic").await;

    let reply = confirm(&api, &m, &id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "succeeded");
}

#[tokio::test]
async fn a_replay_after_the_wait_returns_the_final_answer_byte_for_byte() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    // The first intent is approved, the second declined.
    let _double = stand_in(&api, &m, |command| match command {
        ProcessorCommand::Authorize { amount, .. } if amount.minor() == 1000 => {
            Plan::soon(Answer::Succeed)
        }
        _ => Plan::soon(Answer::Decline("expired_card")),
    })
    .await;
    let approved = intent(&api, &m, "automatic").await;
    let declined = api
        .post(
            &m.secret_key,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for (id, key, status) in [
        (&approved, "confirm-approved", 200),
        (&declined, "confirm-declined", 402),
    ] {
        let first = confirm(&api, &m, id, Some(key)).await;
        assert_eq!(first.status, status, "{}", first.body);
        assert_ne!(first.body["status"], "processing");
        let replay = confirm(&api, &m, id, Some(key)).await;
        assert_eq!(replay.status, status);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(
            replay.header("original-request"),
            first.header("request-id")
        );
        assert_eq!(replay.header("idempotency-key"), Some(key));
        assert_eq!(
            String::from_utf8_lossy(&replay.bytes),
            String::from_utf8_lossy(&first.bytes)
        );
    }
}

#[tokio::test]
async fn capturing_a_manual_intent_waits_until_it_succeeded() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let id = intent(&api, &m, "manual").await;
    let confirmed = confirm(&api, &m, &id, None).await;
    assert_eq!(
        confirmed.body["status"], "requires_capture",
        "{}",
        confirmed.body
    );
    assert_eq!(confirmed.body["amount_capturable"], 1000);

    let captured = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/capture"),
            &[("amount_to_capture", "600")],
            Some("capture-1"),
        )
        .await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    assert_eq!(captured.body["status"], "succeeded");
    assert_eq!(captured.body["amount_received"], 600);
    assert_eq!(captured.body["amount_capturable"], 0);
}

#[tokio::test]
async fn a_capture_the_processor_refuses_answers_402_with_the_intent_still_capturable() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let _double = stand_in(&api, &m, |command| match command {
        ProcessorCommand::Capture { .. } => Plan::soon(Answer::Refuse),
        _ => Plan::soon(Answer::Succeed),
    })
    .await;
    let id = intent(&api, &m, "manual").await;
    assert_eq!(
        confirm(&api, &m, &id, None).await.body["status"],
        "requires_capture"
    );

    let refused = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/capture"),
            &[],
            None,
        )
        .await;
    assert_eq!(refused.status, 402, "{}", refused.body);
    assert_eq!(refused.header("stripe-should-retry"), Some("false"));
    assert_eq!(refused.error("type"), "card_error");
    assert_eq!(refused.error("code"), "processing_error");
    let intent = &refused.body["error"]["payment_intent"];
    assert_eq!(intent["status"], "requires_capture");
    assert_eq!(intent["amount_capturable"], 1000);
    assert_eq!(refused.body["error"]["charge"], intent["latest_charge"]);
}

#[tokio::test]
async fn canceling_an_authorized_intent_waits_until_it_is_canceled() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    let double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let id = intent(&api, &m, "manual").await;
    assert_eq!(
        confirm(&api, &m, &id, None).await.body["status"],
        "requires_capture"
    );

    let canceled = api
        .post(
            &m.secret_key,
            &format!("/v1/payment_intents/{id}/cancel"),
            &[("cancellation_reason", "requested_by_customer")],
            None,
        )
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(
        canceled.body["cancellation_reason"],
        "requested_by_customer"
    );
    assert_eq!(canceled.body["amount_capturable"], 0);
    assert!(
        double
            .seen()
            .iter()
            .any(|c| c.routing_key == "command.void" && c.reply_to.is_some())
    );
}

#[tokio::test]
async fn a_refund_waits_for_the_processor_and_answers_succeeded_or_failed() {
    let api = waiting_api(LONG_WAIT).await;
    let m = api.merchant().await;
    // Refunds of 123 are refused; everything else goes through.
    let _double = stand_in(&api, &m, |command| match command {
        ProcessorCommand::Refund { amount, .. } if amount.minor() == 123 => {
            Plan::soon(Answer::Refuse)
        }
        _ => Plan::soon(Answer::Succeed),
    })
    .await;
    let id = intent(&api, &m, "automatic").await;
    assert_eq!(
        confirm(&api, &m, &id, None).await.body["status"],
        "succeeded"
    );

    let refunded = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &id), ("amount", "400")],
            Some("refund-1"),
        )
        .await;
    assert_eq!(refunded.status, 200, "{}", refunded.body);
    assert_eq!(refunded.body["object"], "refund");
    assert_eq!(refunded.body["status"], "succeeded");
    let replay = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &id), ("amount", "400")],
            Some("refund-1"),
        )
        .await;
    assert_eq!(replay.bytes, refunded.bytes);

    let failed = api
        .post(
            &m.secret_key,
            "/v1/refunds",
            &[("payment_intent", &id), ("amount", "123")],
            None,
        )
        .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.body["status"], "failed");
    let intent = api
        .get(&m.secret_key, &format!("/v1/payment_intents/{id}"))
        .await;
    assert_eq!(intent.body["amount_received"], 1000);
}

#[tokio::test]
async fn each_reply_reaches_the_instance_that_sent_the_command() {
    let api = waiting_api(LONG_WAIT).await;
    let second = api.another_instance().await;
    wait_for_broker(&api, &second.url()).await;
    let m = api.merchant_on(Some(0)).await;
    let double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let first_intent = intent(&api, &m, "automatic").await;
    let second_intent = intent(&api, &m, "manual").await;

    let first_path = format!("/v1/payment_intents/{first_intent}/confirm");
    let second_path = format!("/v1/payment_intents/{second_intent}/confirm");
    let (first, second_reply) = tokio::join!(
        api.post(&m.secret_key, &first_path, &[], None),
        api.post_to(&second, &m.secret_key, &second_path, &[]),
    );
    assert_eq!(first.body["status"], "succeeded", "{}", first.body);
    assert_eq!(
        second_reply.body["status"], "requires_capture",
        "{}",
        second_reply.body
    );
    let first_queue = double.command_for(&first_intent).await.reply_to.unwrap();
    let second_queue = double.command_for(&second_intent).await.reply_to.unwrap();
    assert_ne!(first_queue, second_queue);
}

#[tokio::test]
async fn with_an_unreachable_broker_the_api_starts_and_answers_processing() {
    let api =
        TestApi::start_with_broker("amqp://guest:guest@127.0.0.1:1/snakepay", LONG_WAIT).await;
    let ready = api.send(api.client.get(api.url("/readyz"))).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.body);
    let m = api.merchant_on(Some(1)).await;
    let double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let id = intent(&api, &m, "automatic").await;

    let started = std::time::Instant::now();
    let reply = confirm(&api, &m, &id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["status"], "processing");
    // It did not wait for the 15 s: there is no queue a reply could reach.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(double.command_for(&id).await.reply_to, None);
}

#[tokio::test]
async fn after_the_broker_connection_drops_the_api_reconnects_with_a_new_reply_queue() {
    let proxy = proxy::Proxy::start(&amqp_url()).await;
    // Without the request log, whose publisher would be another connection
    // through the proxy: this test counts the reply listener's.
    let settings = format!("{LONG_WAIT}\nrequest_log = false");
    let api = TestApi::start_with_broker(&proxy.amqp_url(), &settings).await;
    wait_for_broker(&api, &api.server.url()).await;
    let m = api.merchant().await;
    let double = stand_in(&api, &m, |_| Plan::soon(Answer::Succeed)).await;
    let before = intent(&api, &m, "automatic").await;
    assert_eq!(
        confirm(&api, &m, &before, None).await.body["status"],
        "succeeded"
    );

    proxy.cut();
    // The listener forgets its queue before it reconnects: once the second
    // connection arrived, `ok` means the new queue.
    proxy.wait_for_connections(2).await;
    wait_for_broker(&api, &api.server.url()).await;
    let after = intent(&api, &m, "automatic").await;
    assert_eq!(
        confirm(&api, &m, &after, None).await.body["status"],
        "succeeded"
    );
    assert_ne!(
        double.command_for(&before).await.reply_to,
        double.command_for(&after).await.reply_to
    );
}

#[test]
fn a_wait_that_leaves_no_room_in_the_request_timeout_is_refused_at_start_up() {
    for settings in [
        "wait_for_outcome_ms = 29000",
        "wait_for_outcome_ms = 5000\nrequest_timeout_ms = 6000",
        "wait_for_outcome_ms = 25000\nrequest_timeout_ms = 60000",
    ] {
        let toml = crate::support::minimal_config_toml(settings);
        let error =
            snakepay_config::from_toml_str::<snakepay_external_api::ExternalApiConfig>(&toml)
                .unwrap_err();
        assert_eq!(
            error.key(),
            Some("external_api.wait_for_outcome_ms"),
            "{settings}: {error}"
        );
    }
    let toml =
        crate::support::minimal_config_toml("wait_for_outcome_ms = 0\nrequest_timeout_ms = 1000");
    snakepay_config::from_toml_str::<snakepay_external_api::ExternalApiConfig>(&toml).unwrap();
}

/// A TCP proxy in front of the broker whose connections a test can cut, as
/// a broker restart or a network fault would.
mod proxy {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    pub struct Proxy {
        addr: SocketAddr,
        /// `amqp://user:pass@` and `/vhost` of the real URL.
        prefix: String,
        vhost: String,
        links: Arc<Mutex<Vec<JoinHandle<()>>>>,
        accepted: Arc<Mutex<usize>>,
        accept: JoinHandle<()>,
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.accept.abort();
            self.cut();
        }
    }

    impl Proxy {
        pub async fn start(amqp_url: &str) -> Proxy {
            let (scheme, rest) = amqp_url.split_once("://").unwrap();
            let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
            let (host, vhost) = rest.split_once('/').unwrap_or((rest, ""));
            let target: SocketAddr = tokio::net::lookup_host(host).await.unwrap().next().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let links = Arc::new(Mutex::new(Vec::new()));
            let accepted = Arc::new(Mutex::new(0));
            let accept = tokio::spawn({
                let (links, accepted) = (Arc::clone(&links), Arc::clone(&accepted));
                async move {
                    loop {
                        let (mut inbound, _) = listener.accept().await.unwrap();
                        *accepted.lock().unwrap() += 1;
                        links.lock().unwrap().push(tokio::spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                            }
                        }));
                    }
                }
            });
            let at = if credentials.is_empty() { "" } else { "@" };
            Proxy {
                addr,
                prefix: format!("{scheme}://{credentials}{at}"),
                vhost: vhost.to_owned(),
                links,
                accepted,
                accept,
            }
        }

        pub fn amqp_url(&self) -> String {
            format!("{}{}/{}", self.prefix, self.addr, self.vhost)
        }

        /// Drops every proxied connection.
        pub fn cut(&self) {
            for link in self.links.lock().unwrap().drain(..) {
                link.abort();
            }
        }

        pub async fn wait_for_connections(&self, count: usize) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while *self.accepted.lock().unwrap() < count {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no reconnection through the proxy"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
