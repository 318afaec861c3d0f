//! `snakepay-admin verify` against real PostgreSQL and a real processor-sim.
//!
//! Each test builds a small region the way the platform does — the domain's
//! transitions written with the store's own functions, and the matching
//! operations sent to the simulator with the platform's idempotency keys —
//! checks that it is clean, then breaks one invariant and checks that verify
//! reports exactly that.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use snakepay_admin::verify::{self, Kind, Options, ProcessorAccess, Report};
use snakepay_admin::{AdminConfig, Command, Finished, VerifyArgs, run};
use snakepay_domain::Money;
use snakepay_domain::currency::Currency;
use snakepay_domain::ids::{
    AttemptId, ChargeId, MerchantId, PaymentIntentId, PaymentMethodId, RefundId, RegionNumber,
    ShardNumber,
};
use snakepay_domain::ledger::postings;
use snakepay_domain::payment_intent::{
    self, AuthorizationOutcome, CaptureMethod, CardErrorCode, IntentCommand, NewPaymentIntent,
    PaymentError, ProcessorOutcome,
};
use snakepay_domain::refund::{self, NewRefund};
use snakepay_processor_sim::{ProcessorSimSection, RunningSim, SimConfig};
use snakepay_store::attempts::{self, AttemptStatus};
use snakepay_store::effects::{self, EffectContext};
use snakepay_store::events::EventSource;
use snakepay_store::idempotency::{self, Claim, ResponseBytes, Stage};
use snakepay_store::intents::{self, IntentRecord, NewAttempt};
use snakepay_store::merchants::{self, NewMerchant};
use snakepay_store::outbox::{self, OutboxMessage};
use snakepay_store::refunds::{self, RefundRecord};
use snakepay_store::testing::{self, TestDatabases};
use snakepay_store::{ledger, unix_now};
use sqlx::PgPool;

const SIM_API_KEY: &str = "sk_sim_verify_0123456789abcdef";
const REGION: RegionNumber = RegionNumber(1);

/// A payment as both sides know it.
#[derive(Debug, Clone)]
struct Payment {
    intent: PaymentIntentId,
    attempt: AttemptId,
    /// The processor's authorization ID.
    authorization: String,
}

struct Region {
    db: TestDatabases,
    sim: RunningSim,
    http: reqwest::Client,
    merchant: MerchantId,
}

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD).unwrap()
}

