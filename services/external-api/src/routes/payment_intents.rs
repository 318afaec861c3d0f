//! `/v1/payment_intents`: create (optionally confirming), retrieve, update,
//! confirm, capture, cancel, list.
//!
//! Every state change runs as: parse and validate (not stored) → claim the
//! idempotency key → in one shard transaction, lock the intent, apply the
//! domain transition, write the intent, its attempt, events and outbox
//! commands, and store the response → commit. Confirm, capture and cancel
//! then wait a bounded time for the processor's outcome (`crate::outcome`).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use snakepay_cache::VersionedCache;
use snakepay_domain::currency::Currency;
use snakepay_domain::effects::Effects;
use snakepay_domain::ids::{
    AttemptId, ChargeId, CustomerKind, PaymentIntentId, PaymentIntentKind, PaymentMethodId,
    PaymentMethodKind,
};
use snakepay_domain::money::charge_amount;
use snakepay_domain::payment_intent::{
    self, CancellationReason, CaptureMethod, IntentCommand, NewPaymentIntent, PaymentIntentStatus,
    TransitionError,
};
use snakepay_http::{ApiError, MetadataUpdate, ParamReader, RequestIdExt, StripeParams};
use snakepay_store::effects::{EffectContext, NewIntent};
use snakepay_store::events::EventSource;
use snakepay_store::idempotency::AnswerTo;
use snakepay_store::intents::{self, CardRecord, IntentRecord, NewAttempt};
use snakepay_store::{charges, customers};
use sqlx::{PgConnection, Postgres, Transaction};
use subtle::ConstantTimeEq;

use crate::auth::Auth;
use crate::cards::{self, CardInput, ParsedCard};
use crate::idempotent::{self, Executed, IdempotentPost, Reply, WorkError};
use crate::openapi::ApiRoutes;
use crate::outcome::{self, IntentChange, Subject};
use crate::routes::common::{self, expansions, now, owned_id};
use crate::state::AppState;
use snakepay_store::objects;

const OBJECT: &str = "payment_intent";
const EXPANDABLE: &[&str] = &["customer", "latest_charge"];
/// Stripe's limit for statement descriptors.
const STATEMENT_DESCRIPTOR_MAX_CHARS: usize = 22;
const CAPTURE_METHODS: &[(&str, CaptureMethod)] = &[
    ("automatic", CaptureMethod::Automatic),
    ("automatic_async", CaptureMethod::AutomaticAsync),
    ("manual", CaptureMethod::Manual),
];
const CANCELLATION_REASONS: &[(&str, CancellationReason)] = &[
    ("duplicate", CancellationReason::Duplicate),
    ("fraudulent", CancellationReason::Fraudulent),
    (
        "requested_by_customer",
        CancellationReason::RequestedByCustomer,
    ),
    ("abandoned", CancellationReason::Abandoned),
];

const CREATE_PARAMS: &[&str] = &[
    "amount",
    "currency",
    "customer",
    "description",
    "metadata",
    "payment_method",
    "payment_method_types",
    "payment_method_data",
    "capture_method",
    "confirm",
    "receipt_email",
    "return_url",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "expand",
];
const UPDATE_PARAMS: &[&str] = &[
    "amount",
    "currency",
    "description",
    "metadata",
    "payment_method",
    "payment_method_data",
    "customer",
    "receipt_email",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "expand",
];
const CONFIRM_PARAMS: &[&str] = &[
    "client_secret",
    "payment_method",
    "payment_method_data",
    "return_url",
    "receipt_email",
    "capture_method",
    "expand",
];

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.post(
        "/v1/payment_intents",
        create,
        "Create a PaymentIntent, optionally confirming it",
        CREATE_PARAMS,
    )
    .get(
        "/v1/payment_intents",
        list,
        "List PaymentIntents, newest first",
        &[
            "limit",
            "starting_after",
            "ending_before",
            "created",
            "customer",
        ],
    )
    .get(
        "/v1/payment_intents/{id}",
        retrieve,
        "Retrieve a PaymentIntent (publishable keys need its client_secret)",
        &["client_secret", "expand"],
    )
    .post(
        "/v1/payment_intents/{id}",
        update,
        "Update a PaymentIntent",
        UPDATE_PARAMS,
    )
    .post(
        "/v1/payment_intents/{id}/confirm",
        confirm,
        "Confirm a PaymentIntent (publishable keys need its client_secret)",
        CONFIRM_PARAMS,
    )
    .post(
        "/v1/payment_intents/{id}/capture",
        capture,
        "Capture an authorized PaymentIntent, fully or partly",
        &["amount_to_capture", "expand"],
    )
    .post(
        "/v1/payment_intents/{id}/cancel",
        cancel,
        "Cancel a PaymentIntent, releasing any authorization",
        &["cancellation_reason", "expand"],
    )
}

