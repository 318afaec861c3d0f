//! Payment attempts as the integration service sees them: the card to send,
//! the processor's reference, and the outcome to record. (The External API
//! inserts attempts with [`crate::intents::insert_attempt`].)

use snakepay_domain::ids::{AttemptId, MerchantId, PaymentIntentId, PaymentMethodId};
use snakepay_domain::payment_intent::PaymentError;
use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};

use crate::compose::Statement;
use crate::intents::SealedColumns;

/// What a processor call needs from an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub id: AttemptId,
    pub payment_intent: PaymentIntentId,
    pub merchant_id: MerchantId,
    pub payment_method: PaymentMethodId,
    pub status: String,
    /// The processor's ID of the authorization, once a definite answer
    /// named it.
    pub processor_reference: Option<String>,
}

pub async fn find(
    executor: impl PgExecutor<'_>,
    id: AttemptId,
) -> anyhow::Result<Option<AttemptRow>> {
    let row = sqlx::query(
        "select payment_intent_id, merchant_id, payment_method_id, status, processor_reference
         from payment_attempts where id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(AttemptRow {
        id,
        payment_intent: PaymentIntentId::parse(&row.try_get::<String, _>("payment_intent_id")?)?,
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        payment_method: PaymentMethodId::parse(&row.try_get::<String, _>("payment_method_id")?)?,
        status: row.try_get("status")?,
        processor_reference: row.try_get("processor_reference")?,
    }))
}

/// The attempt's status after a definite authorization answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    RequiresAction,
    Approved,
    Declined,
    Superseded,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::RequiresAction => "requires_action",
            AttemptStatus::Approved => "approved",
            AttemptStatus::Declined => "declined",
            AttemptStatus::Superseded => "superseded",
        }
    }

    /// The authorization is not complete yet (a 3-D Secure challenge is
    /// open): the card's CVC may still be needed.
    pub fn is_waiting(self) -> bool {
        self == AttemptStatus::RequiresAction
    }
}

/// A definite authorization answer, as recorded on its attempt.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRecord<'a> {
    pub attempt: AttemptId,
    pub status: AttemptStatus,
    pub processor_reference: Option<&'a str>,
    pub error: Option<&'a PaymentError>,
}

/// The attempt's `failure_code` column: the error's code as Stripe spells it.
pub fn failure_code(error: Option<&PaymentError>) -> anyhow::Result<Option<String>> {
    Ok(error
        .map(|e| serde_json::to_value(e.code))
        .transpose()?
        .and_then(|v| v.as_str().map(str::to_owned)))
}

/// Recording an authorization answer as CTEs of a statement
/// ([`crate::compose`]): `attempt` (the attempt's new status, returning its
/// payment method) and `forget_cvc`. Once the authorization is complete
/// (anything but `requires_action`) the card's CVC has served its purpose
/// and is deleted (PCI DSS 3.3.1), unless another attempt with the same card
/// still waits to authorize with it. Both read the statement's snapshot,
/// where this attempt still has its old status, hence `id <> $1` in the
/// question whether another attempt waits. `guard` is SQL that must hold for
/// anything to be written.
pub(crate) fn push_authorization(
    statement: &mut Statement,
    record: &AuthorizationRecord<'_>,
    guard: &str,
) -> anyhow::Result<()> {
    statement.push(&format!(
        "attempt as (
             update payment_attempts set status = $2,
                 processor_reference = coalesce($3, processor_reference),
                 failure_code = $4, decline_code = $5, failure_message = $6
             where id = $1 and {guard}
             returning payment_method_id
         ), forget_cvc as (
             update payment_methods set cvc_key_id = null, cvc_wrapped_key = null, cvc_ciphertext = null
             where $7 and id = (select payment_method_id from attempt) and cvc_ciphertext is not null
               and not exists (select 1 from payment_attempts
                               where payment_method_id = (select payment_method_id from attempt)
                                 and id <> $1 and status in ('pending', 'requires_action'))
         )"
    ));
    let error = record.error;
    statement
        .bind(record.attempt.to_string())?
        .bind(record.status.as_str())?
        .bind(record.processor_reference.map(str::to_owned))?
        .bind(failure_code(error)?)?
        .bind(error.and_then(|e| e.decline_code.clone()))?
        .bind(error.map(|e| e.message.clone()))?
        .bind(!record.status.is_waiting())?;
    Ok(())
}

/// Records a definite authorization answer on the attempt, in the caller's
/// transaction, and forgets the card's CVC once it has served (see
/// [`push_authorization`]). One statement, not three (update, find the
/// card, forget its CVC): this runs once per payment outcome.
pub async fn record_authorization(
    tx: &mut Transaction<'_, Postgres>,
    id: AttemptId,
    status: AttemptStatus,
    processor_reference: Option<&str>,
    error: Option<&PaymentError>,
) -> anyhow::Result<()> {
    let mut statement = Statement::new();
    statement.push("with ");
    push_authorization(
        &mut statement,
        &AuthorizationRecord {
            attempt: id,
            status,
            processor_reference,
            error,
        },
        "true",
    )?;
    statement.push(" select 1");
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// Remembers the processor's authorization ID (learnt from an inquiry or a
/// notification) without changing the attempt's status.
pub async fn set_processor_reference(
    pool: &PgPool,
    id: AttemptId,
    processor_reference: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "update payment_attempts set processor_reference = $2
         where id = $1 and processor_reference is null",
    )
    .bind(id.to_string())
    .bind(processor_reference)
    .execute(pool)
    .await?;
    Ok(())
}