impl Region {
    async fn start() -> Region {
        let db = testing::fresh(2).await.unwrap();
        let sim = snakepay_processor_sim::start(SimConfig {
            processor_sim: ProcessorSimSection {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                api_key: SIM_API_KEY.to_owned(),
                ..ProcessorSimSection::default()
            },
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let merchant = merchants::create_merchant(
            db.store.control(),
            "local",
            REGION,
            ShardNumber(1),
            &NewMerchant {
                legal_name: "Verify Shop".into(),
                country: "DE".into(),
            },
        )
        .await
        .unwrap()
        .id;
        Region {
            db,
            sim,
            http: reqwest::Client::new(),
            merchant,
        }
    }

    fn pool(&self) -> &PgPool {
        self.db.store.shard(self.merchant.shard()).unwrap()
    }

    fn processor(&self) -> ProcessorAccess {
        ProcessorAccess {
            base_url: self.sim.base_url().parse().unwrap(),
            api_key: SIM_API_KEY.to_owned(),
            trust: Default::default(),
        }
    }

    /// No settle margin: these tests are quiet by construction.
    fn options(&self) -> Options {
        Options {
            settle_seconds: 0.0,
            ..Options::new(Some(self.processor()))
        }
    }

    async fn verify(&self) -> Report {
        verify::run(&self.db.store, &self.options()).await.unwrap()
    }

    async fn stop(self) {
        self.sim.shutdown().await.unwrap();
    }

    /// The outbox relay's part: every row published.
    async fn relay(&self) {
        for (_, pool) in self.db.store.shards() {
            sqlx::query("delete from outbox")
                .execute(pool)
                .await
                .unwrap();
        }
    }

    async fn sim(&self, path: &str, key: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.base_url()))
            .bearer_auth(SIM_API_KEY)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "POST {path}");
        response.json().await.unwrap()
    }

    /// An authorization at the processor, as the integration service sends it.
    async fn sim_authorize(
        &self,
        key: &str,
        reference: &str,
        card: &str,
        amount: i64,
        capture: bool,
    ) -> Value {
        self.sim(
            "/v1/authorizations",
            key,
            &json!({
                "amount": amount,
                "currency": "usd",
                "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
                "capture": capture,
                "reference": reference,
            }),
        )
        .await
    }

    fn context<'a>(&self, request_id: Option<&'a str>) -> EffectContext<'a> {
        EffectContext {
            source: EventSource {
                merchant_id: self.merchant,
                livemode: false,
                api_version: "2024-06-20",
                request_id,
                created: unix_now(),
            },
            reply_to: None,
            answer_to: None,
            description: "verify test",
        }
    }

    /// A new intent with a payment method, created by `request_id`.
    async fn create_intent(
        &self,
        amount: i64,
        capture_method: CaptureMethod,
        request_id: &str,
    ) -> PaymentIntentId {
        let mut tx = self.pool().begin().await.unwrap();
        let id = self
            .create_intent_in(&mut tx, amount, capture_method, request_id)
            .await;
        tx.commit().await.unwrap();
        id
    }

    async fn create_intent_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        amount: i64,
        capture_method: CaptureMethod,
        request_id: &str,
    ) -> PaymentIntentId {
        let shard = self.merchant.shard();
        let id = PaymentIntentId::generate(REGION, shard).unwrap();
        let t = payment_intent::create(NewPaymentIntent {
            id,
            amount: usd(amount),
            capture_method,
            payment_method: Some(PaymentMethodId::generate(REGION, shard).unwrap()),
            created: unix_now(),
        });
        let record = IntentRecord {
            intent: t.intent,
            merchant_id: self.merchant,
            livemode: false,
            customer: None,
            client_secret: format!("{id}_secret_test"),
            description: None,
            metadata: BTreeMap::new(),
            payment_method_types: vec!["card".into()],
            receipt_email: None,
            return_url: None,
            statement_descriptor: None,
            statement_descriptor_suffix: None,
            version: 1,
        };
        intents::insert(tx, &record).await.unwrap();
        effects::write(
            tx,
            &record,
            None,
            &t.effects,
            self.context(Some(request_id)),
        )
        .await
        .unwrap();
        id
    }

    /// An intent with an outbox message the relay has not published yet:
    /// what a relay that is down or behind leaves.
    async fn create_unrelayed_intent(&self, request_id: &str) -> PaymentIntentId {
        let mut tx = self.pool().begin().await.unwrap();
        let id = self
            .create_intent_in(&mut tx, 1_000, CaptureMethod::Automatic, request_id)
            .await;
        outbox::enqueue(
            &mut tx,
            &[OutboxMessage {
                routing_key: "command.inquire".to_owned(),
                payload: serde_json::json!({ "payment_intent": id.to_string() }),
            }],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// Applies `command` with its effects, as the services do.
    async fn transition(&self, id: PaymentIntentId, command: IntentCommand) -> IntentRecord {
        let mut tx = self.pool().begin().await.unwrap();
        let mut record = intents::load_for_update(&mut tx, id, self.merchant, false)
            .await
            .unwrap()
            .unwrap();
        let t = payment_intent::apply(&record.intent, command.clone()).unwrap();
        record.intent = t.intent;
        intents::update(&mut tx, &mut record).await.unwrap();
        if let IntentCommand::Confirm {
            attempt, charge, ..
        } = command
        {
            intents::insert_attempt(
                &mut tx,
                &NewAttempt {
                    id: attempt,
                    payment_intent: id,
                    merchant_id: self.merchant,
                    charge,
                    payment_method: record.intent.payment_method.unwrap(),
                    amount: record.intent.amount,
                    capture: record.intent.capture_method.captures_on_authorization(),
                    created: unix_now(),
                },
            )
            .await
            .unwrap();
        }
        effects::write(&mut tx, &record, None, &t.effects, self.context(None))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        record
    }

    async fn confirm(&self, id: PaymentIntentId) -> AttemptId {
        let shard = self.merchant.shard();
        let attempt = AttemptId::generate(REGION, shard).unwrap();
        self.transition(
            id,
            IntentCommand::Confirm {
                payment_method: None,
                attempt,
                charge: ChargeId::generate(REGION, shard).unwrap(),
            },
        )
        .await;
        attempt
    }

    /// Commits an authorization answer and records it on the attempt.
    async fn authorization_result(
        &self,
        id: PaymentIntentId,
        attempt: AttemptId,
        outcome: AuthorizationOutcome,
        authorization: &str,
    ) {
        let status = match outcome {
            AuthorizationOutcome::Approved => AttemptStatus::Approved,
            _ => AttemptStatus::Declined,
        };
        self.transition(
            id,
            IntentCommand::AuthorizationResult {
                attempt,
                outcome,
                now: unix_now(),
            },
        )
        .await;
        let mut tx = self.pool().begin().await.unwrap();
        attempts::record_authorization(&mut tx, attempt, status, Some(authorization), None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    /// Creates, confirms and authorizes a payment at the processor.
    async fn authorized(&self, amount: i64, capture_method: CaptureMethod) -> Payment {
        let intent = self
            .create_intent(amount, capture_method, &next_request_id())
            .await;
        let attempt = self.confirm(intent).await;
        let capture = capture_method.captures_on_authorization();
        let answer = self
            .sim_authorize(
                &format!("{attempt}.authorize"),
                &attempt.to_string(),
                snakepay_processor_sim::CARD_APPROVED_VISA,
                amount,
                capture,
            )
            .await;
        let authorization = answer["id"].as_str().unwrap().to_owned();
        self.authorization_result(
            intent,
            attempt,
            AuthorizationOutcome::Approved,
            &authorization,
        )
        .await;
        Payment {
            intent,
            attempt,
            authorization,
        }
    }

    /// An automatically captured payment: `succeeded`.
    async fn paid(&self, amount: i64) -> Payment {
        self.authorized(amount, CaptureMethod::Automatic).await
    }

    /// A manual-capture payment: `requires_capture`, its amount on hold.
    async fn held(&self, amount: i64) -> Payment {
        self.authorized(amount, CaptureMethod::Manual).await
    }

    /// Captures `amount` of a held payment, at the processor and here.
    async fn capture(&self, payment: &Payment, amount: i64) {
        self.transition(
            payment.intent,
            IntentCommand::Capture {
                amount_to_capture: Some(amount),
            },
        )
        .await;
        self.sim(
            &format!("/v1/authorizations/{}/capture", payment.authorization),
            &format!("{}.capture.{amount}", payment.attempt),
            &json!({"amount": amount}),
        )
        .await;
        self.capture_result(payment).await;
    }

    async fn capture_result(&self, payment: &Payment) {
        self.transition(
            payment.intent,
            IntentCommand::CaptureResult {
                attempt: payment.attempt,
                outcome: ProcessorOutcome::Succeeded,
            },
        )
        .await;
    }

    /// Cancels a held payment: voided at the processor, released here.
    async fn cancel(&self, payment: &Payment) {
        self.transition(
            payment.intent,
            IntentCommand::Cancel {
                reason: None,
                now: unix_now(),
            },
        )
        .await;
        self.sim(
            &format!("/v1/authorizations/{}/void", payment.authorization),
            &format!("{}.void", payment.attempt),
            &json!({}),
        )
        .await;
        self.transition(
            payment.intent,
            IntentCommand::VoidResult {
                attempt: payment.attempt,
                outcome: ProcessorOutcome::Succeeded,
                now: unix_now(),
            },
        )
        .await;
    }

    /// A payment whose card the processor declined.
    async fn declined(&self, amount: i64) -> PaymentIntentId {
        let intent = self
            .create_intent(amount, CaptureMethod::Automatic, "req_declined")
            .await;
        let attempt = self.confirm(intent).await;
        let answer = self
            .sim_authorize(
                &format!("{attempt}.authorize"),
                &attempt.to_string(),
                snakepay_processor_sim::CARD_DECLINED_GENERIC,
                amount,
                true,
            )
            .await;
        assert_eq!(answer["status"], "declined");
        self.authorization_result(
            intent,
            attempt,
            AuthorizationOutcome::Declined(PaymentError {
                code: CardErrorCode::CardDeclined,
                decline_code: Some("generic_decline".into()),
                message: "Your card was declined.".into(),
            }),
            answer["id"].as_str().unwrap(),
        )
        .await;
        intent
    }

    /// Requests a refund here (pending, amount reserved on the intent).
    async fn request_refund(&self, payment: &Payment, amount: i64) -> RefundId {
        let id = RefundId::generate(REGION, self.merchant.shard()).unwrap();
        let mut tx = self.pool().begin().await.unwrap();
        let mut record = intents::load_for_update(&mut tx, payment.intent, self.merchant, false)
            .await
            .unwrap()
            .unwrap();
        let t = refund::request(
            &record.intent,
            NewRefund {
                id,
                amount: Some(amount),
                reason: None,
                created: unix_now(),
            },
        )
        .unwrap();
        record.intent = t.intent;
        intents::update(&mut tx, &mut record).await.unwrap();
        let refund = RefundRecord {
            refund: t.refund,
            merchant_id: self.merchant,
            livemode: false,
            metadata: BTreeMap::new(),
        };
        refunds::insert(&mut tx, &refund).await.unwrap();
        effects::write(
            &mut tx,
            &record,
            Some(&refund),
            &t.effects,
            self.context(None),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    /// Refunds `amount` at the processor and here.
    async fn refund(&self, payment: &Payment, amount: i64) -> RefundId {
        let id = self.request_refund(payment, amount).await;
        self.sim(
            "/v1/refunds",
            &format!("{id}.refund"),
            &json!({"authorization": payment.authorization, "amount": amount, "reference": id.to_string()}),
        )
        .await;
        self.refund_succeeded(payment, id).await;
        id
    }

    /// Commits a refund's success here, as the integration service does
    /// once the processor confirmed it.
    async fn refund_succeeded(&self, payment: &Payment, id: RefundId) {
        let mut tx = self.pool().begin().await.unwrap();
        let mut record = intents::load_for_update(&mut tx, payment.intent, self.merchant, false)
            .await
            .unwrap()
            .unwrap();
        let mut refund = refunds::load_for_update(&mut tx, id)
            .await
            .unwrap()
            .unwrap();
        let t = refund::apply_outcome(&record.intent, &refund.refund, ProcessorOutcome::Succeeded)
            .unwrap();
        record.intent = t.intent;
        intents::update(&mut tx, &mut record).await.unwrap();
        refund.refund = t.refund;
        refunds::update_outcome(&mut tx, &refund.refund)
            .await
            .unwrap();
        effects::write(
            &mut tx,
            &record,
            Some(&refund),
            &t.effects,
            self.context(None),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// A region with one payment in every state money can be in.
    async fn with_every_kind_of_payment() -> (Region, Scenario) {
        let region = Region::start().await;
        let refunded = region.paid(1_000).await;
        region.refund(&refunded, 300).await;
        let captured = region.held(2_000).await;
        region.capture(&captured, 1_500).await;
        let canceled = region.held(500).await;
        region.cancel(&canceled).await;
        let held = region.held(700).await;
        let declined = region.declined(900).await;
        let unconfirmed = region
            .create_intent(400, CaptureMethod::Automatic, "req_unconfirmed")
            .await;
        region.relay().await;
        (
            region,
            Scenario {
                refunded,
                captured,
                canceled,
                held,
                declined,
                unconfirmed,
            },
        )
    }
}

#[allow(dead_code)]
struct Scenario {
    refunded: Payment,
    captured: Payment,
    canceled: Payment,
    held: Payment,
    declined: PaymentIntentId,
    unconfirmed: PaymentIntentId,
}

/// A request ID of its own for each payment.
fn next_request_id() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "req_test_{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Asserts the report holds violations of `kind` about `resource`, and
/// violations of `also` (their consequences) only.
fn assert_only(report: &Report, expected: &[(Kind, &str)]) {
    assert!(
        !report.violations.is_empty(),
        "expected violations, the report is clean"
    );
    for (kind, resource) in expected {
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.kind == *kind && v.resource == *resource),
            "no {kind} about {resource} in {:#?}",
            report.violations
        );
    }
    for violation in &report.violations {
        assert!(
            expected
                .iter()
                .any(|(kind, resource)| violation.kind == *kind && violation.resource == *resource),
            "unexpected violation {violation:#?}"
        );
    }
}

#[tokio::test]
async fn a_region_with_payments_in_every_state_is_clean() {
    let (region, _) = Region::with_every_kind_of_payment().await;
    let report = region.verify().await;
    assert!(report.is_clean(), "{:#?}", report.violations);
    assert_eq!(report.checked.shards, 2);
    assert_eq!(report.checked.payment_intents, 6);
    assert_eq!(report.checked.attempts, 5);
    assert_eq!(report.checked.refunds, 1);
    assert_eq!(report.checked.processor_authorizations, 5);
    // Authorizations (5), a capture, a void and a refund.
    assert_eq!(report.checked.processor_operations, 8);
    assert!(report.skipped.is_empty());
    region.stop().await;
}

#[tokio::test]
async fn an_unbalanced_journal_is_reported_with_the_balance_it_breaks() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    let intent = scenario.refunded.intent.to_string();
    let pool = region.pool();
    let journal: i64 = sqlx::query_scalar(
        "select min(id) from journals where payment_intent_id = $1 and refund_id is null",
    )
    .bind(&intent)
    .fetch_one(pool)
    .await
    .unwrap();
    // The database refuses this (a deferred balance check, immutable rows):
    // only its owner, switching its triggers off, can do it.
    sqlx::query("alter table journal_lines disable trigger user")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into journal_lines (journal_id, merchant_id, livemode, account, currency, side, amount)
         values ($1, $2, false, 'processor_receivable', 'usd', 'debit', 1)",
    )
    .bind(journal)
    .bind(region.merchant.to_string())
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("alter table journal_lines enable trigger user")
        .execute(pool)
        .await
        .unwrap();

    let report = region.verify().await;
    let shard = region.merchant.shard();
    let journal_resource = format!("shard {shard} journal {journal}");
    assert_only(
        &report,
        &[
            (Kind::JournalUnbalanced, &journal_resource),
            // An unbalanced journal moves some account away from what the
            // intent stores: the stored balance check sees it too.
            (Kind::BalanceMismatch, &intent),
        ],
    );
    let unbalanced = report.of_kind(Kind::JournalUnbalanced);
    assert_eq!(unbalanced.len(), 1);
    assert!(
        unbalanced[0]
            .reason
            .contains("debits 1001 and credits 1000 in usd"),
        "{}",
        unbalanced[0].reason
    );
    let mismatch = report.of_kind(Kind::BalanceMismatch);
    assert_eq!(mismatch.len(), 1, "{mismatch:#?}");
    assert!(
        mismatch[0]
            .reason
            .contains("processor_receivable sums to 701"),
        "{}",
        mismatch[0].reason
    );
    region.stop().await;
}

#[tokio::test]
async fn stored_amounts_that_differ_from_their_ledger_lines_are_reported() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    let pool = region.pool();
    // A hold that says less than its journal placed.
    let held = scenario.held.intent.to_string();
    sqlx::query("update payment_intents set amount_capturable = 600 where id = $1")
        .bind(&held)
        .execute(pool)
        .await
        .unwrap();
    // A balanced journal that the intent's amounts do not account for.
    let captured = scenario.captured.intent.to_string();
    let mut tx = pool.begin().await.unwrap();
    ledger::post(
        &mut tx,
        ledger::JournalContext {
            merchant_id: &region.merchant.to_string(),
            livemode: false,
            payment_intent_id: Some(&captured),
            refund_id: None,
            description: "a capture booked twice",
        },
        &postings::capture(usd(1_500)).unwrap(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let report = region.verify().await;
    assert_only(
        &report,
        &[
            (Kind::BalanceMismatch, &held),
            (Kind::BalanceMismatch, &captured),
        ],
    );
    let reasons: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(
            "authorization_holds sums to 700 usd over its ledger lines, but the intent stores amount_capturable = 600"
        )),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("merchant_payable sums to 3000 usd")),
        "{reasons:#?}"
    );
    region.stop().await;
}

#[tokio::test]
async fn refunds_beyond_what_was_received_are_reported() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    let intent = scenario.refunded.intent.to_string();
    // A refund row written around the intent's lock and reservation: 300
    // refunded already, 800 more pending, of 1000 received.
    let mut tx = region.pool().begin().await.unwrap();
    let record =
        intents::load_for_update(&mut tx, scenario.refunded.intent, region.merchant, false)
            .await
            .unwrap()
            .unwrap();
    refunds::insert(
        &mut tx,
        &RefundRecord {
            refund: refund::Refund {
                id: RefundId::generate(REGION, region.merchant.shard()).unwrap(),
                payment_intent: scenario.refunded.intent,
                charge: record.intent.latest_charge.unwrap(),
                attempt: scenario.refunded.attempt,
                amount: usd(800),
                status: refund::RefundStatus::Pending,
                reason: None,
                failure_reason: None,
                created: unix_now(),
            },
            merchant_id: region.merchant,
            livemode: false,
            metadata: BTreeMap::new(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let report = region.verify().await;
    assert_only(
        &report,
        &[
            (Kind::RefundExceedsReceived, &intent),
            // The database cannot store more reserved than received, so the
            // intent's refund total no longer matches its refunds either.
            (Kind::BalanceMismatch, &intent),
        ],
    );
    let exceeded = report.of_kind(Kind::RefundExceedsReceived);
    assert_eq!(
        exceeded[0].reason,
        "refunds succeeded 300 + pending 800 = 1100 usd exceed the 1000 received"
    );
    region.stop().await;
}

#[tokio::test]
async fn a_payment_charged_twice_at_the_processor_is_reported() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    // A second authorization-and-capture for the same attempt under another key.
    let attempt = scenario.refunded.attempt.to_string();
    region
        .sim_authorize(
            "a-second-charge",
            &attempt,
            snakepay_processor_sim::CARD_APPROVED_VISA,
            1_000,
            true,
        )
        .await;

    let report = region.verify().await;
    let intent = scenario.refunded.intent.to_string();
    assert_only(&report, &[(Kind::CaptureMismatch, &intent)]);
    assert!(
        report.violations[0]
            .reason
            .contains("the processor captured it 2 times"),
        "{}",
        report.violations[0].reason
    );
    region.stop().await;
}

#[tokio::test]
async fn a_payment_marked_captured_that_the_processor_never_captured_is_reported() {
    let region = Region::start().await;
    let payment = region.held(1_200).await;
    // The capture is committed here without the processor's answer.
    region
        .transition(
            payment.intent,
            IntentCommand::Capture {
                amount_to_capture: None,
            },
        )
        .await;
    region.capture_result(&payment).await;
    region.relay().await;

    let report = region.verify().await;
    let intent = payment.intent.to_string();
    assert_only(&report, &[(Kind::CaptureMismatch, &intent)]);
    assert!(
        report.violations[0]
            .reason
            .contains("the processor shows no capture for its attempts"),
        "{}",
        report.violations[0].reason
    );
    region.stop().await;
}

#[tokio::test]
async fn a_processor_charge_that_no_payment_received_is_reported_once_settled() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    // Captured at the processor for an attempt we never made, and for the
    // attempt of a payment we canceled.
    let stranger = region
        .sim_authorize(
            "a-stranger",
            "pa_not_ours",
            snakepay_processor_sim::CARD_APPROVED_VISA,
            2_500,
            true,
        )
        .await;
    let canceled_attempt = scenario.canceled.attempt.to_string();
    let on_canceled = region
        .sim_authorize(
            "late-capture",
            &canceled_attempt,
            snakepay_processor_sim::CARD_APPROVED_VISA,
            500,
            true,
        )
        .await;

    // Within the settle margin these may be on their way to us.
    let settling = verify::run(
        &region.db.store,
        &Options {
            settle_seconds: 600.0,
            ..region.options()
        },
    )
    .await
    .unwrap();
    assert!(settling.is_clean(), "{:#?}", settling.violations);

    let report = region.verify().await;
    let stranger = stranger["id"].as_str().unwrap();
    let on_canceled = on_canceled["id"].as_str().unwrap();
    assert_only(
        &report,
        &[
            (Kind::UnownedProcessorCharge, stranger),
            (Kind::UnownedProcessorCharge, on_canceled),
        ],
    );
    let reasons: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.reason.as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("captured 2500 usd") && r.contains("\"pa_not_ours\"")),
        "{reasons:#?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("which is canceled and received nothing")),
        "{reasons:#?}"
    );
    region.stop().await;
}

