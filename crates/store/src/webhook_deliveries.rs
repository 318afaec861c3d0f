//! Webhook deliveries: the merchant webhook dispatcher's durable schedule,
//! on the merchant's shard (shard migration `0004_webhook_deliveries.sql`).
//!
//! One delivery per (event, endpoint), created with the event itself, in the
//! same statement and transaction ([`crate::events::record`]: the fan-out).
//! The dispatcher then
//! [`claim_due`]s deliveries — a short statement that pushes each one's
//! `next_attempt_at_ms` past the attempt's timeout, so no row lock is held
//! while the merchant's server is called — and [`record_attempt`] writes the
//! outcome and the next step in another. A dispatcher that dies between the
//! two leaves a delivery that becomes due again when its lease runs out:
//! a later retry, never a lost delivery.
//!
//! Times are Unix milliseconds from the dispatcher's injected clock.

use snakepay_domain::ids::{EventId, MerchantId, WebhookEndpointId};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Row};

use crate::events::EventRecord;
use crate::intents::SealedColumns;
use crate::webhook_endpoints::EndpointStatus;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// A 2xx answer arrived in time.
    Succeeded,
    /// Given up: the retry window ran out, or the endpoint or event is gone.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A delivery row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: EventId,
    pub endpoint_id: WebhookEndpointId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub first_attempt_at_ms: Option<i64>,
    pub last_attempt_at_ms: Option<i64>,
    pub last_http_status: Option<i16>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, event_id, endpoint_id, merchant_id, livemode, status, attempts,
    next_attempt_at_ms, created_at_ms, first_attempt_at_ms, last_attempt_at_ms,
    last_http_status, last_error, delivered_at_ms";

fn from_row(row: &PgRow) -> anyhow::Result<DeliveryRecord> {
    let status: String = row.try_get("status")?;
    Ok(DeliveryRecord {
        id: row.try_get("id")?,
        event_id: EventId::parse(&row.try_get::<String, _>("event_id")?)?,
        endpoint_id: WebhookEndpointId::parse(&row.try_get::<String, _>("endpoint_id")?)?,
        merchant_id: MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?,
        livemode: row.try_get("livemode")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown webhook delivery status {status:?}"))?,
        attempts: row.try_get("attempts")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        first_attempt_at_ms: row.try_get("first_attempt_at_ms")?,
        last_attempt_at_ms: row.try_get("last_attempt_at_ms")?,
        last_http_status: row.try_get("last_http_status")?,
        last_error: row.try_get("last_error")?,
        delivered_at_ms: row.try_get("delivered_at_ms")?,
    })
}

/// The endpoint a claimed delivery goes to, as it is at claim time.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub url: String,
    pub status: EndpointStatus,
    pub deleted: bool,
    /// The sealed `whsec_…` secret (aad = the endpoint ID).
    pub secret: SealedColumns,
}

/// A delivery this dispatcher now holds until `lease_until_ms`, with what
/// it takes to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    /// This claim's attempt number (1 for the first).
    pub attempt: i32,
    pub first_attempt_at_ms: i64,
    pub lease_until_ms: i64,
    pub event_id: EventId,
    pub endpoint_id: WebhookEndpointId,
    pub merchant_id: MerchantId,
    pub livemode: bool,
    /// `None` if the event is gone (it never should be).
    pub event: Option<EventRecord>,
    /// `None` if the endpoint row is gone (deleted endpoints are kept, see
    /// [`DeliveryTarget::deleted`]).
    pub target: Option<DeliveryTarget>,
    /// The trace the delivery continues (W3C `traceparent`), if any.
    pub traceparent: Option<String>,
}