/// The sealed card of a payment method: the PAN, and the CVC unless it was
/// already deleted after an authorization.
#[derive(Debug, Clone)]
pub struct SealedCard {
    pub exp_month: i16,
    pub exp_year: i16,
    pub pan: SealedColumns,
    pub cvc: Option<SealedColumns>,
}

/// An attempt's payment method and its sealed card.
pub type AttemptCard = (PaymentMethodId, SealedCard);

/// A sealed card's columns of `payment_methods m`, named apart from any
/// other table's so that they can sit next to an intent's in one row.
pub(crate) const SEALED_CARD_COLUMNS: &str =
    "m.id as card_method_id, m.exp_month as card_exp_month,
     m.exp_year as card_exp_year, m.pan_key_id as card_pan_key_id,
     m.pan_wrapped_key as card_pan_wrapped_key, m.pan_ciphertext as card_pan_ciphertext,
     m.cvc_key_id as card_cvc_key_id, m.cvc_wrapped_key as card_cvc_wrapped_key,
     m.cvc_ciphertext as card_cvc_ciphertext";

pub async fn sealed_card(
    executor: impl PgExecutor<'_>,
    id: PaymentMethodId,
) -> anyhow::Result<Option<SealedCard>> {
    let row = sqlx::query(&format!(
        "select {SEALED_CARD_COLUMNS} from payment_methods m where m.id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(sealed_card_from_row).transpose()
}

/// The sealed card an attempt authorizes with, and its payment method (the
/// integration service's read before an authorization whose card did not
/// come with the intent, see [`crate::intents::load_by_id_with_card`]).
pub async fn sealed_card_of_attempt(
    executor: impl PgExecutor<'_>,
    attempt: AttemptId,
) -> anyhow::Result<Option<AttemptCard>> {
    let row = sqlx::query(&format!(
        "select {SEALED_CARD_COLUMNS} from payment_attempts a
         join payment_methods m on m.id = a.payment_method_id where a.id = $1"
    ))
    .bind(attempt.to_string())
    .fetch_optional(executor)
    .await?;
    match row {
        Some(row) => card_from_row(&row),
        None => Ok(None),
    }
}

/// The card of a row with [`SEALED_CARD_COLUMNS`]; `None` when they are
/// null (an outer join found no card).
pub(crate) fn card_from_row(row: &sqlx::postgres::PgRow) -> anyhow::Result<Option<AttemptCard>> {
    let Some(method) = row.try_get::<Option<String>, _>("card_method_id")? else {
        return Ok(None);
    };
    Ok(Some((
        PaymentMethodId::parse(&method)?,
        sealed_card_from_row(row)?,
    )))
}

fn sealed_card_from_row(row: &sqlx::postgres::PgRow) -> anyhow::Result<SealedCard> {
    let cvc = match (
        row.try_get::<Option<String>, _>("card_cvc_key_id")?,
        row.try_get::<Option<Vec<u8>>, _>("card_cvc_wrapped_key")?,
        row.try_get::<Option<Vec<u8>>, _>("card_cvc_ciphertext")?,
    ) {
        (Some(key_id), Some(wrapped_key), Some(ciphertext)) => Some(SealedColumns {
            key_id,
            wrapped_key,
            ciphertext,
        }),
        _ => None,
    };
    Ok(SealedCard {
        exp_month: row.try_get("card_exp_month")?,
        exp_year: row.try_get("card_exp_year")?,
        pan: SealedColumns {
            key_id: row.try_get("card_pan_key_id")?,
            wrapped_key: row.try_get("card_pan_wrapped_key")?,
            ciphertext: row.try_get("card_pan_ciphertext")?,
        },
        cvc,
    })
}

/// An attempt the intent no longer wants that may still hold money at the
/// processor: neither the intent's pending operation nor its authorized
/// attempt, yet not known to be declined, voided or superseded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanedAttempt {
    pub id: AttemptId,
    pub merchant_id: MerchantId,
    pub payment_intent: PaymentIntentId,
}

/// Orphaned attempts older than `age_seconds`, oldest first: the
/// reconciler voids them (their void command may have failed or been
/// dead-lettered).
pub async fn orphaned(
    pool: &PgPool,
    age_seconds: i64,
    limit: i64,
) -> anyhow::Result<Vec<OrphanedAttempt>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "select a.id, a.merchant_id, a.payment_intent_id
         from payment_attempts a join payment_intents i on i.id = a.payment_intent_id
         where a.status in ('pending', 'requires_action', 'approved')
           and i.authorized_attempt_id is distinct from a.id
           and coalesce(i.pending->>'attempt', '') <> a.id
           and a.created < extract(epoch from now())::bigint - $1
         order by a.created limit $2",
    )
    .bind(age_seconds)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, merchant, intent)| {
            Ok(OrphanedAttempt {
                id: AttemptId::parse(&id)?,
                merchant_id: MerchantId::parse(&merchant)?,
                payment_intent: PaymentIntentId::parse(&intent)?,
            })
        })
        .collect()
}
