//! Turning processor commands into committed outcomes (DESIGN.md §5, steps 3
//! and 5).
//!
//! Every operation runs in the same three steps, whoever starts it — a
//! command from the broker, the reconciler, a processor notification:
//!
//! 1. **Is it still due?** Read the intent (or refund) and check that the
//!    operation is the one pending. A redelivered or stale command stops here.
//! 2. **Ask the processor** — without holding a row lock, so a slow
//!    processor never blocks the API — with the operation's idempotency key
//!    ([`crate::processor::keys`]), through the breaker and bounded retries.
//!    The reconciler first inquires, and sends only what the processor
//!    never performed.
//! 3. **Commit a definite answer**: lock the intent, apply the domain
//!    transition (which checks again that the operation is pending, so two
//!    racing deliveries commit once), write status, attempt, events, outbox
//!    commands and ledger lines in one transaction. An unknown answer
//!    commits nothing: the payment stays in flight and the reconciler asks
//!    again later.
//!
//! A command from the broker then wakes the API instance waiting for it
//! (its `reply_to`), whatever the three steps found: a notification or the
//! reconciler may have committed the outcome first.

use std::sync::Arc;

use anyhow::Context;
use snakepay_bus::Publisher;
use snakepay_bus::reply::{OutcomeReply, ReplyAnswer, send_reply};
use snakepay_domain::Money;
use snakepay_domain::ids::{AttemptId, MerchantId, PaymentIntentId, PaymentMethodId, RefundId};
use snakepay_domain::payment_intent::{
    self, AuthorizationOutcome, CardErrorCode, IntentCommand, NextAction, PaymentError,
    PaymentIntentStatus, PendingOperation, ProcessorOutcome,
};
use snakepay_domain::refund;
use snakepay_http::outcome;
use snakepay_store::attempts::{self, AttemptCard, AttemptStatus, AuthorizationRecord, SealedCard};
use snakepay_store::charges::{self, ChargeView};
use snakepay_store::effects::{self, EffectContext};
use snakepay_store::events::EventSource;
use snakepay_store::idempotency::{AnswerTo, ResponseBytes};
use snakepay_store::intents::{self, IntentRecord, WithCard};
use snakepay_store::outbox::CommandPayload;
use snakepay_store::refunds;
use snakepay_store::{Store, retry};
use snakepay_vault::{Expiry, SealedRecord, Vault};
use sqlx::PgPool;

use crate::gateway::Gateway;
use crate::processor::{
    Authorization, AuthorizeRequest, CallError, CallResult, CardDetails, Completion, Inquiry, keys,
};

/// How an operation reaches the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A command: send it (a resend under the same key is a replay).
    Send,
    /// The reconciler: inquire first; send only if never performed.
    InquireFirst,
}

pub struct Pipeline {
    pub store: Store,
    /// Every opening of a card is audited (PCI DSS 10.2.1.1), through the
    /// buffer so the chain head is locked per batch, not per payment.
    pub audit: snakepay_store::audit::Recorder,
    /// This instance, as the origin of its audit events.
    pub origin: Option<String>,
    pub vault: Arc<Vault>,
    pub gateway: Gateway,
    /// For outcome replies; `None` when no API instance can be waiting.
    pub replies: Option<Arc<Publisher>>,
    /// The External API's cached intents, invalidated before every commit.
    pub caches: Option<snakepay_cache::Caches>,
    pub api_version: &'static str,
}

/// Why a command could not be handled now (the message is retried).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Transient(#[from] anyhow::Error);