/// Where a confirmation's card comes from.
enum PaymentMethodSource {
    Existing(String),
    /// Checked already (before the idempotency claim); sealed in the work.
    NewCard(ParsedCard),
}

fn payment_method_source(
    params: &mut ParamReader,
    livemode: bool,
) -> Result<Option<PaymentMethodSource>, ApiError> {
    let existing = params.string("payment_method")?;
    let data = params.nested("payment_method_data")?;
    match (existing, data) {
        (Some(_), Some(_)) => Err(ApiError::invalid_request(
            Some("parameter_invalid_empty"),
            Some("payment_method_data"),
            "You may only specify one of these parameters: payment_method, payment_method_data.",
        )),
        (Some(id), None) => match cards::test_payment_method(&id) {
            Some(card) if !livemode => Ok(Some(PaymentMethodSource::NewCard(cards::parse(
                &card,
                livemode,
                now(),
            )?))),
            Some(_) => Err(common::missing("payment_method", &id, "payment_method")),
            None => Ok(Some(PaymentMethodSource::Existing(id))),
        },
        (None, Some(mut data)) => {
            let kind = data.required_string("type")?;
            if kind != "card" {
                return Err(ApiError::parameter_invalid(
                    "parameter_invalid_string",
                    "payment_method_data[type]",
                    "Invalid payment_method_data[type]: only `card` is supported",
                ));
            }
            let mut card = data
                .nested("card")?
                .ok_or_else(|| ApiError::parameter_missing("payment_method_data[card]"))?;
            let input = CardInput {
                number: card.required_string("number")?,
                exp_month: card.required_i64("exp_month")?,
                exp_year: card.required_i64("exp_year")?,
                cvc: card.string("cvc")?,
            };
            card.finish()?;
            data.finish()?;
            Ok(Some(PaymentMethodSource::NewCard(cards::parse(
                &input,
                livemode,
                now(),
            )?)))
        }
        (None, None) => Ok(None),
    }
}

/// The payment method a change pays with: an existing one of the merchant
/// (checked to belong to the intent's customer, if saved to one) or a new
/// card, sealed here and returned for the caller to insert with its change.
async fn payment_method_of(
    conn: &mut PgConnection,
    state: &AppState,
    auth: &Auth,
    source: &PaymentMethodSource,
    customer: Option<snakepay_domain::ids::CustomerId>,
) -> Result<(PaymentMethodId, Option<CardRecord>), WorkError> {
    let context = &auth.0;
    match source {
        PaymentMethodSource::Existing(text) => {
            let id = owned_id::<PaymentMethodKind>(
                state,
                auth,
                text,
                "payment_method",
                "payment_method",
            )?;
            let card = intents::find_card(&mut *conn, id, context.merchant_id, context.livemode)
                .await?
                .ok_or_else(|| common::missing("payment_method", text, "payment_method"))?;
            // A saved card belongs to its customer: it pays only for them.
            if card.customer.is_some() && card.customer != customer.map(|c| c.to_string()) {
                return Err(WorkError::Api(ApiError::invalid_request(
                    Some("payment_method_invalid_parameter"),
                    Some("payment_method"),
                    "The provided PaymentMethod belongs to another customer.",
                )));
            }
            Ok((id, None))
        }
        PaymentMethodSource::NewCard(card) => {
            let id = PaymentMethodId::generate(state.region, context.shard())
                .map_err(anyhow::Error::from)?;
            let record = cards::seal(
                &state.vault,
                id,
                context.merchant_id,
                context.livemode,
                customer,
                card,
                now(),
            )?;
            Ok((id, Some(record)))
        }
    }
}

/// [`payment_method_of`], inserting a new card at once.
async fn resolve_payment_method(
    tx: &mut Transaction<'static, Postgres>,
    state: &AppState,
    auth: &Auth,
    source: &PaymentMethodSource,
    customer: Option<snakepay_domain::ids::CustomerId>,
) -> Result<PaymentMethodId, WorkError> {
    let (id, new_card) = payment_method_of(tx, state, auth, source, customer).await?;
    if let Some(card) = new_card {
        intents::insert_card(tx, &card).await?;
    }
    Ok(id)
}

pub(crate) fn transition_error(error: TransitionError) -> WorkError {
    match error.code() {
        Some(code) => WorkError::Api(ApiError::invalid_request(
            Some(code),
            error.param(),
            error.to_string(),
        )),
        None => WorkError::Internal(anyhow::anyhow!(error)),
    }
}