#[tokio::test]
async fn refunds_that_the_processor_and_we_disagree_on_are_reported() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    // A refund at the processor that we never asked for.
    let foreign = region
        .sim(
            "/v1/refunds",
            "a-foreign-refund",
            &json!({"authorization": scenario.captured.authorization, "amount": 100, "reference": "re_unknown"}),
        )
        .await;
    // A refund we marked succeeded without the processor's answer.
    let unanswered = region.request_refund(&scenario.captured, 200).await;
    region
        .refund_succeeded(&scenario.captured, unanswered)
        .await;
    region.relay().await;

    let report = region.verify().await;
    let foreign = foreign["id"].as_str().unwrap();
    let unanswered = unanswered.to_string();
    assert_only(
        &report,
        &[
            (Kind::ProcessorRefundMismatch, foreign),
            (Kind::ProcessorRefundMismatch, &unanswered),
        ],
    );
    region.stop().await;
}

#[tokio::test]
async fn two_intents_created_under_one_idempotency_key_are_reported() {
    let (region, _) = Region::with_every_kind_of_payment().await;
    let pool = region.pool();
    let claim = Claim {
        merchant_id: region.merchant,
        livemode: false,
        key: "order-42",
        fingerprint: "fingerprint",
        request_id: "req_twice",
    };
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        idempotency::claim(&mut tx, &claim).await.unwrap(),
        idempotency::ClaimOutcome::Claimed
    );
    let first = region
        .create_intent_in(&mut tx, 1_000, CaptureMethod::Automatic, "req_twice")
        .await;
    let second = region
        .create_intent_in(&mut tx, 1_000, CaptureMethod::Automatic, "req_twice")
        .await;
    let body =
        serde_json::to_vec(&json!({"id": first.to_string(), "object": "payment_intent"})).unwrap();
    store_final(&mut tx, &claim, &body).await;
    tx.commit().await.unwrap();
    // A key whose one intent is the one it replays is fine.
    let single = Claim {
        key: "order-43",
        request_id: "req_once",
        ..claim.clone()
    };
    let mut tx = pool.begin().await.unwrap();
    idempotency::claim(&mut tx, &single).await.unwrap();
    let once = region
        .create_intent_in(&mut tx, 1_000, CaptureMethod::Automatic, "req_once")
        .await;
    let body =
        serde_json::to_vec(&json!({"id": once.to_string(), "object": "payment_intent"})).unwrap();
    store_final(&mut tx, &single, &body).await;
    tx.commit().await.unwrap();
    region.relay().await;

    let report = region.verify().await;
    let resource = format!("{} test idempotency key \"order-42\"", region.merchant);
    assert_only(&report, &[(Kind::DuplicateIntentForKey, &resource)]);
    let mut both = [first.to_string(), second.to_string()];
    both.sort();
    assert_eq!(
        report.violations[0].reason,
        format!(
            "its request req_twice created 2 intents: {}, {}",
            both[0], both[1]
        )
    );
    assert_eq!(report.checked.idempotency_keys_with_intents, 2);
    region.stop().await;
}

