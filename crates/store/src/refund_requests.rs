//! Operator refund requests with maker-checker (control database,
//! migration `0006_refund_requests.sql`), and executing one: the refund
//! is created on the merchant's shard through the same store functions the
//! External API uses ([`intents`], [`refunds`], [`effects`]), so the
//! integration service sends it to the processor like any other refund.

use std::collections::BTreeMap;

use serde::Serialize;
use snakepay_domain::ids::{MerchantId, PaymentIntentId, RefundId};
use snakepay_domain::payment_intent::TransitionError;
use snakepay_domain::refund::{self, NewRefund, RefundReason};
use sqlx::PgPool;

use crate::effects::{self, EffectContext};
use crate::events::EventSource;
use crate::refunds::{self, RefundRecord};
use crate::{intents, unix_now};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RefundRequest {
    pub id: String,
    pub merchant_id: String,
    pub livemode: bool,
    pub payment_intent_id: String,
    pub refund_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub status: String,
    pub requested_by: String,
    pub requested_at: i64,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
    pub decision_note: Option<String>,
    pub executed_at: Option<i64>,
    pub failure: Option<String>,
}

const COLUMNS: &str = "id, merchant_id, livemode, payment_intent_id, refund_id, amount, currency, reason, status, requested_by, requested_at, decided_by, decided_at, decision_note, executed_at, failure";

/// A new request; `status` is `pending_approval` or `approved` (under the
/// threshold: no second operator needed).
#[derive(Debug, Clone)]
pub struct NewRefundRequest<'a> {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub payment_intent_id: PaymentIntentId,
    pub refund_id: RefundId,
    pub amount: i64,
    pub currency: &'a str,
    pub reason: Option<&'a str>,
    pub requested_by: &'a str,
    pub needs_approval: bool,
}

pub async fn insert(control: &PgPool, new: &NewRefundRequest<'_>) -> anyhow::Result<RefundRequest> {
    let mut random = [0_u8; 12];
    snakepay_domain::ids::fill_random(&mut random).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = format!("rfr_{}", hex::encode(random));
    let status = if new.needs_approval {
        "pending_approval"
    } else {
        "approved"
    };
    Ok(sqlx::query_as(&format!(
        "insert into refund_requests (id, merchant_id, livemode, payment_intent_id, refund_id,
             amount, currency, reason, status, requested_by, requested_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) returning {COLUMNS}"
    ))
    .bind(id)
    .bind(new.merchant_id.to_string())
    .bind(new.livemode)
    .bind(new.payment_intent_id.to_string())
    .bind(new.refund_id.to_string())
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.reason)
    .bind(status)
    .bind(new.requested_by)
    .bind(unix_now())
    .fetch_one(control)
    .await?)
}

pub async fn find(control: &PgPool, id: &str) -> Result<Option<RefundRequest>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from refund_requests where id = $1"
    ))
    .bind(id)
    .fetch_optional(control)
    .await
}