fn statement_descriptor(params: &mut ParamReader, name: &str) -> Result<Option<String>, ApiError> {
    let value = params.string(name)?;
    if value
        .as_ref()
        .is_some_and(|v| v.chars().count() > STATEMENT_DESCRIPTOR_MAX_CHARS)
    {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            name,
            format!("Invalid {name}: at most {STATEMENT_DESCRIPTOR_MAX_CHARS} characters"),
        ));
    }
    Ok(value)
}

fn currency(text: &str) -> Result<Currency, ApiError> {
    Currency::parse(text).map_err(|e| {
        ApiError::parameter_invalid(
            "parameter_invalid_string",
            "currency",
            format!("Invalid currency: {e}"),
        )
    })
}

fn amount(minor: i64, currency: Currency) -> Result<snakepay_domain::Money, ApiError> {
    charge_amount(minor, currency)
        .map_err(|e| ApiError::invalid_request(Some(e.code()), Some("amount"), e.to_string()))
}

/// Where a change comes from: the request (named in its events) and the
/// reply queue its commands name, if any.
struct Origin<'a> {
    request_id: &'a str,
    reply_to: Option<&'a str>,
    /// The request the outcome may answer (a confirmation that waits).
    answer_to: Option<&'a AnswerTo>,
    /// Where a cached copy of the intent must be invalidated.
    cache: Option<&'a VersionedCache>,
}

/// Writes what a transition produced: attempt, events, commands, journal.
async fn write_effects(
    tx: &mut Transaction<'static, Postgres>,
    auth: &Auth,
    record: &IntentRecord,
    effects: &Effects,
    attempt: Option<NewAttempt>,
    origin: &Origin<'_>,
) -> Result<Value, WorkError> {
    if let Some(attempt) = attempt {
        intents::insert_attempt(tx, &attempt).await?;
    }
    let context = common::effect_context(
        auth,
        origin.request_id,
        origin.reply_to,
        origin.answer_to,
        "payment_intent",
    );
    snakepay_store::effects::write(tx, record, None, effects, context).await?;
    let snapshot = objects::payment_intent(record);
    Ok(snapshot)
}

/// The end of every change to an existing intent: save it, write what the
/// transition produced, and answer with the intent as it now is.
async fn save_and_answer(
    mut tx: Transaction<'static, Postgres>,
    auth: &Auth,
    record: &mut IntentRecord,
    effects: &Effects,
    attempt: Option<NewAttempt>,
    origin: &Origin<'_>,
    expand: &[String],
) -> Result<(Transaction<'static, Postgres>, Reply), WorkError> {
    intents::update(&mut tx, record).await?;
    // Before the commit, with the new version: a reader that loads the old
    // row meanwhile can no longer cache it (see snakepay_cache::versioned).
    if let Some(cache) = origin.cache {
        cache
            .invalidate(&record.intent.id.to_string(), record.version)
            .await;
    }
    write_effects(&mut tx, auth, record, effects, attempt, origin).await?;
    let body = render(&mut tx, auth, record, expand).await?;
    Ok((tx, answer(&body, record)?))
}

/// A 200 with the intent, marked in flight while it is at the processor.
fn answer(body: &Value, record: &IntentRecord) -> Result<Reply, WorkError> {
    Ok(Reply::ok(body)?.in_flight(record.intent.status == PaymentIntentStatus::Processing))
}

/// The intent's JSON with `expand[]` applied.
pub(crate) async fn render(
    conn: &mut PgConnection,
    auth: &Auth,
    record: &IntentRecord,
    expand: &[String],
) -> anyhow::Result<Value> {
    let mut object = objects::payment_intent(record);
    if expand.iter().any(|e| e == "customer")
        && let Some(customer) = record.customer
        && let Some(found) =
            customers::find(&mut *conn, customer, auth.0.merchant_id, auth.0.livemode).await?
        && let Some(fields) = object.as_object_mut()
    {
        fields.insert("customer".to_owned(), objects::customer(&found));
    }
    if expand.iter().any(|e| e == "latest_charge")
        && let Some(charge) = record.intent.latest_charge
        && let Some(view) =
            charges::find(&mut *conn, charge, auth.0.merchant_id, auth.0.livemode).await?
        && let Some(fields) = object.as_object_mut()
    {
        fields.insert("latest_charge".to_owned(), objects::charge(&view));
    }
    Ok(object)
}

/// The IDs of a new attempt and its charge. Made before the transaction, so
/// the request knows its own attempt when it waits for the outcome (a
/// retried transaction reuses them: its first try rolled back).
fn new_attempt(state: &AppState, auth: &Auth) -> Result<(AttemptId, ChargeId), ApiError> {
    let shard = auth.0.shard();
    let generated = AttemptId::generate(state.region, shard)
        .and_then(|attempt| Ok((attempt, ChargeId::generate(state.region, shard)?)));
    generated.map_err(|e| ApiError::internal(&e.into()))
}