#[tokio::test]
async fn payments_and_refunds_in_flight_past_the_reconciliation_window_are_reported() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    let processing = region
        .create_intent(1_000, CaptureMethod::Automatic, "req_processing")
        .await;
    let attempt = region.confirm(processing).await;
    let pending = region.request_refund(&scenario.captured, 100).await;
    region.relay().await;
    // Young: in flight, not stuck.
    assert!(region.verify().await.is_clean());

    let pool = region.pool();
    sqlx::query(
        "update payment_intents set updated_at = now() - interval '2 minutes' where id = $1",
    )
    .bind(processing.to_string())
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("update refunds set updated_at = now() - interval '2 minutes' where id = $1")
        .bind(pending.to_string())
        .execute(pool)
        .await
        .unwrap();
    // Inside a longer window, still fine.
    let patient = verify::run(
        &region.db.store,
        &Options {
            reconcile_window_seconds: 600.0,
            ..region.options()
        },
    )
    .await
    .unwrap();
    assert!(patient.is_clean(), "{:#?}", patient.violations);

    let report = region.verify().await;
    let processing = processing.to_string();
    let pending = pending.to_string();
    assert_only(
        &report,
        &[
            (Kind::StuckPayment, &processing),
            (Kind::StuckRefund, &pending),
        ],
    );
    let stuck = report.of_kind(Kind::StuckPayment);
    assert!(
        stuck[0].reason.starts_with("processing for 120 s")
            && stuck[0]
                .reason
                .ends_with(&format!("at the processor: authorize of {attempt}")),
        "{}",
        stuck[0].reason
    );
    region.stop().await;
}

