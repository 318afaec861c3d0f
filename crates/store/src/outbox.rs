//! The transactional outbox (DESIGN.md §5): messages for the broker are
//! written in the same transaction as the state change they announce, and a
//! relay publishes them afterwards. The broker is never the only copy.

use sqlx::{Postgres, Transaction};

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// E.g. `command.authorize`, `event.payment_intent.succeeded`.
    pub routing_key: String,
    pub payload: serde_json::Value,
}

/// Writes all messages in one statement.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    messages: &[OutboxMessage],
) -> anyhow::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = messages.iter().map(|m| m.routing_key.as_str()).collect();
    let payloads: Vec<serde_json::Value> = messages.iter().map(|m| m.payload.clone()).collect();
    sqlx::query(
        "insert into outbox (routing_key, payload) select * from unnest($1::text[], $2::jsonb[])",
    )
    .bind(&keys)
    .bind(&payloads)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
