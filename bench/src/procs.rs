//! CPU seconds and peak memory per service and per dependency, from /proc.
//!
//! A group is a set of processes: one service (its pid), PostgreSQL (the
//! server's own processes plus the backends of the benchmark's databases,
//! told apart by their process title), RabbitMQ (`beam.smp`), Redis
//! (`redis-server`) and the load generator itself. CPU is utime + stime
//! between the start and the end of a phase, per pid: a process that
//! started during the phase counts from zero, and every process's ticks are
//! read at each sample too, so one that ended during the phase (pgbench's
//! backends end with pgbench, before the phase does) keeps what it used up
//! to its last sample. Memory is sampled during the phase and
//! the peak of each group's sum is reported: VmRSS for the platform's own
//! processes; for multi-process dependencies the proportional set size
//! (Pss), because PostgreSQL's backends all map the same shared buffers and
//! summing their RSS would count them once per backend. A server's VmHWM is
//! not used: it remembers peaks from before the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::NamedPid;

/// Memory and CPU ticks are sampled this often during a phase.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Pid(u32),
    Postgres { database_prefix: String },
    Command(&'static str),
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    /// "service", "simulated processor", "dependency" or "load generator".
    kind: &'static str,
    matcher: Matcher,
}

/// What one group used during one phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub name: String,
    pub kind: &'static str,
    pub cpu_seconds: f64,
    pub peak_memory_mb: f64,
    /// What the memory figure is: "rss" or "pss (sum)".
    pub memory_measure: &'static str,
    pub processes: usize,
}

/// The whole machine during one phase: how busy it was, and how much of
/// that was nobody we measure (other work on the machine = noise).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MachineUsage {
    pub cores: usize,
    /// The wall time between the phase's first and last /proc reading,
    /// which can exceed the nominal window on a busy machine.
    pub window_seconds: f64,
    pub busy_cpu_seconds: f64,
    pub unaccounted_cpu_seconds: f64,
    pub load_average_1m_start: f64,
    pub load_average_1m_end: f64,
}

#[derive(Clone)]
pub struct Sampler {
    groups: Arc<Vec<Group>>,
    ticks_per_second: f64,
}

/// A phase being measured; [`Phase::finish`] returns the usage.
pub struct Phase {
    sampler: Sampler,
    cpu_start: Vec<HashMap<u32, u64>>,
    /// Per group, each pid's ticks at its latest sample.
    cpu_seen: Arc<Mutex<Vec<HashMap<u32, u64>>>>,
    peaks_kb: Arc<Mutex<Vec<u64>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    machine_start: Option<(u64, u64)>,
    load_start: f64,
    started: std::time::Instant,
}

/// The processor simulator stands in for an external processor (DESIGN.md
/// §6): it is measured like a service, but it is not one of the platform's
/// services, and it keeps every operation in memory by design (its journal
/// is how tests prove each payment was charged once), so its memory grows
/// with the run and the services' memory target does not apply to it.
pub const SIMULATED_PROCESSOR: &str = "processor-sim";

fn service_kind(name: &str) -> &'static str {
    if name == SIMULATED_PROCESSOR {
        "simulated processor"
    } else {
        "service"
    }
}

