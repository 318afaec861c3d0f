//! Injected faults and delays, changeable at run time.
//!
//! Two generators, both seeded from `seed`: one rolls the fault of each fresh
//! operation, the other draws latency jitter. Keeping them apart means
//! turning jitter on does not change which operations fail, so a seeded test
//! sees the same faults whatever the latency settings.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::cards::CardBehaviour;
use crate::config::FaultSettings;

/// What happens around the work of one fresh operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 500 before doing anything.
    FailBeforeWork,
    /// Do the work, record it, then answer 500.
    FailAfterWork,
    /// Do the work, record it, then answer only after `timeout_ms`.
    TimeoutAfterWork,
    /// Wait `slow_ms`, then do the work.
    Slow,
}

struct State {
    settings: FaultSettings,
    fault_rng: fastrand::Rng,
    jitter_rng: fastrand::Rng,
}

pub struct Faults {
    state: Mutex<State>,
}

/// Fills in an unset seed from the operating system, so an unseeded run is
/// random but still reports the seed it used.
fn seed_or_random(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        // Without OS randomness we still run, just with a fixed sequence.
        if getrandom::fill(&mut bytes).is_err() {
            return 0x5EED;
        }
        u64::from_le_bytes(bytes)
    })
}

fn generators(seed: u64) -> (fastrand::Rng, fastrand::Rng) {
    (
        fastrand::Rng::with_seed(seed),
        fastrand::Rng::with_seed(seed ^ 0x9E37_79B9_7F4A_7C15),
    )
}

impl Faults {
    pub fn new(settings: FaultSettings) -> Faults {
        let (fault_rng, jitter_rng) = generators(seed_or_random(settings.seed));
        Faults {
            state: Mutex::new(State {
                settings,
                fault_rng,
                jitter_rng,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn settings(&self) -> FaultSettings {
        self.lock().settings.clone()
    }

    /// Replaces the settings. A seed in `settings` restarts both generators,
    /// even when it equals the old one, so a test can replay a sequence.
    pub fn replace(&self, settings: FaultSettings, reseed: bool) {
        let mut state = self.lock();
        if reseed {
            let (fault_rng, jitter_rng) = generators(seed_or_random(settings.seed));
            state.fault_rng = fault_rng;
            state.jitter_rng = jitter_rng;
        }
        state.settings = settings;
    }

    /// The base latency plus jitter for one request.
    pub fn latency(&self) -> Duration {
        let mut state = self.lock();
        let jitter_ms = match state.settings.jitter_ms {
            0 => 0,
            max_ms => state.jitter_rng.u64(0..=max_ms),
        };
        Duration::from_millis(state.settings.latency_ms.saturating_add(jitter_ms))
    }

    /// Rolls the fault for one fresh operation. A trigger card overrides the
    /// roll (and does not consume it, so adding a trigger-card request to a
    /// seeded test does not shift the faults of the others).
    pub fn roll(&self, card: Option<CardBehaviour>) -> Fault {
        match card {
            Some(CardBehaviour::FailBeforeWork) => return Fault::FailBeforeWork,
            Some(CardBehaviour::FailAfterWork) => return Fault::FailAfterWork,
            Some(CardBehaviour::TimeoutAfterWork) => return Fault::TimeoutAfterWork,
            Some(CardBehaviour::SlowApproval) => return Fault::Slow,
            _ => {}
        }
        let mut state = self.lock();
        let settings = &state.settings;
        let (before, after, timeout) = (
            settings.failure_rate,
            settings.failure_after_work_rate,
            settings.timeout_after_work_rate,
        );
        if before + after + timeout <= 0.0 {
            return Fault::None;
        }
        let roll = state.fault_rng.f64();
        if roll < before {
            Fault::FailBeforeWork
        } else if roll < before + after {
            Fault::FailAfterWork
        } else if roll < before + after + timeout {
            Fault::TimeoutAfterWork
        } else {
            Fault::None
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.lock().settings.timeout_ms)
    }

    pub fn slow(&self) -> Duration {
        Duration::from_millis(self.lock().settings.slow_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> FaultSettings {
        FaultSettings {
            failure_rate: 0.2,
            failure_after_work_rate: 0.2,
            timeout_after_work_rate: 0.2,
            seed: Some(seed),
            ..FaultSettings::default()
        }
    }

    #[test]
    fn a_seed_fixes_the_sequence_and_jitter_does_not_shift_it() {
        let a = Faults::new(settings(42));
        let b = Faults::new(FaultSettings {
            jitter_ms: 50,
            ..settings(42)
        });
        let rolls_a: Vec<Fault> = (0..200).map(|_| a.roll(None)).collect();
        let rolls_b: Vec<Fault> = (0..200)
            .map(|_| {
                let _ = b.latency();
                b.roll(None)
            })
            .collect();
        assert_eq!(rolls_a, rolls_b);
        for fault in [
            Fault::None,
            Fault::FailBeforeWork,
            Fault::FailAfterWork,
            Fault::TimeoutAfterWork,
        ] {
            assert!(rolls_a.contains(&fault), "{fault:?} never rolled");
        }
        a.replace(settings(42), true);
        let again: Vec<Fault> = (0..200).map(|_| a.roll(None)).collect();
        assert_eq!(again, rolls_a);
    }

    #[test]
    fn zero_rates_never_fail() {
        let faults = Faults::new(FaultSettings::default());
        assert!((0..1000).all(|_| faults.roll(None) == Fault::None));
        assert_eq!(faults.latency(), Duration::ZERO);
    }
}
