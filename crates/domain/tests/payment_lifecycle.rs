//! Example lifecycles of PaymentIntents and refunds, one per path a payment
//! can take, checking state, effects and ledger together.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use snakepay_domain::effects::{EventType, OperationRef, ProcessorCommand};
use snakepay_domain::ledger::Account;
use snakepay_domain::payment_intent::{
    AUTHORIZATION_VALIDITY_SECONDS, AuthorizationOutcome, CancellationReason, CaptureMethod,
    CardErrorCode, IntentCommand, NextAction, PaymentError, PaymentIntent,
    PaymentIntentStatus as S, ProcessorOutcome, TransitionError, apply,
};
use snakepay_domain::refund::{self, NewRefund, RefundStatus};
use support::*;

fn confirm(intent: &PaymentIntent, n: u64) -> PaymentIntent {
    let t = apply(
        intent,
        IntentCommand::Confirm {
            payment_method: Some(card()),
            attempt: attempt(n),
            charge: charge(n),
        },
    )
    .unwrap();
    assert_eq!(
        t.effects.commands,
        vec![ProcessorCommand::Authorize {
            attempt: attempt(n),
            amount: intent.amount,
            capture: intent.capture_method != CaptureMethod::Manual
        }]
    );
    t.intent
}

fn authorize(
    intent: &PaymentIntent,
    n: u64,
    outcome: AuthorizationOutcome,
) -> snakepay_domain::payment_intent::Transition {
    apply(
        intent,
        IntentCommand::AuthorizationResult {
            attempt: attempt(n),
            outcome,
            now: NOW,
        },
    )
    .unwrap()
}

fn declined(decline_code: &str) -> PaymentError {
    PaymentError {
        code: CardErrorCode::CardDeclined,
        decline_code: Some(decline_code.to_owned()),
        message: "Your card was declined.".to_owned(),
    }
}

fn succeeded_intent(amount: i64, books: &mut Books) -> PaymentIntent {
    let intent = confirm(&new_intent(amount, CaptureMethod::Automatic, true), 1);
    let t = authorize(&intent, 1, AuthorizationOutcome::Approved);
    books.post(&t.effects);
    t.intent
}

#[test]
fn an_intent_created_without_a_card_requires_a_payment_method_and_with_one_requires_confirmation() {
    assert_eq!(
        new_intent(1_000, CaptureMethod::Automatic, false).status,
        S::RequiresPaymentMethod
    );
    assert_eq!(
        new_intent(1_000, CaptureMethod::Automatic, true).status,
        S::RequiresConfirmation
    );
}

#[test]
fn confirming_without_any_payment_method_is_refused_with_the_parameter_named() {
    let intent = new_intent(1_000, CaptureMethod::Automatic, false);
    let error = apply(
        &intent,
        IntentCommand::Confirm {
            payment_method: None,
            attempt: attempt(1),
            charge: charge(1),
        },
    )
    .unwrap_err();
    assert_eq!(error, TransitionError::PaymentMethodRequired);
    assert_eq!(error.code(), Some("parameter_missing"));
    assert_eq!(error.param(), Some("payment_method"));
}

#[test]
fn an_approved_automatic_payment_succeeds_and_books_the_capture() {
    let mut books = Books::default();
    let intent = confirm(&new_intent(2_000, CaptureMethod::AutomaticAsync, true), 1);
    assert_eq!(intent.status, S::Processing);
    let t = authorize(&intent, 1, AuthorizationOutcome::Approved);
    books.post(&t.effects);
    assert_eq!(t.intent.status, S::Succeeded);
    assert_eq!(t.intent.amount_received, 2_000);
    assert_eq!(t.intent.latest_charge, Some(charge(1)));
    assert_eq!(
        t.effects.events,
        vec![
            EventType::ChargeSucceeded,
            EventType::PaymentIntentSucceeded
        ]
    );
    assert_eq!(books.balance(Account::MerchantPayable), 2_000);
    assert_eq!(books.balance(Account::ProcessorReceivable), 2_000);
    t.intent.check_invariants().unwrap();
}

