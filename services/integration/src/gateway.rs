//! Calls to a processor with the safety rules of DESIGN.md §8: the circuit
//! breaker is asked first, an unknown outcome is retried only with the same
//! idempotency key (the caller's closure sends the same request every
//! time), a bounded number of times, after a capped exponential backoff with
//! jitter. A definite answer is returned at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::processor::{CallError, CallResult, CountedOutcome, Processor};
use snakepay_resilience::Breaker;
use snakepay_telemetry::metrics::{self, PAYMENTS, labels};

pub struct Gateway {
    pub processor: Arc<dyn Processor>,
    pub breaker: Breaker,
    pub attempts: u32,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
}

impl Gateway {
    /// Runs `call` until it gives a definite answer, the attempts are used
    /// up, or the circuit is open. `operation` names it in logs.
    pub async fn run<T, F, Fut>(&self, operation: &'static str, call: F) -> CallResult<T>
    where
        T: CountedOutcome,
        F: Fn() -> Fut,
        Fut: Future<Output = CallResult<T>>,
    {
        let result = self.run_uncounted(operation, call).await;
        let (outcome, decline_code) = match &result {
            Ok(answer) => answer.outcome(),
            Err(_) => ("unknown", "none".to_owned()),
        };
        PAYMENTS
            .operations
            .get_or_create(&labels([
                ("processor", self.processor.name()),
                ("operation", operation),
                ("outcome", outcome),
                ("decline_code", &decline_code),
            ]))
            .inc();
        result
    }

    async fn run_uncounted<T, F, Fut>(&self, operation: &'static str, call: F) -> CallResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = CallResult<T>>,
    {
        let processor = self.processor.name();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if !self.breaker.permit() {
                tracing::warn!(
                    processor,
                    processor.operation = operation,
                    "circuit open; call not sent"
                );
                return Err(CallError::CircuitOpen(processor));
            }
            let started = std::time::Instant::now();
            let result = call().await;
            PAYMENTS
                .processor_duration
                .get_or_create(&labels([
                    ("processor", processor),
                    ("operation", operation),
                ]))
                .observe(metrics::seconds(started.elapsed()));
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match result {
                Ok(answer) => {
                    self.breaker.record_success();
                    tracing::debug!(
                        processor,
                        processor.operation = operation,
                        processor.latency_ms = latency_ms,
                        "processor answered"
                    );
                    return Ok(answer);
                }
                Err(CallError::Unknown(reason)) => {
                    self.breaker.record_failure();
                    tracing::warn!(
                        processor,
                        processor.operation = operation,
                        processor.attempt = attempt,
                        processor.latency_ms = latency_ms,
                        reason = %reason,
                        "unknown processor outcome"
                    );
                    if attempt >= self.attempts {
                        return Err(CallError::Unknown(reason));
                    }
                    tokio::time::sleep(Duration::from_millis(self.backoff(attempt))).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> u64 {
        snakepay_resilience::equal_jitter_backoff_ms(self.backoff_ms, self.backoff_max_ms, attempt)
    }
}
