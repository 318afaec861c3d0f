//! PaymentIntents, their attempts and tokenized cards on a shard.
//!
//! The domain's [`PaymentIntent`] holds the money state; [`IntentRecord`]
//! adds what only the API cares about (metadata, description, client
//! secret, ...). Writers take the caller's transaction so that a state
//! change commits with its events, outbox rows and ledger lines.

use std::collections::BTreeMap;

use crate::compose::Statement;
use anyhow::Context;
use snakepay_domain::Money;
use snakepay_domain::currency::Currency;
use snakepay_domain::ids::{
    AttemptId, ChargeId, CustomerId, MerchantId, PaymentIntentId, PaymentMethodId,
};
use snakepay_domain::payment_intent::{PaymentIntent, PaymentIntentStatus};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};

/// A PaymentIntent as stored: the domain state plus the API's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    pub intent: PaymentIntent,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub customer: Option<CustomerId>,
    pub client_secret: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub payment_method_types: Vec<String>,
    pub receipt_email: Option<String>,
    pub return_url: Option<String>,
    pub statement_descriptor: Option<String>,
    pub statement_descriptor_suffix: Option<String>,
    /// Bumped on every update; 1 when created.
    pub version: i64,
}

const COLUMNS: &str = "id, merchant_id, livemode, amount, currency, status, capture_method,
    amount_capturable, amount_received, amount_refunded, amount_refund_pending, customer_id,
    payment_method_id, latest_attempt_id, latest_charge_id, authorized_attempt_id, pending,
    last_payment_error, next_action, cancellation_reason, canceled_at, capture_before,
    client_secret, description, metadata, payment_method_types, receipt_email, return_url,
    statement_descriptor, statement_descriptor_suffix, version, created";

fn text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(s),
        other => anyhow::bail!("expected a string enum, got {other}"),
    }
}

fn from_text<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_value(serde_json::Value::String(
        text.to_owned(),
    ))?)
}

fn json_or_null<T: serde::Serialize>(
    value: &Option<T>,
) -> anyhow::Result<Option<serde_json::Value>> {
    value
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(Into::into)
}

fn parse_opt<T>(
    text: Option<String>,
    parse: impl Fn(&str) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    text.as_deref().map(parse).transpose()
}

fn record_from_row(row: &PgRow) -> anyhow::Result<IntentRecord> {
    let currency = Currency::parse(&row.try_get::<String, _>("currency")?)?;
    let amount = Money::new(row.try_get("amount")?, currency)?;
    let id = PaymentIntentId::parse(&row.try_get::<String, _>("id")?)?;
    let json = |name: &str| -> anyhow::Result<Option<serde_json::Value>> { Ok(row.try_get(name)?) };
    let intent = PaymentIntent {
        id,
        amount,
        capture_method: from_text(&row.try_get::<String, _>("capture_method")?)?,
        status: PaymentIntentStatus::parse(&row.try_get::<String, _>("status")?)
            .context("unknown status")?,
        payment_method: parse_opt(row.try_get("payment_method_id")?, |t| {
            Ok(PaymentMethodId::parse(t)?)
        })?,
        amount_capturable: row.try_get("amount_capturable")?,
        amount_received: row.try_get("amount_received")?,
        amount_refunded: row.try_get("amount_refunded")?,
        amount_refund_pending: row.try_get("amount_refund_pending")?,
        latest_attempt: parse_opt(row.try_get("latest_attempt_id")?, |t| {
            Ok(AttemptId::parse(t)?)
        })?,
        latest_charge: parse_opt(row.try_get("latest_charge_id")?, |t| {
            Ok(ChargeId::parse(t)?)
        })?,
        authorized_attempt: parse_opt(row.try_get("authorized_attempt_id")?, |t| {
            Ok(AttemptId::parse(t)?)
        })?,
        pending: json("pending")?.map(serde_json::from_value).transpose()?,
        last_payment_error: json("last_payment_error")?
            .map(serde_json::from_value)
            .transpose()?,
        next_action: json("next_action")?
            .map(serde_json::from_value)
            .transpose()?,
        cancellation_reason: parse_opt(row.try_get("cancellation_reason")?, from_text)?,
        canceled_at: row.try_get("canceled_at")?,
        capture_before: row.try_get("capture_before")?,
        created: row.try_get("created")?,
    };
    Ok(IntentRecord {
        intent,
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        livemode: row.try_get("livemode")?,
        customer: parse_opt(row.try_get("customer_id")?, |t| Ok(CustomerId::parse(t)?))?,
        client_secret: row.try_get("client_secret")?,
        description: row.try_get("description")?,
        metadata: serde_json::from_value(row.try_get("metadata")?)?,
        payment_method_types: row.try_get("payment_method_types")?,
        receipt_email: row.try_get("receipt_email")?,
        return_url: row.try_get("return_url")?,
        statement_descriptor: row.try_get("statement_descriptor")?,
        statement_descriptor_suffix: row.try_get("statement_descriptor_suffix")?,
        version: row.try_get("version")?,
    })
}

