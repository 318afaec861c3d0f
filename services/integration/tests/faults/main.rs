//! The fault-injection suite (docs/reliability.md §2).
//!
//! The platform runs as processes (crates/testkit) on dependencies this test
//! owns: its own PostgreSQL cluster, Redis server and RabbitMQ node, so it
//! can stop and restart them while other tests use the shared ones. Fault
//! proxies sit between the integration service and the processor, between
//! the integration service and the broker, and between the External API and
//! Redis. For each fault in turn, clients pay with Stripe-like retries; the
//! fault is injected, held, and cleared; then every payment must reach an
//! outcome within a bounded time, `snakepay-admin verify` must pass, and
//! every answer a client got must agree with the payment's final state.
//!
//! The short version runs with the other tests. The long one, with longer
//! outages and more clients, is ignored here and run by `scripts/faults.sh
//! --seed N`, which prints the table docs/reliability.md shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use snakepay_admin::verify::{Options, ProcessorAccess};
use snakepay_testkit::consistency::{check_payment, final_statuses, wait_settled};
use snakepay_testkit::deps::{OwnedPostgres, OwnedRabbit, OwnedRedis};
use snakepay_testkit::duplicator::Duplicator;
use snakepay_testkit::load::{self, Answer, Load, LoadSettings};
use snakepay_testkit::proxy::FaultProxy;
use snakepay_testkit::stack::{Ports, SIM_API_KEY};
use snakepay_testkit::{ServiceName, Stack};

/// The integration service's reconciler settings in the suite: it takes up
/// a payment left in flight after this long (production: 60 s), so
/// recovery fits in a test.
const RECONCILE_AFTER_MS: u64 = 3_000;
const RECONCILE_INTERVAL_MS: u64 = 500;
/// One processor call's timeout; the simulator's "timeout after work"
/// answers later than this.
const CALL_TIMEOUT_MS: u64 = 2_000;
const SIM_TIMEOUT_MS: u64 = 4_000;
/// How long payments may take to reach an outcome after a fault cleared
/// before the suite calls them stuck.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// How long each part of a round lasts.
#[derive(Debug, Clone)]
struct Plan {
    name: &'static str,
    clients: usize,
    /// Load before the fault.
    warmup: Duration,
    /// How long a fault that lasts is held.
    hold: Duration,
    /// How long the broker is down.
    broker_outage: Duration,
    /// Load after the fault cleared.
    after: Duration,
}

const SHORT: Plan = Plan {
    name: "short",
    clients: 3,
    warmup: Duration::from_secs(1),
    hold: Duration::from_secs(4),
    broker_outage: Duration::from_secs(10),
    after: Duration::from_secs(1),
};

const LONG: Plan = Plan {
    name: "long",
    clients: 6,
    warmup: Duration::from_secs(3),
    hold: Duration::from_secs(15),
    broker_outage: Duration::from_secs(30),
    after: Duration::from_secs(3),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill(ServiceName),
    StopBroker,
    StopRedis,
    RestartPostgres,
    ProcessorTimeoutAfterWork,
    Processor5xx,
    ProcessorSlow,
    Duplicates,
    CutProcessorLink,
    CutBrokerLink,
    DelayBrokerLink,
    CutRedisLink,
}

const FAULTS: [Fault; 14] = [
    Fault::Kill(ServiceName::ExternalApi),
    Fault::Kill(ServiceName::Integration),
    Fault::Kill(ServiceName::ProcessorSim),
    Fault::StopBroker,
    Fault::StopRedis,
    Fault::RestartPostgres,
    Fault::ProcessorTimeoutAfterWork,
    Fault::Processor5xx,
    Fault::ProcessorSlow,
    Fault::Duplicates,
    Fault::CutProcessorLink,
    Fault::CutBrokerLink,
    Fault::DelayBrokerLink,
    Fault::CutRedisLink,
];

