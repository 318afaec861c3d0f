//! The broker's topology, declared idempotently at start-up by every service
//! that publishes or consumes (declaring what exists with the same arguments
//! is a no-op, so start order does not matter).
//!
//! - `{prefix}commands` and `{prefix}events`: durable topic exchanges; the
//!   relay picks one by the routing key's first segment (`command.…`,
//!   `event.…`).
//! - One quorum queue per consumer (`{prefix}integration.commands` bound to
//!   `command.#`, `{prefix}recorder.events` bound to `event.#`, and whatever a
//!   service declares through [`Topology::declare_queue`]). Quorum queues
//!   are replicated and count deliveries, so `x-delivery-limit` sends a
//!   message that keeps failing to the dead-letter queue instead of looping.
//! - `{prefix}dead-letter`: a direct exchange; each queue dead-letters with
//!   its own name as routing key into `{queue}.dlq`, a quorum queue that
//!   nobody consumes automatically: poison messages wait there for an
//!   operator to replay them (DESIGN.md §5).
//!
//! `recorder.events` catches every event so that no event is unroutable:
//! the publisher treats an unroutable message as an error, and an event
//! without a binding would otherwise stall the relay.

use anyhow::Context;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::short;

/// Which of the two main exchanges a binding is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeRole {
    Commands,
    Events,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: ExchangeRole,
    /// A topic pattern such as `command.#` or `event.payment_intent.*`.
    pub pattern: String,
}

/// One consumer's queue; `name` is without the topology's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<Binding>,
}

impl QueueSpec {
    pub fn new(name: &str, bindings: &[(ExchangeRole, &str)]) -> QueueSpec {
        QueueSpec {
            name: name.to_owned(),
            bindings: bindings
                .iter()
                .map(|(exchange, pattern)| Binding {
                    exchange: *exchange,
                    pattern: (*pattern).to_owned(),
                })
                .collect(),
        }
    }

    /// The integration service's queue: every payment command.
    pub fn integration_commands() -> QueueSpec {
        QueueSpec::new(
            "integration.commands",
            &[(ExchangeRole::Commands, "command.#")],
        )
    }

    /// The request log (`log.#`), and the catch-all for `event.#` that keeps
    /// any event message routable (see the module header). Events are not
    /// announced any more (the events table is their history, webhook
    /// deliveries are created with them: `snakepay_store::events`); the
    /// recorder acknowledges announcements earlier versions left queued.
    pub fn recorder_events() -> QueueSpec {
        QueueSpec::new(
            "recorder.events",
            &[
                (ExchangeRole::Events, "event.#"),
                (ExchangeRole::Events, "log.#"),
            ],
        )
    }
}

/// Queues that earlier versions declared and that nothing consumes any
/// more. Still bound to their exchange on a broker upgraded in place, they
/// would fill forever (and a full disk blocks every publisher), so
/// [`Topology::declare`] deletes them. `webhooks.events`: webhook deliveries
/// are created with their events now (`snakepay_store::events::record`);
/// its announcements only duplicated the events table.
pub const RETIRED_QUEUES: &[&str] = &["webhooks.events"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prepended to every exchange and queue name: empty in production, a
    /// unique string per test.
    pub prefix: String,
    /// Deliveries after which a message that keeps failing is dead-lettered
    /// (`broker.delivery_limit`, at least 1).
    pub delivery_limit: u32,
}

impl Topology {
    pub fn new(prefix: &str, delivery_limit: u32) -> Topology {
        Topology {
            prefix: prefix.to_owned(),
            delivery_limit,
        }
    }

    pub fn from_config(config: &snakepay_config::sections::BrokerConfig) -> Topology {
        Topology::new(&config.topology_prefix, config.delivery_limit)
    }

    pub fn commands_exchange(&self) -> String {
        format!("{}commands", self.prefix)
    }

    pub fn events_exchange(&self) -> String {
        format!("{}events", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}dead-letter", self.prefix)
    }

    pub fn exchange(&self, role: ExchangeRole) -> String {
        match role {
            ExchangeRole::Commands => self.commands_exchange(),
            ExchangeRole::Events => self.events_exchange(),
        }
    }

    /// The exchange a routing key is published to, by its first segment;
    /// `None` for a key that is neither a command nor an event.
    pub fn exchange_for(&self, routing_key: &str) -> Option<String> {
        match routing_key.split('.').next() {
            Some("command") => Some(self.commands_exchange()),
            Some("event") => Some(self.events_exchange()),
            _ => None,
        }
    }

    pub fn queue_name(&self, spec: &QueueSpec) -> String {
        format!("{}{}", self.prefix, spec.name)
    }

    pub fn dead_letter_queue_name(&self, spec: &QueueSpec) -> String {
        format!("{}{}.dlq", self.prefix, spec.name)
    }

