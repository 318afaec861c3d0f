//! Prometheus metrics: one registry per process, the metric families of
//! docs/metrics.md, and the text a scrape returns.
//!
//! Each family group (HTTP, cache, pipeline, …) registers itself the first
//! time a service touches it, so a service exports exactly the groups it
//! uses. Gauges that mirror state read elsewhere (pool sizes, process memory)
//! are refreshed by scrape hooks just before the text is rendered.
//!
//! Label values come from small fixed sets (routes as templates, status
//! codes, outcome names): never IDs, keys or card data (docs/metrics.md).

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Label pairs; the keys are fixed names, the values from fixed sets.
pub type Labels = Vec<(&'static str, String)>;

/// A float gauge (ages in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Duration buckets in seconds, shared by every histogram so SLO thresholds
/// (0.1, 0.25, 0.5 s) are exact bucket bounds (docs/metrics.md).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Hook = Box<dyn Fn() + Send + Sync>;

struct Global {
    registry: Mutex<Registry>,
    hooks: Mutex<Vec<Hook>>,
}

static GLOBAL: LazyLock<Global> = LazyLock::new(|| {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    let build_info: Family<Labels, Gauge> = Family::default();
    build_info
        .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
        .set(1);
    registry.register(
        "snakepay_build_info",
        "Always 1; the labels name the build.",
        build_info,
    );
    Global {
        registry: Mutex::new(registry),
        hooks: Mutex::new(Vec::new()),
    }
});

/// A poisoned lock only means another thread panicked mid-update of a
/// metric; the registry itself is still consistent enough to render.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a metric under `name` (counters without their `_total`, which
/// the encoder appends) and returns it for recording.
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    lock(&GLOBAL.registry).register(name, help, metric.clone());
    metric
}

/// Runs `hook` before every scrape, to refresh gauges that mirror state.
pub fn on_scrape(hook: impl Fn() + Send + Sync + 'static) {
    lock(&GLOBAL.hooks).push(Box::new(hook));
}

/// The exposition text of every registered metric.
pub fn render() -> String {
    for hook in lock(&GLOBAL.hooks).iter() {
        hook();
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &lock(&GLOBAL.registry)).is_err() {
        // Encoding into a String cannot fail; say so rather than serve half.
        text.clear();
        let _ = writeln!(text, "# metrics encoding failed\n# EOF");
    }
    text
}

fn histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A family of duration histograms with the shared buckets.
pub type Durations = Family<Labels, Histogram, fn() -> Histogram>;

fn durations(name: &str, help: &str) -> Durations {
    register(
        name,
        help,
        Family::new_with_constructor(histogram as fn() -> Histogram),
    )
}

fn counters(name: &str, help: &str) -> Family<Labels, Counter> {
    register(name, help, Family::default())
}

fn gauges(name: &str, help: &str) -> Family<Labels, Gauge> {
    register(name, help, Family::default())
}

fn float_gauges(name: &str, help: &str) -> Family<Labels, FloatGauge> {
    register(name, help, Family::default())
}

/// Seconds as the histograms take them.
pub fn seconds(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64()
}

/// Every HTTP service: requests by route and status, and their durations.
pub struct HttpMetrics {
    pub requests: Family<Labels, Counter>,
    pub duration: Durations,
}

pub static HTTP: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: counters(
        "snakepay_http_requests",
        "HTTP requests served, by method, route template and status code.",
    ),
    duration: durations(
        "snakepay_http_request_duration_seconds",
        "Time from request to response head, by method and route template.",
    ),
});

/// Database connection pools, refreshed at scrape time.
pub struct DbPoolMetrics {
    pub connections: Family<Labels, Gauge>,
    pub max_connections: Family<Labels, Gauge>,
}

pub static DB_POOLS: LazyLock<DbPoolMetrics> = LazyLock::new(|| DbPoolMetrics {
    connections: gauges(
        "snakepay_db_pool_connections",
        "Open connections of a database pool, by state (idle, in_use).",
    ),
    max_connections: gauges(
        "snakepay_db_pool_max_connections",
        "The most connections a database pool may open.",
    ),
});

/// Payments, the processor and the region's money (the integration service).
pub struct PaymentMetrics {
    pub operations: Family<Labels, Counter>,
    pub processor_duration: Durations,
    pub in_flight: Family<Labels, Gauge>,
    pub oldest_processing_age: FloatGauge,
    pub trial_balance: Family<Labels, Gauge>,
}

pub static PAYMENTS: LazyLock<PaymentMetrics> = LazyLock::new(|| PaymentMetrics {
    operations: counters(
        "snakepay_payment_operations",
        "Processor operations by processor, operation, outcome and decline code.",
    ),
    processor_duration: durations(
        "snakepay_processor_request_duration_seconds",
        "Duration of calls to a processor, by processor and operation.",
    ),
    in_flight: gauges(
        "snakepay_payments_in_flight",
        "Payment intents waiting on the processor or the customer, by status.",
    ),
    oldest_processing_age: register(
        "snakepay_payments_oldest_processing_age_seconds",
        "Age of the oldest payment intent in processing (0 when none).",
        FloatGauge::default(),
    ),
    trial_balance: gauges(
        "snakepay_ledger_trial_balance_minor_units",
        "Debits minus credits over every ledger line of the region, by currency; must be 0.",
    ),
});

/// Requests of the External API that waited for a processor outcome, by
/// how they were answered: `reply` (the final answer the outcome committed
/// with, carried by its reply: no database work), `reload` (the object
/// reloaded after a reply), `timeout` (the wait ran out), `failed` (the
/// wait failed; phase 1's answer was given).
pub static OUTCOME_WAITS: LazyLock<Family<Labels, Counter>> = LazyLock::new(|| {
    counters(
        "snakepay_outcome_waits",
        "Requests that waited for a processor outcome, by answer (reply, reload, timeout, failed).",
    )
});

