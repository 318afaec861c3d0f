//! Customers on a shard.

use std::collections::BTreeMap;

use snakepay_domain::ids::{CustomerId, MerchantId};
use sqlx::{PgExecutor, Postgres, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    /// Stripe's address object (line1, line2, city, state, postal_code, country).
    pub address: Option<BTreeMap<String, String>>,
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    customer: &CustomerRecord,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into customers (id, merchant_id, livemode, email, name, description, phone, address, metadata, created)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(customer.id.to_string())
    .bind(customer.merchant_id.to_string())
    .bind(customer.livemode)
    .bind(&customer.email)
    .bind(&customer.name)
    .bind(&customer.description)
    .bind(&customer.phone)
    .bind(customer.address.as_ref().map(serde_json::to_value).transpose()?)
    .bind(serde_json::to_value(&customer.metadata)?)
    .bind(customer.created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

type CustomerRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<serde_json::Value>,
    serde_json::Value,
    i64,
);

pub async fn find(
    executor: impl PgExecutor<'_>,
    id: CustomerId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<CustomerRecord>> {
    let row: Option<CustomerRow> = sqlx::query_as(
        "select email, name, description, phone, address, metadata, created from customers
         where id = $1 and merchant_id = $2 and livemode = $3",
    )
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    row.map(
        |(email, name, description, phone, address, metadata, created)| {
            Ok(CustomerRecord {
                id,
                merchant_id: merchant,
                livemode,
                email,
                name,
                description,
                phone,
                address: address.map(serde_json::from_value).transpose()?,
                metadata: serde_json::from_value(metadata)?,
                created,
            })
        },
    )
    .transpose()
}
