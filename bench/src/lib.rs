//! Snakepay's load generator and its same-run database baseline
//! (docs/performance.md explains the numbers; scripts/bench.sh runs it).
//!
//! # Layout
//!
//! - [`Args`] and [`run`] (below): the scenarios in order, then the report.
//! - `api.rs`: the operations a scenario is made of (checkout, retrieve,
//!   manual capture, partial refund) through the public External API, each
//!   until its answer is final.
//! - `load.rs`: the drivers: closed loop (N workers back to back, for
//!   throughput) and open loop (a fixed arrival rate; latency is measured
//!   from each request's *intended* start, so a stalled server cannot hide
//!   its queueing: coordinated-omission safe). Progress goes to stderr.
//! - `procs.rs`: CPU seconds and peak memory per service and per dependency
//!   (PostgreSQL, RabbitMQ, Redis), read from /proc while a phase runs, and
//!   the machine's total load (the noise of anything else running).
//! - `pgbench.rs`: the ceiling: one checkout's exact SQL
//!   (bench/pgbench/checkout.sql) run by `pgbench` against the same server.
//! - `report.rs`: the table on stdout, the JSON and the SVG latency chart.

mod api;
mod load;
mod pgbench;
mod procs;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

pub use report::{Report, ScenarioResult};

/// A scenario of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Closed loop: create-and-confirm with the 4242 card, automatic capture.
    Checkout,
    /// Closed loop: 60% checkout, 20% retrieve, 10% manual capture, 10%
    /// partial refund.
    Mixed,
    /// Open loop: checkouts at a fixed arrival rate, for latency.
    OpenLoop,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Checkout => "checkout",
            Scenario::Mixed => "mixed",
            Scenario::OpenLoop => "open-loop",
        }
    }
}

/// A process to measure: `name=pid`.
#[derive(Debug, Clone)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for NamedPid {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, pid) = text
            .split_once('=')
            .ok_or_else(|| format!("expected name=pid, got {text:?}"))?;
        let pid = pid
            .parse()
            .map_err(|_| format!("not a process id: {pid:?}"))?;
        Ok(NamedPid {
            name: name.to_owned(),
            pid,
        })
    }
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "snakepay-bench",
    about = "Load-tests a running Snakepay External API and compares it with a pgbench ceiling"
)]
pub struct Args {
    /// The External API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:18081")]
    pub base_url: String,
    /// A test-mode secret key (`sk_test_…`) of the merchant to pay.
    #[arg(long)]
    pub secret_key: String,
    /// Scenarios, in order (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "checkout,mixed,open-loop"
    )]
    pub scenarios: Vec<Scenario>,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 30)]
    pub duration_seconds: u64,
    /// Unmeasured seconds before each scenario (pools fill, caches warm).
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Workers of the closed-loop scenarios (requests in flight).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Arrivals per second of the open-loop scenario.
    #[arg(long, default_value_t = 500)]
    pub rate_per_second: u32,
    /// Processes of the platform to measure, `name=pid` (repeatable).
    #[arg(long = "service")]
    pub services: Vec<NamedPid>,
    /// PostgreSQL backends of databases whose names start with this count
    /// towards PostgreSQL (the server's own processes always do).
    #[arg(long, default_value = "snakepay_bench")]
    pub database_prefix: String,
    /// pgbench's binary; the baseline is skipped without it.
    #[arg(long)]
    pub pgbench: Option<PathBuf>,
    /// The pgbench script of one checkout.
    #[arg(long, default_value = "bench/pgbench/checkout.sql")]
    pub pgbench_script: PathBuf,
    /// The database the script runs in (a migrated shard).
    #[arg(long)]
    pub pgbench_url: Option<String>,
    /// pgbench clients (the platform's pools hold about as many).
    #[arg(long, default_value_t = 16)]
    pub pgbench_clients: u32,
    /// Measured seconds of the baseline.
    #[arg(long, default_value_t = 20)]
    pub pgbench_seconds: u64,
    /// Where `<label>.json` and `<label>.svg` go.
    #[arg(long, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// The results' file name, e.g. a UTC timestamp.
    #[arg(long, default_value = "latest")]
    pub label: String,
    /// Free text recorded with the results (build profile, machine notes).
    #[arg(long, default_value = "")]
    pub note: String,
}

/// Runs the baseline, then every scenario, then writes the report. Fails
/// only when the benchmark itself cannot run; a slow or failing platform is
/// a result, recorded as such.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let api = std::sync::Arc::new(api::Api::new(&args.base_url, &args.secret_key)?);
    api.check()
        .await
        .context("the External API does not answer")?;
    let mut report = Report::new(&args);
    let sampler = procs::Sampler::new(&args.services, &args.database_prefix);

    if let (Some(bin), Some(url)) = (&args.pgbench, &args.pgbench_url) {
        let baseline = pgbench::run(
            bin,
            &args.pgbench_script,
            url,
            args.pgbench_clients,
            args.pgbench_seconds,
            &sampler,
        )
        .await
        .context("the pgbench baseline")?;
        report.baseline = Some(baseline);
    }

    let warmup = Duration::from_secs(args.warmup_seconds);
    let measured = Duration::from_secs(args.duration_seconds);
    for scenario in &args.scenarios {
        let result = load::run_scenario(&api, *scenario, &args, warmup, measured, &sampler).await;
        report.scenarios.push(result);
    }
    report.finish();
    report.print_table(&mut std::io::stdout().lock())?;
    let (json, svg) = report.write(&args.out_dir, &args.label)?;
    eprintln!("results: {}\nchart:   {}", json.display(), svg.display());
    Ok(())
}
