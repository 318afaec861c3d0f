//! Charges: the API's view of a payment attempt. A charge is not a table of
//! its own: it is derived from the attempt, the card it used and the intent's
//! money fields, so it can never disagree with them.

use snakepay_domain::ids::{ChargeId, MerchantId};
use sqlx::{PgExecutor, Row};

use crate::attempts::{AuthorizationRecord, failure_code};
use crate::intents::IntentRecord;

/// What the charge object shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeView {
    pub id: String,
    pub payment_intent: String,
    pub livemode: bool,
    pub amount: i64,
    pub currency: String,
    /// The attempt's status: pending, requires_action, approved, declined, superseded.
    pub attempt_status: String,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created: i64,
    pub payment_method: String,
    pub card_brand: String,
    pub card_last4: String,
    pub card_exp_month: i16,
    pub card_exp_year: i16,
    pub card_fingerprint: String,
    /// The intent's totals; they belong to this charge when it is the
    /// intent's latest charge.
    pub is_latest: bool,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub customer: Option<String>,
    pub description: Option<String>,
    pub metadata: serde_json::Value,
    /// The intent's version: a charge changes only in the transactions that
    /// change its intent (the attempt's outcome, a new attempt, a refund),
    /// so this versions the charge too (its cache entry depends on it).
    pub intent_version: i64,
}

impl ChargeView {
    /// The charge as it will be once the authorization answer recorded by
    /// `attempt` commits with `intent` (the intent after the answer, at its
    /// new version): what [`find`] would read after that commit, computed
    /// from what it read before, for the answer's events.
    pub fn after_authorization(
        mut self,
        intent: &IntentRecord,
        attempt: &AuthorizationRecord<'_>,
    ) -> anyhow::Result<ChargeView> {
        self.attempt_status = attempt.status.as_str().to_owned();
        self.failure_code = failure_code(attempt.error)?;
        self.failure_message = attempt.error.map(|e| e.message.clone());
        self.with_intent(intent)
    }

    /// The intent's share of the charge: its totals, customer, description,
    /// metadata and version, as [`find`] reads them from the intent's row.
    fn with_intent(mut self, intent: &IntentRecord) -> anyhow::Result<ChargeView> {
        self.is_latest =
            intent.intent.latest_charge.map(|c| c.to_string()).as_ref() == Some(&self.id);
        self.payment_intent = intent.intent.id.to_string();
        self.livemode = intent.livemode;
        self.amount_received = intent.intent.amount_received;
        self.amount_refunded = intent.intent.amount_refunded;
        self.customer = intent.customer.map(|c| c.to_string());
        self.description = intent.description.clone();
        self.metadata = serde_json::to_value(&intent.metadata)?;
        self.intent_version = intent.version;
        Ok(self)
    }
}

/// The charge's own columns when read with an attempt `a` and its payment
/// method `m` (aliased `charge_*`), as [`crate::intents::load_by_id_with_card`]
/// reads them next to the intent: the basis of the outcome's charge
/// snapshot, without a read of its own.
pub(crate) const OF_ATTEMPT_COLUMNS: &str = "a.charge_id as charge_id, a.amount as charge_amount,
     a.currency as charge_currency, a.status as charge_status,
     a.failure_code as charge_failure_code, a.failure_message as charge_failure_message,
     a.created as charge_created, m.id as charge_payment_method, m.brand as charge_card_brand,
     m.last4 as charge_card_last4, m.exp_month as charge_card_exp_month,
     m.exp_year as charge_card_exp_year, m.fingerprint as charge_card_fingerprint";

/// The charge of a row with [`OF_ATTEMPT_COLUMNS`] and its intent, as
/// [`find`] would read it; `None` when they are null (an outer join found
/// no attempt).
pub(crate) fn of_attempt_row(
    row: &sqlx::postgres::PgRow,
    intent: &IntentRecord,
) -> anyhow::Result<Option<ChargeView>> {
    let Some(id) = row.try_get::<Option<String>, _>("charge_id")? else {
        return Ok(None);
    };
    own_columns(row, id)?.with_intent(intent).map(Some)
}

/// The charge's own columns ([`OF_ATTEMPT_COLUMNS`]) of `row`; the intent's
/// share is left empty for the caller to fill.
fn own_columns(row: &sqlx::postgres::PgRow, id: String) -> anyhow::Result<ChargeView> {
    Ok(ChargeView {
        id,
        amount: row.try_get("charge_amount")?,
        currency: row.try_get("charge_currency")?,
        attempt_status: row.try_get("charge_status")?,
        failure_code: row.try_get("charge_failure_code")?,
        failure_message: row.try_get("charge_failure_message")?,
        created: row.try_get("charge_created")?,
        payment_method: row.try_get("charge_payment_method")?,
        card_brand: row.try_get("charge_card_brand")?,
        card_last4: row.try_get("charge_card_last4")?,
        card_exp_month: row.try_get("charge_card_exp_month")?,
        card_exp_year: row.try_get("charge_card_exp_year")?,
        card_fingerprint: row.try_get("charge_card_fingerprint")?,
        payment_intent: String::new(),
        livemode: false,
        is_latest: false,
        amount_received: 0,
        amount_refunded: 0,
        customer: None,
        description: None,
        metadata: serde_json::Value::Null,
        intent_version: 0,
    })
}

pub async fn find(
    executor: impl PgExecutor<'_>,
    id: ChargeId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<ChargeView>> {
    let row = sqlx::query(&format!(
        "select {OF_ATTEMPT_COLUMNS}, a.payment_intent_id, i.livemode,
                i.latest_charge_id is not distinct from a.charge_id as is_latest,
                i.amount_received, i.amount_refunded, i.customer_id, i.description, i.metadata,
                i.version
         from payment_attempts a
         join payment_intents i on i.id = a.payment_intent_id
         join payment_methods m on m.id = a.payment_method_id
         where a.charge_id = $1 and a.merchant_id = $2 and i.livemode = $3"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // The intent's share, as `ChargeView::with_intent` computes it from a
    // loaded intent.
    Ok(Some(ChargeView {
        payment_intent: row.try_get("payment_intent_id")?,
        livemode: row.try_get("livemode")?,
        is_latest: row.try_get("is_latest")?,
        amount_received: row.try_get("amount_received")?,
        amount_refunded: row.try_get("amount_refunded")?,
        customer: row.try_get("customer_id")?,
        description: row.try_get("description")?,
        metadata: row.try_get("metadata")?,
        intent_version: row.try_get("version")?,
        ..own_columns(&row, row.try_get("charge_id")?)?
    }))
}

/// The intent whose latest (successful or current) charge this is, for
/// refunds by `charge`. An earlier, failed charge of the same intent is not
/// refundable and is not found.
pub async fn payment_intent_of(
    executor: impl PgExecutor<'_>,
    id: ChargeId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "select i.id from payment_intents i
         where i.latest_charge_id = $1 and i.merchant_id = $2 and i.livemode = $3",
    )
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?)
}