#[test]
fn a_decline_returns_the_intent_to_requires_payment_method_with_the_error_and_no_money_moves() {
    let intent = confirm(&new_intent(2_000, CaptureMethod::Automatic, true), 1);
    let t = authorize(
        &intent,
        1,
        AuthorizationOutcome::Declined(declined("insufficient_funds")),
    );
    assert_eq!(t.intent.status, S::RequiresPaymentMethod);
    assert_eq!(
        t.intent.payment_method, None,
        "the declined card is detached"
    );
    assert_eq!(
        t.intent
            .last_payment_error
            .as_ref()
            .and_then(|e| e.decline_code.as_deref()),
        Some("insufficient_funds")
    );
    assert!(t.effects.journal.is_none());
    assert_eq!(
        t.effects.events,
        vec![
            EventType::ChargeFailed,
            EventType::PaymentIntentPaymentFailed
        ]
    );
    // The decline is this confirmation's refusal, and no other's.
    assert_eq!(
        t.intent.refusal_of_confirmation(attempt(1)),
        Some(&declined("insufficient_funds"))
    );
    assert_eq!(t.intent.refusal_of_confirmation(attempt(2)), None);
    assert_eq!(t.intent.refusal_of_completion(), None);
    // The customer tries another card, which works.
    let retried = confirm(&t.intent, 2);
    assert_eq!(retried.last_payment_error, None);
    assert_eq!(retried.refusal_of_confirmation(attempt(1)), None);
    assert_eq!(
        authorize(&retried, 2, AuthorizationOutcome::Approved)
            .intent
            .status,
        S::Succeeded
    );
}

#[test]
fn an_unknown_outcome_keeps_the_payment_processing_and_asks_for_an_inquiry() {
    let intent = confirm(&new_intent(2_000, CaptureMethod::Automatic, true), 1);
    let t = authorize(&intent, 1, AuthorizationOutcome::Unknown);
    assert_eq!(t.intent.status, S::Processing);
    assert!(t.effects.journal.is_none());
    assert_eq!(
        t.effects.commands,
        vec![ProcessorCommand::Inquire {
            operation: OperationRef::Authorize {
                attempt: attempt(1)
            }
        }]
    );
    // The inquiry's definite answer settles it.
    assert_eq!(
        authorize(&t.intent, 1, AuthorizationOutcome::Approved)
            .intent
            .status,
        S::Succeeded
    );
}

#[test]
fn a_redelivered_approval_changes_nothing_and_books_nothing_twice() {
    let mut books = Books::default();
    let intent = succeeded_intent(2_000, &mut books);
    let again = authorize(&intent, 1, AuthorizationOutcome::Approved);
    assert_eq!(again.intent, intent);
    assert!(again.effects.is_empty(), "{:?}", again.effects);
}

#[test]
fn three_d_secure_waits_for_the_customer_then_completes() {
    let intent = confirm(&new_intent(2_000, CaptureMethod::Automatic, true), 1);
    let action = NextAction::RedirectToUrl {
        url: "https://sim.test/3ds/pa_1".to_owned(),
        return_url: Some("https://shop.test/done".to_owned()),
    };
    let t = authorize(
        &intent,
        1,
        AuthorizationOutcome::RequiresAction(action.clone()),
    );
    assert_eq!(t.intent.status, S::RequiresAction);
    assert_eq!(t.intent.next_action, Some(action.clone()));
    assert_eq!(
        t.effects.events,
        vec![EventType::PaymentIntentRequiresAction]
    );
    t.intent.check_invariants().unwrap();
    assert!(
        authorize(&t.intent, 1, AuthorizationOutcome::RequiresAction(action))
            .effects
            .is_empty()
    );
    let done = authorize(&t.intent, 1, AuthorizationOutcome::Approved);
    assert_eq!(done.intent.status, S::Succeeded);
    assert_eq!(done.intent.next_action, None);
}