fn attempt_row(
    record: &IntentRecord,
    attempt: AttemptId,
    charge: ChargeId,
    auth: &Auth,
) -> Option<NewAttempt> {
    let payment_method = record.intent.payment_method?;
    Some(NewAttempt {
        id: attempt,
        payment_intent: record.intent.id,
        merchant_id: auth.0.merchant_id,
        charge,
        payment_method,
        amount: record.intent.amount,
        capture: record.intent.capture_method.captures_on_authorization(),
        created: now(),
    })
}

fn client_secret(id: PaymentIntentId) -> Result<String, WorkError> {
    let mut random = [0_u8; 16];
    snakepay_domain::ids::fill_random(&mut random).map_err(anyhow::Error::from)?;
    Ok(format!("{id}_secret_{}", hex::encode(random)))
}

struct CreateInput {
    amount: i64,
    currency: Currency,
    customer: Option<String>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    source: Option<PaymentMethodSource>,
    capture_method: CaptureMethod,
    confirm: bool,
    receipt_email: Option<String>,
    return_url: Option<String>,
    statement_descriptor: Option<String>,
    statement_descriptor_suffix: Option<String>,
    expand: Vec<String>,
}

fn parse_create(params: &mut ParamReader, livemode: bool) -> Result<CreateInput, ApiError> {
    let minor = params.required_i64("amount")?;
    let currency = currency(&params.required_string("currency")?)?;
    amount(minor, currency)?;
    let types = params.string_list("payment_method_types")?;
    if types.iter().any(|t| t != "card") {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "payment_method_types",
            "Invalid payment_method_types: only `card` is supported",
        ));
    }
    Ok(CreateInput {
        amount: minor,
        currency,
        customer: params.string("customer")?,
        description: params.string("description")?,
        metadata: params
            .metadata("metadata")?
            .map(MetadataUpdate::into_new_metadata)
            .unwrap_or_default(),
        source: payment_method_source(params, livemode)?,
        capture_method: params
            .enumeration("capture_method", CAPTURE_METHODS)?
            .unwrap_or(CaptureMethod::AutomaticAsync),
        confirm: params.bool("confirm")?.unwrap_or(false),
        receipt_email: params.string("receipt_email")?,
        return_url: params.string("return_url")?,
        statement_descriptor: statement_descriptor(params, "statement_descriptor")?,
        statement_descriptor_suffix: statement_descriptor(params, "statement_descriptor_suffix")?,
        expand: expansions(params, EXPANDABLE)?,
    })
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    RequestIdExt(request_id): RequestIdExt,
    IdempotentPost {
        params,
        key,
        fingerprint,
    }: IdempotentPost,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let input = parse_create(&mut reader, auth.0.livemode)?;
    reader.finish()?;
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    let id = PaymentIntentId::generate(state.region, auth.0.shard())
        .map_err(|e| ApiError::internal(&e.into()))?;
    // Used only with `confirm=true`: then a create is a confirmation and
    // waits like one.
    let (attempt, charge) = new_attempt(&state, &auth)?;
    let subject = Subject::Intent {
        id,
        change: IntentChange::Confirm { attempt },
        expand: &input.expand,
    };
    let expectation = if input.confirm {
        state.outcomes.expect(&subject)
    } else {
        state.outcomes.expect_nothing()
    };
    let answer_to = expectation.answer_to(&request, &subject);
    let context = common::effect_context(
        &auth,
        &request_id,
        expectation.reply_to(),
        answer_to.as_ref(),
        "payment_intent",
    );
    let creating = Creating {
        state: &state,
        auth: &auth,
        input: &input,
        id,
        attempt: (attempt, charge),
    };
    let executed = match create_at_once(&creating, &request, context).await {
        Some(executed) => executed,
        None => {
            idempotent::execute_phased(&state, &request, |mut tx| {
                let creating = &creating;
                async move {
                    let creation = creating.prepare(&mut tx).await?;
                    let new = creation.new_intent();
                    snakepay_store::effects::write_new_intent(
                        &mut tx,
                        &new,
                        &creation.effects,
                        creation.stamped(context),
                    )
                    .await?;
                    Ok((tx, creation.reply))
                }
            })
            .await
        }
    };
    Ok(outcome::finish(&state, &request, executed, expectation, &subject).await)
}

