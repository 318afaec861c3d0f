//! The PaymentIntent state machine.
//!
//! `apply(&intent, command)` returns the new intent and its [`Effects`], or a
//! [`TransitionError`] that maps to the API's error codes. It never does I/O:
//! IDs and the current time come in with the command.
//!
//! ```text
//!                       attach pm              confirm
//!  requires_payment_method ──► requires_confirmation ──► processing ──┬─► succeeded          (approved, automatic capture)
//!          ▲   ▲                                            │  ▲      ├─► requires_capture   (approved, manual capture)
//!          │   └──────────── declined (402) ────────────────┘  │      ├─► requires_action    (3-D Secure; its outcome arrives later)
//!          │                                                   │      └─► processing         (unknown: the reconciler inquires)
//!  requires_capture ── capture ──► processing ──► succeeded    │
//!  requires_capture ── cancel / expiry ──► processing ──► canceled
//!  requires_payment_method | requires_confirmation | requires_action ── cancel ──► canceled
//! ```
//!
//! Money moves only on definite processor outcomes. While an operation is at
//! the processor the intent is `processing` and `pending` says which one, so a
//! second capture or cancel cannot race it, and a redelivered outcome for an
//! operation that is no longer pending changes nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::effects::{Effects, EventType, OperationRef, ProcessorCommand};
use crate::ids::{AttemptId, ChargeId, PaymentIntentId, PaymentMethodId};
use crate::ledger::{JournalError, postings};
use crate::money::{AmountError, Money, MoneyError, partial_amount};

/// How long an uncaptured authorization stays capturable before the intent
/// expires and the hold is released: seven days, as card networks and Stripe
/// allow for most cards.
pub const AUTHORIZATION_VALIDITY_SECONDS: i64 = 7 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentIntentStatus {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Canceled,
    Succeeded,
}

impl PaymentIntentStatus {
    pub const ALL: [PaymentIntentStatus; 7] = [
        PaymentIntentStatus::RequiresPaymentMethod,
        PaymentIntentStatus::RequiresConfirmation,
        PaymentIntentStatus::RequiresAction,
        PaymentIntentStatus::Processing,
        PaymentIntentStatus::RequiresCapture,
        PaymentIntentStatus::Canceled,
        PaymentIntentStatus::Succeeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentIntentStatus::RequiresPaymentMethod => "requires_payment_method",
            PaymentIntentStatus::RequiresConfirmation => "requires_confirmation",
            PaymentIntentStatus::RequiresAction => "requires_action",
            PaymentIntentStatus::Processing => "processing",
            PaymentIntentStatus::RequiresCapture => "requires_capture",
            PaymentIntentStatus::Canceled => "canceled",
            PaymentIntentStatus::Succeeded => "succeeded",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentIntentStatus> {
        PaymentIntentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// `succeeded` and `canceled` are final: the status never changes again
    /// (refunds of a succeeded intent are tracked in its refund totals).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PaymentIntentStatus::Succeeded | PaymentIntentStatus::Canceled
        )
    }
}

impl fmt::Display for PaymentIntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// Authorize and capture in one step, answering synchronously.
    Automatic,
    /// Stripe's default: like `automatic`, but the capture may complete
    /// asynchronously. For card processors we treat both alike.
    AutomaticAsync,
    /// Authorize now; the merchant captures (part of) it within the validity window.
    Manual,
}

impl CaptureMethod {
    pub fn captures_on_authorization(self) -> bool {
        !matches!(self, CaptureMethod::Manual)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
    /// Set by the platform when an uncaptured authorization expires; merchants
    /// cannot pass it.
    Automatic,
}

/// Card error codes of the API (HTTP 402, `type: card_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardErrorCode {
    CardDeclined,
    ExpiredCard,
    IncorrectCvc,
    IncorrectNumber,
    ProcessingError,
    AuthenticationRequired,
}