impl Fault {
    fn describe(self, plan: &Plan) -> String {
        let hold = plan.hold.as_secs();
        match self {
            Fault::Kill(service) => format!("SIGKILL + restart {service}"),
            Fault::StopBroker => format!("RabbitMQ stopped {} s", plan.broker_outage.as_secs()),
            Fault::StopRedis => format!("Redis killed {hold} s (restarts empty)"),
            Fault::RestartPostgres => "PostgreSQL restarted".to_owned(),
            Fault::ProcessorTimeoutAfterWork => {
                format!("processor times out after the work (30 %) {hold} s")
            }
            Fault::Processor5xx => {
                format!("processor 5xx burst (40 % before, 30 % after work) {hold} s")
            }
            Fault::ProcessorSlow => format!("processor slow (1.5-2.5 s) {hold} s"),
            Fault::Duplicates => format!("every command and event delivered twice {hold} s"),
            Fault::CutProcessorLink => format!("integration ↔ processor cut {hold} s"),
            Fault::CutBrokerLink => format!("integration ↔ RabbitMQ cut {hold} s"),
            Fault::DelayBrokerLink => format!("integration ↔ RabbitMQ +300 ms {hold} s"),
            Fault::CutRedisLink => format!("External API ↔ Redis cut {hold} s"),
        }
    }
}

