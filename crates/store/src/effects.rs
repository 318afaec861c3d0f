//! Writing what a transition asked for — events, processor commands, the
//! journal — in the caller's transaction, next to the state change itself
//! (DESIGN.md §4: every state change commits with its outbox rows and
//! ledger lines); or, for an intent's outcome computed from the row as it
//! was read, all of it with the change in one statement ([`commit_at_once`]).

use snakepay_domain::effects::{Effects, EventType};
use sqlx::{PgPool, Postgres, Transaction};

use crate::attempts::{self, AuthorizationRecord};
use crate::charges::{self, ChargeView};
use crate::compose::Statement;
use crate::events::{self, EventRecord, EventSource};
use crate::idempotency::{self, AnswerTo, ResponseBytes};
use crate::intents::{self, CardRecord, IntentRecord, NewAttempt};
use crate::outbox::{self, OutboxMessage};
use crate::refunds::RefundRecord;
use crate::{ledger, objects};

/// Who caused the change, for its events, and who waits for its outcome.
#[derive(Debug, Clone, Copy)]
pub struct EffectContext<'a> {
    pub source: EventSource<'a>,
    /// The reply queue of the API instance to wake when a command's outcome
    /// commits; put on every command written here.
    pub reply_to: Option<&'a str>,
    /// The request there that waits and may be answered by the outcome's
    /// writer (`idempotency::AnswerTo`); only with `reply_to`.
    pub answer_to: Option<&'a AnswerTo>,
    /// The journal's description, e.g. `payment_intent`.
    pub description: &'a str,
}

/// Writes the effects of a transition of `intent` (and of `refund`, when it
/// was a refund's). Each event carries the object it is about as it now is:
/// the intent, the refund, or the charge (read in `tx`, after the change).
pub async fn write(
    tx: &mut Transaction<'_, Postgres>,
    intent: &IntentRecord,
    refund: Option<&RefundRecord>,
    effects: &Effects,
    context: EffectContext<'_>,
) -> anyhow::Result<()> {
    let charge = match intent.intent.latest_charge {
        Some(charge) if about_a_charge(effects) => {
            charges::find(&mut **tx, charge, intent.merchant_id, intent.livemode).await?
        }
        _ => None,
    };
    let rows = Rows::of(intent, refund, charge.as_ref(), effects, context)?;
    events::record_with(tx, &rows.events, &rows.commands).await?;
    if let Some(journal) = &effects.journal {
        ledger::post(tx, rows.journal_context(context), journal).await?;
    }
    Ok(())
}

/// A new intent as the request that creates it writes it: with the card it
/// pays with, when that card is new, and its first attempt, when it is
/// confirmed on creation.
pub struct NewIntent<'a> {
    pub card: Option<&'a CardRecord>,
    pub intent: &'a IntentRecord,
    pub attempt: Option<&'a NewAttempt>,
}

/// Inserts a new intent (with its new card and first attempt) and writes the
/// effects of its creation — events with their deliveries, commands, a
/// journal — in one statement: a checkout's first write is one round trip
/// instead of five.
pub async fn write_new_intent(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewIntent<'_>,
    effects: &Effects,
    context: EffectContext<'_>,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    statement.push("with ");
    push_new_intent(&mut statement, new, effects, context)?;
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// [`write_new_intent`]'s statement, appended to `statement`, which holds
/// `with ` and any CTEs that must come first (each followed by `, `): the
/// External API puts the idempotency key with its response there, so that
/// a create is one autocommit statement (`idempotency::push_answered`).
/// Creation never emits an event about a charge (its snapshot would need
/// the rows inserted here); such effects are refused.
pub fn push_new_intent(
    statement: &mut Statement,
    new: &NewIntent<'_>,
    effects: &Effects,
    context: EffectContext<'_>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !about_a_charge(effects),
        "a new intent's effects cannot carry an event about its charge"
    );
    let rows = Rows::of(new.intent, None, None, effects, context)?;
    if let Some(card) = new.card {
        statement.push("new_card as (");
        intents::push_insert_card(statement, card)?;
        statement.push("), ");
    }
    statement.push("new_intent as (");
    intents::push_insert(statement, new.intent)?;
    statement.push("), ");
    if let Some(attempt) = new.attempt {
        statement.push("new_attempt as (");
        intents::push_insert_attempt(statement, attempt)?;
        statement.push("), ");
    }
    rows.push(statement, effects, context, "true")?;
    statement.push(" select 1");
    Ok(())
}

/// Whether any of the events is about the intent's charge (and so carries
/// its snapshot).
pub fn about_a_charge(effects: &Effects) -> bool {
    effects
        .events
        .iter()
        .any(|event| event.as_str().starts_with("charge."))
}

/// An authorization answer as [`commit_at_once`] writes it.
pub struct AuthorizationOutcome<'a> {
    /// The intent after the transition; its `version` is the one the
    /// transition was computed from.
    pub intent: &'a IntentRecord,
    pub effects: &'a Effects,
    pub context: EffectContext<'a>,
    pub attempt: AuthorizationRecord<'a>,
    /// The intent's charge as it is after the answer, when an event is
    /// about it ([`ChargeView::after_authorization`]).
    pub charge: Option<&'a ChargeView>,
    /// The final answer of the request that waits for this outcome, to
    /// store under its key with the outcome.
    pub answer: Option<OutcomeAnswer<'a>>,
}