/// A create's write as one autocommit statement (`idempotent::write_at_once`):
/// the key with its response, the card, the intent, its attempt, events and
/// command. `None` when it did not write (the key is taken, or anything
/// failed, an invalid parameter included): the transaction path then does
/// the same work under the key's claim and stores or replays the answer.
/// No connection within the pool's timeout is answered at once (503): the
/// transaction path would only wait as long again.
async fn create_at_once(
    creating: &Creating<'_>,
    request: &idempotent::Request<'_>,
    context: EffectContext<'_>,
) -> Option<Executed> {
    let pool = creating.state.shard(creating.auth.0.shard()).ok()?;
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(error) => return Some(idempotent::unavailable(request, error)),
    };
    let creation = creating.prepare(&mut conn).await.ok()?;
    let new = creation.new_intent();
    let context = creation.stamped(context);
    idempotent::write_at_once(&mut conn, request, creation.reply.clone(), |statement| {
        snakepay_store::effects::push_new_intent(statement, &new, &creation.effects, context)
    })
    .await
}

/// A create request, parsed, with the IDs it will use.
struct Creating<'a> {
    state: &'a AppState,
    auth: &'a Auth,
    input: &'a CreateInput,
    id: PaymentIntentId,
    /// The first attempt and its charge, used with `confirm=true`.
    attempt: (AttemptId, ChargeId),
}

/// What a create writes and answers, all known before the write.
struct Creation {
    /// When the intent was created: its events carry the same time.
    created: i64,
    card: Option<CardRecord>,
    record: IntentRecord,
    attempt: Option<NewAttempt>,
    effects: Effects,
    reply: Reply,
}

impl Creation {
    /// `context` with the intent's creation time on its events (a fallback
    /// or a retried transaction computes the intent again, later).
    fn stamped<'c>(&self, context: EffectContext<'c>) -> EffectContext<'c> {
        EffectContext {
            source: EventSource {
                created: self.created,
                ..context.source
            },
            ..context
        }
    }

    fn new_intent(&self) -> NewIntent<'_> {
        NewIntent {
            card: self.card.as_ref(),
            intent: &self.record,
            attempt: self.attempt.as_ref(),
        }
    }
}

impl Creating<'_> {
    /// Checks what the request names (customer, payment method), seals a
    /// new card, and computes the intent, its effects and the answer. Reads
    /// on `conn`; writes nothing.
    async fn prepare(&self, conn: &mut PgConnection) -> Result<Creation, WorkError> {
        let (state, auth, input) = (self.state, self.auth, self.input);
        let context = &auth.0;
        let customer = match &input.customer {
            Some(text) => {
                let id = owned_id::<CustomerKind>(state, auth, text, "customer", "customer")?;
                customers::find(&mut *conn, id, context.merchant_id, context.livemode)
                    .await?
                    .ok_or_else(|| ApiError::resource_missing("customer", text, "customer"))?;
                Some(id)
            }
            None => None,
        };
        let (payment_method, card) = match &input.source {
            Some(source) => {
                let (id, card) = payment_method_of(conn, state, auth, source, customer).await?;
                (Some(id), card)
            }
            None => (None, None),
        };
        let created_at = now();
        let created = payment_intent::create(NewPaymentIntent {
            id: self.id,
            amount: amount(input.amount, input.currency)?,
            capture_method: input.capture_method,
            payment_method,
            created: created_at,
        });
        let mut effects = created.effects;
        let mut intent = created.intent;
        let mut confirmed_attempt = None;
        if input.confirm {
            let (attempt, charge) = self.attempt;
            let confirmed = payment_intent::apply(
                &intent,
                IntentCommand::Confirm {
                    payment_method: None,
                    attempt,
                    charge,
                },
            )
            .map_err(transition_error)?;
            intent = confirmed.intent;
            effects.commands.extend(confirmed.effects.commands);
            effects.events.extend(confirmed.effects.events);
            confirmed_attempt = Some((attempt, charge));
        }
        let record = IntentRecord {
            intent,
            merchant_id: context.merchant_id,
            livemode: context.livemode,
            customer,
            client_secret: client_secret(self.id)?,
            description: input.description.clone(),
            metadata: input.metadata.clone(),
            payment_method_types: vec!["card".to_owned()],
            receipt_email: input.receipt_email.clone(),
            return_url: input.return_url.clone(),
            statement_descriptor: input.statement_descriptor.clone(),
            statement_descriptor_suffix: input.statement_descriptor_suffix.clone(),
            version: 1,
        };
        let attempt = confirmed_attempt.and_then(|(a, c)| attempt_row(&record, a, c, auth));
        let body = render(conn, auth, &record, &input.expand).await?;
        let reply = answer(&body, &record)?;
        Ok(Creation {
            created: created_at,
            card,
            record,
            attempt,
            effects,
            reply,
        })
    }
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    let mut reader = params.reader();
    let secret = reader.string("client_secret")?;
    let expand = expansions(&mut reader, EXPANDABLE)?;
    reader.finish()?;
    if auth.is_publishable() && !expand.is_empty() {
        return Err(publishable_forbidden());
    }
    let intent_id = owned_id::<PaymentIntentKind>(&state, &auth, &id, OBJECT, "intent")?;
    // Secret-key reads without `expand[]` are served from the cache.
    let cache = state
        .intent_cache()
        .filter(|_| !auth.is_publishable() && expand.is_empty());
    if let Some(cache) = cache
        && let Some((_, bytes)) = cache.get(&intent_id.to_string()).await
        && let Some(object) = common::cached_object(&bytes, &auth)
    {
        return Ok(axum::Json(object).into_response());
    }
    let pool = state.shard(auth.0.shard())?;
    let record = intents::load(pool, intent_id, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing(OBJECT, &id, "intent"))?;
    check_client_secret(&auth, &record, secret.as_deref(), &id)?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let body = render(&mut conn, &auth, &record, &expand)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if let Some(cache) = cache
        && let Some(bytes) = common::cache_entry(&auth, &body)
    {
        cache
            .populate(&intent_id.to_string(), record.version, &bytes)
            .await;
    }
    Ok(axum::Json(body).into_response())
}

