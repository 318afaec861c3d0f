//! Forced duplicate deliveries: while a [`Duplicator`] runs, every command
//! and event published on a stack's exchanges is published once more, with
//! the same body and properties (so the same envelope id), and every
//! consumer gets it twice. This is what a relay that crashed between the
//! broker's confirm and its own commit, or a consumer that crashed between
//! its commit and its ack, produces.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use snakepay_bus::short;

/// Marks the copies, so they are not copied again.
const COPY_HEADER: &str = "x-snakepay-fault-copy";

pub struct Duplicator {
    copied: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    connection: lapin::Connection,
}

impl Duplicator {
    /// Starts copying on the broker at `amqp_url`, for the exchanges named
    /// with `topology_prefix`.
    pub async fn start(amqp_url: &str, topology_prefix: &str) -> anyhow::Result<Duplicator> {
        let connection = snakepay_bus::connect(amqp_url).await?;
        let channel = connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the duplicator's queue")?;
        let queue_name = queue.name().as_str().to_owned();
        for exchange in ["commands", "events"] {
            channel
                .queue_bind(
                    short(&queue_name)?,
                    short(&format!("{topology_prefix}{exchange}"))?,
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding to {topology_prefix}{exchange}"))?;
        }
        let mut consumer = channel
            .basic_consume(
                short(&queue_name)?,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let copied = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&copied);
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                let is_copy = headers
                    .inner()
                    .iter()
                    .any(|(key, _)| key.as_str() == COPY_HEADER);
                if !is_copy {
                    let mut headers = headers;
                    headers.insert(COPY_HEADER.into(), AMQPValue::Boolean(true));
                    let properties = delivery.properties.clone().with_headers(headers);
                    let published = channel
                        .basic_publish(
                            delivery.exchange.clone(),
                            delivery.routing_key.clone(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            properties,
                        )
                        .await;
                    if published.is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
        });
        Ok(Duplicator {
            copied,
            task,
            connection,
        })
    }

    /// Messages published a second time so far.
    pub fn copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.connection.close(200, "done".into()).await;
        self.copied()
    }
}