impl Sampler {
    pub fn new(services: &[NamedPid], database_prefix: &str) -> Self {
        let mut groups: Vec<Group> = services
            .iter()
            .map(|service| Group {
                name: service.name.clone(),
                kind: service_kind(&service.name),
                matcher: Matcher::Pid(service.pid),
            })
            .collect();
        groups.push(Group {
            name: "postgresql".to_owned(),
            kind: "dependency",
            matcher: Matcher::Postgres {
                database_prefix: database_prefix.to_owned(),
            },
        });
        groups.push(Group {
            name: "rabbitmq".to_owned(),
            kind: "dependency",
            matcher: Matcher::Command("beam.smp"),
        });
        groups.push(Group {
            name: "redis".to_owned(),
            kind: "dependency",
            matcher: Matcher::Command("redis-server"),
        });
        groups.push(Group {
            name: "snakepay-bench".to_owned(),
            kind: "load generator",
            matcher: Matcher::Pid(std::process::id()),
        });
        Sampler {
            groups: Arc::new(groups),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    /// Starts measuring a phase.
    pub fn start(&self) -> Phase {
        let cpu_start = ticks_of(&members(&self.groups));
        let cpu_seen = Arc::new(Mutex::new(cpu_start.clone()));
        let peaks_kb = Arc::new(Mutex::new(vec![0; self.groups.len()]));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let groups = Arc::clone(&self.groups);
        let peaks = Arc::clone(&peaks_kb);
        let seen = Arc::clone(&cpu_seen);
        let task = tokio::spawn(async move {
            loop {
                let (sample, ticks) = tokio::task::spawn_blocking({
                    let groups = Arc::clone(&groups);
                    move || (memory_kb(&groups), ticks_of(&members(&groups)))
                })
                .await
                .unwrap_or_default();
                if let Ok(mut peaks) = peaks.lock() {
                    for (peak, kb) in peaks.iter_mut().zip(sample) {
                        *peak = (*peak).max(kb);
                    }
                }
                if let Ok(mut seen) = seen.lock() {
                    remember(&mut seen, ticks);
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
                }
            }
        });
        Phase {
            sampler: self.clone(),
            cpu_start,
            cpu_seen,
            peaks_kb,
            stop,
            task,
            machine_start: machine_ticks(),
            load_start: load_average_1m(),
            started: std::time::Instant::now(),
        }
    }
}

impl Phase {
    pub async fn finish(self) -> (Vec<Usage>, MachineUsage) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let groups = &self.sampler.groups;
        let members = members(groups);
        let mut seen = self
            .cpu_seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default();
        remember(&mut seen, ticks_of(&members));
        let peaks = self
            .peaks_kb
            .lock()
            .map(|peaks| peaks.clone())
            .unwrap_or_default();
        let ticks = self.sampler.ticks_per_second;
        let mut usages = Vec::with_capacity(groups.len());
        for (index, group) in groups.iter().enumerate() {
            let start = self.cpu_start.get(index);
            let used: u64 = seen
                .get(index)
                .map(|ticks| {
                    ticks
                        .iter()
                        .map(|(pid, now)| {
                            let before =
                                start.and_then(|start| start.get(pid)).copied().unwrap_or(0);
                            now.saturating_sub(before)
                        })
                        .sum()
                })
                .unwrap_or(0);
            let processes = seen.get(index).map_or(0, HashMap::len);
            usages.push(Usage {
                name: group.name.clone(),
                kind: group.kind,
                cpu_seconds: used as f64 / ticks,
                peak_memory_mb: peaks.get(index).copied().unwrap_or(0) as f64 / 1024.0,
                memory_measure: if matches!(group.matcher, Matcher::Pid(_)) {
                    "rss"
                } else {
                    "pss (sum)"
                },
                processes,
            });
        }
        let mut machine = MachineUsage {
            window_seconds: self.started.elapsed().as_secs_f64(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_1m_start: self.load_start,
            load_average_1m_end: load_average_1m(),
            ..MachineUsage::default()
        };
        if let (Some((busy_start, _)), Some((busy_end, _))) = (self.machine_start, machine_ticks())
        {
            machine.busy_cpu_seconds = busy_end.saturating_sub(busy_start) as f64 / ticks;
            let measured: f64 = usages.iter().map(|usage| usage.cpu_seconds).sum();
            machine.unaccounted_cpu_seconds = (machine.busy_cpu_seconds - measured).max(0.0);
        }
        (usages, machine)
    }
}

/// Each group's pids with their CPU ticks, now.
fn ticks_of(members: &[Vec<u32>]) -> Vec<HashMap<u32, u64>> {
    members
        .iter()
        .map(|pids| {
            pids.iter()
                .filter_map(|pid| Some((*pid, cpu_ticks(*pid)?)))
                .collect()
        })
        .collect()
}

/// Keeps the newest ticks of every pid seen so far, including pids that
/// have ended since (their last reading stays).
fn remember(seen: &mut Vec<HashMap<u32, u64>>, now: Vec<HashMap<u32, u64>>) {
    if seen.len() < now.len() {
        seen.resize_with(now.len(), HashMap::new);
    }
    for (group, ticks) in seen.iter_mut().zip(now) {
        for (pid, value) in ticks {
            let entry = group.entry(pid).or_insert(0);
            *entry = (*entry).max(value);
        }
    }
}

/// The pids of every group, now.
fn members(groups: &[Group]) -> Vec<Vec<u32>> {
    let processes = all_processes();
    groups
        .iter()
        .map(|group| match &group.matcher {
            Matcher::Pid(pid) => vec![*pid],
            Matcher::Command(command) => processes
                .iter()
                .filter(|process| process.comm == *command)
                .map(|process| process.pid)
                .collect(),
            Matcher::Postgres { database_prefix } => processes
                .iter()
                .filter(|process| {
                    process.comm == "postgres" && is_ours(&process.title, database_prefix)
                })
                .map(|process| process.pid)
                .collect(),
        })
        .collect()
}

/// A client backend's title is `postgres: [cluster: ]user database
/// host(port) state`; the server's own processes (postmaster, checkpointer,
/// WAL writer, …) have none of that and serve every database, so count.
fn is_ours(title: &str, database_prefix: &str) -> bool {
    let client_backend = title.contains('(') || title.contains("[local]");
    !client_backend
        || title
            .split_whitespace()
            .any(|word| word.starts_with(database_prefix))
}

struct Process {
    pid: u32,
    comm: String,
    title: String,
}

fn all_processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some(Process {
                pid,
                comm: comm.trim_end().to_owned(),
                title: String::from_utf8_lossy(&title).replace('\0', " "),
            })
        })
        .collect()
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from its closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; here 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Every group's current memory in KiB (see the module header).
fn memory_kb(groups: &[Group]) -> Vec<u64> {
    let members = members(groups);
    groups
        .iter()
        .zip(members)
        .map(|(group, pids)| {
            let field = if matches!(group.matcher, Matcher::Pid(_)) {
                ("status", "VmRSS:")
            } else {
                ("smaps_rollup", "Pss:")
            };
            pids.iter()
                .filter_map(|pid| proc_field_kb(*pid, field.0, field.1))
                .sum()
        })
        .collect()
}

