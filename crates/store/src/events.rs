//! Events (`evt_…`): snapshots of objects at the moment something happened,
//! written with the change itself, together with their webhook deliveries.
//!
//! Events are not announced on the broker. Nothing consumes an announcement
//! any more: webhook deliveries are created here, in the writer's
//! transaction, and the events table, read by the object an event is about,
//! is the payment's history (`search::intent_story`). Announcing each event
//! cost an outbox row, a relay update, a broker message with its confirm,
//! delivery and ack, and a recorder insert: about a quarter of a checkout's
//! CPU (docs/performance.md).

use snakepay_domain::effects::EventType;
use snakepay_domain::ids::{EventId, MerchantId};
use sqlx::{PgPool, Postgres, Row, Transaction};

use crate::compose::Statement;
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

/// Writes the events and their webhook deliveries; see [`record_with`].
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    events: &[EventRecord],
) -> anyhow::Result<()> {
    record_with(tx, events, &[]).await
}

/// Writes the events, their webhook deliveries and `also` (the change's
/// processor commands) to the outbox — all in one statement, because every
/// round trip inside a payment's transaction costs the database more than
/// the rows themselves (docs/performance.md).
///
/// The fan-out to webhooks happens here, in the writer's transaction: one
/// pending delivery, due at the event's creation, for every endpoint of the
/// event's merchant and mode that is enabled, not deleted and subscribed to
/// the event's type (or to `*`). A delivery therefore exists exactly when
/// its event does, and costs no broker message and no transaction of its
/// own. Each delivery, like each outbox row, keeps the current span's trace
/// context.
pub async fn record_with(
    tx: &mut Transaction<'_, Postgres>,
    events: &[EventRecord],
    also: &[OutboxMessage],
) -> anyhow::Result<()> {
    if events.is_empty() {
        return outbox::enqueue(tx, also).await;
    }
    let mut statement = Statement::new();
    statement.push("with ");
    push(&mut statement, events, also, "true")?;
    statement.push(" select 1");
    statement.execute(&mut **tx).await?;
    Ok(())
}

/// [`record_with`] as CTEs of a larger statement ([`crate::compose`]):
/// `event`, `delivery` and `command`, written only where `guard` (SQL)
/// holds.
pub(crate) fn push(
    statement: &mut Statement,
    events: &[EventRecord],
    also: &[OutboxMessage],
    guard: &str,
) -> anyhow::Result<()> {
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let merchants: Vec<String> = events.iter().map(|e| e.merchant_id.to_string()).collect();
    let livemodes: Vec<bool> = events.iter().map(|e| e.livemode).collect();
    let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
    let versions: Vec<String> = events.iter().map(|e| e.api_version.clone()).collect();
    let objects: Vec<serde_json::Value> = events.iter().map(|e| e.object.clone()).collect();
    let requests: Vec<Option<String>> = events.iter().map(|e| e.request_id.clone()).collect();
    let created: Vec<i64> = events.iter().map(|e| e.created).collect();
    let (keys, payloads) = outbox::columns(also)?;
    let traceparent = snakepay_telemetry::trace::current_traceparent();
    let headers = outbox::headers(traceparent.as_deref());
    // Data-modifying CTEs all run to completion whether or not the main
    // query reads them; outbox ids follow the array's order.
    statement.push(&format!(
        "event as (
             insert into events (id, merchant_id, livemode, type, api_version, object, request_id, created)
             select * from unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::jsonb[],
                                  $7::text[], $8::bigint[])
             where {guard}
             returning id, merchant_id, livemode, type, created
         ), delivery as (
             insert into webhook_deliveries (event_id, endpoint_id, merchant_id, livemode,
                 next_attempt_at_ms, created_at_ms, traceparent)
             select event.id, endpoint.id, endpoint.merchant_id, endpoint.livemode,
                    event.created * 1000, event.created * 1000, $9
             from event join webhook_endpoints endpoint
               on endpoint.merchant_id = event.merchant_id and endpoint.livemode = event.livemode
             where endpoint.deleted_at is null and endpoint.status = 'enabled'
               and (event.type = any(endpoint.enabled_events) or '*' = any(endpoint.enabled_events))
         ), command as (
             insert into outbox (routing_key, payload, headers)
             select key, payload, $12 from unnest($10::text[], $11::jsonb[]) with ordinality as m(key, payload, n)
             where {guard}
             order by n
         )"
    ));
    statement
        .bind(ids)?
        .bind(merchants)?
        .bind(livemodes)?
        .bind(types)?
        .bind(versions)?
        .bind(objects)?
        .bind(requests)?
        .bind(created)?
        .bind(traceparent)?
        .bind(keys)?
        .bind(payloads)?
        .bind(headers)?;
    Ok(())
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
