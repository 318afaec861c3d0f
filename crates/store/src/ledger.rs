//! Posting domain journals. The domain guarantees a `Journal` balances; the
//! database checks it again at commit (a deferred constraint trigger) and
//! refuses any UPDATE or DELETE of ledger rows, so the books cannot be
//! changed after the fact by any code path.

use snakepay_domain::ledger::{Journal, Side};
use sqlx::{Postgres, Transaction};

use crate::compose::Statement;

/// What the journal is about, for the journal header.
#[derive(Debug, Clone, Copy)]
pub struct JournalContext<'a> {
    pub merchant_id: &'a str,
    pub livemode: bool,
    pub payment_intent_id: Option<&'a str>,
    pub refund_id: Option<&'a str>,
    pub description: &'a str,
}

/// Writes the journal and its lines in the caller's transaction. Returns the
/// journal's ID.
pub async fn post(
    tx: &mut Transaction<'_, Postgres>,
    context: JournalContext<'_>,
    journal: &Journal,
) -> anyhow::Result<i64> {
    // One round trip: the header and all its lines in one statement.
    let mut statement = Statement::new();
    statement.push("with ");
    push(&mut statement, context, journal, "true")?;
    statement.push(" select id from header");
    statement
        .fetch_scalar(&mut **tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the journal's insert returned no id"))
}

/// [`post`] as CTEs of a larger statement ([`crate::compose`]): `header`
/// and `lines`, written only where `guard` (SQL) holds.
pub(crate) fn push(
    statement: &mut Statement,
    context: JournalContext<'_>,
    journal: &Journal,
    guard: &str,
) -> anyhow::Result<()> {
    let lines = journal.lines();
    let accounts: Vec<&str> = lines.iter().map(|l| l.account.as_str()).collect();
    let currencies: Vec<&str> = lines.iter().map(|l| l.amount.currency().code()).collect();
    let sides: Vec<&str> = lines
        .iter()
        .map(|l| match l.side {
            Side::Debit => "debit",
            Side::Credit => "credit",
        })
        .collect();
    let amounts: Vec<i64> = lines.iter().map(|l| l.amount.minor()).collect();
    statement.push(&format!(
        "header as (
             insert into journals (merchant_id, livemode, payment_intent_id, refund_id, description)
             select $1, $2, $3, $4, $5 where {guard} returning id
         ), lines as (
             insert into journal_lines (journal_id, merchant_id, livemode, account, currency, side, amount)
             select header.id, $1, $2, line.account, line.currency, line.side, line.amount
             from header, unnest($6::text[], $7::text[], $8::text[], $9::bigint[])
                 as line(account, currency, side, amount)
         )"
    ));
    statement
        .bind(context.merchant_id)?
        .bind(context.livemode)?
        .bind(context.payment_intent_id)?
        .bind(context.refund_id)?
        .bind(context.description)?
        .bind(accounts)?
        .bind(currencies)?
        .bind(sides)?
        .bind(amounts)?;
    Ok(())
}
