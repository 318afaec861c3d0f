//! The leak scan (PCI DSS 3.3, 3.4, 3.5, 10.3): payments with canary card
//! numbers and CVCs go through every flow of the real pipeline — approval
//! and refund, manual capture and cancel, decline, 3-D Secure, processor
//! errors, retries and a timeout resolved by inquiry, input the API refuses, merchant webhooks, and a poison
//! message that ends in a dead-letter queue — and then every place data
//! could land is searched for any form of any canary (see `scan.rs`):
//!
//! - every row of every table of every database the test created (control
//!   and both shards), as `row_to_json` text (a `bytea` shows as hex);
//! - every key and value in Redis (all types, read as plain values, not
//!   `DUMP`, which may compress);
//! - every message in the test's RabbitMQ queues and their dead-letter
//!   queues, read without acknowledging, plus a tap queue bound to `#` on
//!   both exchanges from the start, so every command, event and request-log
//!   message published during the test is seen even after its consumer
//!   took it; bodies and headers;
//! - every log line of every service (the External API, the integration
//!   service with its relay, recorder and webhook dispatcher, the
//!   processor simulator), captured at `debug` for dependencies and `trace`
//!   for our crates in the JSON format the deployment writes, span fields
//!   included;
//! - the simulator's journal file, and the bodies our webhook endpoint
//!   received.
//!
//! Zero hits are required. The scan then plants the canary once in each
//! store and checks that each plant is found, so the test can fail.
//!
//! Not covered (docs/security.md): the API's server-named, exclusive reply
//! queues (another connection cannot read them; replies carry no card data
//! by construction), and the servers' own logs (PostgreSQL, RabbitMQ).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[allow(dead_code)]
#[path = "../pipeline/support.rs"]
mod support;

mod scan;
mod stores;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use snakepay_processor_sim::cards;

use scan::Canary;
use support::{Pipeline, id};