impl Pipeline {
    /// Executes one command. `Ok` means done or nothing to do (including an
    /// unknown processor outcome, which the reconciler owns from here).
    pub async fn execute(&self, payload: &CommandPayload) -> Result<(), Transient> {
        use snakepay_domain::effects::{OperationRef, ProcessorCommand as C};
        let intent_id = PaymentIntentId::parse(&payload.payment_intent)
            .context("command names no valid payment intent")?;
        let reply_to = payload.reply_to.as_deref();
        let waiting = Waiting {
            reply_to,
            // Only a confirmation's request is answered by its outcome.
            answer_to: match payload.command {
                C::Authorize { .. } => payload.answer_to.as_ref().filter(|_| reply_to.is_some()),
                _ => None,
            },
        };
        // The waiting request's final answer, when the outcome carried it.
        let mut answer = None;
        // The refund the command is about, if any: the reply names it.
        let refund = match payload.command {
            C::Authorize { attempt, .. } | C::Capture { attempt, .. } => {
                answer = self
                    .drive(
                        payload.merchant_id,
                        intent_id,
                        Some(attempt),
                        Mode::Send,
                        waiting,
                    )
                    .await?;
                None
            }
            C::Void { attempt } => {
                self.void(payload.merchant_id, intent_id, attempt, reply_to)
                    .await?;
                None
            }
            C::Refund { refund, .. } => {
                self.drive_refund(payload.merchant_id, refund, Mode::Send, reply_to)
                    .await?;
                Some(refund)
            }
            C::Inquire { operation } => match operation {
                OperationRef::Refund { refund } => {
                    self.drive_refund(payload.merchant_id, refund, Mode::InquireFirst, reply_to)
                        .await?;
                    Some(refund)
                }
                OperationRef::Authorize { attempt }
                | OperationRef::Capture { attempt }
                | OperationRef::Void { attempt } => {
                    self.drive_intent(
                        payload.merchant_id,
                        intent_id,
                        Some(attempt),
                        Mode::InquireFirst,
                        reply_to,
                    )
                    .await?;
                    None
                }
            },
        };
        // Whatever the command found — it committed the outcome, the outcome
        // was already committed (a processor notification or the reconciler
        // got there first, and they have no one to wake), or the outcome is
        // unknown — the request waiting for it is told to look again. A
        // reply is only a wake-up (a spare one costs a reload); a missing
        // one costs that client the whole wait.
        self.reply(reply_to, intent_id, refund, answer).await;
        Ok(())
    }

    fn pool(&self, merchant: MerchantId) -> anyhow::Result<&PgPool> {
        Ok(self.store.shard(merchant.shard())?)
    }

    /// Moves the intent's pending operation forward: authorization, capture
    /// or void. With `attempt`, only if the pending operation is that
    /// attempt's (a command for an older attempt does nothing). An intent in
    /// `requires_action` is asked about at the processor (the cardholder's
    /// 3-D Secure answer).
    pub async fn drive_intent(
        &self,
        merchant: MerchantId,
        intent_id: PaymentIntentId,
        attempt: Option<AttemptId>,
        mode: Mode,
        reply_to: Option<&str>,
    ) -> anyhow::Result<()> {
        let waiting = Waiting {
            reply_to,
            answer_to: None,
        };
        self.drive(merchant, intent_id, attempt, mode, waiting)
            .await
            .map(drop)
    }

    /// [`Self::drive_intent`], returning the final answer of the request
    /// named in `waiting.answer_to` when the outcome committed with it.
    async fn drive(
        &self,
        merchant: MerchantId,
        intent_id: PaymentIntentId,
        attempt: Option<AttemptId>,
        mode: Mode,
        waiting: Waiting<'_>,
    ) -> anyhow::Result<Option<ReplyAnswer>> {
        let reply_to = waiting.reply_to;
        let pool = self.pool(merchant)?;
        // A command names its attempt: its card comes with the intent, in
        // one round trip, for the authorization it most likely is.
        let loaded = match attempt {
            Some(attempt) => intents::load_by_id_with_card(pool, intent_id, attempt).await?,
            None => intents::load_by_id(pool, intent_id)
                .await?
                .map(|record| WithCard {
                    record,
                    card: None,
                    charge: None,
                }),
        };
        let Some(WithCard {
            record,
            card,
            charge,
        }) = loaded
        else {
            tracing::warn!(payment.id = %intent_id, "command for an unknown payment intent");
            return Ok(None);
        };
        if record.merchant_id != merchant {
            tracing::warn!(payment.id = %intent_id, "command names another merchant's intent");
            return Ok(None);
        }
        let Some(pending) = record.intent.pending else {
            return Ok(None);
        };
        let pending_attempt = match pending {
            PendingOperation::Authorize { attempt, .. }
            | PendingOperation::Capture { attempt, .. }
            | PendingOperation::Void { attempt, .. } => attempt,
        };
        if attempt.is_some_and(|a| a != pending_attempt) {
            tracing::debug!(payment.id = %intent_id, "command no longer due");
            return Ok(None);
        }
        let attempt = pending_attempt;
        let command = match pending {
            PendingOperation::Authorize { capture, .. } => {
                let answer = if record.intent.status == PaymentIntentStatus::RequiresAction {
                    self.authentication_result(pool, attempt).await
                } else {
                    self.obtain_authorization(pool, &record, attempt, capture, mode, card)
                        .await
                };
                let Some(answer) = settled(answer, intent_id) else {
                    return Ok(None);
                };
                return self
                    .commit_authorization(pool, &record, charge, attempt, answer, waiting)
                    .await;
            }
            PendingOperation::Capture { amount, .. } => {
                let answer = self
                    .obtain_completion(
                        pool,
                        attempt,
                        keys::capture(attempt, amount),
                        mode,
                        |reference, key| {
                            let gateway = &self.gateway;
                            async move {
                                gateway
                                    .run("capture", || {
                                        gateway.processor.capture(&key, &reference, amount)
                                    })
                                    .await
                            }
                        },
                    )
                    .await;
                let Some(answer) = settled(answer, intent_id) else {
                    return Ok(None);
                };
                IntentCommand::CaptureResult {
                    attempt,
                    outcome: processor_outcome(answer),
                }
            }
            PendingOperation::Void { .. } => {
                let answer = self.void_at_processor(pool, attempt, mode).await;
                let Some(answer) = settled(answer, intent_id) else {
                    return Ok(None);
                };
                IntentCommand::VoidResult {
                    attempt,
                    outcome: processor_outcome(answer),
                    now: snakepay_store::unix_now(),
                }
            }
        };
        self.commit_intent(pool, &record, command, reply_to)
            .await
            .map(|()| None)
    }