impl CardErrorCode {
    /// The code as the API writes it (`card_declined`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CardErrorCode::CardDeclined => "card_declined",
            CardErrorCode::ExpiredCard => "expired_card",
            CardErrorCode::IncorrectCvc => "incorrect_cvc",
            CardErrorCode::IncorrectNumber => "incorrect_number",
            CardErrorCode::ProcessingError => "processing_error",
            CardErrorCode::AuthenticationRequired => "authentication_required",
        }
    }
}

/// Why a payment attempt failed, as `last_payment_error` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    pub code: CardErrorCode,
    /// The issuer's reason, e.g. `insufficient_funds`, `generic_decline`.
    pub decline_code: Option<String>,
    pub message: String,
}

/// What the customer must do before the authorization can complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Send the customer to `url` (the 3-D Secure challenge), who comes back
    /// to `return_url`.
    RedirectToUrl {
        url: String,
        return_url: Option<String>,
    },
}

/// The operation currently at the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingOperation {
    Authorize {
        attempt: AttemptId,
        charge: ChargeId,
        capture: bool,
    },
    Capture {
        attempt: AttemptId,
        amount: Money,
    },
    Void {
        attempt: AttemptId,
        /// Recorded on the intent once the void succeeds.
        reason: Option<CancellationReason>,
    },
}

/// A PaymentIntent's state. Fields are public so the store can load and save
/// it; only [`apply`] and [`crate::refund`] should produce new states, and
/// [`PaymentIntent::check_invariants`] guards what is saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: PaymentIntentId,
    pub amount: Money,
    pub capture_method: CaptureMethod,
    pub status: PaymentIntentStatus,
    pub payment_method: Option<PaymentMethodId>,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    /// Refunds requested but not yet answered by the processor: reserved, so
    /// concurrent refunds cannot together exceed what was received.
    pub amount_refund_pending: i64,
    pub latest_attempt: Option<AttemptId>,
    pub latest_charge: Option<ChargeId>,
    /// The attempt whose authorization was approved, if any: captures, voids
    /// and refunds act on it, and a repeated approval of it is a duplicate.
    pub authorized_attempt: Option<AttemptId>,
    pub pending: Option<PendingOperation>,
    pub last_payment_error: Option<PaymentError>,
    pub next_action: Option<NextAction>,
    pub cancellation_reason: Option<CancellationReason>,
    pub canceled_at: Option<i64>,
    /// Unix seconds after which an uncaptured authorization expires.
    pub capture_before: Option<i64>,
    pub created: i64,
}

/// What a caller asks of an intent. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentCommand {
    AttachPaymentMethod {
        payment_method: PaymentMethodId,
    },
    /// A new amount, already validated with [`crate::money::charge_amount`].
    UpdateAmount {
        amount: Money,
    },
    /// Confirm with the attached or the given payment method. The caller
    /// creates the attempt and charge IDs so that this function stays pure.
    Confirm {
        payment_method: Option<PaymentMethodId>,
        attempt: AttemptId,
        charge: ChargeId,
    },
    AuthorizationResult {
        attempt: AttemptId,
        outcome: AuthorizationOutcome,
        now: i64,
    },
    /// Capture `amount_to_capture` (default: everything capturable).
    Capture {
        amount_to_capture: Option<i64>,
    },
    CaptureResult {
        attempt: AttemptId,
        outcome: ProcessorOutcome,
    },
    Cancel {
        reason: Option<CancellationReason>,
        now: i64,
    },
    VoidResult {
        attempt: AttemptId,
        outcome: ProcessorOutcome,
        now: i64,
    },
    /// Release an uncaptured authorization whose validity has run out.
    Expire {
        now: i64,
    },
}

/// The processor's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizationOutcome {
    Approved,
    Declined(PaymentError),
    RequiresAction(NextAction),
    /// A timeout or 5xx: the authorization may or may not have happened.
    Unknown,
}

/// The processor's answer to a capture, void or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorOutcome {
    Succeeded,
    Failed(PaymentError),
    Unknown,
}

/// The operation a merchant attempted, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Update,
    Confirm,
    Capture,
    Cancel,
    Refund,
    Expire,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Update => "update",
            Operation::Confirm => "confirm",
            Operation::Capture => "capture",
            Operation::Cancel => "cancel",
            Operation::Refund => "refund",
            Operation::Expire => "expire",
        }
    }
}