/// Every log line of the process, in the deployment's JSON format.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Installs the capture as the process's only subscriber: it must run
    /// before anything logs (the pipeline's own `try_init` then does
    /// nothing).
    fn install() -> CapturedLogs {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let filter = [
            "debug",
            "snakepay_integration=trace",
            "snakepay_external_api=trace",
            "snakepay_processor_sim=trace",
            "snakepay_bus=trace",
            "snakepay_webhooks=trace",
            "snakepay_cache=trace",
            "snakepay_store=trace",
            "snakepay_http=trace",
            "snakepay_vault=trace",
        ]
        .join(",");
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .init();
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A random Luhn-valid 16-digit number with the given first digits, so no
/// other test (and no earlier run) ever used it.
fn random_card(prefix: &str, luhn_valid: bool) -> String {
    let mut random = [0_u8; 16];
    getrandom::fill(&mut random).unwrap();
    let mut digits: Vec<u32> = prefix.chars().map(|c| c.to_digit(10).unwrap()).collect();
    let mut bytes = random.iter();
    while digits.len() < 15 {
        digits.push(u32::from(*bytes.next().unwrap()) % 10);
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                (2 * d) / 10 + (2 * d) % 10
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    digits.push(if luhn_valid { check } else { (check + 1) % 10 });
    digits
        .iter()
        .map(|d| char::from_digit(*d, 10).unwrap())
        .collect()
}

fn random_cvc() -> String {
    let mut random = [0_u8; 2];
    getrandom::fill(&mut random).unwrap();
    // 100–999 with no repeated digit, so it never looks like "000".
    loop {
        let n = 100 + u16::from_be_bytes(random) % 900;
        let s = n.to_string();
        let b = s.as_bytes();
        if b[0] != b[1] && b[1] != b[2] && b[0] != b[2] {
            return s;
        }
        random[1] = random[1].wrapping_add(37);
    }
}

/// What our webhook endpoint received.
#[derive(Default)]
struct Received(Mutex<Vec<String>>);

async fn receive(State(received): State<Arc<Received>>, body: Bytes) -> StatusCode {
    received
        .0
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::OK
}

/// Confirms a payment with card data and returns the intent (also from a
/// 402 card error).
async fn pay(
    pipeline: &Pipeline,
    merchant: &support::Merchant,
    number: &str,
    cvc: &str,
    capture_method: &str,
) -> Value {
    pipeline
        .pay_with_cvc(merchant, number, cvc, 2_000, capture_method)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_card_number_or_cvc_reaches_a_database_cache_queue_or_log() {
    scan::self_test();
    let logs = CapturedLogs::install();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("sim-journal.jsonl");
    let sim_journal = journal.clone();
    let pipeline = Pipeline::start_with(
        move |sim| sim.journal_path = Some(sim_journal),
        "webhooks.allow_private_networks = true\n\
         webhooks.initial_backoff_ms = 100\n\
         webhooks.max_backoff_ms = 400\n\
         webhooks.poll_interval_ms = 50",
    )
    .await;
    let tap = stores::Tap::declare(&pipeline.prefix).await;
    let merchant = pipeline.merchant().await;

    // The canaries: fresh random numbers for this run, and the trigger
    // cards whose flows we drive (their numbers are fixed by the simulator).
    let approved = random_card("4000", true);
    let approved_cvc = random_cvc();
    let refused = random_card("4000", false);
    let refused_cvc = random_cvc();
    let decline_cvc = random_cvc();
    let canaries = vec![
        Canary::Pan(approved.clone()),
        Canary::Cvc(approved_cvc.clone()),
        Canary::Pan(refused.clone()),
        Canary::Cvc(refused_cvc.clone()),
        Canary::Cvc(decline_cvc.clone()),
        Canary::Pan(cards::CARD_DECLINED_GENERIC.to_owned()),
        Canary::Pan(cards::CARD_REQUIRES_3DS.to_owned()),
        Canary::Pan(cards::CARD_PROCESSING_ERROR.to_owned()),
        Canary::Pan(cards::CARD_FAIL_AFTER_WORK.to_owned()),
        Canary::Pan(cards::CARD_TIMEOUT_AFTER_WORK.to_owned()),
    ];

    // A webhook endpoint that keeps every body it receives.
    let received = Arc::new(Received::default());
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(Arc::clone(&received));
    let hooks = snakepay_http::spawn("127.0.0.1:0", app, Duration::from_secs(1))
        .await
        .unwrap();
    let (status, endpoint) = pipeline
        .post(
            &merchant,
            "/v1/webhook_endpoints",
            &[
                ("url", &format!("{}/hooks", hooks.url())),
                ("enabled_events[]", "*"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{endpoint}");

    // 1. Approved, then partly refunded.
    let paid = pay(&pipeline, &merchant, &approved, &approved_cvc, "automatic").await;
    let paid = pipeline.settled(&merchant, &id(&paid)).await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    let (status, refund) = pipeline
        .post(
            &merchant,
            "/v1/refunds",
            &[("payment_intent", &id(&paid)), ("amount", "500")],
        )
        .await;
    assert_eq!(status, 200, "{refund}");
    pipeline.wait_for_refund(&merchant, &id(&refund)).await;

    // 2. The same card, grouped as a customer types it: authorize only, then
    //    capture part; and once more, then cancel.
    let grouped = format!(
        "{} {} {} {}",
        &approved[..4],
        &approved[4..8],
        &approved[8..12],
        &approved[12..]
    );
    let held = pay(&pipeline, &merchant, &grouped, &approved_cvc, "manual").await;
    let held = pipeline.settled(&merchant, &id(&held)).await;
    assert_eq!(held["status"], "requires_capture", "{held}");
    let (status, captured) = pipeline
        .post(
            &merchant,
            &format!("/v1/payment_intents/{}/capture", id(&held)),
            &[("amount_to_capture", "1500")],
        )
        .await;
    assert_eq!(status, 200, "{captured}");
    let dashed = approved.replace(&approved[4..8], &format!("-{}-", &approved[4..8]));
    let voided = pay(&pipeline, &merchant, &dashed, &approved_cvc, "manual").await;
    let voided = pipeline.settled(&merchant, &id(&voided)).await;
    let (status, canceled) = pipeline
        .post(
            &merchant,
            &format!("/v1/payment_intents/{}/cancel", id(&voided)),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{canceled}");

    // 3. Declined.
    let declined = pay(
        &pipeline,
        &merchant,
        cards::CARD_DECLINED_GENERIC,
        &decline_cvc,
        "automatic",
    )
    .await;
    let declined = pipeline.settled(&merchant, &id(&declined)).await;
    assert_eq!(declined["status"], "requires_payment_method", "{declined}");

    // 4. 3-D Secure, completed by the cardholder on the simulator's page.
    let challenged = pay(
        &pipeline,
        &merchant,
        cards::CARD_REQUIRES_3DS,
        &approved_cvc,
        "automatic",
    )
    .await;
    let challenged = pipeline.settled(&merchant, &id(&challenged)).await;
    assert_eq!(challenged["status"], "requires_action", "{challenged}");
    let url = challenged["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
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
    pipeline
        .wait_for_intent(&merchant, &id(&challenged), |i| i["status"] == "succeeded")
        .await;

    // 5. Processor failures: a processing error, a 500 after the work
    //    (retried with the same key), and an answer that times out (resolved
    //    by the reconciler's inquiry).
    for card in [
        cards::CARD_PROCESSING_ERROR,
        cards::CARD_FAIL_AFTER_WORK,
        cards::CARD_TIMEOUT_AFTER_WORK,
    ] {
        let failed = pay(&pipeline, &merchant, card, &approved_cvc, "automatic").await;
        let failed = pipeline.settled(&merchant, &id(&failed)).await;
        assert_ne!(failed["status"], "processing", "{failed}");
    }

    // 6. Input the API refuses: a number failing the Luhn check, and a bad
    //    expiry with a valid number.
    let (status, error) = pipeline
        .post(
            &merchant,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", &refused),
                ("payment_method_data[card][exp_month]", "12"),
                ("payment_method_data[card][exp_year]", "2034"),
                ("payment_method_data[card][cvc]", &refused_cvc),
            ],
        )
        .await;
    assert!((400..500).contains(&status), "{status} {error}");
    assert_eq!(error["error"]["code"], "incorrect_number", "{error}");
    let (status, error) = pipeline
        .post(
            &merchant,
            "/v1/payment_intents",
            &[
                ("amount", "2000"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method_data[type]", "card"),
                ("payment_method_data[card][number]", &approved),
                ("payment_method_data[card][exp_month]", "13"),
                ("payment_method_data[card][exp_year]", "2034"),
                ("payment_method_data[card][cvc]", &approved_cvc),
            ],
        )
        .await;
    assert!((400..500).contains(&status), "{status} {error}");

    // 7. A poison message: an unreadable processor command about the paid
    //    intent, which the integration service dead-letters.
    tap.publish_poison(&pipeline.prefix, &id(&paid)).await;

    // Every webhook delivered, the poison dead-lettered, the outbox drained.
    let events = stores::wait_for_webhooks(&pipeline, &merchant, &received).await;
    assert!(events >= 10, "{events} events");
    stores::wait_for_dead_letter(&pipeline.prefix).await;
    pipeline.assert_invariants().await;

    // The scan.
    let mut found = Vec::new();
    let mut seen = stores::Seen::default();
    stores::scan_postgres(&pipeline.db, &canaries, &mut found, &mut seen).await;
    stores::scan_redis(&canaries, &mut found, &mut seen).await;
    stores::scan_rabbitmq(&pipeline.prefix, &tap, &canaries, &mut found, &mut seen).await;
    for (n, body) in received.0.lock().unwrap().iter().enumerate() {
        found.extend(scan::scan(&format!("webhook body {n}"), body, &canaries));
        seen.webhook_bodies += 1;
    }
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    found.extend(scan::scan("simulator journal", &journal_text, &canaries));
    let log_text = logs.text();
    for (n, line) in log_text.lines().enumerate() {
        found.extend(scan::scan(&format!("log line {n}"), line, &canaries));
    }
    seen.log_lines = log_text.lines().count();
    println!("leak scan covered: {seen:?}");
    assert!(
        found.is_empty(),
        "{} canary hits, first ones: {:#?}",
        found.len(),
        &found[..found.len().min(10)]
    );
    // The scan saw real data everywhere, not empty stores.
    assert!(seen.tables >= 20 && seen.rows >= 100, "{seen:?}");
    // A command per payment operation above, request-log batches and the
    // poison message (events are not announced on the broker).
    assert!(seen.tapped_messages >= 10, "{seen:?}");
    assert!(seen.dead_letters >= 1, "{seen:?}");
    assert!(seen.redis_keys >= 1, "{seen:?}");
    assert!(seen.log_lines >= 100, "{seen:?}");
    // Every service's log lines were captured, not just the test's own.
    for service in [
        "snakepay_external_api",
        "snakepay_integration",
        "snakepay_processor_sim",
        "snakepay_bus",
        "snakepay_webhooks",
    ] {
        assert!(
            log_text.contains(&format!(r#""target":"{service}"#)),
            "no log line from {service}"
        );
    }
    assert!(journal_text.lines().count() >= 5);

    // And it finds a canary wherever one is planted.
    let plants = stores::plant(&pipeline, &tap, &approved).await;
    let mut found = Vec::new();
    let mut again = stores::Seen::default();
    stores::scan_postgres(&pipeline.db, &canaries, &mut found, &mut again).await;
    stores::scan_redis(&canaries, &mut found, &mut again).await;
    stores::scan_rabbitmq(&pipeline.prefix, &tap, &canaries, &mut found, &mut again).await;
    for (n, line) in logs.text().lines().enumerate() {
        found.extend(scan::scan(&format!("log line {n}"), line, &canaries));
    }
    stores::unplant(&plants).await;
    for place in ["postgres", "redis", "rabbitmq", "log line"] {
        assert!(
            found.iter().any(|hit| hit.location.starts_with(place)),
            "the planted canary was not found in {place}: {found:#?}"
        );
    }

    tap.delete().await;
    drop(hooks);
    pipeline.finish().await;
}
