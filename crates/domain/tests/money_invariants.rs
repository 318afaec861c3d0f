//! Property tests: random sequences of merchant commands and processor
//! outcomes (including duplicates, late answers for superseded attempts and
//! unknown outcomes) never break the money invariants:
//!
//! - amount_received ≤ amount, refunded + pending refunds ≤ received;
//! - every journal balances per currency, and the balances derived from all
//!   posted lines equal what the intent says (received less refunded is owed
//!   to the merchant; the held amount equals amount_capturable);
//! - final states absorb everything: a canceled intent never changes, a
//!   succeeded one stays succeeded;
//! - refunds' totals match the refunds themselves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use proptest::prelude::*;
use snakepay_domain::Currency;
use snakepay_domain::ledger::{Account, Side};
use snakepay_domain::payment_intent::{
    AuthorizationOutcome, CancellationReason, CaptureMethod, CardErrorCode, IntentCommand,
    NextAction, PaymentError, PaymentIntent, PaymentIntentStatus, PendingOperation,
    ProcessorOutcome, apply,
};
use snakepay_domain::refund::{self, NewRefund, Refund, RefundStatus};
use support::*;

#[derive(Debug, Clone)]
enum Step {
    Confirm {
        with_card: bool,
    },
    Attach,
    UpdateAmount(i64),
    /// An authorization outcome for the pending attempt (`stale: false`) or
    /// for an earlier one.
    Authorization {
        stale_pick: Option<usize>,
        outcome: u8,
    },
    Capture(Option<i64>),
    CaptureResult {
        outcome: u8,
        wrong_attempt: bool,
    },
    Cancel,
    VoidResult {
        outcome: u8,
    },
    Expire {
        after_seconds: i64,
    },
    RequestRefund(Option<i64>),
    RefundResult {
        pick: usize,
        outcome: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(|with_card| Step::Confirm { with_card }),
        Just(Step::Attach),
        (1_i64..20_000).prop_map(Step::UpdateAmount),
        (proptest::option::of(0_usize..8), 0_u8..4).prop_map(|(stale_pick, outcome)| {
            Step::Authorization {
                stale_pick,
                outcome,
            }
        }),
        proptest::option::of(-5_i64..12_000).prop_map(Step::Capture),
        (0_u8..3, any::<bool>()).prop_map(|(outcome, wrong_attempt)| Step::CaptureResult {
            outcome,
            wrong_attempt
        }),
        Just(Step::Cancel),
        (0_u8..3).prop_map(|outcome| Step::VoidResult { outcome }),
        (0_i64..(8 * 24 * 3600)).prop_map(|after_seconds| Step::Expire { after_seconds }),
        proptest::option::of(-5_i64..12_000).prop_map(Step::RequestRefund),
        (0_usize..8, 0_u8..3).prop_map(|(pick, outcome)| Step::RefundResult { pick, outcome }),
    ]
}

fn card_error() -> PaymentError {
    PaymentError {
        code: CardErrorCode::CardDeclined,
        decline_code: Some("generic_decline".to_owned()),
        message: "Your card was declined.".to_owned(),
    }
}

fn authorization_outcome(n: u8) -> AuthorizationOutcome {
    match n {
        0 => AuthorizationOutcome::Approved,
        1 => AuthorizationOutcome::Declined(card_error()),
        2 => AuthorizationOutcome::RequiresAction(NextAction::RedirectToUrl {
            url: "https://sim.test/3ds".to_owned(),
            return_url: None,
        }),
        _ => AuthorizationOutcome::Unknown,
    }
}

fn processor_outcome(n: u8) -> ProcessorOutcome {
    match n {
        0 => ProcessorOutcome::Succeeded,
        1 => ProcessorOutcome::Failed(card_error()),
        _ => ProcessorOutcome::Unknown,
    }
}

/// The world the commands run in: the intent, its refunds, the books.
struct World {
    intent: PaymentIntent,
    refunds: Vec<Refund>,
    books: Books,
    attempts_issued: u64,
    refunds_issued: u64,
    now: i64,
}

