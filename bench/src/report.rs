//! The results: a table on stdout, `<label>.json` and a latency chart,
//! `<label>.svg` (latency by percentile, one line per scenario, drawn by
//! hand: a few dozen lines of SVG need no plotting library).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::load::{Recorder, new_histogram};
use crate::pgbench::Baseline;
use crate::procs::{MachineUsage, Usage};
use crate::{Args, Scenario};

/// The targets (docs/performance.md), on one 2-core machine.
pub const TARGET_CHECKOUTS_PER_SECOND: f64 = 1_000.0;
pub const TARGET_SHARE_OF_CEILING: f64 = 0.5;
pub const TARGET_OPEN_LOOP_P99_MS: f64 = 100.0;
pub const TARGET_SERVICE_MEMORY_MB: f64 = 150.0;

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Latency {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1_000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p99_9_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Operation {
    pub completed: u64,
    pub per_second: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub mode: String,
    pub measured_seconds: f64,
    /// How long requests started in the window took to finish after it.
    pub drain_seconds: f64,
    pub completed: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub operations_per_second: f64,
    /// Completed payments (checkouts and manual captures) per second.
    pub payments_per_second: f64,
    /// `payments_per_second` / the baseline's, when there is one.
    pub share_of_ceiling: Option<f64>,
    /// Every completed operation of the scenario together.
    pub latency: Latency,
    pub operations: BTreeMap<&'static str, Operation>,
    pub resources: Vec<Usage>,
    pub machine: MachineUsage,
    /// (percentile, milliseconds) points of the chart.
    pub latency_by_percentile: Vec<(f64, f64)>,
}

impl ScenarioResult {
    pub fn new(
        scenario: Scenario,
        mode: String,
        measured: Duration,
        drain: Duration,
        recorder: Recorder,
        resources: Vec<Usage>,
        machine: MachineUsage,
    ) -> Self {
        let seconds = measured.as_secs_f64().max(f64::EPSILON);
        let mut all = new_histogram();
        let mut operations = BTreeMap::new();
        for (name, histogram) in &recorder.latencies {
            let _ = all.add(histogram);
            operations.insert(
                *name,
                Operation {
                    completed: histogram.len(),
                    per_second: histogram.len() as f64 / seconds,
                    latency: Latency::of(histogram),
                },
            );
        }
        let payments: u64 = ["checkout", "manual capture"]
            .iter()
            .filter_map(|name| operations.get(name).map(|op: &Operation| op.completed))
            .sum();
        ScenarioResult {
            scenario,
            mode,
            measured_seconds: seconds,
            drain_seconds: drain.as_secs_f64(),
            completed: all.len(),
            errors: recorder.errors.values().sum(),
            errors_by_kind: recorder.errors,
            operations_per_second: all.len() as f64 / seconds,
            payments_per_second: payments as f64 / seconds,
            share_of_ceiling: None,
            latency: Latency::of(&all),
            operations,
            resources,
            machine,
            latency_by_percentile: percentile_curve(&all),
        }
    }
}

/// Points at evenly spaced "nines": 0%, …, 90%, …, 99%, …, 99.99%.
fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    (0..=CHART_NINES_STEPS)
        .map(|step| {
            let nines = f64::from(step) * CHART_MAX_NINES / f64::from(CHART_NINES_STEPS);
            let quantile = 1.0 - 10f64.powf(-nines);
            (
                quantile * 100.0,
                histogram.value_at_quantile(quantile) as f64 / 1_000.0,
            )
        })
        .collect()
}

const CHART_NINES_STEPS: u32 = 80;
/// The chart ends at 99.99% (four nines).
const CHART_MAX_NINES: f64 = 4.0;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub label: String,
    pub started_unix_seconds: u64,
    pub note: String,
    pub cpu_model: String,
    pub cores: usize,
    pub settings: Settings,
    pub baseline: Option<Baseline>,
    pub scenarios: Vec<ScenarioResult>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    pub base_url: String,
    pub duration_seconds: u64,
    pub warmup_seconds: u64,
    pub concurrency: usize,
    pub rate_per_second: u32,
    pub pgbench_clients: u32,
    pub pgbench_seconds: u64,
}