/// Circuit breakers: 0 closed, 1 half-open, 2 open.
pub static CIRCUIT_BREAKERS: LazyLock<Family<Labels, Gauge>> = LazyLock::new(|| {
    gauges(
        "snakepay_circuit_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    )
});

/// The transactional outbox and its relay.
pub struct OutboxMetrics {
    pub backlog: Family<Labels, Gauge>,
    pub oldest_age: Family<Labels, FloatGauge>,
    pub published: Counter,
}

pub static OUTBOX: LazyLock<OutboxMetrics> = LazyLock::new(|| OutboxMetrics {
    backlog: gauges(
        "snakepay_outbox_backlog_messages",
        "Outbox rows not yet published, by shard.",
    ),
    oldest_age: float_gauges(
        "snakepay_outbox_oldest_age_seconds",
        "Age of the oldest unpublished outbox row, by shard (0 when drained).",
    ),
    published: register(
        "snakepay_outbox_published",
        "Outbox rows published to the broker and confirmed.",
        Counter::default(),
    ),
});

/// Broker consumers and queues.
pub struct BrokerMetrics {
    pub consumed: Family<Labels, Counter>,
    pub redeliveries: Family<Labels, Counter>,
    pub queue_depth: Family<Labels, Gauge>,
    pub dead_letters: Family<Labels, Gauge>,
}

pub static BROKER: LazyLock<BrokerMetrics> = LazyLock::new(|| BrokerMetrics {
    consumed: counters(
        "snakepay_broker_messages_consumed",
        "Messages a consumer finished, by queue and result (ack, retry, dead_letter).",
    ),
    redeliveries: counters(
        "snakepay_broker_redeliveries",
        "Messages delivered again after a failure or a lost consumer, by queue.",
    ),
    queue_depth: gauges(
        "snakepay_broker_queue_depth_messages",
        "Messages ready in a queue (consumer lag), by queue.",
    ),
    dead_letters: gauges(
        "snakepay_dead_letter_messages",
        "Messages in a dead-letter queue, by the queue they came from.",
    ),
});

/// Webhook deliveries.
pub struct WebhookMetrics {
    pub attempts: Family<Labels, Counter>,
    pub abandoned: Counter,
}

pub static WEBHOOKS: LazyLock<WebhookMetrics> = LazyLock::new(|| WebhookMetrics {
    attempts: counters(
        "snakepay_webhook_delivery_attempts",
        "Webhook POST attempts, by result (delivered, failed).",
    ),
    abandoned: register(
        "snakepay_webhook_deliveries_abandoned",
        "Webhook deliveries given up after the last retry.",
        Counter::default(),
    ),
});

/// The Redis cache and rate limits.
pub struct CacheMetrics {
    pub requests: Family<Labels, Counter>,
    pub redis_duration: Histogram,
    pub degraded: Family<Labels, Counter>,
    pub rate_limit_decisions: Family<Labels, Counter>,
}

pub static CACHE: LazyLock<CacheMetrics> = LazyLock::new(|| CacheMetrics {
    requests: counters(
        "snakepay_cache_requests",
        "Cache lookups by cache and result (hit, miss, error).",
    ),
    redis_duration: register(
        "snakepay_redis_command_duration_seconds",
        "Duration of Redis calls, failures and timeouts included.",
        histogram(),
    ),
    degraded: counters(
        "snakepay_dependency_degraded",
        "Operations served without a dependency (e.g. from PostgreSQL with Redis down).",
    ),
    rate_limit_decisions: counters(
        "snakepay_rate_limit_decisions",
        "Rate-limit decisions by limiter (redis, local) and result (allowed, limited).",
    ),
});

/// Builds a label set from fixed names and values.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(key, value)| (key, value.to_owned()))
        .collect()
}

/// `process_resident_memory_bytes` and `process_cpu_seconds_total`, read
/// from /proc at scrape time (Linux; elsewhere they are left out).
#[derive(Debug)]
struct ProcessCollector;

/// Linux reports CPU time in USER_HZ ticks, fixed at 100 for user space on
/// every architecture we run on.
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(bytes) = resident_memory_bytes() {
            let gauge = ConstGauge::new(bytes);
            let metric = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                None,
                MetricType::Gauge,
            )?;
            gauge.encode(metric)?;
        }
        if let Some(seconds) = cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                MetricType::Counter,
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

fn resident_memory_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from the closing parenthesis. utime and stime are fields 14, 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_registered_families_with_conventional_names() {
        HTTP.requests
            .get_or_create(&labels([
                ("method", "GET"),
                ("route", "/v1/things/{id}"),
                ("status", "200"),
            ]))
            .inc();
        HTTP.duration
            .get_or_create(&labels([("method", "GET"), ("route", "/v1/things/{id}")]))
            .observe(0.2);
        let text = render();
        assert!(
            text.contains(
                r#"snakepay_http_requests_total{method="GET",route="/v1/things/{id}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"snakepay_http_request_duration_seconds_bucket{le="0.25",method="GET",route="/v1/things/{id}"} 1"#
            ) || text.contains(
                r#"snakepay_http_request_duration_seconds_bucket{method="GET",route="/v1/things/{id}",le="0.25"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE snakepay_build_info gauge"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }

    #[test]
    fn the_process_collector_reads_memory_and_cpu() {
        let text = render();
        let rss = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse::<f64>().ok());
        assert!(rss.is_some_and(|bytes| bytes > 1_000_000.0), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }
}