#[test]
fn a_late_approval_of_a_superseded_attempt_is_voided_not_booked() {
    let intent = confirm(&new_intent(2_000, CaptureMethod::Automatic, true), 1);
    let action = NextAction::RedirectToUrl {
        url: "https://sim.test/3ds".to_owned(),
        return_url: None,
    };
    let waiting = authorize(&intent, 1, AuthorizationOutcome::RequiresAction(action)).intent;
    // The customer gives up on 3-D Secure and cancels.
    let canceled = apply(
        &waiting,
        IntentCommand::Cancel {
            reason: Some(CancellationReason::Abandoned),
            now: NOW,
        },
    )
    .unwrap();
    assert_eq!(canceled.intent.status, S::Canceled);
    assert_eq!(
        canceled.effects.commands,
        vec![ProcessorCommand::Void {
            attempt: attempt(1)
        }]
    );
    // The challenge completes anyway, later.
    let late = authorize(&canceled.intent, 1, AuthorizationOutcome::Approved);
    assert_eq!(late.intent, canceled.intent);
    assert!(late.effects.journal.is_none());
    assert_eq!(
        late.effects.commands,
        vec![ProcessorCommand::Void {
            attempt: attempt(1)
        }]
    );
}

#[test]
fn manual_capture_holds_then_a_partial_capture_releases_the_rest() {
    let mut books = Books::default();
    let intent = confirm(&new_intent(10_000, CaptureMethod::Manual, true), 1);
    let held = authorize(&intent, 1, AuthorizationOutcome::Approved);
    books.post(&held.effects);
    assert_eq!(held.intent.status, S::RequiresCapture);
    assert_eq!(held.intent.amount_capturable, 10_000);
    assert_eq!(
        held.intent.capture_before,
        Some(NOW + AUTHORIZATION_VALIDITY_SECONDS)
    );
    assert_eq!(books.balance(Account::AuthorizationHolds), 10_000);
    assert_eq!(books.balance(Account::MerchantPayable), 0);

    let too_much = apply(
        &held.intent,
        IntentCommand::Capture {
            amount_to_capture: Some(10_001),
        },
    )
    .unwrap_err();
    assert_eq!(too_much.code(), Some("amount_too_large"));

    let capturing = apply(
        &held.intent,
        IntentCommand::Capture {
            amount_to_capture: Some(6_000),
        },
    )
    .unwrap();
    assert_eq!(capturing.intent.status, S::Processing);
    assert_eq!(
        capturing.effects.commands,
        vec![ProcessorCommand::Capture {
            attempt: attempt(1),
            amount: usd(6_000)
        }]
    );
    // A second capture or a cancel cannot race the one in flight.
    assert!(
        apply(
            &capturing.intent,
            IntentCommand::Capture {
                amount_to_capture: None
            }
        )
        .is_err()
    );
    assert!(
        apply(
            &capturing.intent,
            IntentCommand::Cancel {
                reason: None,
                now: NOW
            }
        )
        .is_err()
    );

    let captured = apply(
        &capturing.intent,
        IntentCommand::CaptureResult {
            attempt: attempt(1),
            outcome: ProcessorOutcome::Succeeded,
        },
    )
    .unwrap();
    books.post(&captured.effects);
    assert_eq!(captured.intent.status, S::Succeeded);
    assert_eq!(captured.intent.amount_received, 6_000);
    assert_eq!(captured.intent.amount_capturable, 0);
    assert_eq!(books.balance(Account::AuthorizationHolds), 0);
    assert_eq!(books.balance(Account::AuthorizedFunds), 0);
    assert_eq!(books.balance(Account::MerchantPayable), 6_000);
    assert_eq!(
        captured.effects.events,
        vec![EventType::ChargeCaptured, EventType::PaymentIntentSucceeded]
    );
}