impl Report {
    pub fn new(args: &Args) -> Self {
        Report {
            label: args.label.clone(),
            started_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
            note: args.note.clone(),
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            settings: Settings {
                base_url: args.base_url.clone(),
                duration_seconds: args.duration_seconds,
                warmup_seconds: args.warmup_seconds,
                concurrency: args.concurrency,
                rate_per_second: args.rate_per_second,
                pgbench_clients: args.pgbench_clients,
                pgbench_seconds: args.pgbench_seconds,
            },
            baseline: None,
            scenarios: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Fills in the shares of the ceiling and checks the targets.
    pub fn finish(&mut self) {
        let ceiling = self
            .baseline
            .as_ref()
            .map(|baseline| baseline.payments_per_second)
            .filter(|tps| *tps > 0.0);
        for scenario in &mut self.scenarios {
            scenario.share_of_ceiling = ceiling.map(|tps| scenario.payments_per_second / tps);
        }
        let mut targets = Vec::new();
        if let Some(checkout) = self.scenario(Scenario::Checkout) {
            targets.push(Target {
                goal: format!("checkout ≥ {TARGET_CHECKOUTS_PER_SECOND} payments/s"),
                measured: format!("{:.0}/s", checkout.payments_per_second),
                met: checkout.payments_per_second >= TARGET_CHECKOUTS_PER_SECOND,
            });
            if let Some(share) = checkout.share_of_ceiling {
                targets.push(Target {
                    goal: format!("checkout ≥ {TARGET_SHARE_OF_CEILING} × pgbench ceiling"),
                    measured: format!("{share:.2} ×"),
                    met: share >= TARGET_SHARE_OF_CEILING,
                });
            }
        }
        if let Some(open) = self.scenario(Scenario::OpenLoop) {
            targets.push(Target {
                goal: format!(
                    "open loop at {}/s: p99 ≤ {TARGET_OPEN_LOOP_P99_MS} ms, zero errors",
                    self.settings.rate_per_second
                ),
                measured: format!("p99 {:.1} ms, {} errors", open.latency.p99_ms, open.errors),
                met: open.latency.p99_ms <= TARGET_OPEN_LOOP_P99_MS
                    && open.errors == 0
                    && open.completed > 0,
            });
        }
        let mut peak_by_service: BTreeMap<&str, f64> = BTreeMap::new();
        for usage in self
            .scenarios
            .iter()
            .flat_map(|scenario| &scenario.resources)
            .filter(|usage| usage.kind == "service")
        {
            let peak = peak_by_service.entry(&usage.name).or_insert(0.0);
            *peak = peak.max(usage.peak_memory_mb);
        }
        if !peak_by_service.is_empty() {
            let (name, peak) = peak_by_service.iter().fold(("", 0.0), |acc, (name, peak)| {
                if *peak > acc.1 { (name, *peak) } else { acc }
            });
            targets.push(Target {
                goal: format!(
                    "every service < {TARGET_SERVICE_MEMORY_MB} MB resident (not the simulated processor)"
                ),
                measured: format!("max {peak:.0} MB ({name})"),
                met: peak < TARGET_SERVICE_MEMORY_MB,
            });
        }
        self.targets = targets;
    }

    fn scenario(&self, scenario: Scenario) -> Option<&ScenarioResult> {
        self.scenarios
            .iter()
            .find(|result| result.scenario == scenario)
    }

    pub fn print_table(&self, out: &mut impl Write) -> anyhow::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "Snakepay benchmark {} — {} cores, {}",
            self.label, self.cores, self.cpu_model
        )?;
        if !self.note.is_empty() {
            writeln!(out, "note: {}", self.note)?;
        }
        if let Some(baseline) = &self.baseline {
            writeln!(
                out,
                "ceiling (pgbench, one checkout's SQL, {} clients): {:.0} payments/s, {:.3} ms PostgreSQL CPU each, {} failed",
                baseline.clients,
                baseline.payments_per_second,
                baseline.postgresql_cpu_ms_per_payment,
                baseline.failed
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<10} {:<28} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "scenario",
            "operation",
            "done",
            "per s",
            "errors",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "ceiling"
        )?;
        for scenario in &self.scenarios {
            let share = scenario
                .share_of_ceiling
                .map_or("-".to_owned(), |share| format!("{:.0}%", share * 100.0));
            let l = &scenario.latency;
            writeln!(
                out,
                "{:<10} {:<28} {:>9} {:>8.0} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7}",
                scenario.scenario.name(),
                scenario.mode,
                scenario.completed,
                scenario.operations_per_second,
                scenario.errors,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p99_9_ms,
                share
            )?;
            if scenario.operations.len() > 1 {
                for (name, op) in &scenario.operations {
                    let l = &op.latency;
                    writeln!(
                        out,
                        "{:<10}   {:<26} {:>9} {:>8.0} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                        "",
                        name,
                        op.completed,
                        op.per_second,
                        "",
                        l.p50_ms,
                        l.p90_ms,
                        l.p99_ms,
                        l.p99_9_ms
                    )?;
                }
            }
            for (kind, count) in &scenario.errors_by_kind {
                writeln!(out, "{:<10}   error {kind}: {count}", "")?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<10} {:<16} {:>12} {:>16} {:>14}",
            "scenario", "process", "CPU s", "CPU ms/payment", "peak MB"
        )?;
        for scenario in &self.scenarios {
            let payments = scenario.payments_per_second * scenario.measured_seconds;
            for usage in &scenario.resources {
                let per_payment = if payments > 0.0 {
                    format!("{:.3}", usage.cpu_seconds * 1_000.0 / payments)
                } else {
                    "-".to_owned()
                };
                writeln!(
                    out,
                    "{:<10} {:<16} {:>12.2} {:>16} {:>14.1}",
                    scenario.scenario.name(),
                    usage.name,
                    usage.cpu_seconds,
                    per_payment,
                    usage.peak_memory_mb
                )?;
            }
            let m = &scenario.machine;
            writeln!(
                out,
                "{:<10} {:<16} {:>12.2}   (machine busy {:.2} of {:.0} CPU s; load {:.1} → {:.1})",
                scenario.scenario.name(),
                "other (noise)",
                m.unaccounted_cpu_seconds,
                m.busy_cpu_seconds,
                m.window_seconds * m.cores as f64,
                m.load_average_1m_start,
                m.load_average_1m_end
            )?;
        }
        writeln!(out)?;
        for target in &self.targets {
            writeln!(
                out,
                "{} {} — {}",
                if target.met { "MET   " } else { "NOT MET" },
                target.goal,
                target.measured
            )?;
        }
        Ok(())
    }

