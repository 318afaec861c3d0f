//! The bus against the real RabbitMQ (vhost `snakepay`) and PostgreSQL that
//! `scripts/stack.sh` brings up. Every test declares its own prefixed
//! exchanges and queues and deletes them at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod broker;
mod consumer;
mod helpers;
mod relay;
