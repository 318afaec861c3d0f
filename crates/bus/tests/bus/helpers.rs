use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use snakepay_bus::{QueueSpec, Topology};

/// Bounded waits: generous, because a slow machine must not fail a test,
/// but every wait ends.
pub const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);

pub fn amqp_url() -> String {
    let server = std::env::var("SNAKEPAY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
    format!("{}/snakepay_test", server.trim_end_matches('/'))
}

pub fn unique_prefix() -> String {
    let mut random = [0_u8; 6];
    getrandom::fill(&mut random).unwrap();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("test.{hex}.")
}

/// A test's own topology on its own connection.
pub struct Broker {
    pub connection: Connection,
    pub channel: Channel,
    pub topology: Topology,
    pub queues: Vec<QueueSpec>,
}

impl Broker {
    /// Declares the standard topology under a fresh prefix.
    pub async fn declared(delivery_limit: u32) -> Broker {
        let broker = Broker::undeclared(delivery_limit).await;
        broker.topology.declare(&broker.channel).await.unwrap();
        broker
    }

    pub async fn undeclared(delivery_limit: u32) -> Broker {
        let connection = snakepay_bus::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        Broker {
            connection,
            channel,
            topology: Topology::new(&unique_prefix(), delivery_limit),
            queues: Topology::standard_queues(),
        }
    }

    pub fn queue(&self, spec: &QueueSpec) -> String {
        self.topology.queue_name(spec)
    }

    pub fn commands_queue(&self) -> String {
        self.queue(&QueueSpec::integration_commands())
    }

    pub fn events_queue(&self) -> String {
        self.queue(&QueueSpec::recorder_events())
    }

    pub fn dead_letter_queue(&self, spec: &QueueSpec) -> String {
        self.topology.dead_letter_queue_name(spec)
    }

    /// Takes one message, if there is one (auto-acknowledged).
    pub async fn get(&self, queue: &str) -> Option<Delivery> {
        let channel = self.fresh_channel().await;
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        message.map(|m| m.delivery)
    }

    /// Waits for one message.
    pub async fn wait_get(&self, queue: &str) -> Delivery {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(delivery) = self.get(queue).await {
                return delivery;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing arrived in {queue}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ready messages in a queue.
    pub async fn count(&self, queue: &str) -> u32 {
        let channel = self.fresh_channel().await;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        declared.message_count()
    }

    /// Waits until a queue holds `expected` ready messages.
    pub async fn wait_count(&self, queue: &str, expected: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let count = self.count(queue).await;
            if count == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{queue} holds {count} messages, expected {expected}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A channel for one operation: a passive declare of a missing queue
    /// closes its channel, and so does an error in a test.
    async fn fresh_channel(&self) -> Channel {
        if self.channel.status().connected() {
            return self.channel.clone();
        }
        self.connection.create_channel().await.unwrap()
    }

    pub async fn cleanup(self) {
        let channel = self.connection.create_channel().await.unwrap();
        self.topology.delete(&channel, &self.queues).await.unwrap();
        let _ = self.connection.close(200, "test done".into()).await;
    }
}
