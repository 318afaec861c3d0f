//! The fan-out: turns an event's announcement (`event.<type>` from the
//! `webhooks.events` queue) into one pending delivery per subscribed
//! endpoint, committed before the message is acknowledged.

use serde::Deserialize;
use snakepay_bus::{Message, Outcome};
use snakepay_domain::ids::{EventId, MerchantId};
use snakepay_store::Store;
use snakepay_store::webhook_deliveries;

use crate::clock::{Clock, SystemClock};

/// The routing key prefix of event announcements.
const EVENT_PREFIX: &str = "event.";

/// The payload `snakepay_store::events::record` writes to the outbox.
#[derive(Debug, Deserialize)]
struct Announcement {
    event_id: String,
    merchant_id: String,
    livemode: bool,
    #[serde(rename = "type")]
    event_type: String,
}

/// The consumer's handler for the webhook queue, on the system clock.
pub async fn fan_out(store: &Store, message: &Message) -> Outcome {
    fan_out_at(store, message, &SystemClock).await
}

/// [`fan_out`] with the clock given: deliveries are due at its `now`.
///
/// A malformed announcement is rejected (to the dead-letter queue); a
/// database error asks for a redelivery; an event that does not exist is
/// acknowledged with a warning, since no redelivery can make it appear. A
/// redelivered announcement finds its deliveries made and creates none.
pub async fn fan_out_at(store: &Store, message: &Message, clock: &dyn Clock) -> Outcome {
    let (event, merchant, livemode) = match parse(message) {
        Ok(parsed) => parsed,
        Err(why) => {
            tracing::warn!(
                broker.message_id = %message.envelope.id,
                broker.routing_key = %message.routing_key,
                reason = why,
                "webhook.fan_out rejected a malformed event announcement"
            );
            return Outcome::Reject;
        }
    };
    let Ok(pool) = store.shard(merchant.shard()) else {
        tracing::warn!(
            webhook.event_id = %event,
            db.shard = %merchant.shard(),
            "webhook.fan_out rejected an event of a shard this region does not have"
        );
        return Outcome::Reject;
    };
    let result = async {
        let mut tx = pool.begin().await?;
        let fan_out = webhook_deliveries::create_for_event(
            &mut tx,
            event,
            merchant,
            livemode,
            clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        anyhow::Ok(fan_out)
    }
    .await;
    match result {
        Ok(fan_out) if !fan_out.event_found => {
            tracing::warn!(
                webhook.event_id = %event,
                merchant.id = %merchant,
                "webhook.fan_out found no such event; nothing to deliver"
            );
            Outcome::Ack
        }
        Ok(fan_out) => {
            tracing::debug!(
                webhook.event_id = %event,
                webhook.deliveries_created = fan_out.created,
                broker.redelivered = message.redelivered,
                "webhook.fan_out done"
            );
            Outcome::Ack
        }
        Err(error) => {
            tracing::warn!(
                webhook.event_id = %event,
                error.chain = %format!("{error:#}"),
                "webhook.fan_out failed; the announcement will be redelivered"
            );
            Outcome::Retry
        }
    }
}

fn parse(message: &Message) -> Result<(EventId, MerchantId, bool), &'static str> {
    let Some(routed_type) = message.routing_key.strip_prefix(EVENT_PREFIX) else {
        return Err("not an event announcement");
    };
    let announcement: Announcement = serde_json::from_value(message.envelope.payload.clone())
        .map_err(|_| "the payload is not an event announcement")?;
    if announcement.event_type != routed_type {
        return Err("the payload's type differs from the routing key's");
    }
    let event = EventId::parse(&announcement.event_id).map_err(|_| "invalid event_id")?;
    let merchant =
        MerchantId::parse(&announcement.merchant_id).map_err(|_| "invalid merchant_id")?;
    if event.shard() != merchant.shard() {
        return Err("the event is not on its merchant's shard");
    }
    Ok((event, merchant, announcement.livemode))
}
