//! `/v1/refunds`: create (by `payment_intent` or `charge`), retrieve, list.
//! A refund stays `pending` until the processor answers (the pipeline); the
//! create waits a bounded time for that answer (`crate::outcome`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use snakepay_domain::ids::{ChargeKind, PaymentIntentId, PaymentIntentKind, RefundId, RefundKind};
use snakepay_domain::refund::{self, NewRefund, RefundReason, RefundStatus};
use snakepay_http::{ApiError, MetadataUpdate, RequestIdExt, StripeParams};
use snakepay_store::refunds::{self, RefundRecord};
use snakepay_store::{charges, effects, intents};

use crate::auth::Auth;
use crate::idempotent::{self, IdempotentPost, Reply, WorkError};
use crate::openapi::ApiRoutes;
use crate::outcome::{self, Subject};
use crate::routes::common::{self, now, owned_id};
use crate::routes::payment_intents::{lock_intent, transition_error};
use crate::state::AppState;
use snakepay_store::objects;

const REASONS: &[(&str, RefundReason)] = &[
    ("duplicate", RefundReason::Duplicate),
    ("fraudulent", RefundReason::Fraudulent),
    ("requested_by_customer", RefundReason::RequestedByCustomer),
];

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.post(
        "/v1/refunds",
        create,
        "Refund (part of) a payment; pending until the processor answers",
        &[
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "expand",
        ],
    )
    .get(
        "/v1/refunds",
        list,
        "List refunds, newest first",
        &[
            "limit",
            "starting_after",
            "ending_before",
            "created",
            "payment_intent",
        ],
    )
    .get(
        "/v1/refunds/{id}",
        retrieve,
        "Retrieve a refund",
        &["expand"],
    )
}

/// Which payment the refund is for, as the request named it.
enum Target {
    Intent(PaymentIntentId),
    Charge(String),
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
    let intent = reader.string("payment_intent")?;
    let charge = reader.string("charge")?;
    let amount = reader.i64("amount")?;
    let reason = reader.enumeration("reason", REASONS)?;
    let metadata = reader
        .metadata("metadata")?
        .map(MetadataUpdate::into_new_metadata)
        .unwrap_or_default();
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    let target = match (intent, charge) {
        (Some(intent), None) => Target::Intent(owned_id::<PaymentIntentKind>(
            &state,
            &auth,
            &intent,
            "payment_intent",
            "payment_intent",
        )?),
        (None, Some(charge)) => {
            owned_id::<ChargeKind>(&state, &auth, &charge, "charge", "charge")?;
            Target::Charge(charge)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_request(
                Some("parameter_invalid_empty"),
                Some("charge"),
                "You may only specify one of these parameters: payment_intent, charge.",
            ));
        }
        (None, None) => return Err(ApiError::parameter_missing("payment_intent")),
    };
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    // Made before the transaction, so the request can wait for this refund
    // (a retried transaction reuses it: its first try rolled back).
    let id = RefundId::generate(state.region, auth.0.shard())
        .map_err(|e| ApiError::internal(&e.into()))?;
    let subject = Subject::Refund { id };
    let expectation = state.outcomes.expect(&subject);
    let executed = idempotent::execute_phased(&state, &request, |mut tx| {
        let (state, auth, target, metadata, request_id) =
            (&state, &auth, &target, &metadata, &request_id);
        let reply_to = expectation.reply_to();
        async move {
            let context = &auth.0;
            let intent_id = match target {
                Target::Intent(id) => *id,
                Target::Charge(text) => {
                    let charge = owned_id::<ChargeKind>(state, auth, text, "charge", "charge")?;
                    let intent = charges::payment_intent_of(
                        &mut *tx,
                        charge,
                        context.merchant_id,
                        context.livemode,
                    )
                    .await?
                    .ok_or_else(|| common::missing("charge", text, "charge"))?;
                    PaymentIntentId::parse(&intent).map_err(anyhow::Error::from)?
                }
            };
            let mut record = lock_intent(&mut tx, auth, intent_id).await?;
            let t = refund::request(
                &record.intent,
                NewRefund {
                    id,
                    amount,
                    reason,
                    created: now(),
                },
            )
            .map_err(transition_error)?;
            record.intent = t.intent;
            intents::update(&mut tx, &mut record).await?;
            if let Some(cache) = state.intent_cache() {
                cache
                    .invalidate(&record.intent.id.to_string(), record.version)
                    .await;
            }
            let refund_record = RefundRecord {
                refund: t.refund,
                merchant_id: context.merchant_id,
                livemode: context.livemode,
                metadata: metadata.clone(),
            };
            refunds::insert(&mut tx, &refund_record).await?;
            let context = common::effect_context(auth, request_id, reply_to, None, "refund");
            effects::write(&mut tx, &record, Some(&refund_record), &t.effects, context).await?;
            let object = objects::refund(&refund_record);
            let in_flight = refund_record.refund.status == RefundStatus::Pending;
            Ok::<_, WorkError>((tx, Reply::ok(&object)?.in_flight(in_flight)))
        }
    })
    .await;
    Ok(outcome::finish(&state, &request, executed, expectation, &subject).await)
}

async fn retrieve(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    let refund = owned_id::<RefundKind>(&state, &auth, &id, "refund", "id")?;
    let cache = state.caches.as_ref().map(|caches| &caches.refunds);
    if let Some(cache) = cache
        && let Some((_, bytes)) = cache.get(&refund.to_string()).await
        && let Some(object) = common::cached_object(&bytes, &auth)
    {
        return Ok(axum::Json(object).into_response());
    }
    let pool = state.shard(auth.0.shard())?;
    let record = refunds::find(pool, refund, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing("refund", &id, "id"))?;
    let object = objects::refund(&record);
    if let Some(cache) = cache
        && let Some(bytes) = common::cache_entry(&auth, &object)
    {
        let version = refunds::cache_version(record.refund.status);
        cache.populate(&refund.to_string(), version, &bytes).await;
    }
    Ok(axum::Json(object).into_response())
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let query = common::list_query(&mut reader)?;
    let intent = reader
        .string("payment_intent")?
        .map(|text| {
            owned_id::<PaymentIntentKind>(&state, &auth, &text, "payment_intent", "payment_intent")
        })
        .transpose()?;
    reader.finish()?;
    common::check_cursors::<RefundKind>(&state, &auth, &query, "refund")?;
    let pool = state.shard(auth.0.shard())?;
    let page = refunds::list(pool, auth.0.merchant_id, auth.0.livemode, intent, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data = page.items.iter().map(objects::refund).collect();
    Ok(axum::Json(objects::list("/v1/refunds", data, page.has_more)).into_response())
}