fn publishable_forbidden() -> ApiError {
    ApiError::forbidden(
        "This parameter cannot be used with a publishable API key. Please use a secret API key.",
    )
}

/// A publishable key may act on an intent only with its client secret.
fn check_client_secret(
    auth: &Auth,
    record: &IntentRecord,
    secret: Option<&str>,
    id: &str,
) -> Result<(), ApiError> {
    if !auth.is_publishable() {
        return Ok(());
    }
    match secret {
        None => Err(ApiError::parameter_missing("client_secret")),
        Some(secret) if bool::from(secret.as_bytes().ct_eq(record.client_secret.as_bytes())) => {
            Ok(())
        }
        // The same answer as for an unknown intent: a wrong secret reveals nothing.
        Some(_) => Err(ApiError::resource_missing(OBJECT, id, "intent")),
    }
}

/// Loads the intent for a state change, or "no such payment_intent".
pub(crate) async fn lock_intent(
    tx: &mut Transaction<'static, Postgres>,
    auth: &Auth,
    id: PaymentIntentId,
) -> Result<IntentRecord, WorkError> {
    intents::load_for_update(tx, id, auth.0.merchant_id, auth.0.livemode)
        .await?
        .ok_or_else(|| {
            WorkError::Api(ApiError::resource_missing(
                OBJECT,
                &id.to_string(),
                "intent",
            ))
        })
}

struct UpdateInput {
    amount: Option<i64>,
    currency: Option<Currency>,
    description: Option<Option<String>>,
    metadata: Option<MetadataUpdate>,
    source: Option<PaymentMethodSource>,
    customer: Option<String>,
    receipt_email: Option<Option<String>>,
    statement_descriptor: Option<Option<String>>,
    statement_descriptor_suffix: Option<Option<String>>,
    expand: Vec<String>,
}

/// `Some(None)` when the parameter was sent empty (unset), `None` when absent.
fn settable(params: &mut ParamReader, name: &str) -> Result<Option<Option<String>>, ApiError> {
    if !params.has(name) {
        return Ok(None);
    }
    Ok(Some(params.string(name)?))
}

