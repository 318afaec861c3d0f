//! A stand-in for the integration service, which is not in this branch: it
//! watches a shard's outbox for `command.*` rows that name a reply queue,
//! applies an outcome the way the integration service does (domain
//! transition, intent, attempt, refund and ledger lines in one transaction),
//! commits, and only then sends the outcome reply to the named queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use snakepay_bus::Publisher;
use snakepay_bus::reply::{OutcomeReply, send_reply};
use snakepay_domain::effects::ProcessorCommand;
use snakepay_domain::ids::ShardNumber;
use snakepay_domain::payment_intent::{
    AuthorizationOutcome, CardErrorCode, IntentCommand, NextAction, PaymentError, ProcessorOutcome,
};
use snakepay_store::idempotency::AnswerTo;
use snakepay_store::outbox::CommandPayload;
use sqlx::PgPool;

use crate::support::{TestApi, amqp_url, apply_intent_outcome, apply_refund_outcome};

/// How often the outbox is read.
const POLL: Duration = Duration::from_millis(10);

/// What the processor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Approved, captured, voided or refunded.
    Succeed,
    /// An authorization declined with this `decline_code` (`card_declined`).
    Decline(&'static str),
    /// An authorization that needs 3-D Secure.
    RequireAction,
    /// A capture, void or refund that the processor refused
    /// (`processing_error`).
    Refuse,
}

/// What the stand-in does with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Commits the answer after `delay`, then replies.
    Answer { answer: Answer, delay: Duration },
    /// Commits an unknown outcome (the object stays in flight) and replies
    /// at once; commits the answer after `delay` and replies again.
    UnknownThen { answer: Answer, delay: Duration },
    /// Never answers.
    Silent,
}

impl Plan {
    /// The answer after a short delay: the request has certainly begun to
    /// wait by then.
    pub fn soon(answer: Answer) -> Plan {
        Plan::Answer {
            answer,
            delay: Duration::from_millis(200),
        }
    }
}

/// A command the stand-in saw.
#[derive(Debug, Clone)]
pub struct SeenCommand {
    pub routing_key: String,
    pub payment_intent: String,
    pub reply_to: Option<String>,
    pub answer_to: Option<AnswerTo>,
}