impl World {
    fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        let before = self.intent.clone();
        let intent = &self.intent;
        let pending_attempt = match intent.pending {
            Some(PendingOperation::Authorize { attempt, .. })
            | Some(PendingOperation::Capture { attempt, .. })
            | Some(PendingOperation::Void { attempt, .. }) => Some(attempt),
            None => None,
        };
        let command = match step {
            Step::Confirm { with_card } => {
                self.attempts_issued += 1;
                Some(IntentCommand::Confirm {
                    payment_method: with_card.then(card),
                    attempt: attempt(self.attempts_issued),
                    charge: charge(self.attempts_issued),
                })
            }
            Step::Attach => Some(IntentCommand::AttachPaymentMethod {
                payment_method: card(),
            }),
            Step::UpdateAmount(minor) => Some(IntentCommand::UpdateAmount {
                amount: usd(minor.max(50)),
            }),
            Step::Authorization {
                stale_pick,
                outcome,
            } => {
                let target = match stale_pick {
                    Some(k) if self.attempts_issued > 0 => {
                        Some(attempt(1 + (k as u64 % self.attempts_issued)))
                    }
                    _ => pending_attempt,
                };
                target.map(|attempt| IntentCommand::AuthorizationResult {
                    attempt,
                    outcome: authorization_outcome(outcome),
                    now: self.now,
                })
            }
            Step::Capture(amount_to_capture) => Some(IntentCommand::Capture { amount_to_capture }),
            Step::CaptureResult {
                outcome,
                wrong_attempt,
            } => {
                let target = if wrong_attempt {
                    Some(attempt(999))
                } else {
                    pending_attempt
                };
                target.map(|attempt| IntentCommand::CaptureResult {
                    attempt,
                    outcome: processor_outcome(outcome),
                })
            }
            Step::Cancel => Some(IntentCommand::Cancel {
                reason: Some(CancellationReason::RequestedByCustomer),
                now: self.now,
            }),
            Step::VoidResult { outcome } => {
                pending_attempt.map(|attempt| IntentCommand::VoidResult {
                    attempt,
                    outcome: processor_outcome(outcome),
                    now: self.now,
                })
            }
            Step::Expire { after_seconds } => {
                self.now += after_seconds;
                Some(IntentCommand::Expire { now: self.now })
            }
            Step::RequestRefund(amount) => {
                self.refunds_issued += 1;
                let new = NewRefund {
                    id: refund_id(self.refunds_issued),
                    amount,
                    reason: None,
                    created: self.now,
                };
                if let Ok(t) = refund::request(&self.intent, new) {
                    self.books.post(&t.effects);
                    self.intent = t.intent;
                    self.refunds.push(t.refund);
                }
                None
            }
            Step::RefundResult { pick, outcome } => {
                if !self.refunds.is_empty() {
                    let index = pick % self.refunds.len();
                    let t = refund::apply_outcome(
                        &self.intent,
                        &self.refunds[index],
                        processor_outcome(outcome),
                    )
                    .map_err(|e| TestCaseError::fail(format!("refund outcome failed: {e}")))?;
                    self.books.post(&t.effects);
                    self.intent = t.intent;
                    self.refunds[index] = t.refund;
                }
                None
            }
        };
        if let Some(command) = command
            && let Ok(t) = apply(&self.intent, command.clone())
        {
            if before.status == PaymentIntentStatus::Canceled {
                prop_assert_eq!(
                    &t.intent,
                    &before,
                    "a canceled intent changed under {:?}",
                    command
                );
                prop_assert!(t.effects.journal.is_none());
            }
            self.books.post(&t.effects);
            self.intent = t.intent;
        }
        if before.status == PaymentIntentStatus::Succeeded {
            prop_assert_eq!(self.intent.status, PaymentIntentStatus::Succeeded);
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let intent = &self.intent;
        intent.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert!(intent.amount_received <= intent.amount.minor());
        prop_assert!(
            intent.amount_refunded + intent.amount_refund_pending <= intent.amount_received
        );

        // Balances re-derived from every posted line, independently of the
        // ledger module's own helper: per currency, debits equal credits.
        let (mut debits, mut credits) = (0_i64, 0_i64);
        for line in &self.books.lines {
            prop_assert_eq!(line.amount.currency(), Currency::USD);
            match line.side {
                Side::Debit => debits += line.amount.minor(),
                Side::Credit => credits += line.amount.minor(),
            }
        }
        prop_assert_eq!(debits, credits, "the books do not balance");

        let owed = intent.amount_received - intent.amount_refunded;
        prop_assert_eq!(self.books.balance(Account::MerchantPayable), owed);
        prop_assert_eq!(self.books.balance(Account::ProcessorReceivable), owed);
        prop_assert_eq!(
            self.books.balance(Account::AuthorizationHolds),
            intent.amount_capturable
        );
        prop_assert_eq!(
            self.books.balance(Account::AuthorizedFunds),
            intent.amount_capturable
        );

        let total = |status: RefundStatus| -> i64 {
            self.refunds
                .iter()
                .filter(|r| r.status == status)
                .map(|r| r.amount.minor())
                .sum()
        };
        prop_assert_eq!(total(RefundStatus::Succeeded), intent.amount_refunded);
        prop_assert_eq!(total(RefundStatus::Pending), intent.amount_refund_pending);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_never_break_the_money_invariants(
        amount in 50_i64..10_000,
        capture_method in prop_oneof![Just(CaptureMethod::Automatic), Just(CaptureMethod::AutomaticAsync), Just(CaptureMethod::Manual)],
        with_card: bool,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut world = World {
            intent: new_intent(amount, capture_method, with_card),
            refunds: Vec::new(),
            books: Books::default(),
            attempts_issued: 0,
            refunds_issued: 0,
            now: NOW,
        };
        world.check()?;
        for step in steps {
            world.run(step)?;
        }
    }
}