#[test]
fn cancelling_an_authorization_voids_it_and_releases_the_hold() {
    let mut books = Books::default();
    let intent = confirm(&new_intent(5_000, CaptureMethod::Manual, true), 1);
    let held = authorize(&intent, 1, AuthorizationOutcome::Approved);
    books.post(&held.effects);
    let voiding = apply(
        &held.intent,
        IntentCommand::Cancel {
            reason: Some(CancellationReason::RequestedByCustomer),
            now: NOW,
        },
    )
    .unwrap();
    assert_eq!(voiding.intent.status, S::Processing);
    assert_eq!(
        voiding.effects.commands,
        vec![ProcessorCommand::Void {
            attempt: attempt(1)
        }]
    );
    let voided = apply(
        &voiding.intent,
        IntentCommand::VoidResult {
            attempt: attempt(1),
            outcome: ProcessorOutcome::Succeeded,
            now: NOW + 5,
        },
    )
    .unwrap();
    books.post(&voided.effects);
    assert_eq!(voided.intent.status, S::Canceled);
    assert_eq!(
        voided.intent.cancellation_reason,
        Some(CancellationReason::RequestedByCustomer)
    );
    assert_eq!(voided.intent.canceled_at, Some(NOW + 5));
    assert_eq!(books.balance(Account::AuthorizationHolds), 0);
    assert_eq!(
        voided.effects.events,
        vec![EventType::PaymentIntentCanceled]
    );
}

#[test]
fn an_uncaptured_authorization_expires_only_after_its_validity_window() {
    let intent = confirm(&new_intent(5_000, CaptureMethod::Manual, true), 1);
    let held = authorize(&intent, 1, AuthorizationOutcome::Approved).intent;
    let deadline = NOW + AUTHORIZATION_VALIDITY_SECONDS;
    assert_eq!(
        apply(&held, IntentCommand::Expire { now: deadline - 1 }).unwrap_err(),
        TransitionError::NotYetExpired
    );
    let expiring = apply(&held, IntentCommand::Expire { now: deadline }).unwrap();
    let expired = apply(
        &expiring.intent,
        IntentCommand::VoidResult {
            attempt: attempt(1),
            outcome: ProcessorOutcome::Succeeded,
            now: deadline,
        },
    )
    .unwrap();
    assert_eq!(expired.intent.status, S::Canceled);
    assert_eq!(
        expired.intent.cancellation_reason,
        Some(CancellationReason::Automatic)
    );
}

#[test]
fn final_states_refuse_every_operation_with_the_status_in_the_message() {
    let mut books = Books::default();
    let done = succeeded_intent(1_000, &mut books);
    let error = apply(
        &done,
        IntentCommand::Cancel {
            reason: None,
            now: NOW,
        },
    )
    .unwrap_err();
    assert_eq!(error.code(), Some("payment_intent_unexpected_state"));
    assert_eq!(
        error.to_string(),
        "You cannot cancel this PaymentIntent because it has a status of succeeded."
    );
    let canceled = apply(
        &new_intent(1_000, CaptureMethod::Automatic, true),
        IntentCommand::Cancel {
            reason: None,
            now: NOW,
        },
    )
    .unwrap()
    .intent;
    assert!(
        apply(
            &canceled,
            IntentCommand::Confirm {
                payment_method: Some(card()),
                attempt: attempt(9),
                charge: charge(9)
            }
        )
        .is_err()
    );
    assert!(
        apply(
            &canceled,
            IntentCommand::UpdateAmount { amount: usd(5_000) }
        )
        .is_err()
    );
}