/// Claims up to `limit` pending deliveries due at `now_ms`, oldest first:
/// each one's attempt count goes up by one, its first attempt time is set if
/// unset, and it is not due again before `lease_until_ms`. One statement,
/// committed on its own; rows another dispatcher is claiming right now are
/// skipped, not waited for. Reads the endpoint's sealed secret for the
/// dispatcher to open (the one reader besides
/// [`webhook_endpoints::sealed_secret`](crate::webhook_endpoints::sealed_secret)).
pub async fn claim_due(
    executor: impl PgExecutor<'_>,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> anyhow::Result<Vec<ClaimedDelivery>> {
    let rows = sqlx::query(
        "with due as (
             select id from webhook_deliveries
             where status = 'pending' and next_attempt_at_ms <= $1
             order by next_attempt_at_ms
             limit $3
             for update skip locked
         ), claimed as (
             update webhook_deliveries delivery
             set attempts = delivery.attempts + 1,
                 next_attempt_at_ms = $2,
                 first_attempt_at_ms = coalesce(delivery.first_attempt_at_ms, $1)
             from due where delivery.id = due.id
             returning delivery.id, delivery.event_id, delivery.endpoint_id, delivery.merchant_id,
                 delivery.livemode, delivery.attempts, delivery.first_attempt_at_ms,
                 delivery.traceparent
         )
         select claimed.*,
             event.id is not null as event_found, event.type as event_type,
             event.api_version as event_api_version, event.object as event_object,
             event.request_id as event_request_id, event.created as event_created,
             endpoint.id is not null as endpoint_found, endpoint.url as endpoint_url,
             endpoint.status as endpoint_status, endpoint.deleted_at is not null as endpoint_deleted,
             endpoint.secret_key_id, endpoint.secret_wrapped, endpoint.secret_ciphertext
         from claimed
         left join events event on event.id = claimed.event_id
             and event.merchant_id = claimed.merchant_id and event.livemode = claimed.livemode
         left join webhook_endpoints endpoint on endpoint.id = claimed.endpoint_id
             and endpoint.merchant_id = claimed.merchant_id and endpoint.livemode = claimed.livemode
         order by claimed.id",
    )
    .bind(now_ms)
    .bind(lease_until_ms)
    .bind(i64::from(limit))
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| claimed_from_row(row, lease_until_ms))
        .collect()
}

fn claimed_from_row(row: &PgRow, lease_until_ms: i64) -> anyhow::Result<ClaimedDelivery> {
    let event_id = EventId::parse(&row.try_get::<String, _>("event_id")?)?;
    let merchant_id = MerchantId::parse(&row.try_get::<String, _>("merchant_id")?)?;
    let livemode: bool = row.try_get("livemode")?;
    let event = if row.try_get("event_found")? {
        Some(EventRecord {
            id: event_id,
            merchant_id,
            livemode,
            event_type: row.try_get("event_type")?,
            api_version: row.try_get("event_api_version")?,
            object: row.try_get("event_object")?,
            request_id: row.try_get("event_request_id")?,
            created: row.try_get("event_created")?,
        })
    } else {
        None
    };
    let target = if row.try_get("endpoint_found")? {
        let status: String = row.try_get("endpoint_status")?;
        Some(DeliveryTarget {
            url: row.try_get("endpoint_url")?,
            status: EndpointStatus::parse(&status)
                .ok_or_else(|| anyhow::anyhow!("unknown webhook endpoint status {status:?}"))?,
            deleted: row.try_get("endpoint_deleted")?,
            secret: SealedColumns {
                key_id: row.try_get("secret_key_id")?,
                wrapped_key: row.try_get("secret_wrapped")?,
                ciphertext: row.try_get("secret_ciphertext")?,
            },
        })
    } else {
        None
    };
    Ok(ClaimedDelivery {
        id: row.try_get("id")?,
        attempt: row.try_get("attempts")?,
        first_attempt_at_ms: row.try_get("first_attempt_at_ms")?,
        lease_until_ms,
        event_id,
        endpoint_id: WebhookEndpointId::parse(&row.try_get::<String, _>("endpoint_id")?)?,
        merchant_id,
        livemode,
        event,
        target,
        traceparent: row.try_get("traceparent")?,
    })
}

/// One attempt's outcome, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub attempt: i32,
    pub at_ms: i64,
    /// The receiver's status, if it answered.
    pub http_status: Option<i16>,
    /// Why the attempt failed without (or besides) a status.
    pub error: Option<String>,
    pub latency_ms: i64,
}