    /// The authorization's answer: inquired first for the reconciler, sent
    /// otherwise.
    async fn obtain_authorization(
        &self,
        pool: &PgPool,
        record: &IntentRecord,
        attempt: AttemptId,
        capture: bool,
        mode: Mode,
        sealed: Option<AttemptCard>,
    ) -> CallResult<Authorization> {
        let key = keys::authorize(attempt);
        let card = self.card_for(pool, attempt, sealed).await.map_err(|e| {
            // Nothing was sent; the payment stays in flight. An operator must
            // look: the key ring or the stored card is broken.
            tracing::error!(payment.attempt = %attempt, error = %format!("{e:#}"), "cannot open the card for an authorization");
            CallError::Unknown(format!("{e:#}"))
        })?;
        // Without its CVC (deleted once an authorization of this card
        // completed) a send would be declined: first make sure the processor
        // never performed this one.
        if mode == Mode::InquireFirst || card.cvc.is_none() {
            let gateway = &self.gateway;
            let inquiry = gateway
                .run("inquire", || gateway.processor.inquire_authorization(&key))
                .await?;
            if let Some(answer) = answered(inquiry)? {
                return Ok(answer);
            }
        }
        let reference = attempt.to_string();
        let request = AuthorizeRequest {
            idempotency_key: &key,
            reference: &reference,
            amount: record.intent.amount,
            capture,
            card: &card,
            return_url: record.return_url.as_deref(),
        };
        let gateway = &self.gateway;
        gateway
            .run("authorize", || gateway.processor.authorize(&request))
            .await
    }

    /// The cardholder's 3-D Secure answer, read from the authorization.
    async fn authentication_result(
        &self,
        pool: &PgPool,
        attempt: AttemptId,
    ) -> CallResult<Authorization> {
        let reference = self
            .processor_reference(pool, attempt)
            .await?
            .ok_or_else(|| CallError::Unknown("no authorization to ask about".into()))?;
        let gateway = &self.gateway;
        gateway
            .run("status", || {
                gateway.processor.authorization_status(&reference)
            })
            .await
    }

    /// Opens the attempt's card (`sealed`, or read now if it did not come
    /// with the intent): only here, and only for the call. Every opening is
    /// audited, whatever its outcome.
    async fn card_for(
        &self,
        pool: &PgPool,
        attempt: AttemptId,
        sealed: Option<AttemptCard>,
    ) -> anyhow::Result<CardDetails> {
        let (payment_method, sealed) = match sealed {
            Some(card) => card,
            None => attempts::sealed_card_of_attempt(pool, attempt)
                .await?
                .context("attempt or its payment method not found")?,
        };
        let opened = self.open_card(payment_method, &sealed);
        self.audit.record(snakepay_store::audit::Event {
            actor: snakepay_store::audit::Actor {
                subject: snakepay_store::roles::INTEGRATION.into(),
                role: "service".into(),
            },
            action: "card.open".into(),
            resource: Some(payment_method.to_string()),
            outcome: if opened.is_ok() { "allowed" } else { "failed" }.into(),
            origin: self.origin.clone(),
            details: serde_json::json!({
                "payment_attempt": attempt.to_string(),
                "purpose": "authorize",
                "cvc": opened.as_ref().is_ok_and(|card| card.cvc.is_some()),
            }),
        });
        opened
    }