/// Inserts a new intent (version 1).
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    record: &IntentRecord,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    push_insert(&mut statement, record)?;
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// [`insert`] as a piece of a statement ([`crate::compose`]).
pub(crate) fn push_insert(statement: &mut Statement, record: &IntentRecord) -> anyhow::Result<()> {
    statement.push(
        "insert into payment_intents (id, merchant_id, livemode, client_secret, payment_method_types,
             created, version, amount, currency, status, capture_method, amount_capturable,
             amount_received, amount_refunded, amount_refund_pending, customer_id, payment_method_id,
             latest_attempt_id, latest_charge_id, authorized_attempt_id, pending, last_payment_error,
             next_action, cancellation_reason, canceled_at, capture_before, description, metadata,
             receipt_email, return_url, statement_descriptor, statement_descriptor_suffix)
         values ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)",
    );
    statement
        .bind(record.intent.id.to_string())?
        .bind(record.merchant_id.to_string())?
        .bind(record.livemode)?
        .bind(record.client_secret.clone())?
        .bind(record.payment_method_types.clone())?
        .bind(record.intent.created)?;
    bind_state(statement, record)
}

/// The intent's state as [`push_insert`] and [`UPDATE`] write it, in the
/// order of their columns from `amount` to `statement_descriptor_suffix`
/// (25 arguments). An intent that breaks its invariants is never saved.
fn bind_state(statement: &mut Statement, record: &IntentRecord) -> anyhow::Result<()> {
    record
        .intent
        .check_invariants()
        .map_err(|e| anyhow::anyhow!("refusing to save an invalid intent: {e}"))?;
    statement
        .bind(record.intent.amount.minor())?
        .bind(record.intent.amount.currency().code())?
        .bind(record.intent.status.as_str())?
        .bind(text(&record.intent.capture_method)?)?
        .bind(record.intent.amount_capturable)?
        .bind(record.intent.amount_received)?
        .bind(record.intent.amount_refunded)?
        .bind(record.intent.amount_refund_pending)?
        .bind(record.customer.map(|c| c.to_string()))?
        .bind(record.intent.payment_method.map(|p| p.to_string()))?
        .bind(record.intent.latest_attempt.map(|a| a.to_string()))?
        .bind(record.intent.latest_charge.map(|c| c.to_string()))?
        .bind(record.intent.authorized_attempt.map(|a| a.to_string()))?
        .bind(json_or_null(&record.intent.pending)?)?
        .bind(json_or_null(&record.intent.last_payment_error)?)?
        .bind(json_or_null(&record.intent.next_action)?)?
        .bind(
            record
                .intent
                .cancellation_reason
                .as_ref()
                .map(text)
                .transpose()?,
        )?
        .bind(record.intent.canceled_at)?
        .bind(record.intent.capture_before)?
        .bind(record.description.clone())?
        .bind(serde_json::to_value(&record.metadata)?)?
        .bind(record.receipt_email.clone())?
        .bind(record.return_url.clone())?
        .bind(record.statement_descriptor.clone())?
        .bind(record.statement_descriptor_suffix.clone())?;
    Ok(())
}

