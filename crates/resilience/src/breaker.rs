//! A circuit breaker (DESIGN.md §8). After `failure_threshold` consecutive
//! failures the circuit opens and calls are refused without being sent, so a
//! failing dependency is not hammered and callers are not held up by
//! timeouts; after `open_ms` one trial call is let through (half-open), and
//! its outcome closes or re-opens the circuit. What a refused call means is
//! the caller's business: for a processor, the payment stays in flight for
//! the reconciler; for Redis, the request is served from PostgreSQL.

use std::sync::{Arc, Mutex};

/// Milliseconds on some monotonic scale; injected so tests control time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The process's monotonic clock.
pub struct SystemClock {
    start: std::time::Instant,
}

impl SystemClock {
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock {
            start: std::time::Instant::now(),
        })
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until_ms: u64,
    },
    /// One trial call is in flight since `since_ms`. A trial whose outcome
    /// is never recorded (its caller was cancelled) must not hold the
    /// circuit forever: after another `open_ms` a new trial may go.
    HalfOpen {
        since_ms: u64,
    },
}

impl BreakerState {
    /// The state as the `snakepay_circuit_breaker_state` gauge shows it:
    /// 0 closed, 1 half-open, 2 open (docs/metrics.md).
    pub fn gauge_value(&self) -> i64 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::HalfOpen { .. } => 1,
            BreakerState::Open { .. } => 2,
        }
    }
}

pub struct Breaker {
    state: Mutex<BreakerState>,
    clock: Arc<dyn Clock>,
    failure_threshold: u32,
    open_ms: u64,
}

impl Breaker {
    pub fn new(clock: Arc<dyn Clock>, failure_threshold: u32, open_ms: u64) -> Breaker {
        Breaker {
            state: Mutex::new(BreakerState::Closed {
                consecutive_failures: 0,
            }),
            clock,
            failure_threshold: failure_threshold.max(1),
            open_ms,
        }
    }

    /// May a call go out now? An open circuit whose time is up lets exactly
    /// one caller through as the trial.
    pub fn permit(&self) -> bool {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until_ms } if now >= until_ms => {
                *state = BreakerState::HalfOpen { since_ms: now };
                tracing::info!("circuit half-open: sending a trial call");
                true
            }
            BreakerState::HalfOpen { since_ms } if now >= since_ms.saturating_add(self.open_ms) => {
                *state = BreakerState::HalfOpen { since_ms: now };
                tracing::warn!("trial call never reported; sending another");
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => false,
        }
    }

    /// The dependency answered (for a processor: any definite answer).
    pub fn record_success(&self) {
        let mut state = self.lock();
        if matches!(*state, BreakerState::HalfOpen { .. }) {
            tracing::info!("circuit closed");
        }
        *state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    /// No usable answer (timeout, 5xx, connection failure).
    pub fn record_failure(&self) {
        let now = self.clock.now_ms();
        let mut state = self.lock();
        let open = |state: &mut BreakerState| {
            *state = BreakerState::Open {
                until_ms: now.saturating_add(self.open_ms),
            };
        };
        match *state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.failure_threshold {
                    tracing::warn!(breaker.failures = failures, "circuit opened");
                    open(&mut state);
                } else {
                    *state = BreakerState::Closed {
                        consecutive_failures: failures,
                    };
                }
            }
            BreakerState::HalfOpen { .. } => {
                tracing::warn!("trial call failed: circuit opened again");
                open(&mut state);
            }
            BreakerState::Open { .. } => {}
        }
    }

    pub fn state(&self) -> BreakerState {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        // A panic while holding this lock cannot leave the state invalid
        // (every write is a whole value), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct TestClock(AtomicU64);

    impl Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn opens_after_the_threshold_then_lets_one_trial_through() {
        let clock = Arc::new(TestClock(AtomicU64::new(0)));
        let breaker = Breaker::new(clock.clone(), 3, 1_000);
        for _ in 0..2 {
            assert!(breaker.permit());
            breaker.record_failure();
        }
        assert!(breaker.permit());
        breaker.record_failure();
        assert!(!breaker.permit(), "open after three failures");
        clock.0.store(999, Ordering::SeqCst);
        assert!(!breaker.permit());
        clock.0.store(1_000, Ordering::SeqCst);
        assert!(breaker.permit(), "one trial when the time is up");
        assert!(!breaker.permit(), "only one");
        breaker.record_failure();
        assert!(!breaker.permit(), "a failed trial re-opens");
        clock.0.store(2_000, Ordering::SeqCst);
        assert!(breaker.permit());
        breaker.record_success();
        assert!(breaker.permit() && breaker.permit(), "closed again");
    }

    #[test]
    fn a_trial_that_never_reports_does_not_hold_the_circuit_forever() {
        let clock = Arc::new(TestClock(AtomicU64::new(0)));
        let breaker = Breaker::new(clock.clone(), 1, 1_000);
        breaker.record_failure();
        clock.0.store(1_000, Ordering::SeqCst);
        assert!(breaker.permit(), "the trial");
        // Its caller is cancelled: no success, no failure recorded.
        clock.0.store(1_999, Ordering::SeqCst);
        assert!(!breaker.permit());
        clock.0.store(2_000, Ordering::SeqCst);
        assert!(breaker.permit(), "another trial after open_ms");
        breaker.record_success();
        assert!(breaker.permit());
    }

    #[test]
    fn a_success_resets_the_count() {
        let clock = Arc::new(TestClock(AtomicU64::new(0)));
        let breaker = Breaker::new(clock, 2, 1_000);
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert!(breaker.permit());
    }
}
