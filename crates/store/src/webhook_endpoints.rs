//! A merchant's webhook endpoints (`we_…`), on the merchant's shard.
//!
//! They live on the shard rather than in the control database so that an
//! endpoint commits with its idempotency record, and so that the webhook
//! dispatcher can join events with endpoints in one database (see the shard
//! migration `0002_webhook_endpoints.sql`).
//!
//! The signing secret is stored only sealed by the vault, and only
//! [`sealed_secret`] and the dispatcher's claim
//! ([`webhook_deliveries::claim_due`](crate::webhook_deliveries::claim_due))
//! read it back: [`WebhookEndpointRecord`] does not carry it, so no response
//! built from a record can leak it.
//!
//! Deleting is soft (`deleted_at`): deliveries already recorded keep their
//! reference, while every reader here treats a deleted endpoint as missing.

use std::collections::BTreeMap;

use snakepay_domain::ids::{MerchantId, WebhookEndpointId};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, PgPool, Postgres, Row, Transaction};

use crate::intents::{ListQuery, Page, SealedColumns, bind_page, finish_page, page_clause};

/// Whether the dispatcher sends events to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointStatus {
    Enabled,
    Disabled,
}

impl EndpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointStatus::Enabled => "enabled",
            EndpointStatus::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<EndpointStatus> {
        match text {
            "enabled" => Some(EndpointStatus::Enabled),
            "disabled" => Some(EndpointStatus::Disabled),
            _ => None,
        }
    }
}

/// An endpoint as the API shows it: everything but the signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpointRecord {
    pub id: WebhookEndpointId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub url: String,
    /// Event type names (`payment_intent.succeeded`) or `*` for all.
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub status: EndpointStatus,
    pub created: i64,
}

const COLUMNS: &str =
    "id, merchant_id, livemode, url, enabled_events, description, metadata, status, created";

fn from_row(row: &PgRow) -> anyhow::Result<WebhookEndpointRecord> {
    let status: String = row.try_get("status")?;
    Ok(WebhookEndpointRecord {
        id: WebhookEndpointId::parse(&row.try_get::<String, _>("id")?)?,
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        livemode: row.try_get("livemode")?,
        url: row.try_get("url")?,
        enabled_events: row.try_get("enabled_events")?,
        description: row.try_get("description")?,
        metadata: serde_json::from_value(row.try_get("metadata")?)?,
        status: EndpointStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown webhook endpoint status {status:?}"))?,
        created: row.try_get("created")?,
    })
}