    /// The queues every region has; services add their own.
    pub fn standard_queues() -> Vec<QueueSpec> {
        vec![
            QueueSpec::integration_commands(),
            QueueSpec::recorder_events(),
        ]
    }

    /// Exchanges and the standard queues.
    /// Exchanges and the standard queues; queues of earlier versions that
    /// nothing consumes any more are deleted (see [`RETIRED_QUEUES`]).
    pub async fn declare(&self, channel: &Channel) -> anyhow::Result<()> {
        self.declare_exchanges(channel).await?;
        for spec in Topology::standard_queues() {
            self.declare_queue(channel, &spec).await?;
        }
        self.retire(channel).await
    }

    /// Deletes the retired queues and their dead-letter queues. RabbitMQ
    /// answers a delete of a queue that does not exist with success, so
    /// this is idempotent like the declarations.
    async fn retire(&self, channel: &Channel) -> anyhow::Result<()> {
        let retired: Vec<QueueSpec> = RETIRED_QUEUES
            .iter()
            .map(|name| QueueSpec::new(name, &[]))
            .collect();
        self.delete_queues(channel, &retired).await
    }

    /// Deletes `specs`' queues and their dead-letter queues.
    async fn delete_queues(&self, channel: &Channel, specs: &[QueueSpec]) -> anyhow::Result<()> {
        for spec in specs {
            for queue in [self.queue_name(spec), self.dead_letter_queue_name(spec)] {
                channel
                    .queue_delete(short(&queue)?, QueueDeleteOptions::default())
                    .await
                    .with_context(|| format!("deleting queue {queue}"))?;
            }
        }
        Ok(())
    }

    pub async fn declare_exchanges(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (self.commands_exchange(), ExchangeKind::Topic),
            (self.events_exchange(), ExchangeKind::Topic),
            (self.dead_letter_exchange(), ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(short(&name)?, kind, durable, FieldTable::default())
                .await
                .with_context(|| format!("declaring exchange {name}"))?;
        }
        Ok(())
    }

    /// A consumer's quorum queue, its bindings, and its dead-letter queue.
    /// Needs the exchanges ([`Topology::declare_exchanges`]).
    pub async fn declare_queue(&self, channel: &Channel, spec: &QueueSpec) -> anyhow::Result<()> {
        let queue = self.queue_name(spec);
        let dead_letter_queue = self.dead_letter_queue_name(spec);
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };

        channel
            .queue_declare(short(&dead_letter_queue)?, durable, quorum_arguments())
            .await
            .with_context(|| format!("declaring queue {dead_letter_queue}"))?;
        channel
            .queue_bind(
                short(&dead_letter_queue)?,
                short(&self.dead_letter_exchange())?,
                short(&queue)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {dead_letter_queue}"))?;

        let mut arguments = quorum_arguments();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long(&self.dead_letter_exchange()),
        );
        arguments.insert("x-dead-letter-routing-key".into(), long(&queue));
        // At-least-once dead-lettering keeps a poison message in its queue
        // until the dead-letter queue confirmed it, so dead-lettering never
        // loses one; it requires the reject-publish overflow mode.
        arguments.insert("x-dead-letter-strategy".into(), long("at-least-once"));
        arguments.insert("x-overflow".into(), long("reject-publish"));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(broker_delivery_limit(self.delivery_limit)),
        );
        channel
            .queue_declare(short(&queue)?, durable, arguments)
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
        for binding in &spec.bindings {
            let exchange = self.exchange(binding.exchange);
            channel
                .queue_bind(
                    short(&queue)?,
                    short(&exchange)?,
                    short(&binding.pattern)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding {queue} to {exchange} {}", binding.pattern))?;
        }
        Ok(())
    }

    /// Deletes the given queues (and their dead-letter queues) and the
    /// exchanges: for tests, which clean up what they declared.
    pub async fn delete(&self, channel: &Channel, specs: &[QueueSpec]) -> anyhow::Result<()> {
        self.delete_queues(channel, specs).await?;
        for exchange in [
            self.commands_exchange(),
            self.events_exchange(),
            self.dead_letter_exchange(),
        ] {
            channel
                .exchange_delete(short(&exchange)?, ExchangeDeleteOptions::default())
                .await
                .with_context(|| format!("deleting exchange {exchange}"))?;
        }
        Ok(())
    }
}

/// The broker's `x-delivery-limit` counts *returns* (a message returned
/// more often than the limit is dead-lettered, so it is delivered limit + 1
/// times); our `delivery_limit` counts deliveries, as its config key says.
fn broker_delivery_limit(deliveries: u32) -> i64 {
    i64::from(deliveries.max(1)) - 1
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long("quorum"));
    arguments
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
