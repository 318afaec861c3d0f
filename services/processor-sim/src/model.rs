//! The simulator's objects as they appear on the wire and in the journal:
//! [`Authorization`], [`Refund`] and the [`Record`] of one operation.
//!
//! None of them can hold a card number or a CVC: only the last four digits
//! and the brand survive the request that carried the card.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationStatus {
    /// Authorized, funds held, waiting for a capture or a void.
    Approved,
    Declined,
    /// Waiting for the cardholder's 3-D Secure challenge at `action_url`.
    RequiresAction,
    /// Charged: `amount_captured` moved, the rest of the hold released.
    Captured,
    /// Released without a charge.
    Voided,
}

impl AuthorizationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::RequiresAction => "requires_action",
            Self::Captured => "captured",
            Self::Voided => "voided",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub id: String,
    pub object: String,
    pub status: AuthorizationStatus,
    /// Authorized amount in minor units.
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    /// Lower-case ISO 4217 code.
    pub currency: String,
    /// Whether the caller asked to capture in the same step.
    pub capture: bool,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    pub card_last4: Option<String>,
    pub card_brand: Option<String>,
    /// The 3-D Secure challenge page, while the status is `requires_action`.
    pub action_url: Option<String>,
    pub return_url: Option<String>,
    /// The caller's opaque reference (e.g. the platform's attempt ID).
    pub reference: String,
    /// Unix seconds.
    pub created: i64,
    pub updated: i64,
}

impl Authorization {
    /// What may still be refunded.
    pub fn refundable(&self) -> i64 {
        self.amount_captured.saturating_sub(self.amount_refunded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub object: String,
    pub authorization: String,
    pub amount: i64,
    pub currency: String,
    /// Always `succeeded`: the simulator settles refunds at once.
    pub status: String,
    pub reference: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Authorization,
    Capture,
    Void,
    Refund,
    /// The cardholder's answer to a 3-D Secure challenge (no idempotency key:
    /// it comes from a browser form).
    Authentication,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorization => "authorization",
            Self::Capture => "capture",
            Self::Void => "void",
            Self::Refund => "refund",
            Self::Authentication => "authentication",
        }
    }
}

/// Whether the operation did what was asked or was refused with a definite
/// 4xx answer (over-capture, invalid state…). A declined authorization is
/// `succeeded`: the authorization was performed and its status is declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Refused,
}

/// The current journal format version, written on every record.
pub const RECORD_VERSION: u32 = 1;

/// One operation the simulator performed: a journal line, and the source of
/// `GET /_sim/operations` and of idempotent replays.
///
/// Each record carries the whole state of the objects it changed, so replay
/// is "last record wins" and needs no business logic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub kind: OperationKind,
    pub outcome: Outcome,
    /// Unix seconds.
    pub at: i64,
    pub idempotency_key: Option<String>,
    /// Keyed HMAC of the request, to tell a replay from a different request
    /// under the same key. Never the card data itself.
    pub fingerprint: Option<String>,
    /// The operation's own amount (authorized, captured, refunded).
    pub amount: Option<i64>,
    /// The error code of a refused operation.
    pub error: Option<String>,
    /// The answer the caller got (and gets again on replay).
    pub response_status: u16,
    pub response: Value,
    /// The authorization after the operation.
    pub authorization: Option<Authorization>,
    pub refund: Option<Refund>,
}

/// A stored answer to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub kind: OperationKind,
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
    pub authorization_id: Option<String>,
    pub at: i64,
}

impl Record {
    /// The replayable answer, for records made under an idempotency key.
    pub fn stored_response(&self) -> Option<(String, StoredResponse)> {
        let key = self.idempotency_key.clone()?;
        Some((
            key,
            StoredResponse {
                kind: self.kind,
                fingerprint: self.fingerprint.clone().unwrap_or_default(),
                status: self.response_status,
                body: self.response.clone(),
                authorization_id: self.authorization.as_ref().map(|a| a.id.clone()),
                at: self.at,
            },
        ))
    }
}