/// Inserts a new endpoint with its sealed signing secret.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    endpoint: &WebhookEndpointRecord,
    secret: &SealedColumns,
) -> anyhow::Result<()> {
    sqlx::query(
        "insert into webhook_endpoints (id, merchant_id, livemode, url, enabled_events, description,
             metadata, status, secret_key_id, secret_wrapped, secret_ciphertext, created)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(endpoint.id.to_string())
    .bind(endpoint.merchant_id.to_string())
    .bind(endpoint.livemode)
    .bind(&endpoint.url)
    .bind(&endpoint.enabled_events)
    .bind(&endpoint.description)
    .bind(serde_json::to_value(&endpoint.metadata)?)
    .bind(endpoint.status.as_str())
    .bind(&secret.key_id)
    .bind(&secret.wrapped_key)
    .bind(&secret.ciphertext)
    .bind(endpoint.created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// An endpoint of this merchant and mode, unless deleted.
pub async fn find(
    executor: impl PgExecutor<'_>,
    id: WebhookEndpointId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<WebhookEndpointRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from webhook_endpoints
         where id = $1 and merchant_id = $2 and livemode = $3 and deleted_at is null"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Like [`find`], locking the row until the transaction ends, so that
/// concurrent updates apply one after the other.
pub async fn load_for_update(
    tx: &mut Transaction<'_, Postgres>,
    id: WebhookEndpointId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<WebhookEndpointRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from webhook_endpoints
         where id = $1 and merchant_id = $2 and livemode = $3 and deleted_at is null for update"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Saves the mutable fields (URL, events, description, metadata, status).
/// The caller loaded the row with [`load_for_update`] in the same
/// transaction. The secret never changes here.
pub async fn update(
    tx: &mut Transaction<'_, Postgres>,
    endpoint: &WebhookEndpointRecord,
) -> anyhow::Result<()> {
    let updated = sqlx::query(
        "update webhook_endpoints set url = $4, enabled_events = $5, description = $6,
             metadata = $7, status = $8
         where id = $1 and merchant_id = $2 and livemode = $3 and deleted_at is null",
    )
    .bind(endpoint.id.to_string())
    .bind(endpoint.merchant_id.to_string())
    .bind(endpoint.livemode)
    .bind(&endpoint.url)
    .bind(&endpoint.enabled_events)
    .bind(&endpoint.description)
    .bind(serde_json::to_value(&endpoint.metadata)?)
    .bind(endpoint.status.as_str())
    .execute(&mut **tx)
    .await?;
    anyhow::ensure!(
        updated.rows_affected() == 1,
        "webhook endpoint {} vanished while locked",
        endpoint.id
    );
    Ok(())
}

/// Marks the endpoint deleted at `now`; false if there was none to delete
/// (unknown, another merchant's or mode's, or already deleted).
pub async fn soft_delete(
    tx: &mut Transaction<'_, Postgres>,
    id: WebhookEndpointId,
    merchant: MerchantId,
    livemode: bool,
    now: i64,
) -> anyhow::Result<bool> {
    let deleted = sqlx::query(
        "update webhook_endpoints set deleted_at = greatest($4, created)
         where id = $1 and merchant_id = $2 and livemode = $3 and deleted_at is null",
    )
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Endpoints newest first, deleted ones left out.
pub async fn list(
    pool: &PgPool,
    merchant: MerchantId,
    livemode: bool,
    query: &ListQuery,
) -> anyhow::Result<Page<WebhookEndpointRecord>> {
    let (clause, backwards) = page_clause(query, 3);
    let sql = format!(
        "select {COLUMNS} from webhook_endpoints
         where merchant_id = $1 and livemode = $2 and deleted_at is null{clause}"
    );
    let statement = sqlx::query(&sql).bind(merchant.to_string()).bind(livemode);
    let rows = bind_page(statement, query).fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(finish_page(items, query.limit, backwards))
}

/// The sealed signing secret of an endpoint that is not deleted, for the
/// webhook dispatcher (the only holder of the vault's `decrypt` feature)
/// to open with the endpoint ID as aad.
pub async fn sealed_secret(
    executor: impl PgExecutor<'_>,
    id: WebhookEndpointId,
    merchant: MerchantId,
) -> anyhow::Result<Option<SealedColumns>> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "select secret_key_id, secret_wrapped, secret_ciphertext from webhook_endpoints
         where id = $1 and merchant_id = $2 and deleted_at is null",
    )
    .bind(id.to_string())
    .bind(merchant.to_string())
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(key_id, wrapped_key, ciphertext)| SealedColumns {
        key_id,
        wrapped_key,
        ciphertext,
    }))
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use snakepay_domain::ids::{RegionNumber, ShardNumber};

    use super::*;
    use crate::testing;

    fn endpoint(merchant: MerchantId, livemode: bool, url: &str) -> WebhookEndpointRecord {
        WebhookEndpointRecord {
            id: WebhookEndpointId::generate(RegionNumber(1), ShardNumber(0)).unwrap(),
            merchant_id: merchant,
            livemode,
            url: url.to_owned(),
            enabled_events: vec!["payment_intent.succeeded".to_owned()],
            description: Some("orders".to_owned()),
            metadata: BTreeMap::from([("team".to_owned(), "payments".to_owned())]),
            status: EndpointStatus::Enabled,
            created: 1_800_000_000,
        }
    }

    fn sealed() -> SealedColumns {
        SealedColumns {
            key_id: "kek-test".to_owned(),
            wrapped_key: vec![1; 61],
            ciphertext: vec![2; 100],
        }
    }

    #[tokio::test]
    async fn endpoints_round_trip_update_and_disappear_when_deleted() {
        let db = testing::fresh(1).await.unwrap();
        let pool = db.store.shard(ShardNumber(0)).unwrap();
        let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
        let mut record = endpoint(merchant, false, "http://localhost/hook");
        let mut tx = pool.begin().await.unwrap();
        insert(&mut tx, &record, &sealed()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            find(pool, record.id, merchant, false).await.unwrap(),
            Some(record.clone())
        );
        assert_eq!(find(pool, record.id, merchant, true).await.unwrap(), None);
        let secret = sealed_secret(pool, record.id, merchant)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret.ciphertext, sealed().ciphertext);

        let mut tx = pool.begin().await.unwrap();
        let mut locked = load_for_update(&mut tx, record.id, merchant, false)
            .await
            .unwrap()
            .unwrap();
        locked.status = EndpointStatus::Disabled;
        locked.enabled_events = vec!["*".to_owned()];
        update(&mut tx, &locked).await.unwrap();
        tx.commit().await.unwrap();
        record = find(pool, record.id, merchant, false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record, locked);

        let query = ListQuery {
            limit: 10,
            ..ListQuery::default()
        };
        assert_eq!(
            list(pool, merchant, false, &query)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let mut tx = pool.begin().await.unwrap();
        assert!(
            soft_delete(&mut tx, record.id, merchant, false, 1_800_000_100)
                .await
                .unwrap()
        );
        assert!(
            !soft_delete(&mut tx, record.id, merchant, false, 1_800_000_200)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        assert_eq!(find(pool, record.id, merchant, false).await.unwrap(), None);
        assert!(
            list(pool, merchant, false, &query)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(
            sealed_secret(pool, record.id, merchant)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_database_refuses_plain_http_in_live_mode_and_empty_event_lists() {
        let db = testing::fresh(1).await.unwrap();
        let pool = db.store.shard(ShardNumber(0)).unwrap();
        let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
        let mut no_events = endpoint(merchant, false, "https://example.com/hook");
        no_events.enabled_events.clear();
        for bad in [
            endpoint(merchant, true, "http://example.com/hook"),
            no_events,
        ] {
            let mut tx = pool.begin().await.unwrap();
            let error = insert(&mut tx, &bad, &sealed()).await.unwrap_err();
            let code = error
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .and_then(|e| e.code())
                .map(|c| c.into_owned());
            assert_eq!(code.as_deref(), Some("23514"), "{error:#}");
        }
    }
}