/// An intent's update as a piece of a statement ([`crate::compose`]),
/// `$1..$27`: writes the record's state and bumps its version. With `$27`
/// (the version the record was read at) it updates only a row still at that
/// version, so a writer that did not lock the row can tell it moved on.
pub(crate) const UPDATE: &str = "update payment_intents set
         amount = $2, currency = $3, status = $4, capture_method = $5, amount_capturable = $6,
         amount_received = $7, amount_refunded = $8, amount_refund_pending = $9, customer_id = $10,
         payment_method_id = $11, latest_attempt_id = $12, latest_charge_id = $13,
         authorized_attempt_id = $14, pending = $15, last_payment_error = $16, next_action = $17,
         cancellation_reason = $18, canceled_at = $19, capture_before = $20, description = $21,
         metadata = $22, receipt_email = $23, return_url = $24, statement_descriptor = $25,
         statement_descriptor_suffix = $26, version = version + 1, updated_at = now()
     where id = $1 and ($27::bigint is null or version = $27) returning version";

/// Binds [`UPDATE`]'s arguments; `read_at` is the version the change was
/// computed from, when the row is not locked.
pub(crate) fn bind_update(
    statement: &mut Statement,
    record: &IntentRecord,
    read_at: Option<i64>,
) -> anyhow::Result<()> {
    statement.bind(record.intent.id.to_string())?;
    bind_state(statement, record)?;
    statement.bind(read_at)?;
    Ok(())
}

/// Saves the intent's state in the caller's transaction, which holds its
/// row lock ([`load_for_update`]); sets the record's new version.
pub async fn update(
    tx: &mut Transaction<'_, Postgres>,
    record: &mut IntentRecord,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    statement.push(UPDATE);
    bind_update(&mut statement, record, None)?;
    record.version = statement
        .fetch_scalar(&mut **tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("intent {} vanished", record.intent.id))?;
    Ok(())
}

/// Loads an intent of this merchant and mode, locking its row until the
/// transaction ends: every state change goes through this lock.
pub async fn load_for_update(
    tx: &mut Transaction<'_, Postgres>,
    id: PaymentIntentId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<IntentRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from payment_intents where id = $1 and merchant_id = $2 and livemode = $3 for update"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(record_from_row).transpose()
}

pub async fn load<'c>(
    executor: impl PgExecutor<'c>,
    id: PaymentIntentId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<IntentRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from payment_intents where id = $1 and merchant_id = $2 and livemode = $3"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(record_from_row).transpose()
}

/// Filters and a page of a list request (API.md: newest first, cursors).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: i64,
    pub starting_after: Option<String>,
    pub ending_before: Option<String>,
    pub created_gt: Option<i64>,
    pub created_gte: Option<i64>,
    pub created_lt: Option<i64>,
    pub created_lte: Option<i64>,
}

/// A page: newest first, and whether more exist beyond it in the direction
/// of travel.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// The SQL fragment and direction for a cursor page. IDs are time-ordered,
/// so ordering by ID is ordering by creation.
pub(crate) fn page_clause(query: &ListQuery, first_param: usize) -> (String, bool) {
    let [after, before, gt, gte, lt, lte, limit] =
        [0, 1, 2, 3, 4, 5, 6].map(|offset| first_param + offset);
    let backwards = query.ending_before.is_some() && query.starting_after.is_none();
    let order = if backwards { "asc" } else { "desc" };
    let clause = format!(
        " and (${after}::text is null or id < ${after}) and (${before}::text is null or id > ${before})
          and (${gt}::bigint is null or created > ${gt}) and (${gte}::bigint is null or created >= ${gte})
          and (${lt}::bigint is null or created < ${lt}) and (${lte}::bigint is null or created <= ${lte})
          order by id {order} limit ${limit}"
    );
    (clause, backwards)
}

pub(crate) fn bind_page<'q>(
    statement: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    query: &'q ListQuery,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    statement
        .bind(query.starting_after.as_deref())
        .bind(query.ending_before.as_deref())
        .bind(query.created_gt)
        .bind(query.created_gte)
        .bind(query.created_lt)
        .bind(query.created_lte)
        .bind(query.limit + 1)
}