fn proc_field_kb(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    line.get(field.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (busy, total) clock ticks of the whole machine since boot.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values.
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn load_average_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The kernel's USER_HZ (`getconf CLK_TCK`); 100 on every Linux we run on.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_of_other_databases_do_not_count_but_the_server_does() {
        let prefix = "snakepay_bench";
        assert!(is_ours("postgres: 15/main: checkpointer ", prefix));
        assert!(is_ours(
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/x",
            prefix
        ));
        assert!(is_ours(
            "postgres: 15/main: snakepay snakepay_bench_shard_0 127.0.0.1(5432) idle",
            prefix
        ));
        assert!(!is_ours(
            "postgres: 15/main: snakepay snakepay_test_7 127.0.0.1(40000) idle",
            prefix
        ));
    }

    #[test]
    fn the_simulator_is_not_counted_as_a_platform_service() {
        assert_eq!(service_kind("processor-sim"), "simulated processor");
        assert_eq!(service_kind("external-api"), "service");
        assert_eq!(service_kind("integration"), "service");
    }

    #[test]
    fn a_process_that_ended_keeps_the_ticks_of_its_last_sample() {
        let mut seen = vec![HashMap::from([(10, 5), (11, 7)])];
        // 11 ended; 12 started; 10 went on.
        remember(&mut seen, vec![HashMap::from([(10, 9), (12, 3)])]);
        assert_eq!(seen, vec![HashMap::from([(10, 9), (11, 7), (12, 3)])]);
        // A later, older-looking reading never lowers what was seen.
        remember(&mut seen, vec![HashMap::from([(10, 8)])]);
        assert_eq!(seen[0][&10], 9);
    }

    #[test]
    fn this_process_has_cpu_ticks_and_memory() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(proc_field_kb(pid, "status", "VmRSS:").unwrap_or(0) > 0);
    }
}
