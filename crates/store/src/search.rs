//! Back-office reads across shards: payment search with a cursor that stays
//! correct across shards, and a payment's whole story.
//!
//! Search order is the payment intent ID, newest first. IDs are time-ordered
//! and unique across the region (they embed time, region, shard and
//! randomness), so one total order spans every shard: each shard returns
//! its first `limit + 1` matches below the cursor, the merge keeps the
//! `limit` greatest, and the next page starts below the last one returned.
//! A page is therefore exactly the next `limit` matches of the region-wide
//! order, whichever shards they live on. (Databases use the `C.UTF-8`
//! collation, which orders ASCII IDs bytewise, as Rust does; the merge sorts
//! again in Rust, so a shard's order never decides the result.)

use serde::Serialize;
use snakepay_domain::ids::MerchantId;
use sqlx::{PgPool, Row};

use crate::Store;

/// The most results one page returns.
pub const MAX_PAGE: i64 = 100;

/// Filters; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct PaymentSearch {
    pub merchant: Option<MerchantId>,
    pub livemode: Option<bool>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub created_gte: Option<i64>,
    pub created_lte: Option<i64>,
    pub amount_gte: Option<i64>,
    pub amount_lte: Option<i64>,
    pub card_last4: Option<String>,
    pub customer: Option<String>,
    /// The last ID of the previous page.
    pub starting_after: Option<String>,
    pub limit: i64,
}

/// One search result: the payment's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentSummary {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub customer: Option<String>,
    pub card_brand: Option<String>,
    pub card_last4: Option<String>,
    pub created: i64,
}

const SEARCH_SQL: &str = "
    select pi.id, pi.merchant_id, pi.livemode, pi.amount, pi.currency, pi.status,
           pi.amount_received, pi.amount_refunded, pi.customer_id, pm.brand, pm.last4, pi.created
    from payment_intents pi
    left join payment_methods pm on pm.id = pi.payment_method_id
    where ($1::text is null or pi.merchant_id = $1)
      and ($2::boolean is null or pi.livemode = $2)
      and ($3::text is null or pi.status = $3)
      and ($4::text is null or pi.currency = $4)
      and ($5::bigint is null or pi.created >= $5)
      and ($6::bigint is null or pi.created <= $6)
      and ($7::bigint is null or pi.amount >= $7)
      and ($8::bigint is null or pi.amount <= $8)
      and ($9::text is null or pm.last4 = $9)
      and ($10::text is null or pi.customer_id = $10)
      and ($11::text is null or pi.id < $11)
    order by pi.id desc
    limit $12";

fn summary(row: &sqlx::postgres::PgRow) -> Result<PaymentSummary, sqlx::Error> {
    Ok(PaymentSummary {
        id: row.try_get(0)?,
        merchant_id: row.try_get(1)?,
        livemode: row.try_get(2)?,
        amount: row.try_get(3)?,
        currency: row.try_get(4)?,
        status: row.try_get(5)?,
        amount_received: row.try_get(6)?,
        amount_refunded: row.try_get(7)?,
        customer: row.try_get(8)?,
        card_brand: row.try_get(9)?,
        card_last4: row.try_get(10)?,
        created: row.try_get(11)?,
    })
}

async fn search_shard(
    pool: PgPool,
    query: PaymentSearch,
    limit: i64,
) -> Result<Vec<PaymentSummary>, sqlx::Error> {
    let rows = sqlx::query(SEARCH_SQL)
        .bind(query.merchant.map(|m| m.to_string()))
        .bind(query.livemode)
        .bind(&query.status)
        .bind(&query.currency)
        .bind(query.created_gte)
        .bind(query.created_lte)
        .bind(query.amount_gte)
        .bind(query.amount_lte)
        .bind(&query.card_last4)
        .bind(&query.customer)
        .bind(&query.starting_after)
        .bind(limit + 1)
        .fetch_all(&pool)
        .await?;
    rows.iter().map(summary).collect()
}

/// A page of payments matching `query`, newest first, and whether more
/// match beyond it. A merchant filter reaches only that merchant's shard;
/// otherwise every shard is asked at once.
pub async fn search_payments(
    store: &Store,
    query: &PaymentSearch,
) -> anyhow::Result<(Vec<PaymentSummary>, bool)> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let pools: Vec<PgPool> = match query.merchant {
        Some(merchant) => vec![store.shard(merchant.shard())?.clone()],
        None => store.shards().map(|(_, pool)| pool.clone()).collect(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for pool in pools {
        tasks.spawn(search_shard(pool, query.clone(), limit));
    }
    let mut merged = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        merged.extend(joined??);
    }
    merged.sort_by(|a, b| b.id.cmp(&a.id));
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = merged.len() > limit;
    merged.truncate(limit);
    Ok((merged, has_more))
}

