//! The load drivers and the progress line.
//!
//! Closed loop (checkout, mixed): `concurrency` workers each run one
//! operation after another; throughput is what they complete. Open loop:
//! one scheduler starts a checkout every 1/rate seconds whatever the server
//! does, and each latency is measured from the request's *intended* start,
//! so time a request spent waiting behind a stalled one is counted, not
//! omitted (coordinated omission). Both discard the warm-up.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::api::{Api, OpError, OpResult};
use crate::procs::Sampler;
use crate::report::ScenarioResult;
use crate::{Args, Scenario};

/// Latencies are recorded in microseconds, up to two minutes, with three
/// significant digits.
pub const HISTOGRAM_MAX_MICROS: u64 = 120_000_000;
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;
/// The open loop's bound on requests in flight: past it the generator, not
/// the server, would be the bottleneck, so arrivals beyond it are counted
/// as errors (`generator_overloaded`) instead of sent.
pub const OPEN_LOOP_MAX_IN_FLIGHT: u64 = 10_000;
/// Succeeded intents kept for the mixed scenario's retrieves and refunds.
const KNOWN_INTENTS_MAX: usize = 10_000;
/// How often the progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

// The bounds are constants that satisfy hdrhistogram's rules (1 ≤ low,
// high ≥ 2·low, digits ≤ 5), so construction cannot fail.
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// What a driver records: latencies per operation and errors by kind.
#[derive(Default)]
pub struct Recorder {
    pub latencies: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn record(&mut self, operation: &'static str, latency: Duration, outcome: &OpResult<()>) {
        match outcome {
            Ok(()) => {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                self.latencies
                    .entry(operation)
                    .or_insert_with(new_histogram)
                    .saturating_record(micros);
            }
            Err(OpError(kind)) => {
                *self
                    .errors
                    .entry(format!("{operation}: {kind}"))
                    .or_insert(0) += 1
            }
        }
    }

    fn merge(&mut self, other: Recorder) {
        for (operation, histogram) in other.latencies {
            let mine = self
                .latencies
                .entry(operation)
                .or_insert_with(new_histogram);
            let _ = mine.add(histogram);
        }
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_insert(0) += count;
        }
    }
}

#[derive(Default)]
struct Progress {
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    fn count(&self, outcome: &OpResult<()>) {
        match outcome {
            Ok(()) => self.completed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Runs one scenario (warm-up, then the measured window) and measures it.
pub async fn run_scenario(
    api: &Arc<Api>,
    scenario: Scenario,
    args: &Args,
    warmup: Duration,
    measured: Duration,
    sampler: &Sampler,
) -> ScenarioResult {
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measured;
    let mode = match scenario {
        Scenario::OpenLoop => format!("open loop, {} arrivals/s", args.rate_per_second),
        _ => format!("closed loop, {} workers", args.concurrency),
    };
    let display = tokio::spawn(show_progress(
        scenario.name(),
        Arc::clone(&progress),
        start,
        measure_from,
        end,
    ));
    // The phase's resources are measured over the measured window only.
    let phase_task = {
        let sampler = sampler.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let phase = sampler.start();
            tokio::time::sleep_until(end).await;
            phase.finish().await
        })
    };
    let recorder = match scenario {
        Scenario::OpenLoop => {
            open_loop(api, args.rate_per_second, measure_from, end, &progress).await
        }
        _ => {
            closed_loop(
                api,
                scenario,
                args.concurrency,
                measure_from,
                end,
                &progress,
            )
            .await
        }
    };
    let elapsed_after_end = Instant::now().saturating_duration_since(end);
    display.abort();
    let (resources, machine) = phase_task.await.unwrap_or_default();
    eprintln!();
    ScenarioResult::new(
        scenario,
        mode,
        measured,
        elapsed_after_end,
        recorder,
        resources,
        machine,
    )
}

async fn closed_loop(
    api: &Arc<Api>,
    scenario: Scenario,
    concurrency: usize,
    measure_from: Instant,
    end: Instant,
    progress: &Arc<Progress>,
) -> Recorder {
    let known = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let api = Arc::clone(api);
        let progress = Arc::clone(progress);
        let known = Arc::clone(&known);
        workers.spawn(async move {
            let mut recorder = Recorder::default();
            let mut random = Random::new(worker as u64);
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let (operation, outcome) = match scenario {
                    Scenario::Mixed => mixed_operation(&api, &known, &mut random).await,
                    _ => ("checkout", api.checkout(false).await.map(drop)),
                };
                progress.count(&outcome);
                if started >= measure_from {
                    recorder.record(operation, started.elapsed(), &outcome);
                }
            }
            recorder
        });
    }
    let mut total = Recorder::default();
    while let Some(done) = workers.join_next().await {
        if let Ok(recorder) = done {
            total.merge(recorder);
        }
    }
    total
}