/// Why a command cannot be applied. Client errors carry the API's code;
/// `Money`/`Journal` errors are bugs and become 500s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("You cannot {} this PaymentIntent because it has a status of {status}.", operation.verb())]
    UnexpectedState {
        operation: Operation,
        status: PaymentIntentStatus,
    },
    #[error(
        "You cannot confirm this PaymentIntent because it's missing a payment method. Pass `payment_method` or `payment_method_data`."
    )]
    PaymentMethodRequired,
    #[error("The amount must be no more than {maximum}.")]
    AmountTooLarge { maximum: Money },
    #[error("{0}")]
    InvalidAmount(AmountError),
    #[error("This charge has already been refunded.")]
    ChargeAlreadyRefunded,
    #[error("The authorization has not expired yet.")]
    NotYetExpired,
    #[error("internal money error: {0}")]
    Money(#[from] MoneyError),
    #[error("internal ledger error: {0}")]
    Journal(#[from] JournalError),
}

impl TransitionError {
    /// The API error code, or `None` for internal errors (HTTP 500).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            TransitionError::UnexpectedState { .. } | TransitionError::NotYetExpired => {
                Some("payment_intent_unexpected_state")
            }
            TransitionError::PaymentMethodRequired => Some("parameter_missing"),
            TransitionError::AmountTooLarge { .. } => Some("amount_too_large"),
            TransitionError::InvalidAmount(error) => Some(error.code()),
            TransitionError::ChargeAlreadyRefunded => Some("charge_already_refunded"),
            TransitionError::Money(_) | TransitionError::Journal(_) => None,
        }
    }

    /// The request parameter at fault, for the error envelope's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            TransitionError::PaymentMethodRequired => Some("payment_method"),
            TransitionError::AmountTooLarge { .. } | TransitionError::InvalidAmount(_) => {
                Some("amount")
            }
            _ => None,
        }
    }
}

/// A new state with what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub intent: PaymentIntent,
    pub effects: Effects,
}

impl Transition {
    fn unchanged(intent: &PaymentIntent) -> Transition {
        Transition {
            intent: intent.clone(),
            effects: Effects::none(),
        }
    }
}

/// The fields of a new intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPaymentIntent {
    pub id: PaymentIntentId,
    /// Validated with [`crate::money::charge_amount`].
    pub amount: Money,
    pub capture_method: CaptureMethod,
    pub payment_method: Option<PaymentMethodId>,
    pub created: i64,
}

/// Creates an intent: `requires_payment_method`, or `requires_confirmation`
/// when a payment method comes with it.
pub fn create(new: NewPaymentIntent) -> Transition {
    let status = if new.payment_method.is_some() {
        PaymentIntentStatus::RequiresConfirmation
    } else {
        PaymentIntentStatus::RequiresPaymentMethod
    };
    Transition {
        intent: PaymentIntent {
            id: new.id,
            amount: new.amount,
            capture_method: new.capture_method,
            status,
            payment_method: new.payment_method,
            amount_capturable: 0,
            amount_received: 0,
            amount_refunded: 0,
            amount_refund_pending: 0,
            latest_attempt: None,
            latest_charge: None,
            authorized_attempt: None,
            pending: None,
            last_payment_error: None,
            next_action: None,
            cancellation_reason: None,
            canceled_at: None,
            capture_before: None,
            created: new.created,
        },
        effects: Effects::none().event(EventType::PaymentIntentCreated),
    }
}