/// Everything the platform knows about one payment, for support and
/// investigations: the intent, its attempts (with the processor's answers),
/// refunds, events (its history, in order), the ledger lines and webhook
/// deliveries. Card data: the brand, last 4 and expiry only.
pub async fn payment_story(
    pool: &PgPool,
    intent_id: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let row = sqlx::query(
        "select
           (select to_jsonb(pi) - 'client_secret' from payment_intents pi where pi.id = $1) as intent,
           (select to_jsonb(c) from payment_methods pm
              cross join lateral (select pm.id, pm.brand, pm.first6, pm.last4, pm.exp_month,
                                         pm.exp_year, pm.fingerprint, pm.created) c
              where pm.id = (select payment_method_id from payment_intents where id = $1)) as card,
           (select coalesce(jsonb_agg(to_jsonb(a) order by a.created, a.id), '[]')
              from payment_attempts a where a.payment_intent_id = $1) as attempts,
           (select coalesce(jsonb_agg(to_jsonb(r) order by r.id), '[]')
              from refunds r where r.payment_intent_id = $1) as refunds,
           (select coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'type', e.type,
                       'created', e.created, 'request_id', e.request_id, 'object_id', e.object->>'id')
                       order by e.id), '[]')
              from events e where e.object->>'id' = $1 or e.object->>'payment_intent' = $1) as events,
           (select coalesce(jsonb_agg(jsonb_build_object('journal_id', j.id, 'description', j.description,
                       'refund_id', j.refund_id, 'account', l.account, 'side', l.side,
                       'amount', l.amount, 'currency', l.currency, 'created_at', l.created_at)
                       order by j.id, l.id), '[]')
              from journals j join journal_lines l on l.journal_id = j.id
              where j.payment_intent_id = $1) as ledger,
           (select coalesce(jsonb_agg(jsonb_build_object('id', d.id, 'event_id', d.event_id,
                       'endpoint_id', d.endpoint_id, 'status', d.status, 'attempts', d.attempts,
                       'last_http_status', d.last_http_status, 'last_error', d.last_error,
                       'delivered_at_ms', d.delivered_at_ms) order by d.id), '[]')
              from webhook_deliveries d join events e on e.id = d.event_id
              where e.object->>'id' = $1 or e.object->>'payment_intent' = $1) as webhook_deliveries",
    )
    .bind(intent_id)
    .fetch_one(pool)
    .await?;
    let intent: Option<serde_json::Value> = row.try_get("intent")?;
    let Some(intent) = intent else {
        return Ok(None);
    };
    let mut story = serde_json::Map::new();
    story.insert("payment_intent".to_owned(), intent);
    for name in [
        "card",
        "attempts",
        "refunds",
        "events",
        "ledger",
        "webhook_deliveries",
    ] {
        let value: Option<serde_json::Value> = row.try_get(name)?;
        story.insert(name.to_owned(), value.unwrap_or(serde_json::Value::Null));
    }
    Ok(Some(serde_json::Value::Object(story)))
}

/// Ledger balances of one merchant: per account and currency, debits minus
/// credits, derived from the immutable lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub account: String,
    pub currency: String,
    pub livemode: bool,
    pub debits: i64,
    pub credits: i64,
    /// debits − credits.
    pub balance: i64,
}

