//! What a transition asks the outside world to do: processor commands to send
//! (through the outbox), events to emit, and the journal to post. The services
//! execute effects; the state machines only describe them.

use serde::{Deserialize, Serialize};

use crate::ids::{AttemptId, RefundId};
use crate::ledger::Journal;
use crate::money::Money;

/// A command for the Payment Processor Integration service. Each names the
/// attempt (or refund) it belongs to, from which the processor idempotency key
/// is derived, so sending a command twice never charges twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessorCommand {
    /// Authorize `amount`; with `capture`, authorize and capture in one step.
    Authorize {
        attempt: AttemptId,
        amount: Money,
        capture: bool,
    },
    Capture {
        attempt: AttemptId,
        amount: Money,
    },
    /// Release an authorization (cancel, expiry, or a superseded attempt).
    Void {
        attempt: AttemptId,
    },
    Refund {
        refund: RefundId,
        attempt: AttemptId,
        amount: Money,
    },
    /// Ask the processor what became of an operation whose outcome is unknown
    /// (a timeout or 5xx). Only its answer may touch the ledger.
    Inquire {
        operation: OperationRef,
    },
}

/// An operation at the processor, by the ID its idempotency key derives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OperationRef {
    Authorize { attempt: AttemptId },
    Capture { attempt: AttemptId },
    Void { attempt: AttemptId },
    Refund { refund: RefundId },
}

/// The event types of the API (`payment_intent.succeeded`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "payment_intent.created")]
    PaymentIntentCreated,
    #[serde(rename = "payment_intent.processing")]
    PaymentIntentProcessing,
    #[serde(rename = "payment_intent.requires_action")]
    PaymentIntentRequiresAction,
    #[serde(rename = "payment_intent.amount_capturable_updated")]
    PaymentIntentAmountCapturableUpdated,
    #[serde(rename = "payment_intent.succeeded")]
    PaymentIntentSucceeded,
    #[serde(rename = "payment_intent.payment_failed")]
    PaymentIntentPaymentFailed,
    #[serde(rename = "payment_intent.canceled")]
    PaymentIntentCanceled,
    #[serde(rename = "charge.succeeded")]
    ChargeSucceeded,
    #[serde(rename = "charge.failed")]
    ChargeFailed,
    #[serde(rename = "charge.captured")]
    ChargeCaptured,
    #[serde(rename = "charge.refunded")]
    ChargeRefunded,
    #[serde(rename = "refund.created")]
    RefundCreated,
    #[serde(rename = "refund.updated")]
    RefundUpdated,
    #[serde(rename = "refund.failed")]
    RefundFailed,
    #[serde(rename = "customer.created")]
    CustomerCreated,
}

impl EventType {
    pub const ALL: [EventType; 15] = [
        EventType::PaymentIntentCreated,
        EventType::PaymentIntentProcessing,
        EventType::PaymentIntentRequiresAction,
        EventType::PaymentIntentAmountCapturableUpdated,
        EventType::PaymentIntentSucceeded,
        EventType::PaymentIntentPaymentFailed,
        EventType::PaymentIntentCanceled,
        EventType::ChargeSucceeded,
        EventType::ChargeFailed,
        EventType::ChargeCaptured,
        EventType::ChargeRefunded,
        EventType::RefundCreated,
        EventType::RefundUpdated,
        EventType::RefundFailed,
        EventType::CustomerCreated,
    ];

    /// The wire name, e.g. `payment_intent.succeeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentIntentCreated => "payment_intent.created",
            EventType::PaymentIntentProcessing => "payment_intent.processing",
            EventType::PaymentIntentRequiresAction => "payment_intent.requires_action",
            EventType::PaymentIntentAmountCapturableUpdated => {
                "payment_intent.amount_capturable_updated"
            }
            EventType::PaymentIntentSucceeded => "payment_intent.succeeded",
            EventType::PaymentIntentPaymentFailed => "payment_intent.payment_failed",
            EventType::PaymentIntentCanceled => "payment_intent.canceled",
            EventType::ChargeSucceeded => "charge.succeeded",
            EventType::ChargeFailed => "charge.failed",
            EventType::ChargeCaptured => "charge.captured",
            EventType::ChargeRefunded => "charge.refunded",
            EventType::RefundCreated => "refund.created",
            EventType::RefundUpdated => "refund.updated",
            EventType::RefundFailed => "refund.failed",
            EventType::CustomerCreated => "customer.created",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Everything a transition asks for. Empty effects mean "nothing to do", which
/// is what a redelivered, already-applied outcome produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub commands: Vec<ProcessorCommand>,
    pub events: Vec<EventType>,
    pub journal: Option<Journal>,
}

impl Effects {
    pub fn none() -> Effects {
        Effects::default()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.events.is_empty() && self.journal.is_none()
    }

    pub(crate) fn command(mut self, command: ProcessorCommand) -> Effects {
        self.commands.push(command);
        self
    }

    pub(crate) fn event(mut self, event: EventType) -> Effects {
        self.events.push(event);
        self
    }

    pub(crate) fn journal(mut self, journal: Journal) -> Effects {
        self.journal = Some(match self.journal.take() {
            Some(existing) => existing.merge(journal),
            None => journal,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_match_serde() {
        for event in EventType::ALL {
            assert_eq!(EventType::parse(event.as_str()), Some(event));
            assert_eq!(
                serde_json::to_string(&event).unwrap(),
                format!("\"{}\"", event.as_str())
            );
        }
        assert_eq!(EventType::parse("payment_intent.exploded"), None);
    }
}
