//! Events (`evt_…`): snapshots of objects at the moment something happened,
//! written with the change itself and announced through the outbox.

use snakepay_domain::effects::EventType;
use snakepay_domain::ids::{EventId, MerchantId};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::intents::{ListQuery, Page, bind_page, finish_page, page_clause};
use crate::outbox::{self, OutboxMessage};

#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: EventId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub event_type: String,
    pub api_version: String,
    pub object: serde_json::Value,
    pub request_id: Option<String>,
    pub created: i64,
}

/// Who an event belongs to and what caused it.
#[derive(Debug, Clone, Copy)]
pub struct EventSource<'a> {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub api_version: &'a str,
    /// The API request that caused it; `None` for outcomes the integration
    /// service commits.
    pub request_id: Option<&'a str>,
    pub created: i64,
}

/// One event per type, each with `snapshot` (the object as it now is).
pub fn for_types(
    source: EventSource<'_>,
    types: &[EventType],
    snapshot: &serde_json::Value,
) -> anyhow::Result<Vec<EventRecord>> {
    types
        .iter()
        .map(|event_type| {
            Ok(EventRecord {
                id: EventId::generate(source.merchant_id.region(), source.merchant_id.shard())?,
                merchant_id: source.merchant_id,
                livemode: source.livemode,
                event_type: event_type.as_str().to_owned(),
                api_version: source.api_version.to_owned(),
                object: snapshot.clone(),
                request_id: source.request_id.map(str::to_owned),
                created: source.created,
            })
        })
        .collect()
}

/// Writes the events and one outbox message per event (`event.<type>`).
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    events: &[EventRecord],
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let merchants: Vec<String> = events.iter().map(|e| e.merchant_id.to_string()).collect();
    let livemodes: Vec<bool> = events.iter().map(|e| e.livemode).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let versions: Vec<&str> = events.iter().map(|e| e.api_version.as_str()).collect();
    let objects: Vec<serde_json::Value> = events.iter().map(|e| e.object.clone()).collect();
    let requests: Vec<Option<&str>> = events.iter().map(|e| e.request_id.as_deref()).collect();
    let created: Vec<i64> = events.iter().map(|e| e.created).collect();
    sqlx::query(
        "insert into events (id, merchant_id, livemode, type, api_version, object, request_id, created)
         select * from unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::bigint[])",
    )
    .bind(&ids)
    .bind(&merchants)
    .bind(&livemodes)
    .bind(&types)
    .bind(&versions)
    .bind(&objects)
    .bind(&requests)
    .bind(&created)
    .execute(&mut **tx)
    .await?;
    let messages: Vec<OutboxMessage> = events
        .iter()
        .map(|e| OutboxMessage {
            routing_key: format!("event.{}", e.event_type),
            payload: serde_json::json!({
                "event_id": e.id.to_string(),
                "merchant_id": e.merchant_id.to_string(),
                "livemode": e.livemode,
                "type": e.event_type,
                "object_id": e.object.get("id").and_then(serde_json::Value::as_str),
                "created": e.created,
            }),
        })
        .collect();
    outbox::enqueue(tx, &messages).await
}

fn from_row(row: &sqlx::postgres::PgRow) -> anyhow::Result<EventRecord> {
    Ok(EventRecord {
        id: EventId::parse(&row.try_get::<String, _>("id")?)?,
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        livemode: row.try_get("livemode")?,
        event_type: row.try_get("type")?,
        api_version: row.try_get("api_version")?,
        object: row.try_get("object")?,
        request_id: row.try_get("request_id")?,
        created: row.try_get("created")?,
    })
}

const COLUMNS: &str = "id, merchant_id, livemode, type, api_version, object, request_id, created";

pub async fn find(
    pool: &PgPool,
    id: EventId,
    merchant: MerchantId,
    livemode: bool,
) -> anyhow::Result<Option<EventRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from events where id = $1 and merchant_id = $2 and livemode = $3"
    ))
    .bind(id.to_string())
    .bind(merchant.to_string())
    .bind(livemode)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Events newest first, optionally only of the given types.
pub async fn list(
    pool: &PgPool,
    merchant: MerchantId,
    livemode: bool,
    types: &[String],
    query: &ListQuery,
) -> anyhow::Result<Page<EventRecord>> {
    let (clause, backwards) = page_clause(query, 4);
    let sql = format!(
        "select {COLUMNS} from events where merchant_id = $1 and livemode = $2
         and (cardinality($3::text[]) = 0 or type = any($3)){clause}"
    );
    let statement = sqlx::query(&sql)
        .bind(merchant.to_string())
        .bind(livemode)
        .bind(types);
    let rows = bind_page(statement, query).fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(finish_page(items, query.limit, backwards))
}