/// The region under test and its fault handles.
struct World {
    stack: Stack,
    postgres: OwnedPostgres,
    redis: OwnedRedis,
    rabbit: OwnedRabbit,
    processor_link: FaultProxy,
    broker_link: FaultProxy,
    redis_link: FaultProxy,
    secret_key: String,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl World {
    async fn start() -> World {
        let (postgres, redis, rabbit) = tokio::join!(
            OwnedPostgres::start(),
            OwnedRedis::start(),
            OwnedRabbit::start()
        );
        let (postgres, redis, rabbit) = (postgres.unwrap(), redis.unwrap(), rabbit.unwrap());
        let ports = Ports::pick();
        let processor_link = FaultProxy::start(local(ports.sim)).await.unwrap();
        let broker_link = FaultProxy::start(local(rabbit.port)).await.unwrap();
        let redis_link = FaultProxy::start(local(redis.port)).await.unwrap();
        let ours = PathBuf::from(env!("CARGO_BIN_EXE_snakepay-integration"));
        let stack = Stack::builder()
            .binaries(ours.parent().unwrap())
            .ports(ports)
            .postgres(&postgres)
            .redis_url(redis.url())
            .amqp_url(rabbit.url())
            .integration_setting("reconcile_after_ms", &RECONCILE_AFTER_MS.to_string())
            .integration_setting("reconcile_interval_ms", &RECONCILE_INTERVAL_MS.to_string())
            .integration_setting("call_timeout_ms", &CALL_TIMEOUT_MS.to_string())
            .integration_setting("breaker_open_ms", "2000")
            .service_setting(
                ServiceName::Integration,
                "integration.processor_sim.base_url",
                &format!("http://{}", processor_link.addr()),
            )
            .service_setting(
                ServiceName::Integration,
                "broker.url",
                &format!("amqp://guest:guest@{}", broker_link.addr()),
            )
            .service_setting(
                ServiceName::ExternalApi,
                "redis.url",
                &format!("redis://{}", redis_link.addr()),
            )
            .start()
            .await
            .unwrap();
        let secret_key = stack.secret_key().await.unwrap();
        World {
            stack,
            postgres,
            redis,
            rabbit,
            processor_link,
            broker_link,
            redis_link,
            secret_key,
        }
    }

    async fn sim(&self, patch: serde_json::Value) {
        self.stack.sim_config(patch).await.unwrap();
    }

    /// Injects the fault, holds it, clears it. Returns a problem with the
    /// injection itself (e.g. the duplicator copied nothing).
    async fn inject(&mut self, fault: Fault, plan: &Plan) -> Option<String> {
        let hold = plan.hold;
        match fault {
            Fault::Kill(service) => self.stack.kill_and_restart(service).await.unwrap(),
            Fault::StopBroker => {
                self.rabbit.stop().await.unwrap();
                tokio::time::sleep(plan.broker_outage).await;
                self.rabbit.resume().await.unwrap();
            }
            Fault::StopRedis => {
                self.redis.stop().await.unwrap();
                tokio::time::sleep(hold).await;
                self.redis.resume().await.unwrap();
            }
            Fault::RestartPostgres => {
                self.postgres.stop().await.unwrap();
                self.postgres.resume().await.unwrap();
            }
            Fault::ProcessorTimeoutAfterWork => {
                self.sim(json!({"timeout_after_work_rate": 0.3, "timeout_ms": SIM_TIMEOUT_MS}))
                    .await;
                tokio::time::sleep(hold).await;
                self.sim(json!({"timeout_after_work_rate": 0.0})).await;
            }
            Fault::Processor5xx => {
                self.sim(json!({"failure_rate": 0.4, "failure_after_work_rate": 0.3}))
                    .await;
                tokio::time::sleep(hold).await;
                self.sim(json!({"failure_rate": 0.0, "failure_after_work_rate": 0.0}))
                    .await;
            }
            Fault::ProcessorSlow => {
                self.sim(json!({"latency_ms": 1500, "jitter_ms": 1000}))
                    .await;
                tokio::time::sleep(hold).await;
                self.sim(json!({"latency_ms": 0, "jitter_ms": 0})).await;
            }
            Fault::Duplicates => {
                let duplicator = Duplicator::start(&self.rabbit.url(), &self.stack.topology_prefix)
                    .await
                    .unwrap();
                tokio::time::sleep(hold).await;
                if duplicator.stop().await == 0 {
                    return Some("the duplicator copied no message".to_owned());
                }
            }
            Fault::CutProcessorLink => {
                self.processor_link.cut();
                tokio::time::sleep(hold).await;
                self.processor_link.heal();
            }
            Fault::CutBrokerLink => {
                self.broker_link.cut();
                tokio::time::sleep(hold).await;
                self.broker_link.heal();
            }
            Fault::DelayBrokerLink => {
                self.broker_link.delay(Duration::from_millis(300));
                tokio::time::sleep(hold).await;
                self.broker_link.heal();
            }
            Fault::CutRedisLink => {
                self.redis_link.cut();
                tokio::time::sleep(hold).await;
                self.redis_link.heal();
            }
        }
        None
    }
}

/// One line of the table.
struct Row {
    fault: String,
    clients: usize,
    payments: usize,
    answered: usize,
    /// The creates' answers by HTTP status (`none`: no answer).
    answers: String,
    violations: Vec<String>,
    recovered_in: Option<Duration>,
}

async fn round(world: &mut World, fault: Fault, plan: &Plan, seed: u64, index: usize) -> Row {
    let settings = LoadSettings {
        clients: plan.clients,
        seed: seed.wrapping_add(index as u64),
        ..LoadSettings::default()
    };
    let run = format!("{seed}-{index}");
    let load = Load::start(
        &world.stack.api_url(""),
        &world.secret_key,
        &run,
        settings.clone(),
    );
    tokio::time::sleep(plan.warmup).await;
    let mut violations: Vec<String> = world.inject(fault, plan).await.into_iter().collect();
    let cleared = Instant::now();
    tokio::time::sleep(plan.after).await;
    let client = load.client();
    let mut payments = load.stop().await;

    // Every payment reaches an outcome; then the clients retry what never
    // got an answer (and capture what waits for it), and again every
    // payment reaches an outcome.
    let store = &world.stack.store;
    let mut recovered_in = None;
    match wait_settled(store, SETTLE_LIMIT).await.unwrap() {
        Ok(_) => recovered_in = Some(cleared.elapsed()),
        Err(stuck) => violations.push(format!("still processing after the fault: {stuck:?}")),
    }
    // What the clients were told before any later retry: a definite answer
    // to the create (after the SDK-like retries), by HTTP status.
    let answered = payments
        .iter()
        .filter(|p| p.requests.first().is_some_and(|r| r.answered()))
        .count();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for payment in &payments {
        let last = payment.requests.first().and_then(|r| r.tries.last());
        let label = match last {
            Some(Answer::Response { status, .. }) => status.to_string(),
            Some(Answer::Transport(_)) | None => "none".to_owned(),
        };
        *answers.entry(label).or_default() += 1;
    }
    load::finish(&client, &mut payments, settings.seed).await;
    if let Err(stuck) = wait_settled(store, SETTLE_LIMIT).await.unwrap() {
        violations.push(format!("still processing after the retries: {stuck:?}"));
    }

    for payment in &payments {
        for request in &payment.requests {
            if !request.answered() && request.what != "retrieve" {
                violations.push(format!(
                    "{} {} never answered: {:?}",
                    request.what,
                    request.key,
                    request.tries.last()
                ));
            }
        }
    }
    let finals = final_statuses(store).await.unwrap();
    for payment in &payments {
        for problem in check_payment(&payment.seen(), |id| finals.get(id).copied()) {
            violations.push(format!(
                "client saw: {}: {}",
                problem.intent_id, problem.reason
            ));
        }
    }
    let options = Options {
        // The retries above may have just written events (a capture's);
        // the relay publishes them within moments.
        settle_seconds: 2.0,
        reconcile_window_seconds: RECONCILE_AFTER_MS as f64 / 1000.0,
        processor: Some(ProcessorAccess {
            base_url: world.stack.sim_url.parse().unwrap(),
            api_key: SIM_API_KEY.to_owned(),
            trust: Default::default(),
        }),
    };
    let report = snakepay_admin::verify::run(store, &options).await.unwrap();
    violations.extend(
        report
            .violations
            .iter()
            .map(|v| format!("verify: {:?} {}: {}", v.kind, v.resource, v.reason)),
    );
    Row {
        fault: fault.describe(plan),
        clients: plan.clients,
        payments: payments.len(),
        answered,
        answers: answers
            .iter()
            .map(|(status, count)| format!("{status}×{count}"))
            .collect::<Vec<_>>()
            .join(" "),
        violations,
        recovered_in,
    }
}

fn table(plan: &Plan, seed: u64, rows: &[Row], total: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Fault-injection run: {} plan, seed {seed}, {} s in all\n",
        plan.name,
        total.as_secs()
    );
    let _ = writeln!(
        out,
        "| fault | load (clients) | payments | answered | answers (create) | violations | time to recover |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let recover = row
            .recovered_in
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "not recovered".to_owned());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {recover} |",
            row.fault,
            row.clients,
            row.payments,
            row.answered,
            row.answers,
            row.violations.len()
        );
    }
    out
}