pub(crate) fn finish_page<T>(mut items: Vec<T>, limit: i64, backwards: bool) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = items.len() > limit;
    items.truncate(limit);
    if backwards {
        items.reverse();
    }
    Page { items, has_more }
}

pub async fn list(
    pool: &PgPool,
    merchant: MerchantId,
    livemode: bool,
    customer: Option<CustomerId>,
    query: &ListQuery,
) -> anyhow::Result<Page<IntentRecord>> {
    let (clause, backwards) = page_clause(query, 4);
    let sql = format!(
        "select {COLUMNS} from payment_intents where merchant_id = $1 and livemode = $2
         and ($3::text is null or customer_id = $3){clause}"
    );
    let customer = customer.map(|c| c.to_string());
    let statement = sqlx::query(&sql)
        .bind(merchant.to_string())
        .bind(livemode)
        .bind(customer);
    let rows = bind_page(statement, query).fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(record_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(finish_page(items, query.limit, backwards))
}

/// A confirmation's attempt row.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: AttemptId,
    pub payment_intent: PaymentIntentId,
    pub merchant_id: MerchantId,
    pub charge: ChargeId,
    pub payment_method: PaymentMethodId,
    pub amount: Money,
    pub capture: bool,
    pub created: i64,
}

pub async fn insert_attempt(
    tx: &mut Transaction<'_, Postgres>,
    attempt: &NewAttempt,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    push_insert_attempt(&mut statement, attempt)?;
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// [`insert_attempt`] as a piece of a statement ([`crate::compose`]).
pub(crate) fn push_insert_attempt(
    statement: &mut Statement,
    attempt: &NewAttempt,
) -> anyhow::Result<()> {
    statement.push(
        "insert into payment_attempts (id, payment_intent_id, merchant_id, charge_id, payment_method_id,
             amount, currency, capture, created)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    );
    statement
        .bind(attempt.id.to_string())?
        .bind(attempt.payment_intent.to_string())?
        .bind(attempt.merchant_id.to_string())?
        .bind(attempt.charge.to_string())?
        .bind(attempt.payment_method.to_string())?
        .bind(attempt.amount.minor())?
        .bind(attempt.amount.currency().code())?
        .bind(attempt.capture)?
        .bind(attempt.created)?;
    Ok(())
}

/// A tokenized card: only the summary is in clear.
#[derive(Debug, Clone)]
pub struct CardRecord {
    pub id: PaymentMethodId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub customer: Option<CustomerId>,
    pub brand: String,
    pub first6: String,
    pub last4: String,
    pub exp_month: i16,
    pub exp_year: i16,
    pub fingerprint: String,
    pub pan: SealedColumns,
    pub cvc: Option<SealedColumns>,
    pub created: i64,
}