    fn open_card(
        &self,
        payment_method: PaymentMethodId,
        sealed: &SealedCard,
    ) -> anyhow::Result<CardDetails> {
        let aad = payment_method.to_string();
        let open = |columns: &snakepay_store::intents::SealedColumns| {
            SealedRecord::from_parts(
                columns.key_id.clone(),
                columns.wrapped_key.clone(),
                columns.ciphertext.clone(),
            )
        };
        let pan = self
            .vault
            .open_pan(&open(&sealed.pan)?, aad.as_bytes())
            .context("opening the card number")?;
        let cvc = match &sealed.cvc {
            Some(columns) => Some(
                self.vault
                    .open_cvc(&open(columns)?, aad.as_bytes())
                    .context("opening the CVC")?,
            ),
            None => None,
        };
        let expiry = Expiry::new(
            u32::try_from(sealed.exp_month).unwrap_or(0),
            u32::try_from(sealed.exp_year).unwrap_or(0),
        )
        .context("stored expiry")?;
        Ok(CardDetails { pan, expiry, cvc })
    }

    /// The processor's ID of the attempt's authorization: stored with its
    /// first definite answer, or learnt by inquiry (and then stored).
    async fn processor_reference(
        &self,
        pool: &PgPool,
        attempt: AttemptId,
    ) -> CallResult<Option<String>> {
        let row = attempts::find(pool, attempt)
            .await
            .map_err(|e| CallError::Unknown(format!("{e:#}")))?
            .ok_or_else(|| CallError::Unknown("attempt not found".into()))?;
        if let Some(reference) = row.processor_reference.filter(|r| !r.is_empty()) {
            return Ok(Some(reference));
        }
        let key = keys::authorize(attempt);
        let gateway = &self.gateway;
        let inquiry = gateway
            .run("inquire", || gateway.processor.inquire_authorization(&key))
            .await?;
        let Some(answer) = answered(inquiry)? else {
            return Ok(None);
        };
        let reference = answer.processor_reference().to_owned();
        if reference.is_empty() {
            return Ok(None);
        }
        if let Err(error) = attempts::set_processor_reference(pool, attempt, &reference).await {
            tracing::warn!(error = %format!("{error:#}"), "could not store a processor reference");
        }
        Ok(Some(reference))
    }

    /// A capture, void or refund: inquired first for the reconciler, then
    /// sent with `send(processor_reference, key)`.
    async fn obtain_completion<F, Fut>(
        &self,
        pool: &PgPool,
        attempt: AttemptId,
        key: String,
        mode: Mode,
        send: F,
    ) -> CallResult<Completion>
    where
        F: FnOnce(String, String) -> Fut,
        Fut: std::future::Future<Output = CallResult<Completion>>,
    {
        if mode == Mode::InquireFirst {
            let gateway = &self.gateway;
            let inquiry = gateway
                .run("inquire", || gateway.processor.inquire_completion(&key))
                .await?;
            if let Some(answer) = answered(inquiry)? {
                return Ok(answer);
            }
        }
        let reference = self
            .processor_reference(pool, attempt)
            .await?
            .ok_or_else(|| {
                CallError::Unknown("the authorization is unknown to the processor".into())
            })?;
        send(reference, key).await
    }

    async fn void_at_processor(
        &self,
        pool: &PgPool,
        attempt: AttemptId,
        mode: Mode,
    ) -> CallResult<Completion> {
        self.obtain_completion(
            pool,
            attempt,
            keys::void(attempt),
            mode,
            |reference, key| {
                let gateway = &self.gateway;
                async move {
                    gateway
                        .run("void", || gateway.processor.void(&key, &reference))
                        .await
                }
            },
        )
        .await
    }