/// Applies one command. See the module documentation for the state diagram.
pub fn apply(
    intent: &PaymentIntent,
    command: IntentCommand,
) -> Result<Transition, TransitionError> {
    use PaymentIntentStatus as S;
    match command {
        IntentCommand::AttachPaymentMethod { payment_method } => {
            require(
                intent,
                Operation::Update,
                &[
                    S::RequiresPaymentMethod,
                    S::RequiresConfirmation,
                    S::RequiresAction,
                ],
            )?;
            let (mut next, effects) = supersede_outstanding_attempt(intent);
            next.payment_method = Some(payment_method);
            next.status = S::RequiresConfirmation;
            Ok(Transition {
                intent: next,
                effects,
            })
        }
        IntentCommand::UpdateAmount { amount } => {
            require(
                intent,
                Operation::Update,
                &[S::RequiresPaymentMethod, S::RequiresConfirmation],
            )?;
            let mut next = intent.clone();
            next.amount = amount;
            Ok(Transition {
                intent: next,
                effects: Effects::none(),
            })
        }
        IntentCommand::Confirm {
            payment_method,
            attempt,
            charge,
        } => confirm(intent, payment_method, attempt, charge),
        IntentCommand::AuthorizationResult {
            attempt,
            outcome,
            now,
        } => authorization_result(intent, attempt, outcome, now),
        IntentCommand::Capture { amount_to_capture } => capture(intent, amount_to_capture),
        IntentCommand::CaptureResult { attempt, outcome } => {
            capture_result(intent, attempt, outcome)
        }
        IntentCommand::Cancel { reason, now } => cancel(intent, reason, now),
        IntentCommand::VoidResult {
            attempt,
            outcome,
            now,
        } => void_result(intent, attempt, outcome, now),
        IntentCommand::Expire { now } => expire(intent, now),
    }
}

fn require(
    intent: &PaymentIntent,
    operation: Operation,
    allowed: &[PaymentIntentStatus],
) -> Result<(), TransitionError> {
    if allowed.contains(&intent.status) {
        Ok(())
    } else {
        Err(TransitionError::UnexpectedState {
            operation,
            status: intent.status,
        })
    }
}

/// Leaving `requires_action` abandons the attempt waiting for 3-D Secure: it
/// is no longer pending (a late approval of it will be voided as stale), and
/// we ask the processor to drop it now.
fn supersede_outstanding_attempt(intent: &PaymentIntent) -> (PaymentIntent, Effects) {
    let mut next = intent.clone();
    let mut effects = Effects::none();
    if let Some(PendingOperation::Authorize { attempt, .. }) = intent.pending {
        next.pending = None;
        next.next_action = None;
        effects = effects.command(ProcessorCommand::Void { attempt });
    }
    (next, effects)
}

fn confirm(
    intent: &PaymentIntent,
    payment_method: Option<PaymentMethodId>,
    attempt: AttemptId,
    charge: ChargeId,
) -> Result<Transition, TransitionError> {
    use PaymentIntentStatus as S;
    require(
        intent,
        Operation::Confirm,
        &[
            S::RequiresPaymentMethod,
            S::RequiresConfirmation,
            S::RequiresAction,
        ],
    )?;
    let payment_method = payment_method
        .or(intent.payment_method)
        .ok_or(TransitionError::PaymentMethodRequired)?;
    let (mut next, effects) = supersede_outstanding_attempt(intent);
    let capture = intent.capture_method.captures_on_authorization();
    next.status = S::Processing;
    next.payment_method = Some(payment_method);
    next.latest_attempt = Some(attempt);
    next.last_payment_error = None;
    next.next_action = None;
    next.pending = Some(PendingOperation::Authorize {
        attempt,
        charge,
        capture,
    });
    let effects = effects
        .command(ProcessorCommand::Authorize {
            attempt,
            amount: intent.amount,
            capture,
        })
        .event(EventType::PaymentIntentProcessing);
    Ok(Transition {
        intent: next,
        effects,
    })
}

