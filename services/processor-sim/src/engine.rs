//! The pure core: what each command does to the simulator's books.
//!
//! [`Ledger::decide`] turns (state, command) into an [`Effect`] without
//! changing anything; the service writes the effect to the journal as a
//! [`Record`] and only then [`Ledger::apply`]s it, so memory never runs ahead
//! of what survives a crash. Replaying the journal is applying its records.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::cards::DeclineCode;
use crate::model::{
    Authorization, AuthorizationStatus, OperationKind, Outcome, RECORD_VERSION, Record, Refund,
};

/// The card's verdict, decided by the caller from the test-card table and the
/// expiry; fault triggers never reach the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardDecision {
    Approve,
    Decline(DeclineCode),
    RequireAuthentication,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeCommand {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub capture: bool,
    pub reference: String,
    pub return_url: Option<String>,
    /// Where the 3-D Secure page for `id` is, should the card need it.
    pub action_url: String,
    pub card_last4: Option<String>,
    pub card_brand: Option<String>,
    pub decision: CardDecision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Authorize(AuthorizeCommand),
    /// `amount: None` captures the whole authorized amount.
    Capture {
        authorization_id: String,
        amount: Option<i64>,
    },
    Void {
        authorization_id: String,
    },
    /// `amount: None` refunds everything still refundable.
    Refund {
        refund_id: String,
        authorization_id: String,
        amount: Option<i64>,
        reference: Option<String>,
    },
    /// The cardholder's answer on the 3-D Secure page.
    Authenticate {
        authorization_id: String,
        success: bool,
    },
}

/// What a command does, before it is numbered and journaled.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub kind: OperationKind,
    pub outcome: Outcome,
    pub amount: Option<i64>,
    pub error: Option<String>,
    pub response_status: u16,
    pub response: Value,
    pub authorization: Option<Authorization>,
    pub refund: Option<Refund>,
}

impl Effect {
    /// Whether the effect changed an existing authorization in a way the
    /// caller should hear about asynchronously (not the synchronous answer
    /// to an authorization request, not a refusal).
    pub fn is_notifiable(&self) -> bool {
        self.outcome == Outcome::Succeeded && self.kind != OperationKind::Authorization
    }
}

/// Everything the simulator did, in memory.
#[derive(Debug, Default)]
pub struct Ledger {
    authorizations: HashMap<String, Authorization>,
    refunds: HashMap<String, Refund>,
    records: Vec<Record>,
}

impl Ledger {
    pub fn authorization(&self, id: &str) -> Option<&Authorization> {
        self.authorizations.get(id)
    }