    /// A void command: of the intent's pending void (cancel, expiry), or of
    /// an attempt the intent no longer wants (superseded while waiting for
    /// 3-D Secure, or approved after it was abandoned), which changes only
    /// the attempt.
    pub async fn void(
        &self,
        merchant: MerchantId,
        intent_id: PaymentIntentId,
        attempt: AttemptId,
        reply_to: Option<&str>,
    ) -> anyhow::Result<()> {
        let pool = self.pool(merchant)?;
        let Some(record) = intents::load_by_id(pool, intent_id).await? else {
            return Ok(());
        };
        if matches!(record.intent.pending, Some(PendingOperation::Void { attempt: a, .. }) if a == attempt)
        {
            return self
                .drive_intent(merchant, intent_id, Some(attempt), Mode::Send, reply_to)
                .await;
        }
        if record.intent.authorized_attempt == Some(attempt) {
            // The intent holds or captured this authorization: never release it.
            tracing::warn!(payment.id = %intent_id, "void of the intent's own authorization ignored");
            return Ok(());
        }
        let reference = match self.processor_reference(pool, attempt).await {
            Ok(Some(reference)) => reference,
            // Never authorized: nothing is held.
            Ok(None) => return self.mark_superseded(pool, attempt).await,
            Err(error) => {
                // Not retried here (a requeue would spin): the reconciler's
                // scan for orphaned attempts comes back to it.
                tracing::warn!(payment.attempt = %attempt, reason = %error, "superseded attempt not voided yet");
                return Ok(());
            }
        };
        let key = keys::void(attempt);
        let gateway = &self.gateway;
        match gateway
            .run("void", || gateway.processor.void(&key, &reference))
            .await
        {
            Ok(Completion::Done) => self.mark_superseded(pool, attempt).await,
            Ok(Completion::Refused { .. }) => {
                // Not voidable: declined or voided already — or captured, if
                // an automatic-capture challenge completed just as the
                // attempt was abandoned. That money is not in our books.
                if let Ok(Authorization::Approved { .. }) = gateway
                    .run("status", || {
                        gateway.processor.authorization_status(&reference)
                    })
                    .await
                {
                    tracing::error!(
                        payment.id = %intent_id,
                        payment.attempt = %attempt,
                        "an abandoned attempt was captured at the processor: it needs a refund"
                    );
                }
                self.mark_superseded(pool, attempt).await
            }
            Err(error) => {
                tracing::warn!(payment.attempt = %attempt, reason = %error, "superseded attempt not voided yet");
                Ok(())
            }
        }
    }

