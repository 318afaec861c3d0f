//! Read-only queries for `snakepay-admin verify`, the invariant checker:
//! the facts of one shard, read in one snapshot ([`snapshot`]) so that
//! rows committed together are seen together. Nothing here writes, and
//! nothing here judges: the checker compares the facts.
//!
//! Ages are measured by the database's clock (`now()` at the snapshot), so
//! a skewed clock on the machine running the checker cannot make a payment
//! look stuck.

use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};

/// A read-only transaction in which every query sees the same snapshot.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// What is wrong with one journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalFault {
    /// Fewer than two lines.
    TooFewLines { lines: i64 },
    /// Debits and credits differ in one currency.
    Unbalanced {
        currency: String,
        debits: i64,
        credits: i64,
    },
    /// Lines that name another merchant or mode than their journal.
    ForeignLines { lines: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalProblem {
    pub journal_id: i64,
    pub merchant_id: String,
    pub payment_intent_id: Option<String>,
    pub fault: JournalFault,
}

/// Every journal that does not balance per currency, has fewer than two
/// lines, or has lines of another merchant.
pub async fn journal_problems(conn: &mut PgConnection) -> anyhow::Result<Vec<JournalProblem>> {
    let mut problems = Vec::new();
    let rows = sqlx::query(
        "select j.id, j.merchant_id, j.payment_intent_id, count(l.id) as lines
         from journals j left join journal_lines l on l.journal_id = j.id
         group by j.id having count(l.id) < 2 order by j.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        problems.push(JournalProblem {
            journal_id: row.try_get("id")?,
            merchant_id: row.try_get("merchant_id")?,
            payment_intent_id: row.try_get("payment_intent_id")?,
            fault: JournalFault::TooFewLines {
                lines: row.try_get("lines")?,
            },
        });
    }
    let rows = sqlx::query(
        "select j.id, j.merchant_id, j.payment_intent_id, l.currency,
                coalesce(sum(l.amount) filter (where l.side = 'debit'), 0)::bigint as debits,
                coalesce(sum(l.amount) filter (where l.side = 'credit'), 0)::bigint as credits
         from journal_lines l join journals j on j.id = l.journal_id
         group by j.id, l.currency
         having coalesce(sum(l.amount) filter (where l.side = 'debit'), 0)
             <> coalesce(sum(l.amount) filter (where l.side = 'credit'), 0)
         order by j.id, l.currency",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        problems.push(JournalProblem {
            journal_id: row.try_get("id")?,
            merchant_id: row.try_get("merchant_id")?,
            payment_intent_id: row.try_get("payment_intent_id")?,
            fault: JournalFault::Unbalanced {
                currency: row.try_get("currency")?,
                debits: row.try_get("debits")?,
                credits: row.try_get("credits")?,
            },
        });
    }
    let rows = sqlx::query(
        "select j.id, j.merchant_id, j.payment_intent_id, count(*) as lines
         from journal_lines l join journals j on j.id = l.journal_id
         where l.merchant_id <> j.merchant_id or l.livemode <> j.livemode
         group by j.id order by j.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        problems.push(JournalProblem {
            journal_id: row.try_get("id")?,
            merchant_id: row.try_get("merchant_id")?,
            payment_intent_id: row.try_get("payment_intent_id")?,
            fault: JournalFault::ForeignLines {
                lines: row.try_get("lines")?,
            },
        });
    }
    Ok(problems)
}

/// The sum of one account's lines over every journal of one intent, in one
/// currency: debits minus credits (the checker turns it to the account's
/// normal side).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerSum {
    /// `None` for journals that name no intent.
    pub payment_intent_id: Option<String>,
    pub account: String,
    pub currency: String,
    pub debits_minus_credits: i64,
}