/// Like [`settable`], with the descriptor's length check.
fn settable_descriptor(
    params: &mut ParamReader,
    name: &str,
) -> Result<Option<Option<String>>, ApiError> {
    if !params.has(name) {
        return Ok(None);
    }
    Ok(Some(statement_descriptor(params, name)?))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RequestIdExt(request_id): RequestIdExt,
    IdempotentPost {
        params,
        key,
        fingerprint,
    }: IdempotentPost,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let input = UpdateInput {
        amount: reader.i64("amount")?,
        currency: reader
            .string("currency")?
            .as_deref()
            .map(currency)
            .transpose()?,
        description: settable(&mut reader, "description")?,
        metadata: reader.metadata("metadata")?,
        source: payment_method_source(&mut reader, auth.0.livemode)?,
        customer: reader.string("customer")?,
        receipt_email: settable(&mut reader, "receipt_email")?,
        statement_descriptor: settable_descriptor(&mut reader, "statement_descriptor")?,
        statement_descriptor_suffix: settable_descriptor(
            &mut reader,
            "statement_descriptor_suffix",
        )?,
        expand: expansions(&mut reader, EXPANDABLE)?,
    };
    reader.finish()?;
    let intent_id = owned_id::<PaymentIntentKind>(&state, &auth, &id, OBJECT, "intent")?;
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    // Superseding an attempt sends a void; nobody waits for its outcome.
    let reply_to = state.outcomes.reply_to();
    Ok(idempotent::execute(&state, request, |mut tx| {
        let (state, auth, input) = (&state, &auth, &input);
        let origin = Origin {
            cache: state.intent_cache(),
            request_id: &request_id,
            reply_to: reply_to.as_deref(),
            answer_to: None,
        };
        async move {
            let mut record = lock_intent(&mut tx, auth, intent_id).await?;
            let mut effects = Effects::none();
            if input.amount.is_some() || input.currency.is_some() {
                let currency = input.currency.unwrap_or(record.intent.amount.currency());
                let minor = input.amount.unwrap_or(record.intent.amount.minor());
                let t = payment_intent::apply(
                    &record.intent,
                    IntentCommand::UpdateAmount {
                        amount: amount(minor, currency)?,
                    },
                )
                .map_err(transition_error)?;
                record.intent = t.intent;
            }
            if let Some(source) = &input.source {
                let pm =
                    resolve_payment_method(&mut tx, state, auth, source, record.customer).await?;
                let t = payment_intent::apply(
                    &record.intent,
                    IntentCommand::AttachPaymentMethod { payment_method: pm },
                )
                .map_err(transition_error)?;
                record.intent = t.intent;
                effects = t.effects;
            }
            if let Some(text) = &input.customer {
                let customer = owned_id::<CustomerKind>(state, auth, text, "customer", "customer")?;
                customers::find(&mut *tx, customer, auth.0.merchant_id, auth.0.livemode)
                    .await?
                    .ok_or_else(|| ApiError::resource_missing("customer", text, "customer"))?;
                record.customer = Some(customer);
            }
            if let Some(update) = &input.metadata {
                update.apply(&mut record.metadata, "metadata")?;
            }
            if let Some(description) = &input.description {
                record.description = description.clone();
            }
            if let Some(email) = &input.receipt_email {
                record.receipt_email = email.clone();
            }
            if let Some(descriptor) = &input.statement_descriptor {
                record.statement_descriptor = descriptor.clone();
            }
            if let Some(suffix) = &input.statement_descriptor_suffix {
                record.statement_descriptor_suffix = suffix.clone();
            }
            save_and_answer(
                tx,
                auth,
                &mut record,
                &effects,
                None,
                &origin,
                &input.expand,
            )
            .await
        }
    })
    .await)
}

async fn confirm(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RequestIdExt(request_id): RequestIdExt,
    IdempotentPost {
        params,
        key,
        fingerprint,
    }: IdempotentPost,
) -> Result<Response, ApiError> {
    let mut reader = params.reader();
    let secret = reader.string("client_secret")?;
    let source = payment_method_source(&mut reader, auth.0.livemode)?;
    let return_url = reader.string("return_url")?;
    let receipt_email = reader.string("receipt_email")?;
    let capture_method = reader.enumeration("capture_method", CAPTURE_METHODS)?;
    let expand = expansions(&mut reader, EXPANDABLE)?;
    reader.finish()?;
    if auth.is_publishable() {
        if secret.is_none() {
            return Err(ApiError::parameter_missing("client_secret"));
        }
        // The browser may pay, not change how the merchant captures or read
        // the customer's details.
        if capture_method.is_some() || !expand.is_empty() {
            return Err(publishable_forbidden());
        }
    }
    let intent_id = owned_id::<PaymentIntentKind>(&state, &auth, &id, OBJECT, "intent")?;
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    let (attempt, charge) = new_attempt(&state, &auth)?;
    let subject = Subject::Intent {
        id: intent_id,
        change: IntentChange::Confirm { attempt },
        expand: &expand,
    };
    let expectation = state.outcomes.expect(&subject);
    let answer_to = expectation.answer_to(&request, &subject);
    let executed = idempotent::execute_phased(&state, &request, |mut tx| {
        let (state, auth) = (&state, &auth);
        let (source, secret, return_url, receipt_email, expand, id) =
            (&source, &secret, &return_url, &receipt_email, &expand, &id);
        let origin = Origin {
            cache: state.intent_cache(),
            request_id: &request_id,
            reply_to: expectation.reply_to(),
            answer_to: answer_to.as_ref(),
        };
        async move {
            let mut record = lock_intent(&mut tx, auth, intent_id).await?;
            check_client_secret(auth, &record, secret.as_deref(), id)?;
            let payment_method = match source {
                Some(source) => Some(
                    resolve_payment_method(&mut tx, state, auth, source, record.customer).await?,
                ),
                None => None,
            };
            if let Some(method) = capture_method {
                record.intent.capture_method = method;
            }
            let t = payment_intent::apply(
                &record.intent,
                IntentCommand::Confirm {
                    payment_method,
                    attempt,
                    charge,
                },
            )
            .map_err(transition_error)?;
            record.intent = t.intent;
            if return_url.is_some() {
                record.return_url = return_url.clone();
            }
            if receipt_email.is_some() {
                record.receipt_email = receipt_email.clone();
            }
            let attempt_row = attempt_row(&record, attempt, charge, auth);
            save_and_answer(
                tx,
                auth,
                &mut record,
                &t.effects,
                attempt_row,
                &origin,
                expand,
            )
            .await
        }
    })
    .await;
    Ok(outcome::finish(&state, &request, executed, expectation, &subject).await)
}

