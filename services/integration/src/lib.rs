//! Snakepay's Payment Processor Integration service: the only part that
//! decrypts card data and talks to processors (DESIGN.md §5, §6, §8).
//!
//! # Layout
//!
//! - `lib.rs` (this file): [`start`] / [`run`] — wiring the tasks below, the
//!   HTTP listener, graceful shutdown.
//! - [`config`]: `[integration]` and the shared sections it reads.
//! - [`pipeline`]: commands → processor calls → committed outcomes; the
//!   same path serves commands, the reconciler and notifications.
//! - [`processor`]: the `Processor` trait and its idempotency keys;
//!   [`processor::sim`] is the processor simulator's client.
//! - [`gateway`]: the processor's circuit breaker (`snakepay-resilience`),
//!   bounded retries with the same key, backoff.
//! - [`egress`]: the outbound HTTP client: proxy, host allow-list, TLS.
//! - [`reconciler`]: resolves payments left in flight by status inquiry.
//! - `notifications`: the signed processor notification endpoint.
//! - [`recorder`]: batch-writes event history from the broker.
//! - `tasks`: the broker consumers (commands, recorder),
//!   the webhook dispatcher (`snakepay-webhooks`), the outbox relay and the
//!   reconciler, as supervised background loops.

pub mod config;
pub mod egress;
pub mod gateway;
mod gauges;
mod notifications;
pub mod pipeline;
pub mod processor;
pub mod reconciler;
pub mod recorder;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use snakepay_bus::Publisher;
use snakepay_http::{Health, ReadinessCheck, ServerHandle, health_routes};
use snakepay_store::Store;
use snakepay_vault::Vault;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::IntegrationConfig;

use crate::egress::Egress;
use crate::gateway::Gateway;
use crate::pipeline::Pipeline;
use crate::processor::sim::SimProcessor;
use snakepay_resilience::{Breaker, SystemClock};

/// The running service: its listener and its background tasks.
pub struct RunningIntegration {
    server: ServerHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pipeline: Arc<Pipeline>,
}

impl RunningIntegration {
    /// `http://<addr>` of the notification and health listener.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Stops taking work, lets in-flight handlers finish, and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.server.shutdown().await?;
        if let Some(publisher) = &self.pipeline.replies {
            publisher.close().await;
        }
        // The card accesses of the last fraction of a second are still in
        // the audit buffer: write them before the pools close.
        if let Err(error) = self.pipeline.audit.flush().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "flushing the audit buffer at shutdown"
            );
        }
        self.pipeline.store.close().await;
        Ok(())
    }
}

/// Starts every part of the service in the background.
pub async fn start(config: &IntegrationConfig) -> anyhow::Result<RunningIntegration> {
    let section = &config.integration;
    let store = Store::connect_lazy_as(&config.database, &section.database_user)?;
    let vault = open_vault(&config.vault)?;
    let egress = Egress::new(&section.egress, &config.tls)?;
    let processor = SimProcessor::new(
        section.processor_sim.base_url.clone(),
        section.processor_sim.api_key.clone(),
        egress,
        Duration::from_millis(section.call_timeout_ms),
    );
    let gateway = Gateway {
        processor: Arc::new(processor),
        breaker: Breaker::new(
            SystemClock::shared(),
            section.breaker_failure_threshold,
            section.breaker_open_ms,
        ),
        attempts: section.call_attempts,
        backoff_ms: section.retry_backoff_ms,
        backoff_max_ms: section.retry_backoff_max_ms,
    };
    let broker_url = config.broker.url.expose().to_string();
    // Every queue must exist before the relay publishes anything: an event
    // published while only some queues are bound reaches only those.
    declare_topology(&broker_url, &config.broker).await?;
    let replies = Publisher::connect_unconfirmed(&broker_url)
        .await
        .context("connecting the reply publisher to the broker")?;
    let pipeline = Arc::new(Pipeline {
        audit: snakepay_store::audit::Recorder::start(store.control().clone()),
        origin: snakepay_store::audit::this_host(),
        store: store.clone(),
        vault: Arc::new(vault),
        gateway,
        replies: Some(Arc::new(replies)),
        caches: config
            .redis
            .as_ref()
            .map(snakepay_cache::Redis::new)
            .transpose()?
            .map(|redis| snakepay_cache::Caches::new(&redis)),
        api_version: snakepay_http::API_VERSION,
    });

    store.export_pool_metrics();
    let breaker_pipeline = Arc::downgrade(&pipeline);
    snakepay_telemetry::metrics::on_scrape(move || {
        if let Some(pipeline) = breaker_pipeline.upgrade() {
            let name = format!("processor_{}", pipeline.gateway.processor.name());
            snakepay_telemetry::metrics::CIRCUIT_BREAKERS
                .get_or_create(&snakepay_telemetry::metrics::labels([("breaker", &name)]))
                .set(pipeline.gateway.breaker.state().gauge_value());
        }
    });
    let (shutdown, stop) = watch::channel(false);
    let tasks = tasks::spawn_all(config, Arc::clone(&pipeline), stop);

    let readiness_store = store.clone();
    let checks = vec![ReadinessCheck::new("postgres", move || {
        let store = readiness_store.clone();
        async move {
            match store.ping().await {
                Ok(()) => Health::ok(),
                Err(error) => Health::down(format!("{error:#}")),
            }
        }
    })];
    let app = notifications::routes(
        Arc::clone(&pipeline),
        section.processor_sim.notification_secret.clone(),
    )
    .merge(health_routes(checks));
    let app = snakepay_http::admin::record_requests(snakepay_http::admin::mark_routes(app));
    let server = snakepay_http::admin::spawn_with_admin(&section.http, app)
        .await
        .context("starting the listeners")?;
    tracing::info!(http.addr = %server.addr(), "integration service listening");
    Ok(RunningIntegration {
        server,
        shutdown,
        tasks,
        pipeline,
    })
}

async fn declare_topology(
    url: &str,
    broker: &snakepay_config::sections::BrokerConfig,
) -> anyhow::Result<()> {
    let connection = snakepay_bus::connect(url).await?;
    let channel = connection.create_channel().await?;
    snakepay_bus::Topology::from_config(broker)
        .declare(&channel)
        .await
        .context("declaring the broker topology")?;
    let _ = connection.close(200, "topology declared".into()).await;
    Ok(())
}

/// Runs until SIGTERM or SIGINT, then drains.
pub async fn run(config: IntegrationConfig) -> anyhow::Result<()> {
    let telemetry = config.telemetry.clone();
    snakepay_telemetry::run_instrumented("integration", &telemetry, serve_until_shutdown(config))
        .await
}

async fn serve_until_shutdown(config: IntegrationConfig) -> anyhow::Result<()> {
    let running = start(&config).await?;
    snakepay_http::shutdown_signal().await;
    tracing::info!("shutdown requested");
    running.shutdown().await?;
    tracing::info!("integration service stopped");
    Ok(())
}

/// The vault with the configured key provider, reloading its key ring so a
/// `snakepay-admin keys rotate` reaches this service without a restart.
fn open_vault(config: &snakepay_config::sections::VaultConfig) -> anyhow::Result<Vault> {
    let provider = snakepay_vault::key_provider(&config.key_provider, &config.key_ring_path)?;
    let description = provider.describe();
    Vault::reloading(provider, snakepay_vault::DEFAULT_RELOAD_INTERVAL)
        .with_context(|| format!("loading the vault's keys from the {description}"))
}