/// What happens to the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Succeeded,
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// Give up.
    Failed,
}

/// Appends the attempt and moves the delivery on, in one statement. A
/// success applies while the delivery is pending; a failure only while the
/// delivery still carries this attempt number, so a dispatcher whose lease
/// ran out cannot undo the schedule of the one that claimed it next.
/// Returns whether the delivery changed.
pub async fn record_attempt(
    executor: impl PgExecutor<'_>,
    attempt: &AttemptRecord,
    resolution: Resolution,
) -> anyhow::Result<bool> {
    let (status, next_attempt_at_ms) = match resolution {
        Resolution::Succeeded => (DeliveryStatus::Succeeded, None),
        Resolution::RetryAt(at_ms) => (DeliveryStatus::Pending, Some(at_ms)),
        Resolution::Failed => (DeliveryStatus::Failed, None),
    };
    let updated = sqlx::query(
        "with attempt as (
             insert into webhook_delivery_attempts
                 (delivery_id, attempt, at_ms, http_status, error, latency_ms)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (delivery_id, attempt) do nothing
         )
         update webhook_deliveries
         set status = $7,
             next_attempt_at_ms = coalesce($8, next_attempt_at_ms),
             last_attempt_at_ms = $3,
             last_http_status = $4,
             last_error = $5,
             delivered_at_ms = case when $7 = 'succeeded' then $3 end
         where id = $1 and status = 'pending' and (attempts = $2 or $7 = 'succeeded')",
    )
    .bind(attempt.delivery_id)
    .bind(attempt.attempt)
    .bind(attempt.at_ms)
    .bind(attempt.http_status)
    .bind(&attempt.error)
    .bind(attempt.latency_ms)
    .bind(status.as_str())
    .bind(next_attempt_at_ms)
    .execute(executor)
    .await?;
    Ok(updated.rows_affected() == 1)
}