fn balances_from(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Balance>, sqlx::Error> {
    rows.iter()
        .map(|row| {
            let debits: i64 = row.try_get("debits")?;
            let credits: i64 = row.try_get("credits")?;
            Ok(Balance {
                account: row.try_get("account")?,
                currency: row.try_get("currency")?,
                livemode: row.try_get("livemode")?,
                debits,
                credits,
                balance: debits - credits,
            })
        })
        .collect()
}

const BALANCE_SQL: &str = "
    select account, currency, livemode,
           coalesce(sum(amount) filter (where side = 'debit'), 0)::bigint as debits,
           coalesce(sum(amount) filter (where side = 'credit'), 0)::bigint as credits
    from journal_lines
    where ($1::text is null or merchant_id = $1)
    group by account, currency, livemode
    order by livemode, currency, account";

pub async fn merchant_balances(
    store: &Store,
    merchant: MerchantId,
) -> anyhow::Result<Vec<Balance>> {
    let pool = store.shard(merchant.shard())?;
    let rows = sqlx::query(BALANCE_SQL)
        .bind(merchant.to_string())
        .fetch_all(pool)
        .await?;
    Ok(balances_from(&rows)?)
}

/// The region's trial balance: every account's totals over every shard,
/// and per currency and mode the sum of all balances, which must be zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialBalance {
    pub accounts: Vec<Balance>,
    /// Per (livemode, currency): the sum of every account's balance.
    pub totals: Vec<CurrencyTotal>,
    pub balanced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyTotal {
    pub currency: String,
    pub livemode: bool,
    pub debits: i64,
    pub credits: i64,
    pub net: i64,
}

pub async fn trial_balance(store: &Store) -> anyhow::Result<TrialBalance> {
    use std::collections::BTreeMap;
    let mut accounts: BTreeMap<(bool, String, String), (i64, i64)> = BTreeMap::new();
    for (_, pool) in store.shards() {
        let rows = sqlx::query(BALANCE_SQL)
            .bind(None::<String>)
            .fetch_all(pool)
            .await?;
        for balance in balances_from(&rows)? {
            let entry = accounts
                .entry((balance.livemode, balance.currency, balance.account))
                .or_default();
            entry.0 = entry.0.checked_add(balance.debits).ok_or_else(overflow)?;
            entry.1 = entry.1.checked_add(balance.credits).ok_or_else(overflow)?;
        }
    }
    let mut totals: BTreeMap<(bool, String), (i64, i64)> = BTreeMap::new();
    for ((livemode, currency, _), (debits, credits)) in &accounts {
        let total = totals.entry((*livemode, currency.clone())).or_default();
        total.0 = total.0.checked_add(*debits).ok_or_else(overflow)?;
        total.1 = total.1.checked_add(*credits).ok_or_else(overflow)?;
    }
    let totals: Vec<CurrencyTotal> = totals
        .into_iter()
        .map(|((livemode, currency), (debits, credits))| CurrencyTotal {
            currency,
            livemode,
            debits,
            credits,
            net: debits - credits,
        })
        .collect();
    let balanced = totals.iter().all(|t| t.net == 0);
    Ok(TrialBalance {
        accounts: accounts
            .into_iter()
            .map(
                |((livemode, currency, account), (debits, credits))| Balance {
                    account,
                    currency,
                    livemode,
                    debits,
                    credits,
                    balance: debits - credits,
                },
            )
            .collect(),
        totals,
        balanced,
    })
}

fn overflow() -> anyhow::Error {
    anyhow::anyhow!("ledger totals overflow i64")
}

/// Our side of one processor authorization, for reconciliation: an
/// attempt, its intent's money state and the intent's ledger position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptPosition {
    pub attempt: String,
    pub payment_intent: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub attempt_status: String,
    pub intent_status: String,
    /// Whether this attempt is the intent's authorization (the one whose
    /// captures and refunds the intent's amounts describe).
    pub authorized: bool,
    pub currency: String,
    pub amount_received: i64,
    pub amount_refunded: i64,
    /// The intent's `processor_receivable` position in the ledger: what the
    /// books say the processor owes for it (captured − refunded).
    pub ledger_receivable: i64,
}

/// Every attempt sent to `processor` on every shard, created in the range.
pub async fn attempt_positions(
    store: &Store,
    processor: &str,
    created_gte: Option<i64>,
    created_lte: Option<i64>,
) -> anyhow::Result<Vec<AttemptPosition>> {
    let mut positions = Vec::new();
    for (_, pool) in store.shards() {
        let rows = sqlx::query(
            "select a.id, a.payment_intent_id, a.merchant_id, pi.livemode, a.status as attempt_status,
                    pi.status as intent_status,
                    coalesce(pi.authorized_attempt_id = a.id, false) as authorized,
                    a.currency, pi.amount_received, pi.amount_refunded,
                    coalesce((select sum(case when l.side = 'debit' then l.amount else -l.amount end)
                              from journals j join journal_lines l on l.journal_id = j.id
                              where j.payment_intent_id = pi.id and l.account = 'processor_receivable'),
                             0)::bigint as ledger_receivable
             from payment_attempts a join payment_intents pi on pi.id = a.payment_intent_id
             where a.processor = $1
               and ($2::bigint is null or a.created >= $2) and ($3::bigint is null or a.created <= $3)
             order by a.id",
        )
        .bind(processor)
        .bind(created_gte)
        .bind(created_lte)
        .fetch_all(pool)
        .await?;
        for row in &rows {
            positions.push(AttemptPosition {
                attempt: row.try_get("id")?,
                payment_intent: row.try_get("payment_intent_id")?,
                merchant_id: row.try_get("merchant_id")?,
                livemode: row.try_get("livemode")?,
                attempt_status: row.try_get("attempt_status")?,
                intent_status: row.try_get("intent_status")?,
                authorized: row.try_get("authorized")?,
                currency: row.try_get("currency")?,
                amount_received: row.try_get("amount_received")?,
                amount_refunded: row.try_get("amount_refunded")?,
                ledger_receivable: row.try_get("ledger_receivable")?,
            });
        }
    }
    Ok(positions)
}