async fn run_suite(plan: &Plan, seed: u64) {
    let started = Instant::now();
    let mut world = World::start().await;
    eprintln!(
        "faults: region up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for (index, fault) in FAULTS.into_iter().enumerate() {
        let round_started = Instant::now();
        let row = round(&mut world, fault, plan, seed, index).await;
        eprintln!(
            "faults: {} — {} payments, {} violations, {:.1} s",
            row.fault,
            row.payments,
            row.violations.len(),
            round_started.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    let table = table(plan, seed, &rows, started.elapsed());
    println!("{table}");
    let problems: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.violations
                .iter()
                .map(move |v| format!("{}: {v}", row.fault))
        })
        .collect();
    let payments: usize = rows.iter().map(|row| row.payments).sum();
    assert!(payments > 0, "the load made no payments");
    assert!(
        problems.is_empty(),
        "{table}\n{} violations:\n{}\n\nlogs in {}",
        problems.len(),
        problems.join("\n"),
        world.stack.dir().display()
    );
}

fn seed() -> u64 {
    std::env::var("SNAKEPAY_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_payment_survives_each_fault_short() {
    run_suite(&SHORT, seed()).await;
}

/// `scripts/faults.sh --seed N` runs this.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long fault run: scripts/faults.sh --seed N"]
async fn every_payment_survives_each_fault_long() {
    run_suite(&LONG, seed()).await;
}