#[test]
fn refunds_are_capped_by_what_was_received_including_pending_ones() {
    let mut books = Books::default();
    let intent = succeeded_intent(1_000, &mut books);
    let first = refund::request(
        &intent,
        NewRefund {
            id: refund_id(1),
            amount: Some(600),
            reason: None,
            created: NOW,
        },
    )
    .unwrap();
    assert_eq!(first.refund.status, RefundStatus::Pending);
    assert_eq!(first.intent.amount_refund_pending, 600);
    assert!(
        first.effects.journal.is_none(),
        "nothing is booked before the processor answers"
    );
    assert_eq!(first.effects.events, vec![EventType::RefundCreated]);

    // 600 is reserved: only 400 remain, even though nothing is refunded yet.
    let too_much = refund::request(
        &first.intent,
        NewRefund {
            id: refund_id(2),
            amount: Some(401),
            reason: None,
            created: NOW,
        },
    )
    .unwrap_err();
    assert_eq!(too_much.code(), Some("amount_too_large"));

    let rest = refund::request(
        &first.intent,
        NewRefund {
            id: refund_id(2),
            amount: None,
            reason: None,
            created: NOW,
        },
    )
    .unwrap();
    assert_eq!(rest.refund.amount, usd(400));
    let all_reserved = refund::request(
        &rest.intent,
        NewRefund {
            id: refund_id(3),
            amount: Some(1),
            reason: None,
            created: NOW,
        },
    )
    .unwrap_err();
    assert_eq!(all_reserved.code(), Some("charge_already_refunded"));

    // The first refund fails at the processor: its 600 become refundable again.
    let failed = refund::apply_outcome(
        &rest.intent,
        &first.refund,
        ProcessorOutcome::Failed(declined("generic_decline")),
    )
    .unwrap();
    assert_eq!(failed.refund.status, RefundStatus::Failed);
    assert_eq!(failed.intent.amount_refundable(), 600);
    // The second succeeds and is booked.
    let done =
        refund::apply_outcome(&failed.intent, &rest.refund, ProcessorOutcome::Succeeded).unwrap();
    books.post(&done.effects);
    assert_eq!(done.intent.amount_refunded, 400);
    assert_eq!(books.balance(Account::MerchantPayable), 600);
    assert_eq!(
        done.effects.events,
        vec![EventType::RefundUpdated, EventType::ChargeRefunded]
    );
    // A redelivered answer changes nothing.
    let again =
        refund::apply_outcome(&done.intent, &done.refund, ProcessorOutcome::Succeeded).unwrap();
    assert!(again.effects.is_empty());
    done.intent.check_invariants().unwrap();
}

#[test]
fn a_fully_refunded_payment_says_so() {
    let mut books = Books::default();
    let intent = succeeded_intent(1_000, &mut books);
    let full = refund::request(
        &intent,
        NewRefund {
            id: refund_id(1),
            amount: None,
            reason: None,
            created: NOW,
        },
    )
    .unwrap();
    let done =
        refund::apply_outcome(&full.intent, &full.refund, ProcessorOutcome::Succeeded).unwrap();
    let error = refund::request(
        &done.intent,
        NewRefund {
            id: refund_id(2),
            amount: None,
            reason: None,
            created: NOW,
        },
    )
    .unwrap_err();
    assert_eq!(error, TransitionError::ChargeAlreadyRefunded);
}

#[test]
fn an_intent_that_has_not_succeeded_cannot_be_refunded() {
    let intent = confirm(&new_intent(1_000, CaptureMethod::Manual, true), 1);
    let held = authorize(&intent, 1, AuthorizationOutcome::Approved).intent;
    let error = refund::request(
        &held,
        NewRefund {
            id: refund_id(1),
            amount: None,
            reason: None,
            created: NOW,
        },
    )
    .unwrap_err();
    assert_eq!(error.code(), Some("payment_intent_unexpected_state"));
}

#[test]
fn the_amount_can_change_only_before_confirmation() {
    let intent = new_intent(1_000, CaptureMethod::Automatic, true);
    let updated = apply(&intent, IntentCommand::UpdateAmount { amount: usd(1_500) })
        .unwrap()
        .intent;
    assert_eq!(updated.amount, usd(1_500));
    let processing = confirm(&updated, 1);
    assert!(
        apply(
            &processing,
            IntentCommand::UpdateAmount { amount: usd(2_000) }
        )
        .is_err()
    );
}

#[test]
fn card_error_codes_read_as_the_api_writes_them() {
    for code in [
        CardErrorCode::CardDeclined,
        CardErrorCode::ExpiredCard,
        CardErrorCode::IncorrectCvc,
        CardErrorCode::IncorrectNumber,
        CardErrorCode::ProcessingError,
        CardErrorCode::AuthenticationRequired,
    ] {
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            serde_json::Value::from(code.as_str())
        );
    }
}
