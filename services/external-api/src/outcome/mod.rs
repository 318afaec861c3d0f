//! Waiting for the processor's outcome (DESIGN.md §5, step 4).
//!
//! A confirm, capture, cancel or refund commits its change and its outbox
//! command (phase 1, unchanged), and the integration service acts on the
//! command later. So that the client still gets the final answer in the
//! common case, the request then waits a bounded time for the outcome and
//! answers with the state as it is then (phase 2), replacing the stored
//! idempotent response with that answer.
//!
//! - `registry.rs`: which requests wait for which object; bounded, and a
//!   waiter deregisters when dropped.
//! - `replies.rs`: the broker connection and this instance's reply queue,
//!   reconnecting with backoff; each reply wakes the waiters of its objects.
//! - `answer.rs`: the one place that renders the final answer (the intent,
//!   a 402 card error, the refund).
//! - this file: [`Outcomes`] (what handlers share), [`Outcomes::expect`]
//!   before the transaction and [`finish`] after it.
//!
//! A reply is only a wake-up: the database holds the truth, so every wake-up
//! reloads the object, and a reply that leaves it in flight (an unknown
//! outcome that the reconciler will resolve) keeps the request waiting.

mod answer;
mod registry;
mod replies;

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use snakepay_bus::reply::OutcomeReply;
use snakepay_domain::ids::{AttemptId, PaymentIntentId, RefundId};
use snakepay_domain::payment_intent::PaymentIntentStatus;
use snakepay_domain::refund::RefundStatus;
use snakepay_http::{Health, ReadinessCheck};
use snakepay_store::intents::{self, IntentRecord};
use snakepay_store::refunds::{self, RefundRecord};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::idempotent::{self, Executed, Request};
use crate::state::AppState;

pub use registry::MAX_WAITERS;
use registry::{Registry, Waiter};

/// What every handler shares: the reply queue to name in commands and the
/// registry of waiting requests.
#[derive(Clone)]
pub struct Outcomes(Arc<Shared>);

struct Shared {
    registry: Arc<Registry>,
    /// This instance's reply queue; `None` while there is no broker
    /// connection (and always when waiting is off).
    reply_queue: watch::Sender<Option<String>>,
    wait: Duration,
    /// A broker is configured and waiting is on.
    enabled: bool,
}

impl Outcomes {
    /// Waits up to `wait` once [`Outcomes::listen`] has a reply queue.
    pub fn new(wait: Duration) -> Outcomes {
        Outcomes::build(wait, !wait.is_zero())
    }

    /// Never waits: no broker, or waiting switched off.
    pub fn disabled() -> Outcomes {
        Outcomes::build(Duration::ZERO, false)
    }

    fn build(wait: Duration, enabled: bool) -> Outcomes {
        Outcomes(Arc::new(Shared {
            registry: Arc::new(Registry::default()),
            reply_queue: watch::channel(None).0,
            wait,
            enabled,
        }))
    }

    /// Connects to the broker in the background and keeps a reply queue
    /// while it can; returns at once, whether the broker is up or not.
    pub fn listen(&self, url: String) -> Option<tokio::task::JoinHandle<()>> {
        self.0.enabled.then(|| replies::spawn(self.clone(), url))
    }

    /// The queue to put in `reply_to` of the commands written now.
    pub fn reply_to(&self) -> Option<String> {
        self.0.reply_queue.borrow().clone()
    }

    fn set_reply_queue(&self, queue: Option<String>) {
        self.0.reply_queue.send_replace(queue);
    }

    fn wake(&self, reply: &OutcomeReply) {
        let mut woken = self.0.registry.wake(&reply.payment_intent);
        if let Some(refund) = &reply.refund {
            woken |= self.0.registry.wake(refund);
        }
        if !woken {
            tracing::debug!(
                payment_intent.id = %reply.payment_intent,
                "outcome reply for no waiting request"
            );
        }
    }

    /// Called before the transaction: names the reply queue for the
    /// request's commands and, when there is one, registers the request as
    /// a waiter for `subject`, so a reply right after the commit is seen.
    pub fn expect(&self, subject: &Subject<'_>) -> Expectation {
        let reply_to = self.reply_to();
        let waiter = match &reply_to {
            Some(_) => {
                let waiter = self.0.registry.register(&subject.object_id());
                if waiter.is_none() {
                    tracing::warn!(
                        outcome.max_waiters = MAX_WAITERS,
                        "outcome waiters at their limit; answering without waiting"
                    );
                }
                waiter
            }
            None => None,
        };
        Expectation {
            reply_to,
            waiter,
            wait: self.0.wait,
        }
    }

    /// For a request that changes nothing at the processor it waits for:
    /// its commands still name the reply queue, it never waits.
    pub fn expect_nothing(&self) -> Expectation {
        Expectation {
            reply_to: self.reply_to(),
            waiter: None,
            wait: self.0.wait,
        }
    }