pub async fn ledger_sums(conn: &mut PgConnection) -> anyhow::Result<Vec<LedgerSum>> {
    Ok(sqlx::query_as(
        "select j.payment_intent_id, l.account, l.currency,
                sum(case when l.side = 'debit' then l.amount else -l.amount end)::bigint
                    as debits_minus_credits
         from journal_lines l join journals j on j.id = l.journal_id
         group by j.payment_intent_id, l.account, l.currency
         order by j.payment_intent_id, l.account, l.currency",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// An intent's status and stored money fields.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IntentFacts {
    pub id: String,
    pub merchant_id: String,
    pub status: String,
    pub currency: String,
    pub amount: i64,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub amount_refund_pending: i64,
    pub authorized_attempt_id: Option<String>,
    /// The operation at the processor (the `pending` column), if any.
    pub pending: Option<serde_json::Value>,
    /// Seconds since the intent last changed.
    pub age_seconds: f64,
}

pub async fn intents(conn: &mut PgConnection) -> anyhow::Result<Vec<IntentFacts>> {
    Ok(sqlx::query_as(
        "select id, merchant_id, status, currency, amount, amount_capturable, amount_received,
                amount_refunded, amount_refund_pending, authorized_attempt_id, pending,
                extract(epoch from now() - updated_at)::float8 as age_seconds
         from payment_intents order by id",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// An attempt and the processor's ID of its authorization, if known.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptFacts {
    pub id: String,
    pub payment_intent_id: String,
    pub status: String,
    pub processor: String,
    pub processor_reference: Option<String>,
}

pub async fn attempts(conn: &mut PgConnection) -> anyhow::Result<Vec<AttemptFacts>> {
    Ok(sqlx::query_as(
        "select id, payment_intent_id, status, processor, processor_reference
         from payment_attempts order by id",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// A refund, with the journals that name it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RefundFacts {
    pub id: String,
    pub payment_intent_id: String,
    pub attempt_id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    /// Seconds since the refund last changed.
    pub age_seconds: f64,
    /// Journals whose `refund_id` is this refund.
    pub journals: i64,
    /// What those journals debit from `merchant_payable`.
    pub journal_amount: i64,
}

pub async fn refunds(conn: &mut PgConnection) -> anyhow::Result<Vec<RefundFacts>> {
    Ok(sqlx::query_as(
        "with booked as (
             select j.refund_id, count(distinct j.id) as journals,
                    coalesce(sum(l.amount) filter (
                        where l.account = 'merchant_payable' and l.side = 'debit'), 0)::bigint as amount
             from journals j join journal_lines l on l.journal_id = j.id
             where j.refund_id is not null
             group by j.refund_id
         )
         select r.id, r.payment_intent_id, r.attempt_id, r.status, r.amount, r.currency,
                extract(epoch from now() - r.updated_at)::float8 as age_seconds,
                coalesce(booked.journals, 0) as journals, coalesce(booked.amount, 0) as journal_amount
         from refunds r left join booked on booked.refund_id = r.id
         order by r.id",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// An idempotency key whose request created payment intents: the key's
/// request and the `payment_intent.created` events written by it (events
/// carry the request that caused them; the key keeps the request that
/// executed under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCreations {
    pub merchant_id: String,
    pub livemode: bool,
    pub key: String,
    pub request_id: String,
    /// The stored answer, once the request completed.
    pub response_status: Option<i32>,
    pub response_body: Option<Vec<u8>>,
    /// The intents that request created, sorted.
    pub created_intents: Vec<String>,
}

pub async fn key_creations(conn: &mut PgConnection) -> anyhow::Result<Vec<KeyCreations>> {
    let rows = sqlx::query(
        "select k.merchant_id, k.livemode, k.key, k.request_id, k.response_status, k.response_body,
                array_agg(distinct e.object ->> 'id') as created
         from idempotency_keys k
         join events e on e.request_id = k.request_id and e.merchant_id = k.merchant_id
                      and e.livemode = k.livemode and e.type = 'payment_intent.created'
         group by k.merchant_id, k.livemode, k.key
         order by k.merchant_id, k.livemode, k.key",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let created: Vec<Option<String>> = row.try_get("created")?;
            let mut created_intents: Vec<String> = created.into_iter().flatten().collect();
            created_intents.sort();
            Ok(KeyCreations {
                merchant_id: row.try_get("merchant_id")?,
                livemode: row.try_get("livemode")?,
                key: row.try_get("key")?,
                request_id: row.try_get("request_id")?,
                response_status: row.try_get("response_status")?,
                response_body: row.try_get("response_body")?,
                created_intents,
            })
        })
        .collect()
}

/// Outbox rows not yet published and older than the asked age.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxBacklog {
    pub unpublished: i64,
    /// The oldest of them: its ID, routing key and age in seconds.
    pub oldest: Option<(i64, String, f64)>,
}

pub async fn outbox_backlog(
    conn: &mut PgConnection,
    older_than_seconds: f64,
) -> anyhow::Result<OutboxBacklog> {
    let unpublished: i64 = sqlx::query_scalar(
        "select count(*) from outbox
         where created_at < now() - make_interval(secs => $1)",
    )
    .bind(older_than_seconds)
    .fetch_one(&mut *conn)
    .await?;
    let oldest: Option<(i64, String, f64)> = sqlx::query_as(
        "select id, routing_key, extract(epoch from now() - created_at)::float8 from outbox
         where created_at < now() - make_interval(secs => $1)
         order by id limit 1",
    )
    .bind(older_than_seconds)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(OutboxBacklog {
        unpublished,
        oldest,
    })
}
