//! The Refund state machine: `pending` → `succeeded` | `failed`.
//!
//! A refund request reserves its amount on the intent
//! (`amount_refund_pending`) in the same transition that creates it, so that
//! the store, which applies it under the intent's row lock, can never let two
//! concurrent refunds together exceed what was received. The ledger moves only
//! when the processor confirms the refund.

use serde::{Deserialize, Serialize};

use crate::effects::{Effects, EventType, OperationRef, ProcessorCommand};
use crate::ids::{AttemptId, ChargeId, PaymentIntentId, RefundId};
use crate::ledger::postings;
use crate::money::{Money, partial_amount};
use crate::payment_intent::{
    Operation, PaymentIntent, PaymentIntentStatus, ProcessorOutcome, TransitionError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<RefundStatus> {
        [
            RefundStatus::Pending,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: RefundId,
    pub payment_intent: PaymentIntentId,
    pub charge: ChargeId,
    /// The authorization attempt being refunded; the processor knows the
    /// payment by it.
    pub attempt: AttemptId,
    pub amount: Money,
    pub status: RefundStatus,
    pub reason: Option<RefundReason>,
    /// Why the processor refused, when `status` is `failed`.
    pub failure_reason: Option<String>,
    pub created: i64,
}

/// A refund request, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub id: RefundId,
    /// Minor units; `None` refunds everything still refundable.
    pub amount: Option<i64>,
    pub reason: Option<RefundReason>,
    pub created: i64,
}

/// The intent and the refund after a refund transition, with the effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTransition {
    pub intent: PaymentIntent,
    pub refund: Refund,
    pub effects: Effects,
}

/// Creates a pending refund against a succeeded intent and reserves its amount.
pub fn request(
    intent: &PaymentIntent,
    new: NewRefund,
) -> Result<RefundTransition, TransitionError> {
    let (attempt, charge) = match (
        intent.status,
        intent.authorized_attempt,
        intent.latest_charge,
    ) {
        (PaymentIntentStatus::Succeeded, Some(attempt), Some(charge)) => (attempt, charge),
        _ => {
            return Err(TransitionError::UnexpectedState {
                operation: Operation::Refund,
                status: intent.status,
            });
        }
    };
    let currency = intent.amount.currency();
    let refundable = intent.amount.with_minor(intent.amount_refundable())?;
    if refundable.is_zero() {
        return Err(TransitionError::ChargeAlreadyRefunded);
    }
    let amount = match new.amount {
        None => refundable,
        Some(minor) => partial_amount(minor, currency).map_err(TransitionError::InvalidAmount)?,
    };
    if amount.minor() > refundable.minor() {
        return Err(TransitionError::AmountTooLarge {
            maximum: refundable,
        });
    }
    let mut next = intent.clone();
    next.amount_refund_pending = intent
        .amount_refund_pending
        .checked_add(amount.minor())
        .ok_or(crate::money::MoneyError::Overflow)?;
    let refund = Refund {
        id: new.id,
        payment_intent: intent.id,
        charge,
        attempt,
        amount,
        status: RefundStatus::Pending,
        reason: new.reason,
        failure_reason: None,
        created: new.created,
    };
    let effects = Effects::none()
        .command(ProcessorCommand::Refund {
            refund: refund.id,
            attempt,
            amount,
        })
        .event(EventType::RefundCreated);
    Ok(RefundTransition {
        intent: next,
        refund,
        effects,
    })
}

/// Applies the processor's answer. An answer for a refund that is no longer
/// pending is a redelivery and changes nothing.
pub fn apply_outcome(
    intent: &PaymentIntent,
    refund: &Refund,
    outcome: ProcessorOutcome,
) -> Result<RefundTransition, TransitionError> {
    let unchanged = || RefundTransition {
        intent: intent.clone(),
        refund: refund.clone(),
        effects: Effects::none(),
    };
    if refund.status != RefundStatus::Pending || refund.payment_intent != intent.id {
        return Ok(unchanged());
    }
    let amount = refund.amount.minor();
    let mut next = intent.clone();
    let mut next_refund = refund.clone();
    let effects = match outcome {
        ProcessorOutcome::Succeeded => {
            next.amount_refund_pending -= amount;
            next.amount_refunded += amount;
            next_refund.status = RefundStatus::Succeeded;
            Effects::none()
                .journal(postings::refund(refund.amount)?)
                .event(EventType::RefundUpdated)
                .event(EventType::ChargeRefunded)
        }
        ProcessorOutcome::Failed(error) => {
            next.amount_refund_pending -= amount;
            next_refund.status = RefundStatus::Failed;
            next_refund.failure_reason = Some(error.message);
            Effects::none()
                .event(EventType::RefundFailed)
                .event(EventType::RefundUpdated)
        }
        ProcessorOutcome::Unknown => Effects::none().command(ProcessorCommand::Inquire {
            operation: OperationRef::Refund { refund: refund.id },
        }),
    };
    Ok(RefundTransition {
        intent: next,
        refund: next_refund,
        effects,
    })
}