/// A waiting request's final answer, as the outcome's writer rendered it.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeAnswer<'a> {
    pub to: &'a AnswerTo,
    pub response: ResponseBytes<'a>,
}

/// Commits an authorization answer computed from the intent as it was read,
/// without a row lock: the intent's state, the attempt's outcome (and the
/// CVC's deletion), the events with their deliveries, the commands and the
/// journal, as one statement, in one round trip and one commit — the
/// hottest write of a payment. Every part is guarded on the intent still
/// being at the version it was read at; `None` means it moved on meanwhile
/// and nothing was written (the caller takes the locked path).
///
/// With `outcome.answer`, the same statement stores the waiting request's
/// final answer under its idempotency key (`idempotency::push_outcome_answer`),
/// so that request can answer from the reply alone.
pub async fn commit_at_once(
    pool: &PgPool,
    outcome: &AuthorizationOutcome<'_>,
) -> anyhow::Result<Option<Committed>> {
    let intent = outcome.intent;
    let rows = Rows::of(
        intent,
        None,
        outcome.charge,
        outcome.effects,
        outcome.context,
    )?;
    const GUARD: &str = "exists (select 1 from intent)";
    let mut statement = Statement::new();
    statement.push("with intent as (");
    statement.push(intents::UPDATE);
    intents::bind_update(&mut statement, intent, Some(intent.version))?;
    statement.push("), ");
    attempts::push_authorization(&mut statement, &outcome.attempt, GUARD)?;
    statement.push(", ");
    rows.push(&mut statement, outcome.effects, outcome.context, GUARD)?;
    let stores_answer = match &outcome.answer {
        Some(OutcomeAnswer {
            to:
                to @ AnswerTo {
                    idempotency_key: Some(key),
                    ..
                },
            response,
        }) => {
            statement.push(", ");
            idempotency::push_outcome_answer(
                &mut statement,
                intent.merchant_id,
                intent.livemode,
                to,
                key,
                *response,
                GUARD,
            )?;
            true
        }
        _ => false,
    };
    statement.push(if stores_answer {
        " select version, exists (select 1 from answered) from intent"
    } else {
        " select version, false from intent"
    });
    let row: Option<(i64, bool)> = statement.fetch_row(pool).await?;
    Ok(row.map(|(version, answer_stored)| Committed {
        version,
        answer_stored,
    }))
}

/// What [`commit_at_once`] committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The intent's new version.
    pub version: i64,
    /// The waiting request's answer was stored under its key (false
    /// without a key: then there is nothing to store, and the answer is
    /// the reply's alone).
    pub answer_stored: bool,
}

/// The rows a transition's effects write, but for the journal's lines.
struct Rows {
    events: Vec<EventRecord>,
    commands: Vec<OutboxMessage>,
    merchant_id: String,
    intent_id: String,
    refund_id: Option<String>,
    livemode: bool,
}

impl Rows {
    fn of(
        intent: &IntentRecord,
        refund: Option<&RefundRecord>,
        charge: Option<&ChargeView>,
        effects: &Effects,
        context: EffectContext<'_>,
    ) -> anyhow::Result<Rows> {
        let intent_id = intent.intent.id.to_string();
        let mut events = Vec::with_capacity(effects.events.len());
        for &event_type in &effects.events {
            let snapshot = snapshot(intent, refund, charge, event_type);
            events.extend(events::for_types(context.source, &[event_type], &snapshot)?);
        }
        let commands = effects
            .commands
            .iter()
            .map(|command| {
                outbox::command_message(
                    intent.merchant_id,
                    intent.livemode,
                    &intent_id,
                    command,
                    context.reply_to,
                    context.answer_to,
                )
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Rows {
            events,
            commands,
            merchant_id: intent.merchant_id.to_string(),
            intent_id,
            refund_id: refund.map(|r| r.refund.id.to_string()),
            livemode: intent.livemode,
        })
    }

    /// The events, deliveries, commands and journal as CTEs of `statement`,
    /// written only where `guard` (SQL) holds.
    fn push(
        &self,
        statement: &mut Statement,
        effects: &Effects,
        context: EffectContext<'_>,
        guard: &str,
    ) -> anyhow::Result<()> {
        events::push(statement, &self.events, &self.commands, guard)?;
        if let Some(journal) = &effects.journal {
            statement.push(", ");
            ledger::push(statement, self.journal_context(context), journal, guard)?;
        }
        Ok(())
    }

    fn journal_context<'a>(&'a self, context: EffectContext<'a>) -> ledger::JournalContext<'a> {
        ledger::JournalContext {
            merchant_id: &self.merchant_id,
            livemode: self.livemode,
            payment_intent_id: Some(&self.intent_id),
            refund_id: self.refund_id.as_deref(),
            description: context.description,
        }
    }
}

/// The object an event of `event_type` carries: the refund, the charge, or
/// the intent.
fn snapshot(
    intent: &IntentRecord,
    refund: Option<&RefundRecord>,
    charge: Option<&ChargeView>,
    event_type: EventType,
) -> serde_json::Value {
    let name = event_type.as_str();
    if name.starts_with("refund.")
        && let Some(refund) = refund
    {
        return objects::refund(refund);
    }
    if name.starts_with("charge.")
        && let Some(view) = charge
    {
        return objects::charge(view);
    }
    objects::payment_intent(intent)
}