fn authorization_result(
    intent: &PaymentIntent,
    attempt: AttemptId,
    outcome: AuthorizationOutcome,
    now: i64,
) -> Result<Transition, TransitionError> {
    use PaymentIntentStatus as S;
    let (charge, capture) = match intent.pending {
        Some(PendingOperation::Authorize {
            attempt: pending,
            charge,
            capture,
        }) if pending == attempt => (charge, capture),
        _ => return Ok(outcome_for_operation_not_pending(intent, attempt, &outcome)),
    };
    let mut next = intent.clone();
    let effects = match outcome {
        AuthorizationOutcome::Approved => {
            next.pending = None;
            next.next_action = None;
            next.last_payment_error = None;
            next.latest_charge = Some(charge);
            next.authorized_attempt = Some(attempt);
            if capture {
                next.status = S::Succeeded;
                next.amount_received = intent.amount.minor();
                Effects::none()
                    .journal(postings::capture(intent.amount)?)
                    .event(EventType::ChargeSucceeded)
                    .event(EventType::PaymentIntentSucceeded)
            } else {
                next.status = S::RequiresCapture;
                next.amount_capturable = intent.amount.minor();
                next.capture_before = Some(now.saturating_add(AUTHORIZATION_VALIDITY_SECONDS));
                Effects::none()
                    .journal(postings::authorization_hold(intent.amount)?)
                    .event(EventType::ChargeSucceeded)
                    .event(EventType::PaymentIntentAmountCapturableUpdated)
            }
        }
        AuthorizationOutcome::Declined(error) => {
            // The card failed: the customer must bring another one, so the
            // payment method is detached as Stripe does.
            next.status = S::RequiresPaymentMethod;
            next.pending = None;
            next.next_action = None;
            next.payment_method = None;
            next.latest_charge = Some(charge);
            next.last_payment_error = Some(error);
            Effects::none()
                .event(EventType::ChargeFailed)
                .event(EventType::PaymentIntentPaymentFailed)
        }
        AuthorizationOutcome::RequiresAction(action) => {
            if intent.status == S::RequiresAction {
                // A redelivery of the challenge: already recorded.
                return Ok(Transition::unchanged(intent));
            }
            next.status = S::RequiresAction;
            next.next_action = Some(action);
            Effects::none().event(EventType::PaymentIntentRequiresAction)
        }
        AuthorizationOutcome::Unknown => Effects::none().command(ProcessorCommand::Inquire {
            operation: OperationRef::Authorize { attempt },
        }),
    };
    Ok(Transition {
        intent: next,
        effects,
    })
}

/// An outcome for an authorization that is not pending: a redelivery of one
/// already applied, or a late answer for a superseded or canceled attempt. It
/// never changes the intent. A late *approval* of an attempt we no longer
/// want holds the customer's money, so it is voided.
fn outcome_for_operation_not_pending(
    intent: &PaymentIntent,
    attempt: AttemptId,
    outcome: &AuthorizationOutcome,
) -> Transition {
    let already_applied = intent.authorized_attempt == Some(attempt);
    if *outcome == AuthorizationOutcome::Approved && !already_applied {
        Transition {
            intent: intent.clone(),
            effects: Effects::none().command(ProcessorCommand::Void { attempt }),
        }
    } else {
        Transition::unchanged(intent)
    }
}

fn capture(
    intent: &PaymentIntent,
    amount_to_capture: Option<i64>,
) -> Result<Transition, TransitionError> {
    require(
        intent,
        Operation::Capture,
        &[PaymentIntentStatus::RequiresCapture],
    )?;
    let (attempt, currency) = match (intent.authorized_attempt, intent.pending) {
        (Some(attempt), None) => (attempt, intent.amount.currency()),
        _ => {
            return Err(TransitionError::UnexpectedState {
                operation: Operation::Capture,
                status: intent.status,
            });
        }
    };
    let capturable = intent.amount.with_minor(intent.amount_capturable)?;
    let amount = match amount_to_capture {
        None => capturable,
        Some(minor) => partial_amount(minor, currency).map_err(TransitionError::InvalidAmount)?,
    };
    if amount.minor() > capturable.minor() {
        return Err(TransitionError::AmountTooLarge {
            maximum: capturable,
        });
    }
    let mut next = intent.clone();
    next.status = PaymentIntentStatus::Processing;
    next.pending = Some(PendingOperation::Capture { attempt, amount });
    Ok(Transition {
        intent: next,
        effects: Effects::none().command(ProcessorCommand::Capture { attempt, amount }),
    })
}