/// What capture and cancel share: the request, parsed.
struct SimpleRequest<'a> {
    id: &'a str,
    request_id: &'a str,
    idempotency_key: Option<&'a str>,
    fingerprint: String,
    /// Capture or cancel: capture names its amount `amount_to_capture`.
    change: IntentChange,
    expand: Vec<String>,
}

/// Capture and cancel: lock, apply one command, write, answer (after
/// waiting for the processor when the change went to it).
async fn simple_transition(
    state: &AppState,
    auth: &Auth,
    request: SimpleRequest<'_>,
    command: impl Fn() -> IntentCommand,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let SimpleRequest {
        id,
        request_id,
        idempotency_key,
        fingerprint,
        change,
        expand,
    } = request;
    let intent_id = owned_id::<PaymentIntentKind>(state, auth, id, OBJECT, "intent")?;
    let request = idempotent::Request {
        auth,
        request_id,
        idempotency_key,
        fingerprint,
    };
    let subject = Subject::Intent {
        id: intent_id,
        change,
        expand: &expand,
    };
    let expectation = state.outcomes.expect(&subject);
    let executed = idempotent::execute_phased(state, &request, |mut tx| {
        let (command, expand) = (&command, &expand);
        let origin = Origin {
            cache: state.intent_cache(),
            request_id,
            reply_to: expectation.reply_to(),
            answer_to: None,
        };
        async move {
            let mut record = lock_intent(&mut tx, auth, intent_id).await?;
            let t = payment_intent::apply(&record.intent, command()).map_err(|error| {
                // The domain calls every amount `amount`; capture's is `amount_to_capture`.
                match transition_error(error) {
                    WorkError::Api(mut api)
                        if change == IntentChange::Capture
                            && api.param.as_deref() == Some("amount") =>
                    {
                        api.param = Some("amount_to_capture".to_owned());
                        WorkError::Api(api)
                    }
                    other => other,
                }
            })?;
            record.intent = t.intent;
            save_and_answer(tx, auth, &mut record, &t.effects, None, &origin, expand).await
        }
    })
    .await;
    Ok(outcome::finish(state, &request, executed, expectation, &subject).await)
}

async fn capture(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RequestIdExt(request_id): RequestIdExt,
    IdempotentPost {
        params,
        key,
        fingerprint,
    }: IdempotentPost,
) -> Result<Response, ApiError> {
    let mut reader = params.reader();
    let amount_to_capture = reader.i64("amount_to_capture")?;
    let expand = expansions(&mut reader, EXPANDABLE)?;
    reader.finish()?;
    simple_transition(
        &state,
        &auth,
        SimpleRequest {
            id: &id,
            request_id: &request_id,
            idempotency_key: key.as_deref(),
            fingerprint,
            change: IntentChange::Capture,
            expand,
        },
        || IntentCommand::Capture { amount_to_capture },
    )
    .await
}

async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RequestIdExt(request_id): RequestIdExt,
    IdempotentPost {
        params,
        key,
        fingerprint,
    }: IdempotentPost,
) -> Result<Response, ApiError> {
    let mut reader = params.reader();
    let reason = reader.enumeration("cancellation_reason", CANCELLATION_REASONS)?;
    let expand = expansions(&mut reader, EXPANDABLE)?;
    reader.finish()?;
    simple_transition(
        &state,
        &auth,
        SimpleRequest {
            id: &id,
            request_id: &request_id,
            idempotency_key: key.as_deref(),
            fingerprint,
            change: IntentChange::Cancel,
            expand,
        },
        || IntentCommand::Cancel { reason, now: now() },
    )
    .await
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let query = common::list_query(&mut reader)?;
    let customer = reader
        .string("customer")?
        .map(|text| owned_id::<CustomerKind>(&state, &auth, &text, "customer", "customer"))
        .transpose()?;
    reader.finish()?;
    common::check_cursors::<PaymentIntentKind>(&state, &auth, &query, OBJECT)?;
    let pool = state.shard(auth.0.shard())?;
    let page = intents::list(pool, auth.0.merchant_id, auth.0.livemode, customer, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data = page.items.iter().map(objects::payment_intent).collect();
    Ok(axum::Json(objects::list("/v1/payment_intents", data, page.has_more)).into_response())
}