    /// Writes `<label>.json` and `<label>.svg` into `dir`.
    pub fn write(&self, dir: &Path, label: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = dir.join(format!("{label}.json"));
        let svg = dir.join(format!("{label}.svg"));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&json, text + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        std::fs::write(&svg, self.chart()).with_context(|| format!("writing {}", svg.display()))?;
        Ok((json, svg))
    }

    /// Latency by percentile: x in "nines" (0 → 0%, 1 → 90%, 2 → 99%, …),
    /// y in milliseconds, one line per scenario.
    pub fn chart(&self) -> String {
        const WIDTH: f64 = 760.0;
        const HEIGHT: f64 = 420.0;
        const LEFT: f64 = 64.0;
        const RIGHT: f64 = 180.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 48.0;
        const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let max_ms = self
            .scenarios
            .iter()
            .flat_map(|s| s.latency_by_percentile.iter().map(|(_, ms)| *ms))
            .fold(1.0_f64, f64::max);
        let y_max = nice_ceiling(max_ms);
        let x_of = |percentile: f64| {
            let nines = -(1.0 - percentile / 100.0).max(1e-9).log10();
            LEFT + nines.min(CHART_MAX_NINES) / CHART_MAX_NINES * plot_w
        };
        let y_of = |ms: f64| TOP + plot_h - ms / y_max * plot_h;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">Snakepay latency by percentile — {}</text>\n",
            xml_escape(&self.label)
        );
        for tick in 0..=5 {
            let ms = y_max * f64::from(tick) / 5.0;
            let y = y_of(ms);
            svg.push_str(&format!(
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.0}</text>\n",
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            ));
        }
        for (percentile, label) in [
            (0.0, "0%"),
            (90.0, "90%"),
            (99.0, "99%"),
            (99.9, "99.9%"),
            (99.99, "99.99%"),
        ] {
            let x = x_of(percentile);
            svg.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
                TOP + plot_h,
                TOP + plot_h + 18.0
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>\n\
             <text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">latency (ms)</text>\n",
            LEFT + plot_w / 2.0,
            HEIGHT - 8.0,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0
        ));
        for (index, scenario) in self.scenarios.iter().enumerate() {
            let colour = COLOURS
                .get(index % COLOURS.len())
                .copied()
                .unwrap_or("black");
            let points: Vec<String> = scenario
                .latency_by_percentile
                .iter()
                .map(|(percentile, ms)| format!("{:.1},{:.1}", x_of(*percentile), y_of(*ms)))
                .collect();
            svg.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                points.join(" ")
            ));
            let legend_y = TOP + 16.0 + 36.0 * index as f64;
            svg.push_str(&format!(
                "<line x1=\"{:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{:.0}/s, p99 {:.0} ms</text>\n",
                WIDTH - RIGHT + 12.0,
                WIDTH - RIGHT + 32.0,
                WIDTH - RIGHT + 38.0,
                legend_y + 4.0,
                scenario.scenario.name(),
                WIDTH - RIGHT + 38.0,
                legend_y + 18.0,
                scenario.operations_per_second,
                scenario.latency.p99_ms
            ));
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.max(1.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_round_up_to_1_2_5() {
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(48.0), 50.0);
        assert_eq!(nice_ceiling(51.0), 100.0);
    }

    #[test]
    fn the_percentile_curve_spans_zero_to_four_nines_and_rises() {
        let mut histogram = new_histogram();
        for micros in 1..=10_000 {
            histogram.saturating_record(micros);
        }
        let curve = percentile_curve(&histogram);
        assert_eq!(curve.first().map(|point| point.0), Some(0.0));
        assert!((curve.last().map_or(0.0, |point| point.0) - 99.99).abs() < 1e-9);
        assert!(curve.windows(2).all(|pair| pair[0].1 <= pair[1].1));
    }
}