/// 60% checkout, 20% retrieve, 10% manual capture, 10% partial refund.
/// Retrieves and refunds need a succeeded intent; until the first exists
/// they are checkouts.
async fn mixed_operation(
    api: &Api,
    known: &Mutex<Vec<String>>,
    random: &mut Random,
) -> (&'static str, OpResult<()>) {
    let roll = random.below(100);
    let mut pick = |remove: bool| -> Option<String> {
        let mut known = known.lock().ok()?;
        if known.is_empty() {
            return None;
        }
        let index = usize::try_from(random.below(known.len() as u64)).unwrap_or(0);
        if remove {
            Some(known.swap_remove(index))
        } else {
            known.get(index).cloned()
        }
    };
    let remember = |id: String| {
        if let Ok(mut known) = known.lock()
            && known.len() < KNOWN_INTENTS_MAX
        {
            known.push(id);
        }
    };
    if (60..80).contains(&roll) {
        if let Some(id) = pick(false) {
            return ("retrieve", api.retrieve(&id).await);
        }
    } else if (80..90).contains(&roll) {
        return ("manual capture", api.manual_capture().await.map(remember));
    } else if roll >= 90 {
        // Each intent is refunded once (500 of its 2,000), so no refund
        // is refused for exceeding what was captured.
        if let Some(id) = pick(true) {
            return ("partial refund", api.partial_refund(&id).await);
        }
    }
    ("checkout", api.checkout(false).await.map(remember))
}

async fn open_loop(
    api: &Arc<Api>,
    rate_per_second: u32,
    measure_from: Instant,
    end: Instant,
    progress: &Arc<Progress>,
) -> Recorder {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate_per_second.max(1)));
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut requests = tokio::task::JoinSet::new();
    let first = Instant::now();
    let mut index: u32 = 0;
    loop {
        let intended = first + period * index;
        index = index.saturating_add(1);
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended).await;
        // Reap finished tasks so the set does not grow with the run.
        while requests.try_join_next().is_some() {}
        if in_flight.load(Ordering::Relaxed) >= OPEN_LOOP_MAX_IN_FLIGHT {
            let outcome = Err(OpError("generator_overloaded".to_owned()));
            progress.count(&outcome);
            if intended >= measure_from
                && let Ok(mut recorder) = recorder.lock()
            {
                recorder.record("checkout", Duration::ZERO, &outcome);
            }
            continue;
        }
        let api = Arc::clone(api);
        let recorder = Arc::clone(&recorder);
        let progress = Arc::clone(progress);
        let in_flight = Arc::clone(&in_flight);
        in_flight.fetch_add(1, Ordering::Relaxed);
        requests.spawn(async move {
            let outcome = api.checkout(false).await.map(drop);
            // From the intended start: includes any delay in sending.
            let latency = Instant::now().saturating_duration_since(intended);
            in_flight.fetch_sub(1, Ordering::Relaxed);
            progress.count(&outcome);
            if intended >= measure_from
                && let Ok(mut recorder) = recorder.lock()
            {
                recorder.record("checkout", latency, &outcome);
            }
        });
    }
    while requests.join_next().await.is_some() {}
    Arc::try_unwrap(recorder)
        .ok()
        .and_then(|recorder| recorder.into_inner().ok())
        .unwrap_or_default()
}

/// One line per second on stderr (redrawn in place on a terminal).
async fn show_progress(
    name: &'static str,
    progress: Arc<Progress>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) {
    let terminal = std::io::stderr().is_terminal();
    let total_seconds = end.saturating_duration_since(start).as_secs();
    let mut last_completed = 0;
    let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let now = Instant::now();
        let completed = progress.completed.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let phase = if now < measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let line = format!(
            "[{name}] {phase} {:>3}/{total_seconds} s  {completed:>9} done  {:>6}/s  {errors} errors",
            now.saturating_duration_since(start).as_secs(),
            completed - last_completed,
        );
        last_completed = completed;
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}

/// xorshift64*: enough to pick operations; no dependency needed.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}