pub async fn find(
    executor: impl PgExecutor<'_>,
    id: i64,
) -> anyhow::Result<Option<DeliveryRecord>> {
    let row = sqlx::query(&format!(
        "select {COLUMNS} from webhook_deliveries where id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The deliveries of one event, oldest first.
pub async fn for_event(
    executor: impl PgExecutor<'_>,
    event: EventId,
) -> anyhow::Result<Vec<DeliveryRecord>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from webhook_deliveries where event_id = $1 order by id"
    ))
    .bind(event.to_string())
    .fetch_all(executor)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The recorded attempts of one delivery, in order.
pub async fn attempts(
    executor: impl PgExecutor<'_>,
    delivery: i64,
) -> anyhow::Result<Vec<AttemptRecord>> {
    let rows = sqlx::query(
        "select delivery_id, attempt, at_ms, http_status, error, latency_ms
         from webhook_delivery_attempts where delivery_id = $1 order by attempt",
    )
    .bind(delivery)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AttemptRecord {
                delivery_id: row.try_get("delivery_id")?,
                attempt: row.try_get("attempt")?,
                at_ms: row.try_get("at_ms")?,
                http_status: row.try_get("http_status")?,
                error: row.try_get("error")?,
                latency_ms: row.try_get("latency_ms")?,
            })
        })
        .collect()
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::collections::BTreeMap;

    use snakepay_domain::effects::EventType;
    use snakepay_domain::ids::{RegionNumber, ShardNumber};

    use super::*;
    use crate::events::{self, EventSource};
    use crate::testing;
    use crate::webhook_endpoints::{self, WebhookEndpointRecord};

    const NOW_MS: i64 = 1_800_000_000_000;

    #[tokio::test]
    async fn deliveries_are_created_with_their_event_claimed_under_a_lease_and_attempts_are_append_only()
     {
        let db = testing::fresh(1).await.unwrap();
        let pool = db.store.shard(ShardNumber(0)).unwrap();
        let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
        let endpoint = WebhookEndpointRecord {
            id: WebhookEndpointId::generate(RegionNumber(1), ShardNumber(0)).unwrap(),
            merchant_id: merchant,
            livemode: false,
            url: "http://localhost/hook".to_owned(),
            enabled_events: vec!["charge.succeeded".to_owned()],
            description: None,
            metadata: BTreeMap::new(),
            status: EndpointStatus::Enabled,
            created: NOW_MS / 1000,
        };
        let sealed = SealedColumns {
            key_id: "kek-test".to_owned(),
            wrapped_key: vec![1; 61],
            ciphertext: vec![2; 100],
        };
        let source = EventSource {
            merchant_id: merchant,
            livemode: false,
            api_version: "2024-06-20",
            request_id: None,
            created: NOW_MS / 1000,
        };
        let snapshot = serde_json::json!({"id": "ch_1", "object": "charge"});
        let subscribed =
            events::for_types(source, &[EventType::ChargeSucceeded], &snapshot).unwrap();
        let other = events::for_types(source, &[EventType::ChargeFailed], &snapshot).unwrap();
        let mut tx = pool.begin().await.unwrap();
        webhook_endpoints::insert(&mut tx, &endpoint, &sealed)
            .await
            .unwrap();
        events::record(&mut tx, &subscribed).await.unwrap();
        events::record(&mut tx, &other).await.unwrap();
        let event = subscribed[0].id;
        tx.commit().await.unwrap();
        // The subscribed event got one delivery, due at its creation; the
        // other type none.
        let created = for_event(pool, event).await.unwrap();
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0].endpoint_id, endpoint.id);
        assert_eq!(created[0].next_attempt_at_ms, NOW_MS);
        assert!(for_event(pool, other[0].id).await.unwrap().is_empty());

        // A live-mode event of the same merchant reaches no test-mode endpoint.
        let live_source = EventSource {
            livemode: true,
            ..source
        };
        let live =
            events::for_types(live_source, &[EventType::ChargeSucceeded], &snapshot).unwrap();
        let mut tx = pool.begin().await.unwrap();
        events::record(&mut tx, &live).await.unwrap();
        tx.commit().await.unwrap();
        assert!(for_event(pool, live[0].id).await.unwrap().is_empty());

        // Rolled back with its event: no delivery without the event.
        let rolled_back =
            events::for_types(source, &[EventType::ChargeSucceeded], &snapshot).unwrap();
        let mut tx = pool.begin().await.unwrap();
        events::record(&mut tx, &rolled_back).await.unwrap();
        tx.rollback().await.unwrap();
        assert!(for_event(pool, rolled_back[0].id).await.unwrap().is_empty());

        let lease_until = NOW_MS + 40_000;
        let claimed = claim_due(pool, NOW_MS, lease_until, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let delivery = &claimed[0];
        assert_eq!(delivery.attempt, 1);
        assert_eq!(delivery.first_attempt_at_ms, NOW_MS);
        assert_eq!(delivery.event.as_ref().unwrap().object, snapshot);
        let target = delivery.target.as_ref().unwrap();
        assert!(!target.deleted);
        assert_eq!(target.secret.ciphertext, sealed.ciphertext);
        assert!(
            claim_due(pool, lease_until - 1, lease_until, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let attempt = AttemptRecord {
            delivery_id: delivery.id,
            attempt: 1,
            at_ms: NOW_MS,
            http_status: Some(502),
            error: None,
            latency_ms: 12,
        };
        assert!(
            record_attempt(pool, &attempt, Resolution::RetryAt(NOW_MS + 60_000))
                .await
                .unwrap()
        );
        let record = find(pool, delivery.id).await.unwrap().unwrap();
        assert_eq!(record.status, DeliveryStatus::Pending);
        assert_eq!(record.next_attempt_at_ms, NOW_MS + 60_000);
        assert_eq!(record.last_http_status, Some(502));
        assert_eq!(attempts(pool, delivery.id).await.unwrap(), vec![attempt]);

        let error = sqlx::query("update webhook_delivery_attempts set http_status = 200")
            .execute(pool)
            .await
            .unwrap_err();
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{error}");
    }
}