#[tokio::test]
async fn an_outbox_that_is_not_drained_is_reported_per_shard() {
    let (region, _) = Region::with_every_kind_of_payment().await;
    region.create_unrelayed_intent("req_unrelayed").await;
    let report = region.verify().await;
    let resource = format!("shard {} outbox", region.merchant.shard());
    assert_only(&report, &[(Kind::OutboxNotDrained, &resource)]);
    assert!(
        report.violations[0]
            .reason
            .starts_with("1 row(s) unpublished for more than 0 s; the oldest, row"),
        "{}",
        report.violations[0].reason
    );
    // A row younger than the settle margin is on its way.
    let settling = verify::run(
        &region.db.store,
        &Options {
            settle_seconds: 600.0,
            ..region.options()
        },
    )
    .await
    .unwrap();
    assert!(settling.is_clean(), "{:#?}", settling.violations);
    region.stop().await;
}

#[tokio::test]
async fn without_a_processor_the_processor_checks_are_skipped_and_said_to_be() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    region
        .sim_authorize(
            "a-second-charge",
            &scenario.refunded.attempt.to_string(),
            snakepay_processor_sim::CARD_APPROVED_VISA,
            1_000,
            true,
        )
        .await;
    let report = verify::run(
        &region.db.store,
        &Options {
            processor: None,
            ..region.options()
        },
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].contains("processor"));
    region.stop().await;
}