/// A vault-sealed value as its three columns.
#[derive(Clone)]
pub struct SealedColumns {
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedColumns({}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

pub async fn insert_card(
    tx: &mut Transaction<'_, Postgres>,
    card: &CardRecord,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    push_insert_card(&mut statement, card)?;
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// [`insert_card`] as a piece of a statement ([`crate::compose`]).
pub(crate) fn push_insert_card(statement: &mut Statement, card: &CardRecord) -> anyhow::Result<()> {
    statement.push(
        "insert into payment_methods (id, merchant_id, livemode, customer_id, brand, first6, last4,
             exp_month, exp_year, fingerprint, pan_key_id, pan_wrapped_key, pan_ciphertext,
             cvc_key_id, cvc_wrapped_key, cvc_ciphertext, created)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    );
    statement
        .bind(card.id.to_string())?
        .bind(card.merchant_id.to_string())?
        .bind(card.livemode)?
        .bind(card.customer.map(|c| c.to_string()))?
        .bind(card.brand.clone())?
        .bind(card.first6.clone())?
        .bind(card.last4.clone())?
        .bind(card.exp_month)?
        .bind(card.exp_year)?
        .bind(card.fingerprint.clone())?
        .bind(card.pan.key_id.clone())?
        .bind(card.pan.wrapped_key.clone())?
        .bind(card.pan.ciphertext.clone())?
        .bind(card.cvc.as_ref().map(|c| c.key_id.clone()))?
        .bind(card.cvc.as_ref().map(|c| c.wrapped_key.clone()))?
        .bind(card.cvc.as_ref().map(|c| c.ciphertext.clone()))?
        .bind(card.created)?;
    Ok(())
}

/// The card's clear summary, for `payment_method_details` and checks that a
/// payment method belongs to the merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSummaryRow {
    pub id: PaymentMethodId,
    pub brand: String,
    pub last4: String,
    pub exp_month: i16,
    pub exp_year: i16,
    pub fingerprint: String,
    /// The customer the card is saved to, if any.
    pub customer: Option<String>,
}

pub async fn find_card(
    executor: impl sqlx::PgExecutor<'_>,
    id: PaymentMethodId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<CardSummaryRow>> {
    let row: Option<(String, String, i16, i16, String, Option<String>)> = sqlx::query_as(
        "select brand, last4, exp_month, exp_year, fingerprint, customer_id from payment_methods
         where id = $1 and merchant_id = $2 and livemode = $3",
    )
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(
        |(brand, last4, exp_month, exp_year, fingerprint, customer)| CardSummaryRow {
            id,
            brand,
            last4,
            exp_month,
            exp_year,
            fingerprint,
            customer,
        },
    ))
}

/// Intents of any merchant in `status` (`processing` or `requires_action`)
/// whose last change is older than `age_seconds`: the reconciler's work
/// list (an unknown processor outcome, a lost 3-D Secure notification).
/// One list per status, so abandoned challenges, which may pile up, can
/// never crowd out payments whose outcome is unknown.
pub async fn stale_in_flight(
    pool: &PgPool,
    status: PaymentIntentStatus,
    age_seconds: f64,
    limit: i64,
) -> anyhow::Result<Vec<IntentRecord>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from payment_intents
         where status = $1 and updated_at < now() - make_interval(secs => $2)
         order by updated_at limit $3"
    ))
    .bind(status.as_str())
    .bind(age_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(record_from_row).collect()
}

/// An intent by ID with the sealed card of its attempt `attempt`, in one
/// round trip: what the integration service reads before it acts on a
/// command. The card and the charge are `None` when `attempt` is not this
/// intent's, has no card, or is past its authorization (a capture needs no
/// card).
pub async fn load_by_id_with_card(
    pool: &PgPool,
    id: PaymentIntentId,
    attempt: AttemptId,
) -> anyhow::Result<Option<WithCard>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS}, card.* from payment_intents i
         left join lateral (
             select {SEALED_CARD_COLUMNS}, {CHARGE_COLUMNS} from payment_attempts a
             join payment_methods m on m.id = a.payment_method_id
             where a.id = $2 and a.payment_intent_id = i.id and a.status = 'pending'
         ) card on true
         where i.id = $1",
        SEALED_CARD_COLUMNS = crate::attempts::SEALED_CARD_COLUMNS,
        CHARGE_COLUMNS = crate::charges::OF_ATTEMPT_COLUMNS,
    ))
    .bind(id.to_string())
    .bind(attempt.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record = record_from_row(&row)?;
    Ok(Some(WithCard {
        card: crate::attempts::card_from_row(&row)?,
        charge: crate::charges::of_attempt_row(&row, &record)?,
        record,
    }))
}

/// An intent with what an authorization of its pending attempt needs: the
/// sealed card to send, and the charge as it is before the answer (the
/// basis of the answer's charge event).
pub struct WithCard {
    pub record: IntentRecord,
    pub card: Option<crate::attempts::AttemptCard>,
    pub charge: Option<crate::charges::ChargeView>,
}

/// An intent by ID alone, for the integration service acting on a
/// processor notification (which names the attempt, not the merchant).
pub async fn load_by_id(
    pool: &PgPool,
    id: PaymentIntentId,
) -> anyhow::Result<Option<IntentRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from payment_intents where id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(record_from_row).transpose()
}
