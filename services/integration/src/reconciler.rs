//! The reconciler (DESIGN.md §5, step 5): payments whose processor outcome
//! is unknown stay `processing` (refunds `pending`); every pass finds those
//! in flight for longer than the window and asks the processor, with the
//! operation's own idempotency key, what became of them. A definite answer
//! is committed like any other; an operation the processor never performed
//! is sent now (the same key makes that safe); one still running is left
//! for the next pass. Intents waiting in `requires_action` are checked too,
//! in case the 3-D Secure notification was lost, each status in its own
//! batch so abandoned challenges never crowd out unknown outcomes. Attempts
//! the intent abandoned that may still hold money (their void failed or was
//! dead-lettered) are voided.

use std::time::Duration;

use snakepay_domain::payment_intent::PaymentIntentStatus;
use snakepay_store::{attempts, intents, refunds};

use tracing::Instrument;

use crate::pipeline::{Mode, Pipeline};

/// Each payment the reconciler drives is a trace of its own (a root span),
/// not one more child of the service's lifecycle span.
fn item_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(parent: None, "reconcile", otel.name = name)
}

/// One pass over every shard; returns how many payments it looked at.
pub async fn reconcile_once(pipeline: &Pipeline, after: Duration, batch: u32) -> usize {
    let age_seconds = after.as_secs_f64();
    let limit = i64::from(batch);
    let mut examined = 0;
    for (shard, pool) in pipeline.store.shards() {
        for status in [
            PaymentIntentStatus::Processing,
            PaymentIntentStatus::RequiresAction,
        ] {
            match intents::stale_in_flight(pool, status, age_seconds, limit).await {
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
                            .instrument(item_span("reconcile payment"))
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
        }
        let age_whole_seconds = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
        match attempts::orphaned(pool, age_whole_seconds, limit).await {
            Ok(orphans) => {
                for orphan in orphans {
                    examined += 1;
                    if let Err(error) = pipeline
                        .void(orphan.merchant_id, orphan.payment_intent, orphan.id, None)
                        .instrument(item_span("void orphaned attempt"))
                        .await
                    {
                        tracing::warn!(payment.attempt = %orphan.id, error = %format!("{error:#}"), "voiding an orphaned attempt failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(db.shard = shard.0, error = %format!("{error:#}"), "reconciler could not list orphaned attempts");
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
                        .instrument(item_span("reconcile refund"))
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