fn capture_result(
    intent: &PaymentIntent,
    attempt: AttemptId,
    outcome: ProcessorOutcome,
) -> Result<Transition, TransitionError> {
    let amount = match intent.pending {
        Some(PendingOperation::Capture {
            attempt: pending,
            amount,
        }) if pending == attempt => amount,
        _ => return Ok(Transition::unchanged(intent)),
    };
    let mut next = intent.clone();
    let effects = match outcome {
        ProcessorOutcome::Succeeded => {
            // Whatever was not captured is released with the hold.
            let held = intent.amount.with_minor(intent.amount_capturable)?;
            next.status = PaymentIntentStatus::Succeeded;
            next.pending = None;
            next.amount_received = amount.minor();
            next.amount_capturable = 0;
            next.capture_before = None;
            next.last_payment_error = None;
            Effects::none()
                .journal(postings::capture_of_hold(held, amount)?)
                .event(EventType::ChargeCaptured)
                .event(EventType::PaymentIntentSucceeded)
        }
        ProcessorOutcome::Failed(error) => {
            next.status = PaymentIntentStatus::RequiresCapture;
            next.pending = None;
            next.last_payment_error = Some(error);
            Effects::none()
        }
        ProcessorOutcome::Unknown => Effects::none().command(ProcessorCommand::Inquire {
            operation: OperationRef::Capture { attempt },
        }),
    };
    Ok(Transition {
        intent: next,
        effects,
    })
}

fn cancel(
    intent: &PaymentIntent,
    reason: Option<CancellationReason>,
    now: i64,
) -> Result<Transition, TransitionError> {
    use PaymentIntentStatus as S;
    match intent.status {
        S::RequiresPaymentMethod | S::RequiresConfirmation | S::RequiresAction => {
            let (mut next, effects) = supersede_outstanding_attempt(intent);
            next.status = S::Canceled;
            next.cancellation_reason = reason;
            next.canceled_at = Some(now);
            Ok(Transition {
                intent: next,
                effects: effects.event(EventType::PaymentIntentCanceled),
            })
        }
        S::RequiresCapture => start_void(intent, Operation::Cancel, reason),
        // An authorization or capture in flight must finish first: cancelling
        // now could leave money held or captured behind a canceled intent.
        S::Processing | S::Canceled | S::Succeeded => Err(TransitionError::UnexpectedState {
            operation: Operation::Cancel,
            status: intent.status,
        }),
    }
}

fn start_void(
    intent: &PaymentIntent,
    operation: Operation,
    reason: Option<CancellationReason>,
) -> Result<Transition, TransitionError> {
    let attempt = match (intent.authorized_attempt, intent.pending) {
        (Some(attempt), None) => attempt,
        _ => {
            return Err(TransitionError::UnexpectedState {
                operation,
                status: intent.status,
            });
        }
    };
    let mut next = intent.clone();
    next.status = PaymentIntentStatus::Processing;
    next.pending = Some(PendingOperation::Void { attempt, reason });
    Ok(Transition {
        intent: next,
        effects: Effects::none().command(ProcessorCommand::Void { attempt }),
    })
}

fn void_result(
    intent: &PaymentIntent,
    attempt: AttemptId,
    outcome: ProcessorOutcome,
    now: i64,
) -> Result<Transition, TransitionError> {
    let reason = match intent.pending {
        Some(PendingOperation::Void {
            attempt: pending,
            reason,
        }) if pending == attempt => reason,
        // Voids of superseded attempts end here too: they hold no money of ours.
        _ => return Ok(Transition::unchanged(intent)),
    };
    let mut next = intent.clone();
    let effects = match outcome {
        ProcessorOutcome::Succeeded => {
            let held = intent.amount.with_minor(intent.amount_capturable)?;
            next.status = PaymentIntentStatus::Canceled;
            next.pending = None;
            next.amount_capturable = 0;
            next.capture_before = None;
            next.cancellation_reason = reason;
            next.canceled_at = Some(now);
            Effects::none()
                .journal(postings::hold_release(held)?)
                .event(EventType::PaymentIntentCanceled)
        }
        ProcessorOutcome::Failed(error) => {
            next.status = PaymentIntentStatus::RequiresCapture;
            next.pending = None;
            next.last_payment_error = Some(error);
            Effects::none()
        }
        ProcessorOutcome::Unknown => Effects::none().command(ProcessorCommand::Inquire {
            operation: OperationRef::Void { attempt },
        }),
    };
    Ok(Transition {
        intent: next,
        effects,
    })
}