pub struct IntegrationDouble {
    seen: Arc<Mutex<Vec<SeenCommand>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IntegrationDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IntegrationDouble {
    /// Watches the outbox of `shard`; `plan` decides each command's fate.
    pub async fn start(
        api: &TestApi,
        shard: ShardNumber,
        plan: impl Fn(&ProcessorCommand) -> Plan + Send + Sync + 'static,
    ) -> IntegrationDouble {
        let pool = api.db.store.shard(shard).unwrap().clone();
        let publisher = Arc::new(Publisher::connect(&amqp_url()).await.unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                let mut last_id = 0_i64;
                loop {
                    let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
                        "select id, routing_key, payload from outbox
                         where id > $1 and routing_key like 'command.%' order by id",
                    )
                    .bind(last_id)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    for (id, routing_key, payload) in rows {
                        last_id = id;
                        let command: CommandPayload = serde_json::from_value(payload).unwrap();
                        seen.lock().unwrap().push(SeenCommand {
                            routing_key,
                            payment_intent: command.payment_intent.clone(),
                            reply_to: command.reply_to.clone(),
                            answer_to: command.answer_to.clone(),
                        });
                        if command.reply_to.is_none() {
                            continue;
                        }
                        let plan = plan(&command.command);
                        tokio::spawn(carry_out(
                            pool.clone(),
                            Arc::clone(&publisher),
                            command,
                            plan,
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        });
        IntegrationDouble { seen, task }
    }

    /// Every command seen so far, oldest first.
    pub fn seen(&self) -> Vec<SeenCommand> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a command for `intent` was seen, and returns it.
    pub async fn command_for(&self, intent: &str) -> SeenCommand {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(found) = self.seen().into_iter().find(|c| c.payment_intent == intent) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no command for {intent}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn carry_out(pool: PgPool, publisher: Arc<Publisher>, command: CommandPayload, plan: Plan) {
    let (answer, delay) = match plan {
        Plan::Silent => return,
        Plan::Answer { answer, delay } => (answer, delay),
        Plan::UnknownThen { answer, delay } => {
            apply(&pool, &command, None).await;
            reply(&publisher, &command).await;
            (answer, delay)
        }
    };
    tokio::time::sleep(delay).await;
    apply(&pool, &command, Some(answer)).await;
    reply(&publisher, &command).await;
}

fn refusal() -> PaymentError {
    PaymentError {
        code: CardErrorCode::ProcessingError,
        decline_code: None,
        message: "The processor refused the operation.".to_owned(),
    }
}

fn processor_outcome(answer: Option<Answer>) -> ProcessorOutcome {
    match answer {
        None => ProcessorOutcome::Unknown,
        Some(Answer::Succeed) => ProcessorOutcome::Succeeded,
        Some(_) => ProcessorOutcome::Failed(refusal()),
    }
}

/// Commits `answer` (`None`: an unknown outcome) for the command.
async fn apply(pool: &PgPool, command: &CommandPayload, answer: Option<Answer>) {
    let merchant = command.merchant_id;
    let intent = command.payment_intent.as_str();
    match &command.command {
        ProcessorCommand::Authorize { attempt, .. } => {
            let outcome = match answer {
                None => AuthorizationOutcome::Unknown,
                Some(Answer::Succeed) => AuthorizationOutcome::Approved,
                Some(Answer::Decline(decline_code)) => {
                    AuthorizationOutcome::Declined(PaymentError {
                        code: CardErrorCode::CardDeclined,
                        decline_code: Some(decline_code.to_owned()),
                        message: "Your card was declined.".to_owned(),
                    })
                }
                Some(Answer::RequireAction) => {
                    AuthorizationOutcome::RequiresAction(NextAction::RedirectToUrl {
                        url: format!("https://processor.test/3ds/{attempt}"),
                        return_url: None,
                    })
                }
                Some(Answer::Refuse) => AuthorizationOutcome::Declined(refusal()),
            };
            apply_intent_outcome(pool, merchant, intent, |_| {
                IntentCommand::AuthorizationResult {
                    attempt: *attempt,
                    outcome,
                    now: 1_800_000_000,
                }
            })
            .await;
        }
        ProcessorCommand::Capture { attempt, .. } => {
            apply_intent_outcome(pool, merchant, intent, |_| IntentCommand::CaptureResult {
                attempt: *attempt,
                outcome: processor_outcome(answer),
            })
            .await;
        }
        ProcessorCommand::Void { attempt } => {
            apply_intent_outcome(pool, merchant, intent, |_| IntentCommand::VoidResult {
                attempt: *attempt,
                outcome: processor_outcome(answer),
                now: 1_800_000_000,
            })
            .await;
        }
        ProcessorCommand::Refund { refund, .. } => {
            apply_refund_outcome(
                pool,
                merchant,
                &refund.to_string(),
                processor_outcome(answer),
            )
            .await;
        }
        ProcessorCommand::Inquire { .. } => {}
    }
}

async fn reply(publisher: &Publisher, command: &CommandPayload) {
    let refund = match &command.command {
        ProcessorCommand::Refund { refund, .. } => Some(refund.to_string()),
        _ => None,
    };
    let reply = OutcomeReply {
        payment_intent: command.payment_intent.clone(),
        refund,
        // A wake-up only: the API then reloads and settles the stored answer.
        answer: None,
    };
    if let Some(reply_to) = &command.reply_to {
        // As the integration service does: a reply that cannot be sent (the
        // instance is gone) is not retried.
        let _ = send_reply(publisher, reply_to, &reply).await;
    }
}