    /// The attempt is over: no authorization of it holds money. Its card's
    /// CVC goes too (PCI DSS 3.3.1), unless another attempt still waiting
    /// for an authorization needs it.
    async fn mark_superseded(&self, pool: &PgPool, attempt: AttemptId) -> anyhow::Result<()> {
        let mut tx = pool.begin().await?;
        // Also forgets the CVC unless another attempt needs it.
        attempts::record_authorization(&mut tx, attempt, AttemptStatus::Superseded, None, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Commits a definite authorization answer.
    async fn commit_authorization(
        &self,
        pool: &PgPool,
        loaded: &IntentRecord,
        charge: Option<ChargeView>,
        attempt: AttemptId,
        answer: Authorization,
        waiting: Waiting<'_>,
    ) -> anyhow::Result<Option<ReplyAnswer>> {
        let reply_to = waiting.reply_to;
        let reference = Some(answer.processor_reference()).filter(|r| !r.is_empty());
        let (outcome, status, error) = match &answer {
            Authorization::Approved { .. } => (
                AuthorizationOutcome::Approved,
                AttemptStatus::Approved,
                None,
            ),
            Authorization::Declined { error, .. } => (
                AuthorizationOutcome::Declined(error.clone()),
                AttemptStatus::Declined,
                Some(error.clone()),
            ),
            Authorization::RequiresAction { url, .. } => (
                AuthorizationOutcome::RequiresAction(NextAction::RedirectToUrl {
                    url: url.clone(),
                    return_url: loaded.return_url.clone(),
                }),
                AttemptStatus::RequiresAction,
                None,
            ),
            Authorization::Voided { .. } => {
                let error = PaymentError {
                    code: CardErrorCode::AuthenticationRequired,
                    decline_code: Some("authentication_required".into()),
                    message: "The authorization was canceled before it completed.".into(),
                };
                (
                    AuthorizationOutcome::Declined(error.clone()),
                    AttemptStatus::Declined,
                    Some(error),
                )
            }
        };
        let intent_id = loaded.intent.id;
        let record = AuthorizationRecord {
            attempt,
            status,
            processor_reference: reference,
            error: error.as_ref(),
        };
        let at_once = retry::transaction("commit authorization", || {
            self.commit_authorization_at_once(
                pool,
                loaded,
                charge.clone(),
                &outcome,
                &record,
                waiting,
            )
        })
        .await?;
        if let Some(answer) = at_once {
            tracing::info!(payment.id = %intent_id, payment.attempt = %attempt, "authorization outcome committed");
            return Ok(answer);
        }
        let changed = retry::transaction("commit authorization", || async {
            let mut tx = pool.begin().await?;
            let mut record = intents::load_for_update(&mut tx, intent_id, loaded.merchant_id, loaded.livemode)
                .await?
                .context("intent vanished")?;
            let applies = matches!(record.intent.pending, Some(PendingOperation::Authorize { attempt: a, .. }) if a == attempt);
            let t = payment_intent::apply(
                &record.intent,
                IntentCommand::AuthorizationResult {
                    attempt,
                    outcome: outcome.clone(),
                    now: snakepay_store::unix_now(),
                },
            )?;
            let changed = t.intent != record.intent;
            if !changed && t.effects.is_empty() {
                return Ok::<bool, anyhow::Error>(false);
            }
            if changed {
                record.intent = t.intent;
                intents::update(&mut tx, &mut record).await?;
                self.invalidate(&record).await;
            }
            if applies {
                // Once the authorization is complete this also forgets the
                // CVC (PCI DSS 3.3.1); a 3-D Secure challenge is not complete.
                attempts::record_authorization(&mut tx, attempt, status, reference, error.as_ref())
                    .await?;
            }
            effects::write(&mut tx, &record, None, &t.effects, self.context(&record, reply_to)).await?;
            tx.commit().await?;
            Ok(changed)
        })
        .await?;
        if changed {
            tracing::info!(payment.id = %intent_id, payment.attempt = %attempt, "authorization outcome committed");
        }
        Ok(None)
    }

    /// The usual case of [`Self::commit_authorization`]: the answer applies
    /// to the intent as it was read before the processor call, and that is
    /// still the intent's version. Then the whole outcome commits in one
    /// statement without a row lock ([`effects::commit_at_once`]), guarded
    /// on that version. `None`: nothing was written, because the answer
    /// changes nothing here or the intent moved on meanwhile (a
    /// notification, the reconciler or a cancel committed first); the
    /// locked path then decides with the row as it now is. `Some` holds the
    /// waiting request's final answer, when it committed with the outcome.
    async fn commit_authorization_at_once(
        &self,
        pool: &PgPool,
        loaded: &IntentRecord,
        charge: Option<ChargeView>,
        outcome: &AuthorizationOutcome,
        record: &AuthorizationRecord<'_>,
        waiting: Waiting<'_>,
    ) -> anyhow::Result<Option<Option<ReplyAnswer>>> {
        let attempt = record.attempt;
        let applies = matches!(loaded.intent.pending, Some(PendingOperation::Authorize { attempt: a, .. }) if a == attempt);
        if !applies {
            return Ok(None);
        }
        let Ok(t) = payment_intent::apply(
            &loaded.intent,
            IntentCommand::AuthorizationResult {
                attempt,
                outcome: outcome.clone(),
                now: snakepay_store::unix_now(),
            },
        ) else {
            return Ok(None);
        };
        if t.intent == loaded.intent {
            return Ok(None);
        }
        let mut intent = loaded.clone();
        intent.intent = t.intent;
        // The intent as the commit leaves it: at the next version.
        let committed = IntentRecord {
            version: intent.version + 1,
            ..intent.clone()
        };
        // The charge as read with the intent (or now, if it was not: a 3-D
        // Secure answer's attempt is past `pending`), as it will be.
        let charge = match (intent.intent.latest_charge, charge) {
            (Some(id), read) if effects::about_a_charge(&t.effects) => {
                let view = match read.filter(|view| view.id == id.to_string()) {
                    Some(view) => Some(view),
                    None => charges::find(pool, id, intent.merchant_id, intent.livemode).await?,
                };
                let Some(view) = view else {
                    return Ok(None);
                };
                Some(view.after_authorization(&committed, record)?)
            }
            _ => None,
        };
        // The cache learns the new version before the commit (see
        // `invalidate`); a write that does not happen only costs a reload.
        self.invalidate(&committed).await;
        let answer = waiting
            .answer_to
            .and_then(|to| final_answer(&committed, attempt, to));
        let written = effects::commit_at_once(
            pool,
            &effects::AuthorizationOutcome {
                intent: &intent,
                effects: &t.effects,
                context: self.context(&intent, waiting.reply_to),
                attempt: *record,
                charge: charge.as_ref(),
                answer: answer.as_ref().map(|(to, answer)| effects::OutcomeAnswer {
                    to,
                    response: ResponseBytes {
                        status: answer.status,
                        body: answer.body.as_bytes(),
                    },
                }),
            },
        )
        .await?;
        let Some(written) = written else {
            return Ok(None);
        };
        // Without a key there is nothing to store: the reply alone answers.
        let answered =
            answer.filter(|(to, _)| written.answer_stored || to.idempotency_key.is_none());
        Ok(Some(answered.map(|(_, answer)| answer)))
    }

    /// Commits a capture or void answer.
    async fn commit_intent(
        &self,
        pool: &PgPool,
        loaded: &IntentRecord,
        command: IntentCommand,
        reply_to: Option<&str>,
    ) -> anyhow::Result<()> {
        let intent_id = loaded.intent.id;
        let changed = retry::transaction("commit intent", || async {
            let mut tx = pool.begin().await?;
            let mut record =
                intents::load_for_update(&mut tx, intent_id, loaded.merchant_id, loaded.livemode)
                    .await?
                    .context("intent vanished")?;
            let t = payment_intent::apply(&record.intent, command.clone())?;
            if t.intent == record.intent && t.effects.is_empty() {
                return Ok::<bool, anyhow::Error>(false);
            }
            record.intent = t.intent;
            intents::update(&mut tx, &mut record).await?;
            self.invalidate(&record).await;
            effects::write(
                &mut tx,
                &record,
                None,
                &t.effects,
                self.context(&record, reply_to),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await?;
        if changed {
            tracing::info!(payment.id = %intent_id, "processor outcome committed");
        }
        Ok(())
    }

    /// Moves a pending refund forward.
    pub async fn drive_refund(
        &self,
        merchant: MerchantId,
        refund_id: RefundId,
        mode: Mode,
        reply_to: Option<&str>,
    ) -> anyhow::Result<()> {
        let pool = self.pool(merchant)?;
        let Some(record) = refunds::load(pool, refund_id).await? else {
            tracing::warn!(refund.id = %refund_id, "command for an unknown refund");
            return Ok(());
        };
        if record.merchant_id != merchant || record.refund.status != refund::RefundStatus::Pending {
            return Ok(());
        }
        let amount: Money = record.refund.amount;
        let reference = refund_id.to_string();
        let answer = self
            .obtain_completion(
                pool,
                record.refund.attempt,
                keys::refund(refund_id),
                mode,
                |processor_reference, key| {
                    let gateway = &self.gateway;
                    let reference = &reference;
                    async move {
                        gateway
                            .run("refund", || {
                                gateway.processor.refund(
                                    &key,
                                    &processor_reference,
                                    amount,
                                    reference,
                                )
                            })
                            .await
                    }
                },
            )
            .await;
        let Some(answer) = settled(answer, record.refund.payment_intent) else {
            return Ok(());
        };
        let outcome = processor_outcome(answer);
        let intent_id = record.refund.payment_intent;
        let changed = retry::transaction("commit refund", || async {
            let mut tx = pool.begin().await?;
            let mut intent =
                intents::load_for_update(&mut tx, intent_id, record.merchant_id, record.livemode)
                    .await?
                    .context("refund's intent vanished")?;
            let mut refund_record = refunds::load_for_update(&mut tx, refund_id)
                .await?
                .context("refund vanished")?;
            let t = refund::apply_outcome(&intent.intent, &refund_record.refund, outcome.clone())?;
            if t.effects.is_empty() && t.refund == refund_record.refund {
                return Ok::<bool, anyhow::Error>(false);
            }
            intent.intent = t.intent;
            intents::update(&mut tx, &mut intent).await?;
            self.invalidate(&intent).await;
            refund_record.refund = t.refund;
            if let Some(caches) = &self.caches {
                caches
                    .refunds
                    .invalidate(
                        &refund_id.to_string(),
                        refunds::cache_version(refund_record.refund.status),
                    )
                    .await;
            }
            refunds::update_outcome(&mut tx, &refund_record.refund).await?;
            effects::write(
                &mut tx,
                &intent,
                Some(&refund_record),
                &t.effects,
                self.context(&intent, reply_to),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await?;
        if changed {
            tracing::info!(refund.id = %refund_id, "refund outcome committed");
        }
        Ok(())
    }

    /// Before the commit, with the new version (snakepay_cache::versioned).
    async fn invalidate(&self, record: &IntentRecord) {
        if let Some(caches) = &self.caches {
            caches
                .intents
                .invalidate(&record.intent.id.to_string(), record.version)
                .await;
        }
    }

    fn context<'a>(
        &'a self,
        record: &IntentRecord,
        reply_to: Option<&'a str>,
    ) -> EffectContext<'a> {
        EffectContext {
            source: EventSource {
                merchant_id: record.merchant_id,
                livemode: record.livemode,
                api_version: self.api_version,
                request_id: None,
                created: snakepay_store::unix_now(),
            },
            reply_to,
            // Follow-up commands answer no request.
            answer_to: None,
            description: "processor outcome",
        }
    }

    /// Wakes the API instance waiting for this outcome, if any. A lost reply
    /// only means that client sees `processing` and polls.
    async fn reply(
        &self,
        reply_to: Option<&str>,
        intent: PaymentIntentId,
        refund: Option<RefundId>,
        answer: Option<ReplyAnswer>,
    ) {
        let (Some(publisher), Some(reply_to)) = (&self.replies, reply_to) else {
            return;
        };
        let reply = OutcomeReply {
            payment_intent: intent.to_string(),
            refund: refund.map(|r| r.to_string()),
            answer,
        };
        if let Err(error) = send_reply(publisher, reply_to, &reply).await {
            tracing::debug!(error = %format!("{error:#}"), "outcome reply not delivered");
        }
    }
}

/// Who waits for an operation's outcome: the API instance's reply queue
/// (named on follow-up commands too) and the request there that the
/// outcome may answer (`idempotency::AnswerTo`).
#[derive(Debug, Clone, Copy)]
struct Waiting<'a> {
    reply_to: Option<&'a str>,
    answer_to: Option<&'a AnswerTo>,
}

/// The final answer of the request that confirmed `attempt` and waits, as
/// the External API would render it after a reload (`snakepay_http::outcome`,
/// no `expand[]`: a request with one names no `answer_to`). `None` while the
/// intent is still in flight: the request goes on waiting.
fn final_answer<'a>(
    committed: &IntentRecord,
    attempt: AttemptId,
    to: &'a AnswerTo,
) -> Option<(&'a AnswerTo, ReplyAnswer)> {
    let intent = &committed.intent;
    if intent.status == PaymentIntentStatus::Processing {
        return None;
    }
    let object = snakepay_store::objects::payment_intent(committed);
    let (status, body) =
        outcome::intent_answer(intent, intent.refusal_of_confirmation(attempt), object);
    let body = serde_json::to_string(&body).ok()?;
    Some((
        to,
        ReplyAnswer {
            request_id: to.request_id.clone(),
            status: status.as_u16(),
            body,
        },
    ))
}

/// What an inquiry means for the caller: the processor's answer, `None`
/// when it never performed the operation (so sending it is safe), or an
/// unknown outcome while it is still running.
fn answered<T>(inquiry: Inquiry<T>) -> CallResult<Option<T>> {
    match inquiry {
        Inquiry::Answered(answer) => Ok(Some(answer)),
        Inquiry::NeverPerformed => Ok(None),
        Inquiry::InProgress => Err(CallError::Unknown("operation in progress".into())),
    }
}

/// A definite answer, or `None` after logging why there is none yet.
fn settled<T>(answer: CallResult<T>, intent: PaymentIntentId) -> Option<T> {
    match answer {
        Ok(answer) => Some(answer),
        Err(error) => {
            tracing::info!(payment.id = %intent, reason = %error, "outcome unknown; left for the reconciler");
            None
        }
    }
}

fn processor_outcome(answer: Completion) -> ProcessorOutcome {
    match answer {
        Completion::Done => ProcessorOutcome::Succeeded,
        Completion::Refused { code, message } => {
            tracing::warn!(processor.error = %code, "processor refused the operation");
            ProcessorOutcome::Failed(PaymentError {
                code: CardErrorCode::ProcessingError,
                decline_code: None,
                message,
            })
        }
    }
}