#[tokio::test]
async fn an_unreachable_processor_means_the_check_could_not_run() {
    let (region, _) = Region::with_every_kind_of_payment().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = verify::run(
        &region.db.store,
        &Options {
            processor: Some(ProcessorAccess {
                base_url: format!("http://127.0.0.1:{port}").parse().unwrap(),
                api_key: SIM_API_KEY.to_owned(),
                trust: Default::default(),
            }),
            ..region.options()
        },
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("reading the processor's record"),
        "{error:#}"
    );
    region.stop().await;
}

fn config_toml(region: &Region, dir: &std::path::Path) -> String {
    let shards: Vec<String> = region
        .db
        .shard_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    format!(
        r#"
        [region]
        code = "local"
        number = 1
        public_api_url = "http://127.0.0.1:8081"
        [database]
        control_url = "{control}"
        shard_urls = [{shards}]
        [api_keys]
        hash_secret_base64 = "c25ha2VwYXktbG9jYWwtZGV2ZWxvcG1lbnQtb25seS1rZXktaGFzaC1zZWNyZXQ="
        [vault]
        key_ring_path = "{key_ring}"
        [integration]
        listen_addr = "127.0.0.1:8082"
        reconcile_after_ms = 30000
        [integration.processor_sim]
        base_url = "{sim}"
        api_key = "{SIM_API_KEY}"
        notification_secret = "sim_notification_secret_0123456789"
        "#,
        control = region.db.control_url(),
        shards = shards.join(", "),
        key_ring = dir.join("keyring.json").display(),
        sim = region.sim.base_url(),
    )
}

