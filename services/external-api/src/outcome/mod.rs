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
//! A reply is a wake-up: the database holds the truth, so a wake-up reloads
//! the object, and a reply that leaves it in flight (an unknown outcome
//! that the reconciler will resolve) keeps the request waiting. The fast
//! path is a confirmation without `expand[]`: its command names the
//! request (`answer_to`), and the integration service renders the request's
//! final answer itself and stores it under the request's key in the same
//! statement as the outcome; its reply carries that answer, which the
//! request sends as is, without touching the database. Whoever settles the
//! stored response first — the outcome's writer or the request's phase 2 —
//! decides it (`idempotency::settle_response`).

mod answer;
mod registry;
mod replies;

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use snakepay_bus::reply::{OutcomeReply, ReplyAnswer};
use snakepay_domain::ids::{AttemptId, PaymentIntentId, RefundId};
use snakepay_domain::payment_intent::{PaymentError, PaymentIntent, PaymentIntentStatus};
use snakepay_domain::refund::RefundStatus;
use snakepay_http::{Health, ReadinessCheck};
use snakepay_store::idempotency::AnswerTo;
use snakepay_store::intents::{self, IntentRecord};
use snakepay_store::refunds::{self, RefundRecord};
use snakepay_telemetry::metrics::{OUTCOME_WAITS, labels};
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

    fn wake(&self, reply: OutcomeReply) {
        let answer = reply.answer.map(Arc::new);
        let mut woken = self.0.registry.wake(&reply.payment_intent, answer);
        if let Some(refund) = &reply.refund {
            woken |= self.0.registry.wake(refund, None);
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

    /// For `answer_to` in the request's commands: a confirmation that waits
    /// and asks for no `expand[]` may be answered by the integration service
    /// (which renders the intent alone).
    pub fn answer_to(&self, request: &Request<'_>, subject: &Subject<'_>) -> Option<AnswerTo> {
        let confirms = matches!(
            subject,
            Subject::Intent {
                change: IntentChange::Confirm { .. },
                expand: [],
                ..
            }
        );
        (confirms && self.waiter.is_some() && self.reply_to.is_some()).then(|| AnswerTo {
            request_id: request.request_id.to_owned(),
            idempotency_key: request.idempotency_key.map(str::to_owned),
        })
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

impl IntentChange {
    /// The processor's refusal of this change, if that is how it ended.
    fn refusal(self, intent: &PaymentIntent) -> Option<&PaymentError> {
        match self {
            IntentChange::Confirm { attempt } => intent.refusal_of_confirmation(attempt),
            IntentChange::Capture | IntentChange::Cancel => intent.refusal_of_completion(),
        }
    }
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
/// wait runs out, and answers with the answer the reply carried, or with
/// the object as it is then, settling the stored idempotent response.
/// Replays and errors never wait.
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
    let counted = |answer: &'static str| {
        OUTCOME_WAITS
            .get_or_create(&labels([("answer", answer)]))
            .inc();
    };
    match wait_for(state, request, subject, waiter, wait).await {
        Ok(Outcome::Answered(answer)) => {
            counted("reply");
            idempotent::answered_by_outcome(
                request,
                answer.status,
                answer.body.clone().into_bytes(),
            )
        }
        Ok(Outcome::Loaded {
            answer,
            mut conn,
            timed_out,
        }) => {
            counted(if timed_out { "timeout" } else { "reload" });
            idempotent::answer_after_wait(&mut conn, request, phase1, answer).await
        }
        Err(error) => {
            counted("failed");
            // The phase-1 answer (and the stored response) is still true.
            tracing::warn!(
                error = %format!("{error:#}"),
                "waiting for an outcome failed; answering as phase 1 did"
            );
            executed.response
        }
    }
}

/// How a wait ended.
enum Outcome {
    /// The reply carried this request's final answer, already stored.
    Answered(Arc<ReplyAnswer>),
    /// The answer rendered from the object as loaded, with the connection
    /// it was read on, for settling the stored response: one use of the
    /// pool per answer (each use costs a round trip of its own, sqlx's ping
    /// on release).
    Loaded {
        answer: idempotent::Reply,
        conn: PoolConnection<Postgres>,
        /// The wait ran out (rather than a reply showing it settled).
        timed_out: bool,
    },
}

/// Waits until a reply carries this request's answer, the subject is no
/// longer in flight, or `wait` passed.
async fn wait_for(
    state: &AppState,
    request: &Request<'_>,
    subject: &Subject<'_>,
    mut waiter: Waiter,
    wait: Duration,
) -> anyhow::Result<Outcome> {
    let auth = request.auth;
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
        // (Once carried, this request's answer is stored: whenever it came.)
        if let Some(answer) = waiter.answer_for(request.request_id) {
            return Ok(Outcome::Answered(answer));
        }
        let mut conn = pool.acquire().await?;
        let current = subject.load(&mut conn, auth).await?;
        if !woken || !current.in_flight() {
            let answer = answer::render(&mut conn, auth, subject, &current).await?;
            return Ok(Outcome::Loaded {
                answer,
                conn,
                timed_out: !woken,
            });
        }
    }
}
