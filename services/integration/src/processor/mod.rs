//! The processor abstraction: what the platform asks of any card processor,
//! in our terms. One module per processor maps it to that processor's own
//! wire format; [`sim`] (services/processor-sim) is the first.
//!
//! Every operation carries an idempotency key derived from the attempt or
//! refund ([`keys`]), so sending it again — a retry, a redelivered command,
//! the reconciler — can never do the work twice.
//!
//! Answers are definite or unknown. A definite answer (approved, declined,
//! done, refused with a 4xx) may change the payment; an unknown one (timeout,
//! 5xx, dropped connection, circuit open) never does: the payment stays in
//! flight until an inquiry or a resend gets a definite answer.

pub mod sim;

use futures_util::future::BoxFuture;
use snakepay_domain::Money;
use snakepay_domain::payment_intent::PaymentError;
use snakepay_vault::{Cvc, Expiry, Pan};

/// Card data, in clear only for the duration of a call. `Pan` and `Cvc`
/// mask themselves in `Debug` and are zeroized on drop.
#[derive(Debug)]
pub struct CardDetails {
    pub pan: Pan,
    pub expiry: Expiry,
    /// Absent once deleted after an authorization (a resend then omits it).
    pub cvc: Option<Cvc>,
}

#[derive(Debug)]
pub struct AuthorizeRequest<'a> {
    pub idempotency_key: &'a str,
    /// Our attempt ID: the processor echoes it in notifications.
    pub reference: &'a str,
    pub amount: Money,
    pub capture: bool,
    pub card: &'a CardDetails,
    /// Where the cardholder returns after a 3-D Secure challenge.
    pub return_url: Option<&'a str>,
}

/// A definite answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Approved (and captured, when asked to capture).
    Approved { processor_reference: String },
    Declined {
        processor_reference: String,
        error: PaymentError,
    },
    /// The cardholder must complete a challenge at `url`.
    RequiresAction {
        processor_reference: String,
        url: String,
    },
    /// Voided before it completed (a 3-D Secure authorization we abandoned).
    Voided { processor_reference: String },
}

impl Authorization {
    pub fn processor_reference(&self) -> &str {
        match self {
            Authorization::Approved {
                processor_reference,
            }
            | Authorization::Declined {
                processor_reference,
                ..
            }
            | Authorization::RequiresAction {
                processor_reference,
                ..
            }
            | Authorization::Voided {
                processor_reference,
            } => processor_reference,
        }
    }
}

/// How an answer is counted in `snakepay_payment_operations_total`: its
/// outcome (`succeeded`, `declined`, `requires_action`, `unknown`) and
/// decline code (`none` unless declined).
pub trait CountedOutcome {
    fn outcome(&self) -> (&'static str, String);
}

/// A processor's decline code as a label value: its own short snake_case
/// codes pass, anything else is `other` (labels must stay a small set).
fn decline_label(code: &str) -> String {
    let tidy = !code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if tidy {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

impl CountedOutcome for Authorization {
    fn outcome(&self) -> (&'static str, String) {
        match self {
            Authorization::Approved { .. } | Authorization::Voided { .. } => {
                ("succeeded", "none".to_owned())
            }
            Authorization::Declined { error, .. } => (
                "declined",
                decline_label(error.decline_code.as_deref().unwrap_or("generic_decline")),
            ),
            Authorization::RequiresAction { .. } => ("requires_action", "none".to_owned()),
        }
    }
}

impl CountedOutcome for Completion {
    fn outcome(&self) -> (&'static str, String) {
        match self {
            Completion::Done => ("succeeded", "none".to_owned()),
            Completion::Refused { code, .. } => ("declined", decline_label(code)),
        }
    }
}

impl<T: CountedOutcome> CountedOutcome for Inquiry<T> {
    fn outcome(&self) -> (&'static str, String) {
        match self {
            Inquiry::Answered(answer) => answer.outcome(),
            Inquiry::NeverPerformed | Inquiry::InProgress => ("unknown", "none".to_owned()),
        }
    }
}

/// A definite answer to a capture, void or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Done,
    /// Refused with a definite error (e.g. nothing left to refund).
    Refused {
        code: String,
        message: String,
    },
}

/// Why no definite answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Timeout, 5xx, dropped connection, "in progress": the operation may or
    /// may not have happened.
    #[error("unknown outcome: {0}")]
    Unknown(String),
    /// The circuit breaker refused the call: nothing was sent.
    #[error("circuit open for processor {0}")]
    CircuitOpen(&'static str),
    /// The egress refused the destination: nothing was sent.
    #[error("egress refused host {0}")]
    EgressRefused(String),
    /// The processor already holds a different request under this key: a
    /// bug of ours, not a sign of the processor's health, so it neither
    /// trips the breaker nor is retried. The outcome stays unknown.
    #[error("idempotency key conflict: {0}")]
    KeyConflict(String),
}

/// What a status inquiry learnt about an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inquiry<T> {
    /// The processor never performed it: sending it (with the same key) is safe.
    NeverPerformed,
    /// Still running at the processor: ask again later.
    InProgress,
    /// Its definite answer.
    Answered(T),
}

pub type CallResult<T> = Result<T, CallError>;

/// A card processor. Object-safe so the service holds `Arc<dyn Processor>`.
pub trait Processor: Send + Sync {
    /// A short, stable name for logs, metrics and the breaker.
    fn name(&self) -> &'static str;

    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest<'a>,
    ) -> BoxFuture<'a, CallResult<Authorization>>;

    /// Captures `amount` of the authorization; the rest is released.
    fn capture<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
        amount: Money,
    ) -> BoxFuture<'a, CallResult<Completion>>;

    fn void<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Completion>>;

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        processor_reference: &'a str,
        amount: Money,
        reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Completion>>;

    /// What became of the authorization sent under `idempotency_key`.
    fn inquire_authorization<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallResult<Inquiry<Authorization>>>;

    /// What became of the capture, void or refund sent under `idempotency_key`.
    fn inquire_completion<'a>(
        &'a self,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, CallResult<Inquiry<Completion>>>;

    /// The authorization as it stands now (after a 3-D Secure challenge).
    fn authorization_status<'a>(
        &'a self,
        processor_reference: &'a str,
    ) -> BoxFuture<'a, CallResult<Authorization>>;
}

/// The processor idempotency keys, derived from our IDs: the same operation
/// always has the same key, whoever sends it and however often.
pub mod keys {
    use snakepay_domain::Money;
    use snakepay_domain::ids::{AttemptId, RefundId};

    pub fn authorize(attempt: AttemptId) -> String {
        format!("{attempt}.authorize")
    }

    /// With the amount: a capture the processor refused may be tried again
    /// for another amount, which is another operation.
    pub fn capture(attempt: AttemptId, amount: Money) -> String {
        format!("{attempt}.capture.{}", amount.minor())
    }

    pub fn void(attempt: AttemptId) -> String {
        format!("{attempt}.void")
    }

    pub fn refund(refund: RefundId) -> String {
        format!("{refund}.refund")
    }
}