pub async fn list(
    control: &PgPool,
    status: Option<&str>,
    starting_after: Option<&str>,
    limit: i64,
) -> Result<(Vec<RefundRequest>, bool), sqlx::Error> {
    let mut rows: Vec<RefundRequest> = sqlx::query_as(&format!(
        "select {COLUMNS} from refund_requests
         where ($1::text is null or status = $1) and ($2::text is null or id < $2)
         order by requested_at desc, id desc limit $3"
    ))
    .bind(status)
    .bind(starting_after)
    .bind(limit + 1)
    .fetch_all(control)
    .await?;
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_more))
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    #[error("no such refund request")]
    NotFound,
    #[error("the request was made by {0}; a different operator must decide it")]
    SameOperator(String),
    #[error("the request is {0}, not pending approval")]
    NotPending(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Approves (→ `approved`) or rejects (→ `rejected`) a pending request. One
/// conditional update: of two operators deciding at once, one wins.
pub async fn decide(
    control: &PgPool,
    id: &str,
    approver: &str,
    approve: bool,
    note: Option<&str>,
) -> Result<RefundRequest, DecisionError> {
    let current = find(control, id).await?.ok_or(DecisionError::NotFound)?;
    if current.requested_by == approver {
        return Err(DecisionError::SameOperator(current.requested_by));
    }
    let decided: Option<RefundRequest> = sqlx::query_as(&format!(
        "update refund_requests set status = $2, decided_by = $3, decided_at = $4, decision_note = $5
         where id = $1 and status = 'pending_approval' and requested_by <> $3
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(if approve { "approved" } else { "rejected" })
    .bind(approver)
    .bind(unix_now())
    .bind(note)
    .fetch_optional(control)
    .await?;
    match decided {
        Some(request) => Ok(request),
        None => {
            let now = find(control, id).await?.ok_or(DecisionError::NotFound)?;
            Err(DecisionError::NotPending(now.status))
        }
    }
}

/// Why an approved request could not be executed.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("the request is {0}, not approved")]
    NotApproved(String),
    #[error("the payment no longer exists")]
    PaymentMissing,
    /// The refund is not possible in the payment's current state (e.g.
    /// already refunded meanwhile); the request is marked failed.
    #[error("{0}")]
    Refused(TransitionError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What executing needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    pub control: &'a PgPool,
    pub shard: &'a PgPool,
    /// Stamped on the refund's events.
    pub api_version: &'a str,
    pub now: i64,
}

/// Creates the refund of an approved request on its shard, exactly once,
/// and marks the request executed (or failed, with the reason). The shard
/// transaction is the External API's refund path: intent row lock, the
/// domain's refund transition, the refund row, and its effects (event,
/// processor command through the outbox, journal) in one commit.
/// `invalidate` is called with the intent's ID and new version before that
/// commit (the payment intent cache's invalidation, as the API does).
pub async fn execute<F, Fut>(
    execution: Execution<'_>,
    request: &RefundRequest,
    invalidate: F,
) -> Result<RefundRecord, ExecuteError>
where
    F: FnOnce(String, i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if request.status != "approved" {
        return Err(ExecuteError::NotApproved(request.status.clone()));
    }
    let merchant = MerchantId::parse(&request.merchant_id).map_err(anyhow::Error::from)?;
    let intent_id =
        PaymentIntentId::parse(&request.payment_intent_id).map_err(anyhow::Error::from)?;
    let refund_id = RefundId::parse(&request.refund_id).map_err(anyhow::Error::from)?;
    let reason: Option<RefundReason> = request
        .reason
        .as_ref()
        .map(|r| serde_json::from_value(serde_json::Value::String(r.clone())))
        .transpose()
        .map_err(anyhow::Error::from)?;

    let mut tx = execution.shard.begin().await.map_err(anyhow::Error::from)?;
    let mut record = intents::load_for_update(&mut tx, intent_id, merchant, request.livemode)
        .await?
        .ok_or(ExecuteError::PaymentMissing)?;
    // Executed before (a retried approval after a crash): the refund exists.
    let existing = sqlx::query_scalar::<_, String>("select id from refunds where id = $1")
        .bind(&request.refund_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
    let refund_record = if existing.is_some() {
        tx.rollback().await.map_err(anyhow::Error::from)?;
        refunds::find(execution.shard, refund_id, merchant, request.livemode)
            .await?
            .ok_or_else(|| anyhow::anyhow!("refund {refund_id} vanished"))?
    } else {
        let transition = match refund::request(
            &record.intent,
            NewRefund {
                id: refund_id,
                amount: Some(request.amount),
                reason,
                created: execution.now,
            },
        ) {
            Ok(transition) => transition,
            Err(error) => {
                drop(tx);
                mark(
                    execution.control,
                    &request.id,
                    "failed",
                    Some(&error.to_string()),
                )
                .await?;
                return Err(ExecuteError::Refused(error));
            }
        };
        record.intent = transition.intent;
        intents::update(&mut tx, &mut record).await?;
        invalidate(record.intent.id.to_string(), record.version).await;
        let mut metadata = BTreeMap::new();
        metadata.insert("refund_request".to_owned(), request.id.clone());
        metadata.insert("requested_by".to_owned(), request.requested_by.clone());
        if let Some(approver) = &request.decided_by {
            metadata.insert("approved_by".to_owned(), approver.clone());
        }
        let refund_record = RefundRecord {
            refund: transition.refund,
            merchant_id: merchant,
            livemode: request.livemode,
            metadata,
        };
        refunds::insert(&mut tx, &refund_record).await?;
        let context = EffectContext {
            source: EventSource {
                merchant_id: merchant,
                livemode: request.livemode,
                api_version: execution.api_version,
                request_id: None,
                created: execution.now,
            },
            reply_to: None,
            answer_to: None,
            description: "refund",
        };
        effects::write(
            &mut tx,
            &record,
            Some(&refund_record),
            &transition.effects,
            context,
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        refund_record
    };
    mark(execution.control, &request.id, "executed", None).await?;
    Ok(refund_record)
}

async fn mark(
    control: &PgPool,
    id: &str,
    status: &str,
    failure: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "update refund_requests set status = $2, failure = $3,
             executed_at = case when $2 = 'executed' then $4 else executed_at end
         where id = $1 and status = 'approved'",
    )
    .bind(id)
    .bind(status)
    .bind(failure)
    .bind(unix_now())
    .execute(control)
    .await?;
    Ok(())
}
