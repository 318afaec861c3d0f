//! The service's background loops, each supervised: a broker or database
//! outage makes a loop wait and try again (capped backoff), never exit, so
//! the service heals by itself when its dependencies return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use snakepay_bus::{Message, Outcome, Publisher, QueueSpec, RelayConfig, Topology, run_consumer};
use snakepay_store::outbox::CommandPayload;
use snakepay_webhooks::Dispatcher;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::IntegrationConfig;
use crate::pipeline::Pipeline;
use crate::reconciler;
use crate::recorder::Recorder;

/// The pause before reconnecting to the broker, doubled per failure.
const RECONNECT_INITIAL_MS: u64 = 200;
const RECONNECT_MAX_MS: u64 = 10_000;

pub fn spawn_all(
    config: &IntegrationConfig,
    pipeline: Arc<Pipeline>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let url = config.broker.url.expose().to_string();
    let topology = Topology::from_config(&config.broker);
    let prefetch = config.broker.prefetch;
    let section = &config.integration;
    let mut tasks = Vec::new();

    let commands = Arc::clone(&pipeline);
    tasks.push(tokio::spawn(
        consume(
            url.clone(),
            topology.clone(),
            QueueSpec::integration_commands(),
            prefetch,
            move |message: Message| {
                let pipeline = Arc::clone(&commands);
                async move { handle_command(&pipeline, &message).await }
            },
            stop.clone(),
        )
        .in_current_span(),
    ));

    let recorder = Recorder::start(pipeline.store.clone());
    tasks.push(tokio::spawn(
        consume(
            url.clone(),
            topology.clone(),
            QueueSpec::recorder_events(),
            // Each message carries a batch of entries (recorder.rs).
            crate::recorder::PREFETCH,
            move |message: Message| {
                let recorder = recorder.clone();
                async move { recorder.record(&message).await }
            },
            stop.clone(),
        )
        .in_current_span(),
    ));

    match Dispatcher::with_trust(
        pipeline.store.clone(),
        Arc::clone(&pipeline.vault),
        Arc::new(snakepay_webhooks::SystemClock),
        section.webhooks.clone(),
        &config.tls,
    ) {
        Ok(dispatcher) => {
            let dispatcher_stop = stop.clone();
            tasks.push(tokio::spawn(
                async move {
                    snakepay_webhooks::run_dispatcher(&dispatcher, stopped(dispatcher_stop)).await;
                }
                .in_current_span(),
            ));
        }
        Err(error) => {
            // Validated at start-up, so this is a bug; payments still flow.
            tracing::error!(error = %format!("{error:#}"), "webhook dispatcher not started");
        }
    }

    tasks.push(tokio::spawn(
        crate::gauges::run(
            Duration::from_millis(section.gauges_interval_ms),
            pipeline.store.clone(),
            url.clone(),
            topology.clone(),
            stop.clone(),
        )
        .in_current_span(),
    ));

    if section.relay_enabled {
        let relay_config = RelayConfig {
            idle_poll_ms: section.relay_idle_poll_ms,
            ..RelayConfig::default()
        };
        tasks.push(tokio::spawn(
            relay(
                url,
                topology,
                pipeline.store.clone(),
                relay_config,
                stop.clone(),
            )
            .in_current_span(),
        ));
    }

    let interval = Duration::from_millis(section.reconcile_interval_ms);
    let after = Duration::from_millis(section.reconcile_after_ms);
    let batch = section.reconcile_batch;
    tasks.push(tokio::spawn(
        async move {
            let mut stopping = Box::pin(stopped(stop));
            loop {
                tokio::select! {
                    () = &mut stopping => break,
                    () = tokio::time::sleep(interval) => {
                        reconciler::reconcile_once(&pipeline, after, batch).await;
                    }
                }
            }
        }
        .in_current_span(),
    ));
    tasks
}

async fn handle_command(pipeline: &Pipeline, message: &Message) -> Outcome {
    let payload: CommandPayload = match serde_json::from_value(message.envelope.payload.clone()) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!(broker.message_id = %message.envelope.id, error = %error, "malformed command rejected");
            return Outcome::Reject;
        }
    };
    match pipeline.execute(&payload).await {
        Ok(()) => Outcome::Ack,
        Err(error) => {
            tracing::warn!(
                broker.message_id = %message.envelope.id,
                payment.id = %payload.payment_intent,
                error = %format!("{error:#}"),
                "command failed; it will be redelivered"
            );
            Outcome::Retry
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Sleeps `ms`, or returns `true` early if the service is stopping.
async fn pause_or_stop(stop: &mut watch::Receiver<bool>, ms: u64) -> bool {
    let stopped_early = tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => true,
        () = tokio::time::sleep(Duration::from_millis(ms)) => false,
    };
    stopped_early || *stop.borrow()
}

/// Consumes `spec`'s queue until stopped, reconnecting after failures. The
/// topology is declared on every connection, so a broker that lost it (or
/// a fresh one) is set up again.
async fn consume<H, F>(
    url: String,
    topology: Topology,
    spec: QueueSpec,
    prefetch: u16,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Message) -> F,
    F: Future<Output = Outcome>,
{
    let queue = topology.queue_name(&spec);
    let mut backoff_ms = RECONNECT_INITIAL_MS;
    while !*stop.borrow() {
        let result = async {
            let connection = snakepay_bus::connect(&url).await?;
            let channel = connection.create_channel().await?;
            topology.declare(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            backoff_ms = RECONNECT_INITIAL_MS;
            let result = run_consumer(
                &connection,
                &queue,
                &spec.name,
                prefetch,
                &handler,
                stopped(stop.clone()),
            )
            .await;
            let _ = connection.close(200, "consumer stopped".into()).await;
            result
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(broker.queue = %queue, error = %format!("{error:#}"), "consumer failed; reconnecting");
        }
        if pause_or_stop(&mut stop, backoff_ms).await {
            break;
        }
        backoff_ms = (backoff_ms * 2).min(RECONNECT_MAX_MS);
    }
}

async fn relay(
    url: String,
    topology: Topology,
    store: snakepay_store::Store,
    config: RelayConfig,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff_ms = RECONNECT_INITIAL_MS;
    loop {
        match Publisher::connect(&url).await {
            Ok(publisher) => {
                snakepay_bus::run_relay(
                    &store,
                    &publisher,
                    &topology,
                    &config,
                    stopped(stop.clone()),
                )
                .await;
                publisher.close().await;
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error, "outbox relay cannot reach the broker");
                if pause_or_stop(&mut stop, backoff_ms).await {
                    return;
                }
                backoff_ms = (backoff_ms * 2).min(RECONNECT_MAX_MS);
            }
        }
    }
}