    pub fn refund(&self, id: &str) -> Option<&Refund> {
        self.refunds.get(id)
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Every authorization, oldest first.
    pub fn authorizations(&self) -> Vec<&Authorization> {
        let mut all: Vec<&Authorization> = self.authorizations.values().collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.records
            .last()
            .map_or(1, |record| record.seq.saturating_add(1))
    }

    /// Decides what `command` does at `now`. `None` means there is nothing to
    /// record (a second answer to a settled 3-D Secure challenge).
    pub fn decide(&self, command: &Command, now: i64) -> Option<Effect> {
        match command {
            Command::Authorize(authorize) => Some(self.authorize(authorize, now)),
            Command::Capture {
                authorization_id,
                amount,
            } => Some(self.capture(authorization_id, *amount, now)),
            Command::Void { authorization_id } => Some(self.void(authorization_id, now)),
            Command::Refund {
                refund_id,
                authorization_id,
                amount,
                reference,
            } => Some(self.refund_effect(refund_id, authorization_id, *amount, reference, now)),
            Command::Authenticate {
                authorization_id,
                success,
            } => self.authenticate(authorization_id, *success, now),
        }
    }

    /// Numbers an effect as the next record.
    pub fn to_record(
        &self,
        effect: Effect,
        idempotency_key: Option<String>,
        fingerprint: Option<String>,
        now: i64,
    ) -> Record {
        Record {
            v: RECORD_VERSION,
            seq: self.next_seq(),
            kind: effect.kind,
            outcome: effect.outcome,
            at: now,
            idempotency_key,
            fingerprint,
            amount: effect.amount,
            error: effect.error,
            response_status: effect.response_status,
            response: effect.response,
            authorization: effect.authorization,
            refund: effect.refund,
        }
    }

    /// Takes a journaled record into the books.
    pub fn apply(&mut self, record: Record) {
        if let Some(authorization) = &record.authorization {
            self.authorizations
                .insert(authorization.id.clone(), authorization.clone());
        }
        if let Some(refund) = &record.refund {
            self.refunds.insert(refund.id.clone(), refund.clone());
        }
        self.records.push(record);
    }

    fn authorize(&self, command: &AuthorizeCommand, now: i64) -> Effect {
        let (status, decline, action_url) = match command.decision {
            CardDecision::Approve if command.capture => (AuthorizationStatus::Captured, None, None),
            CardDecision::Approve => (AuthorizationStatus::Approved, None, None),
            CardDecision::Decline(code) => (AuthorizationStatus::Declined, Some(code), None),
            CardDecision::RequireAuthentication => (
                AuthorizationStatus::RequiresAction,
                None,
                Some(command.action_url.clone()),
            ),
        };
        let authorization = Authorization {
            id: command.id.clone(),
            object: "authorization".to_owned(),
            status,
            amount: command.amount,
            amount_captured: if status == AuthorizationStatus::Captured {
                command.amount
            } else {
                0
            },
            amount_refunded: 0,
            currency: command.currency.clone(),
            capture: command.capture,
            decline_code: decline.map(|code| code.as_str().to_owned()),
            message: decline.map(|code| code.message().to_owned()),
            card_last4: command.card_last4.clone(),
            card_brand: command.card_brand.clone(),
            action_url,
            return_url: command.return_url.clone(),
            reference: command.reference.clone(),
            created: now,
            updated: now,
        };
        succeeded(
            OperationKind::Authorization,
            Some(command.amount),
            authorization,
            None,
        )
    }

    fn capture(&self, id: &str, amount: Option<i64>, now: i64) -> Effect {
        let kind = OperationKind::Capture;
        let Some(current) = self.authorizations.get(id) else {
            return not_found(kind, amount, id);
        };
        if current.status != AuthorizationStatus::Approved {
            return invalid_state(kind, amount, current, "captured");
        }
        let amount_to_capture = amount.unwrap_or(current.amount);
        if amount_to_capture <= 0 {
            // The API rejects these before they get here; the engine does not
            // rely on it.
            return refused(
                kind,
                Some(amount_to_capture),
                current,
                400,
                "invalid_amount",
                "The amount must be a positive integer.".to_owned(),
            );
        }
        if amount_to_capture > current.amount {
            return refused(
                kind,
                Some(amount_to_capture),
                current,
                400,
                "amount_exceeds_authorized",
                format!(
                    "Cannot capture {amount_to_capture}: only {} was authorized.",
                    current.amount
                ),
            );
        }
        let mut next = current.clone();
        next.status = AuthorizationStatus::Captured;
        next.amount_captured = amount_to_capture;
        next.updated = now;
        succeeded(kind, Some(amount_to_capture), next, None)
    }

    fn void(&self, id: &str, now: i64) -> Effect {
        let kind = OperationKind::Void;
        let Some(current) = self.authorizations.get(id) else {
            return not_found(kind, None, id);
        };
        if !matches!(
            current.status,
            AuthorizationStatus::Approved | AuthorizationStatus::RequiresAction
        ) {
            return invalid_state(kind, None, current, "voided");
        }
        let mut next = current.clone();
        next.status = AuthorizationStatus::Voided;
        next.action_url = None;
        next.updated = now;
        succeeded(kind, Some(current.amount), next, None)
    }

    fn refund_effect(
        &self,
        refund_id: &str,
        id: &str,
        amount: Option<i64>,
        reference: &Option<String>,
        now: i64,
    ) -> Effect {
        let kind = OperationKind::Refund;
        let Some(current) = self.authorizations.get(id) else {
            return not_found(kind, amount, id);
        };
        if current.status != AuthorizationStatus::Captured {
            return invalid_state(kind, amount, current, "refunded");
        }
        let refundable = current.refundable();
        let amount_to_refund = amount.unwrap_or(refundable);
        if amount_to_refund > refundable || amount_to_refund <= 0 {
            return refused(
                kind,
                Some(amount_to_refund),
                current,
                400,
                "amount_exceeds_refundable",
                format!(
                    "Cannot refund {amount_to_refund}: {refundable} of the {} captured is left to refund.",
                    current.amount_captured
                ),
            );
        }
        let mut next = current.clone();
        next.amount_refunded = next.amount_refunded.saturating_add(amount_to_refund);
        next.updated = now;
        let refund = Refund {
            id: refund_id.to_owned(),
            object: "refund".to_owned(),
            authorization: id.to_owned(),
            amount: amount_to_refund,
            currency: current.currency.clone(),
            status: "succeeded".to_owned(),
            reference: reference.clone(),
            created: now,
        };
        succeeded(kind, Some(amount_to_refund), next, Some(refund))
    }

    fn authenticate(&self, id: &str, success: bool, now: i64) -> Option<Effect> {
        let current = self.authorizations.get(id)?;
        if current.status != AuthorizationStatus::RequiresAction {
            return None;
        }
        let mut next = current.clone();
        next.action_url = None;
        next.updated = now;
        if !success {
            let code = DeclineCode::AuthenticationRequired;
            next.status = AuthorizationStatus::Declined;
            next.decline_code = Some(code.as_str().to_owned());
            next.message = Some(code.message().to_owned());
        } else if next.capture {
            next.status = AuthorizationStatus::Captured;
            next.amount_captured = next.amount;
        } else {
            next.status = AuthorizationStatus::Approved;
        }
        Some(succeeded(
            OperationKind::Authentication,
            Some(current.amount),
            next,
            None,
        ))
    }
}

fn succeeded(
    kind: OperationKind,
    amount: Option<i64>,
    authorization: Authorization,
    refund: Option<Refund>,
) -> Effect {
    let response = match &refund {
        Some(refund) => serde_json::to_value(refund),
        None => serde_json::to_value(&authorization),
    }
    // Both are plain structs of strings and integers: serializing cannot fail.
    .unwrap_or(Value::Null);
    Effect {
        kind,
        outcome: Outcome::Succeeded,
        amount,
        error: None,
        response_status: 200,
        response,
        authorization: Some(authorization),
        refund,
    }
}

fn refused(
    kind: OperationKind,
    amount: Option<i64>,
    current: &Authorization,
    status: u16,
    code: &str,
    message: String,
) -> Effect {
    Effect {
        kind,
        outcome: Outcome::Refused,
        amount,
        error: Some(code.to_owned()),
        response_status: status,
        response: json!({ "error": code, "message": message }),
        authorization: Some(current.clone()),
        refund: None,
    }
}

fn invalid_state(
    kind: OperationKind,
    amount: Option<i64>,
    current: &Authorization,
    verb: &str,
) -> Effect {
    refused(
        kind,
        amount,
        current,
        409,
        "invalid_state",
        format!(
            "Authorization {} is {} and cannot be {verb}.",
            current.id,
            current.status.as_str()
        ),
    )
}

fn not_found(kind: OperationKind, amount: Option<i64>, id: &str) -> Effect {
    Effect {
        kind,
        outcome: Outcome::Refused,
        amount,
        error: Some("authorization_not_found".to_owned()),
        response_status: 404,
        response: json!({
            "error": "authorization_not_found",
            "message": format!("No authorization {id}."),
        }),
        authorization: None,
        refund: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn authorize(id: &str, amount: i64, capture: bool, decision: CardDecision) -> Command {
        Command::Authorize(AuthorizeCommand {
            id: id.to_owned(),
            amount,
            currency: "usd".to_owned(),
            capture,
            reference: format!("ref_{id}"),
            return_url: None,
            action_url: format!("http://sim/3ds/{id}"),
            card_last4: Some("4242".to_owned()),
            card_brand: Some("visa".to_owned()),
            decision,
        })
    }

    fn run(ledger: &mut Ledger, command: &Command) -> Option<Record> {
        let effect = ledger.decide(command, 1_000)?;
        let record = ledger.to_record(effect, None, None, 1_000);
        ledger.apply(record.clone());
        Some(record)
    }

    #[test]
    fn partial_capture_then_refunds_down_to_zero() {
        let mut ledger = Ledger::default();
        run(
            &mut ledger,
            &authorize("a", 1_000, false, CardDecision::Approve),
        );
        let capture = Command::Capture {
            authorization_id: "a".into(),
            amount: Some(600),
        };
        let record = run(&mut ledger, &capture).unwrap();
        assert_eq!(record.outcome, Outcome::Succeeded);
        assert_eq!(ledger.authorization("a").unwrap().amount_captured, 600);
        // A second capture is refused: the rest was released.
        let again = run(&mut ledger, &capture).unwrap();
        assert_eq!(again.response_status, 409);
        let refund = |id: &str, amount| Command::Refund {
            refund_id: id.into(),
            authorization_id: "a".into(),
            amount,
            reference: None,
        };
        assert_eq!(
            run(&mut ledger, &refund("r1", Some(601)))
                .unwrap()
                .error
                .as_deref(),
            Some("amount_exceeds_refundable")
        );
        assert_eq!(
            run(&mut ledger, &refund("r2", Some(100))).unwrap().outcome,
            Outcome::Succeeded
        );
        let rest = run(&mut ledger, &refund("r3", None)).unwrap();
        assert_eq!(rest.amount, Some(500));
        assert_eq!(
            run(&mut ledger, &refund("r4", None)).unwrap().outcome,
            Outcome::Refused
        );
        assert_eq!(ledger.authorization("a").unwrap().amount_refunded, 600);
        assert_eq!(ledger.records().len(), 7);
        assert_eq!(ledger.next_seq(), 8);
    }

    #[test]
    fn authentication_settles_once() {
        let mut ledger = Ledger::default();
        run(
            &mut ledger,
            &authorize("a", 500, true, CardDecision::RequireAuthentication),
        );
        let done = Command::Authenticate {
            authorization_id: "a".into(),
            success: true,
        };
        let record = run(&mut ledger, &done).unwrap();
        let authorization = record.authorization.unwrap();
        assert_eq!(authorization.status, AuthorizationStatus::Captured);
        assert_eq!(authorization.amount_captured, 500);
        assert!(authorization.action_url.is_none());
        assert!(run(&mut ledger, &done).is_none());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Capture(Option<i64>),
        Void,
        Refund(Option<i64>),
        Authenticate(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            proptest::option::of(-5i64..1_200).prop_map(Step::Capture),
            Just(Step::Void),
            proptest::option::of(-5i64..1_200).prop_map(Step::Refund),
            any::<bool>().prop_map(Step::Authenticate),
        ]
    }

    proptest! {
        #[test]
        fn money_invariants_hold_for_any_sequence(
            capture in any::<bool>(),
            needs_3ds in any::<bool>(),
            steps in proptest::collection::vec(step(), 0..20),
        ) {
            let mut ledger = Ledger::default();
            let decision = if needs_3ds {
                CardDecision::RequireAuthentication
            } else {
                CardDecision::Approve
            };
            run(&mut ledger, &authorize("a", 1_000, capture, decision));
            let mut refunded = 0;
            for (index, step) in steps.into_iter().enumerate() {
                let command = match step {
                    Step::Capture(amount) => Command::Capture { authorization_id: "a".into(), amount },
                    Step::Void => Command::Void { authorization_id: "a".into() },
                    Step::Refund(amount) => Command::Refund {
                        refund_id: format!("r{index}"),
                        authorization_id: "a".into(),
                        amount,
                        reference: None,
                    },
                    Step::Authenticate(success) => Command::Authenticate { authorization_id: "a".into(), success },
                };
                if let Some(record) = run(&mut ledger, &command)
                    && let Some(refund) = record.refund {
                        refunded += refund.amount;
                }
                let a = ledger.authorization("a").unwrap();
                prop_assert!(0 <= a.amount_refunded);
                prop_assert!(a.amount_refunded <= a.amount_captured);
                prop_assert!(a.amount_captured <= a.amount);
                prop_assert_eq!(a.amount_refunded, refunded);
                if a.amount_captured > 0 {
                    prop_assert_eq!(a.status, AuthorizationStatus::Captured);
                }
            }
        }
    }
}