fn args() -> VerifyArgs {
    VerifyArgs {
        json: true,
        settle_seconds: 0.0,
        reconcile_window_seconds: None,
        processor_url: None,
        skip_processor: false,
    }
}

#[tokio::test]
async fn the_command_reads_the_processor_and_window_from_the_integration_section() {
    let (region, scenario) = Region::with_every_kind_of_payment().await;
    let dir = tempfile::tempdir().unwrap();
    let config: AdminConfig =
        snakepay_config::from_toml_str(&config_toml(&region, dir.path())).unwrap();
    let options = snakepay_admin::verify_options(&config, &args()).unwrap();
    assert_eq!(options.reconcile_window_seconds, 30.0);
    assert_eq!(
        options.processor.as_ref().unwrap().base_url.as_str(),
        format!("{}/", region.sim.base_url())
    );
    assert!(!format!("{options:?}").contains(SIM_API_KEY));

    let mut out = Vec::new();
    let finished = run(&config, Command::Verify(args()), &mut out)
        .await
        .unwrap();
    assert_eq!(finished, Finished::Done);
    let clean: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(clean["clean"], true);
    assert_eq!(clean["violations"], json!([]));
    assert_eq!(clean["reconcile_window_seconds"], 30.0);

    region
        .sim_authorize(
            "a-second-charge",
            &scenario.refunded.attempt.to_string(),
            snakepay_processor_sim::CARD_APPROVED_VISA,
            1_000,
            true,
        )
        .await;
    let mut out = Vec::new();
    let finished = run(
        &config,
        Command::Verify(VerifyArgs {
            json: false,
            ..args()
        }),
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(finished, Finished::ViolationsFound);
    let table = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("verify: 1 violation (checked 2 shard(s), 6 payment intent(s)"),
        "{table}"
    );
    assert!(lines[2].starts_with("KIND"), "{table}");
    assert!(
        lines[3].starts_with(&format!("capture_mismatch  {}", scenario.refunded.intent)),
        "{table}"
    );

    // Without any processor configured the command refuses rather than
    // silently skipping the most important checks.
    let mut bare = config.clone();
    bare.integration = None;
    let error = run(&bare, Command::Verify(args()), &mut Vec::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--skip-processor"), "{error}");
    assert_eq!(
        Command::Verify(args()).error_exit_code(),
        verify::EXIT_CANNOT_RUN
    );
    region.stop().await;
}

#[tokio::test]
async fn the_binary_exits_0_when_clean_1_with_violations_and_2_when_it_cannot_check() {
    let (region, _) = Region::with_every_kind_of_payment().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_toml(&region, dir.path())).unwrap();
    let admin = |extra: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_snakepay-admin"))
                .env("SNAKEPAY_CONFIG", &path)
                .args(["verify", "--settle-seconds", "0"])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let clean = admin(&[]).await.unwrap();
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    assert!(String::from_utf8_lossy(&clean.stdout).starts_with("verify: no violations"));

    region.create_unrelayed_intent("req_unrelayed").await;
    let dirty = admin(&["--json"]).await.unwrap();
    assert_eq!(dirty.status.code(), Some(1), "{dirty:?}");
    let report: Value = serde_json::from_slice(&dirty.stdout).unwrap();
    assert_eq!(report["violations"][0]["kind"], "outbox_not_drained");

    let unreachable = admin(&["--processor-url", "http://127.0.0.1:9"])
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert!(
        String::from_utf8_lossy(&unreachable.stderr).contains("reading the processor's record"),
        "{unreachable:?}"
    );
    region.stop().await;
}

/// Stores `body` as the final answer of `owner`'s key, in `tx`.
async fn store_final(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner: &Claim<'_>,
    body: &[u8],
) {
    let response = ResponseBytes { status: 200, body };
    idempotency::complete(tx, owner, response, Stage::Final)
        .await
        .unwrap();
}
