//! Refunds on a shard. A refund is created under the intent's row lock (the
//! domain reserves its amount on the intent in the same transaction), so
//! concurrent refunds can never together exceed what was received.

use std::collections::BTreeMap;

use snakepay_domain::Money;
use snakepay_domain::currency::Currency;
use snakepay_domain::ids::{AttemptId, ChargeId, MerchantId, PaymentIntentId, RefundId};
use snakepay_domain::refund::{Refund, RefundStatus};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};

use crate::intents::{ListQuery, Page, bind_page, finish_page, page_clause};

/// A refund as stored: the domain refund plus the API's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRecord {
    pub refund: Refund,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
}

/// A refund's version for the cache: its status' rank. A refund changes
/// exactly once (pending → succeeded or failed), so the rank orders its
/// states as a version column would.
pub fn cache_version(status: RefundStatus) -> i64 {
    match status {
        RefundStatus::Pending => 1,
        RefundStatus::Succeeded | RefundStatus::Failed => 2,
    }
}

const COLUMNS: &str =
    "id, merchant_id, livemode, payment_intent_id, charge_id, attempt_id, amount, currency,
    status, reason, failure_reason, metadata, created";

fn enum_text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(s),
        other => anyhow::bail!("expected a string enum, got {other}"),
    }
}

fn from_row(row: &PgRow) -> anyhow::Result<RefundRecord> {
    let currency = Currency::parse(&row.try_get::<String, _>("currency")?)?;
    let reason: Option<String> = row.try_get("reason")?;
    let status: String = row.try_get("status")?;
    Ok(RefundRecord {
        refund: Refund {
            id: RefundId::parse(&row.try_get::<String, _>("id")?)?,
            payment_intent: PaymentIntentId::parse(
                &row.try_get::<String, _>("payment_intent_id")?,
            )?,
            charge: ChargeId::parse(&row.try_get::<String, _>("charge_id")?)?,
            attempt: AttemptId::parse(&row.try_get::<String, _>("attempt_id")?)?,
            amount: Money::new(row.try_get("amount")?, currency)?,
            status: RefundStatus::parse(&status)
                .ok_or_else(|| anyhow::anyhow!("unknown refund status {status}"))?,
            reason: reason
                .map(|r| serde_json::from_value(serde_json::Value::String(r)))
                .transpose()?,
            failure_reason: row.try_get("failure_reason")?,
            created: row.try_get("created")?,
        },
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        livemode: row.try_get("livemode")?,
        metadata: serde_json::from_value(row.try_get("metadata")?)?,
    })
}

pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    record: &RefundRecord,
) -> anyhow::Result<()> {
    let refund = &record.refund;
    sqlx::query(&format!(
        "insert into refunds ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(refund.id.to_string())
    .bind(record.merchant_id.to_string())
    .bind(record.livemode)
    .bind(refund.payment_intent.to_string())
    .bind(refund.charge.to_string())
    .bind(refund.attempt.to_string())
    .bind(refund.amount.minor())
    .bind(refund.amount.currency().code())
    .bind(refund.status.as_str())
    .bind(refund.reason.as_ref().map(enum_text).transpose()?)
    .bind(&refund.failure_reason)
    .bind(serde_json::to_value(&record.metadata)?)
    .bind(refund.created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Saves a refund's outcome (status and failure reason).
pub async fn update_outcome(
    tx: &mut Transaction<'_, Postgres>,
    refund: &Refund,
) -> anyhow::Result<()> {
    sqlx::query(
        "update refunds set status = $2, failure_reason = $3, updated_at = now() where id = $1",
    )
    .bind(refund.id.to_string())
    .bind(refund.status.as_str())
    .bind(&refund.failure_reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find<'c>(
    executor: impl PgExecutor<'c>,
    id: RefundId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<RefundRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from refunds where id = $1 and merchant_id = $2 and livemode = $3"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Refunds newest first, optionally of one intent.
pub async fn list(
    pool: &PgPool,
    merchant: MerchantId,
    livemode: bool,
    payment_intent: Option<PaymentIntentId>,
    query: &ListQuery,
) -> anyhow::Result<Page<RefundRecord>> {
    let (clause, backwards) = page_clause(query, 4);
    let sql = format!(
        "select {COLUMNS} from refunds where merchant_id = $1 and livemode = $2
         and ($3::text is null or payment_intent_id = $3){clause}"
    );
    let intent = payment_intent.map(|p| p.to_string());
    let statement = sqlx::query(&sql)
        .bind(merchant.to_string())
        .bind(livemode)
        .bind(intent);
    let rows = bind_page(statement, query).fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(finish_page(items, query.limit, backwards))
}

/// Loads a refund, locking its row until the transaction ends. Callers lock
/// the intent first (the order every writer uses), then the refund.
pub async fn load_for_update(
    tx: &mut Transaction<'_, Postgres>,
    id: RefundId,
) -> anyhow::Result<Option<RefundRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from refunds where id = $1 for update"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// A refund by ID alone, for the integration service (which is told the
/// merchant by the command and checks it).
pub async fn load(pool: &PgPool, id: RefundId) -> anyhow::Result<Option<RefundRecord>> {
    let row = sqlx::query(&format!("select {COLUMNS} from refunds where id = $1"))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Refunds still `pending` whose last change is older than `age_seconds`:
/// their processor outcome was unknown, and the reconciler asks again.
pub async fn stale_pending(
    pool: &PgPool,
    age_seconds: f64,
    limit: i64,
) -> anyhow::Result<Vec<RefundRecord>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from refunds
         where status = 'pending' and updated_at < now() - make_interval(secs => $1)
         order by updated_at limit $2"
    ))
    .bind(age_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}
