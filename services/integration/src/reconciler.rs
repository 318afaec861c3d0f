//! The reconciler (DESIGN.md §5, step 5): payments whose processor outcome
//! is unknown stay `processing` (refunds `pending`); every pass finds those
//! in flight for longer than the window and asks the processor, with the
//! operation's own idempotency key, what became of them. A definite answer
//! is committed like any other; an operation the processor never performed
//! is sent now (the same key makes that safe); one still running is left
//! for the next pass. Intents waiting in `requires_action` are checked too,
//! in case the 3-D Secure notification was lost.

use std::time::Duration;

use snakepay_store::{intents, refunds};

use crate::pipeline::{Mode, Pipeline};

/// One pass over every shard; returns how many payments it looked at.
pub async fn reconcile_once(pipeline: &Pipeline, after: Duration, batch: u32) -> usize {
    let age_seconds = after.as_secs_f64();
    let limit = i64::from(batch);
    let mut examined = 0;
    for (shard, pool) in pipeline.store.shards() {
        match intents::stale_in_flight(pool, age_seconds, limit).await {
            Ok(records) => {
                for record in records {
                    examined += 1;
                    if let Err(error) = pipeline
                        .drive_intent(
                            record.merchant_id,
                            record.intent.id,
                            None,
                            Mode::InquireFirst,
                            None,
                        )
                        .await
                    {
                        tracing::warn!(payment.id = %record.intent.id, error = %format!("{error:#}"), "reconciling a payment failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(db.shard = shard.0, error = %format!("{error:#}"), "reconciler could not list payments");
            }
        }
        match refunds::stale_pending(pool, age_seconds, limit).await {
            Ok(records) => {
                for record in records {
                    examined += 1;
                    if let Err(error) = pipeline
                        .drive_refund(
                            record.merchant_id,
                            record.refund.id,
                            Mode::InquireFirst,
                            None,
                        )
                        .await
                    {
                        tracing::warn!(refund.id = %record.refund.id, error = %format!("{error:#}"), "reconciling a refund failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(db.shard = shard.0, error = %format!("{error:#}"), "reconciler could not list refunds");
            }
        }
    }
    if examined > 0 {
        tracing::info!(reconciler.examined = examined, "reconciler pass");
    }
    examined
}
