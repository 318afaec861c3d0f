//! The ceiling: the exact SQL of one checkout (bench/pgbench/checkout.sql,
//! see bench/pgbench/README.md for where each statement comes from) run by
//! `pgbench` against the same PostgreSQL, with prepared statements and as
//! many clients as the platform's pools hold. No payment platform that
//! executes this SQL on this server can complete more payments per second;
//! the report shows the platform's throughput as a share of it.

use std::path::Path;

use anyhow::Context;

use crate::procs::{MachineUsage, Sampler, Usage};

/// pgbench's worker threads: one per core of the reference machine.
const PGBENCH_THREADS: u32 = 2;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Baseline {
    pub script: String,
    pub clients: u32,
    pub seconds: u64,
    /// Script runs per second = payments per second.
    pub payments_per_second: f64,
    pub payments: u64,
    pub failed: u64,
    pub latency_average_ms: f64,
    pub postgresql_cpu_ms_per_payment: f64,
    pub resources: Vec<Usage>,
    pub machine: MachineUsage,
}

pub async fn run(
    bin: &Path,
    script: &Path,
    url: &str,
    clients: u32,
    seconds: u64,
    sampler: &Sampler,
) -> anyhow::Result<Baseline> {
    eprintln!(
        "[baseline] pgbench {} with {clients} clients for {seconds} s",
        script.display()
    );
    let phase = sampler.start();
    let output = tokio::process::Command::new(bin)
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", PGBENCH_THREADS.min(clients)))
        .arg(format!("--time={seconds}"))
        .arg(format!("--file={}", script.display()))
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    let (resources, machine) = phase.finish().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let payments_per_second = field(&stdout, "tps = ").context("pgbench printed no tps")?;
    let payments = field(&stdout, "number of transactions actually processed: ").unwrap_or(0.0);
    let postgres_cpu = resources
        .iter()
        .find(|usage| usage.name == "postgresql")
        .map_or(0.0, |usage| usage.cpu_seconds);
    Ok(Baseline {
        script: script.display().to_string(),
        clients,
        seconds,
        payments_per_second,
        payments: payments as u64,
        failed: field(&stdout, "number of failed transactions: ").unwrap_or(0.0) as u64,
        latency_average_ms: field(&stdout, "latency average = ").unwrap_or(0.0),
        postgresql_cpu_ms_per_payment: if payments > 0.0 {
            postgres_cpu * 1_000.0 / payments
        } else {
            0.0
        },
        resources,
        machine,
    })
}

/// The number after `prefix` on the line that starts with it.
fn field(output: &str, prefix: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(prefix)?;
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        number.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn reads_pgbench_summary_lines() {
        let output = "number of transactions actually processed: 71300\n\
                      number of failed transactions: 0 (0.000%)\n\
                      latency average = 2.244 ms\n\
                      tps = 7130.512345 (without initial connection time)\n";
        assert_eq!(field(output, "tps = "), Some(7130.512345));
        assert_eq!(
            field(output, "number of transactions actually processed: "),
            Some(71300.0)
        );
        assert_eq!(field(output, "number of failed transactions: "), Some(0.0));
        assert_eq!(field(output, "latency average = "), Some(2.244));
    }
}
