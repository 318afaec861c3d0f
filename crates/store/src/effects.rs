//! Writing what a transition asked for — events, processor commands, the
//! journal — in the caller's transaction, next to the state change itself
//! (DESIGN.md §4: every state change commits with its outbox rows and
//! ledger lines).

use snakepay_domain::effects::{Effects, EventType};
use sqlx::{Postgres, Transaction};

use crate::events::{self, EventSource};
use crate::intents::IntentRecord;
use crate::refunds::RefundRecord;
use crate::{charges, ledger, objects, outbox};

/// Who caused the change, for its events, and who waits for its outcome.
#[derive(Debug, Clone, Copy)]
pub struct EffectContext<'a> {
    pub source: EventSource<'a>,
    /// The reply queue of the API instance to wake when a command's outcome
    /// commits; put on every command written here.
    pub reply_to: Option<&'a str>,
    /// The journal's description, e.g. `payment_intent`.
    pub description: &'a str,
}

/// Writes the effects of a transition of `intent` (and of `refund`, when it
/// was a refund's). Each event carries the object it is about as it now is:
/// the intent, the refund, or the charge.
pub async fn write(
    tx: &mut Transaction<'_, Postgres>,
    intent: &IntentRecord,
    refund: Option<&RefundRecord>,
    effects: &Effects,
    context: EffectContext<'_>,
) -> anyhow::Result<()> {
    let intent_id = intent.intent.id.to_string();
    let mut records = Vec::with_capacity(effects.events.len());
    for &event_type in &effects.events {
        let snapshot = snapshot(tx, intent, refund, event_type).await?;
        records.extend(events::for_types(context.source, &[event_type], &snapshot)?);
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
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    events::record_with(tx, &records, &commands).await?;
    if let Some(journal) = &effects.journal {
        let merchant_id = intent.merchant_id.to_string();
        let refund_id = refund.map(|r| r.refund.id.to_string());
        let journal_context = ledger::JournalContext {
            merchant_id: &merchant_id,
            livemode: intent.livemode,
            payment_intent_id: Some(&intent_id),
            refund_id: refund_id.as_deref(),
            description: context.description,
        };
        ledger::post(tx, journal_context, journal).await?;
    }
    Ok(())
}

async fn snapshot(
    tx: &mut Transaction<'_, Postgres>,
    intent: &IntentRecord,
    refund: Option<&RefundRecord>,
    event_type: EventType,
) -> anyhow::Result<serde_json::Value> {
    let name = event_type.as_str();
    if name.starts_with("refund.")
        && let Some(refund) = refund
    {
        return Ok(objects::refund(refund));
    }
    if name.starts_with("charge.")
        && let Some(charge) = intent.intent.latest_charge
        && let Some(view) =
            charges::find(&mut **tx, charge, intent.merchant_id, intent.livemode).await?
    {
        return Ok(objects::charge(&view));
    }
    Ok(objects::payment_intent(intent))
}