fn expire(intent: &PaymentIntent, now: i64) -> Result<Transition, TransitionError> {
    require(
        intent,
        Operation::Expire,
        &[PaymentIntentStatus::RequiresCapture],
    )?;
    match intent.capture_before {
        Some(deadline) if now >= deadline => start_void(
            intent,
            Operation::Expire,
            Some(CancellationReason::Automatic),
        ),
        _ => Err(TransitionError::NotYetExpired),
    }
}

impl PaymentIntent {
    /// The processor's refusal of the confirmation that made `attempt`, if
    /// that is how it ended: the intent went back to
    /// `requires_payment_method` with that attempt's error.
    pub fn refusal_of_confirmation(&self, attempt: AttemptId) -> Option<&PaymentError> {
        let refused = self.status == PaymentIntentStatus::RequiresPaymentMethod
            && self.latest_attempt == Some(attempt);
        refused
            .then_some(self.last_payment_error.as_ref())
            .flatten()
    }

    /// The processor's refusal of a capture or cancel, if that is how it
    /// ended: back from `processing` to `requires_capture` only on a
    /// refusal, with its error.
    pub fn refusal_of_completion(&self) -> Option<&PaymentError> {
        let refused = self.status == PaymentIntentStatus::RequiresCapture;
        refused
            .then_some(self.last_payment_error.as_ref())
            .flatten()
    }

    /// The amount still refundable: received, less refunded and reserved.
    pub fn amount_refundable(&self) -> i64 {
        self.amount_received - self.amount_refunded - self.amount_refund_pending
    }

    /// Checks the money invariants that every saved state must satisfy. The
    /// store calls it before writing, so a bug cannot persist an impossible
    /// state; tests call it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        use PaymentIntentStatus as S;
        let amount = self.amount.minor();
        let mut problems = Vec::new();
        let mut check = |ok: bool, what: &str| {
            if !ok {
                problems.push(what.to_owned());
            }
        };
        check(amount > 0, "amount is positive");
        check(
            (0..=amount).contains(&self.amount_capturable),
            "0 <= amount_capturable <= amount",
        );
        check(
            (0..=amount).contains(&self.amount_received),
            "0 <= amount_received <= amount",
        );
        check(
            self.amount_refunded >= 0 && self.amount_refund_pending >= 0,
            "refund totals are not negative",
        );
        check(
            self.amount_refunded + self.amount_refund_pending <= self.amount_received,
            "refunded + pending refunds <= amount_received",
        );
        check(
            self.amount_capturable == 0 || self.amount_received == 0,
            "an intent is either capturable or has received money, never both",
        );
        match self.status {
            S::Succeeded => check(
                self.amount_received > 0 && self.pending.is_none(),
                "succeeded: money received, nothing pending",
            ),
            S::RequiresCapture => check(
                self.amount_capturable > 0
                    && self.pending.is_none()
                    && self.authorized_attempt.is_some(),
                "requires_capture: capturable, authorized, nothing pending",
            ),
            S::Processing => check(
                self.pending.is_some(),
                "processing: an operation is pending",
            ),
            S::Canceled => check(
                self.amount_capturable == 0 && self.amount_received == 0 && self.pending.is_none(),
                "canceled: nothing held, received or pending",
            ),
            S::RequiresAction => check(
                matches!(self.pending, Some(PendingOperation::Authorize { .. }))
                    && self.next_action.is_some(),
                "requires_action: an authorization awaits the customer's action",
            ),
            S::RequiresPaymentMethod | S::RequiresConfirmation => check(
                self.pending.is_none() && self.amount_capturable == 0 && self.amount_received == 0,
                "before confirmation: nothing pending, held or received",
            ),
        }
        if matches!(
            self.pending,
            Some(PendingOperation::Capture { .. } | PendingOperation::Void { .. })
        ) {
            check(
                self.amount_capturable > 0,
                "a capture or void acts on a held amount",
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