    /// `/readyz`: without a reply queue the API still serves (requests
    /// answer `processing`), so the broker is at worst degraded.
    pub fn readiness_check(&self) -> Option<ReadinessCheck> {
        if !self.0.enabled {
            return None;
        }
        let outcomes = self.clone();
        Some(ReadinessCheck::new("broker", move || {
            let connected = outcomes.reply_to().is_some();
            async move {
                if connected {
                    Health::ok()
                } else {
                    Health::degraded("no reply queue: requests answer without waiting for outcomes")
                }
            }
        }))
    }
}

/// A request's interest in an outcome, taken before its transaction.
pub struct Expectation {
    reply_to: Option<String>,
    waiter: Option<Waiter>,
    wait: Duration,
}

impl Expectation {
    /// For `reply_to` in the request's commands.
    pub fn reply_to(&self) -> Option<&str> {
        self.reply_to.as_deref()
    }
}

/// What a request changed, and so what it waits for.
pub enum Subject<'a> {
    Intent {
        id: PaymentIntentId,
        change: IntentChange,
        /// The request's `expand[]`, honoured in the final answer.
        expand: &'a [String],
    },
    Refund {
        id: RefundId,
    },
}

/// The change to an intent that went to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentChange {
    /// A confirmation with its own attempt: a decline of this attempt is
    /// this request's 402.
    Confirm {
        attempt: AttemptId,
    },
    Capture,
    Cancel,
}

impl Subject<'_> {
    fn object_id(&self) -> String {
        match self {
            Subject::Intent { id, .. } => id.to_string(),
            Subject::Refund { id } => id.to_string(),
        }
    }

    async fn load(&self, conn: &mut PgConnection, auth: &Auth) -> anyhow::Result<Current> {
        let (merchant, livemode) = (auth.0.merchant_id, auth.0.livemode);
        let found = match self {
            Subject::Intent { id, .. } => intents::load(&mut *conn, *id, merchant, livemode)
                .await?
                .map(|record| Current::Intent(Box::new(record))),
            Subject::Refund { id } => refunds::find(&mut *conn, *id, merchant, livemode)
                .await?
                .map(Current::Refund),
        };
        found.ok_or_else(|| {
            anyhow::anyhow!("{} vanished after its change committed", self.object_id())
        })
    }
}

/// The object as it is now.
enum Current {
    Intent(Box<IntentRecord>),
    Refund(RefundRecord),
}

impl Current {
    /// Still at the processor: keep waiting.
    fn in_flight(&self) -> bool {
        match self {
            Current::Intent(record) => record.intent.status == PaymentIntentStatus::Processing,
            Current::Refund(record) => record.refund.status == RefundStatus::Pending,
        }
    }
}

/// Called after the transaction. Answers at once with what phase 1 gave
/// unless this request committed a change that is in flight and registered
/// as a waiter; then waits until a reply shows the object settled or the
/// wait runs out, and answers with the object as it is then, upgrading the
/// stored idempotent response. Replays and errors never wait.
pub async fn finish(
    state: &AppState,
    request: &Request<'_>,
    executed: Executed,
    expectation: Expectation,
    subject: &Subject<'_>,
) -> Response {
    let Expectation { waiter, wait, .. } = expectation;
    let (Some(phase1), Some(waiter)) = (executed.in_flight, waiter) else {
        return executed.response;
    };
    match wait_for(state, request.auth, subject, waiter, wait).await {
        Ok((answer, mut conn)) => {
            idempotent::answer_after_wait(&mut conn, request, phase1, answer).await
        }
        Err(error) => {
            // The phase-1 answer (and the stored response) is still true.
            tracing::warn!(
                error = %format!("{error:#}"),
                "waiting for an outcome failed; answering as phase 1 did"
            );
            executed.response
        }
    }
}

/// Waits until the subject is no longer in flight or `wait` passed, and
/// renders the answer from its state then. Returns the connection it read
/// on, for the stored response's upgrade: one use of the pool per answer
/// (each use costs a round trip of its own, sqlx's ping on release).
async fn wait_for(
    state: &AppState,
    auth: &Auth,
    subject: &Subject<'_>,
    mut waiter: Waiter,
    wait: Duration,
) -> anyhow::Result<(idempotent::Reply, PoolConnection<Postgres>)> {
    let deadline = tokio::time::Instant::now() + wait;
    let pool = state
        .store
        .shard(auth.0.shard())
        .map_err(anyhow::Error::from)?;
    loop {
        // Out of time: answer with the state as it is (a reply may have
        // been lost).
        let woken = tokio::time::timeout_at(deadline, waiter.woken())
            .await
            .is_ok();
        let mut conn = pool.acquire().await?;
        let current = subject.load(&mut conn, auth).await?;
        if !woken || !current.in_flight() {
            let answer = answer::render(&mut conn, auth, subject, &current).await?;
            return Ok((answer, conn));
        }
    }
}
