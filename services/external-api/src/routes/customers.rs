//! `/v1/customers`: create and retrieve.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use snakepay_domain::effects::{Effects, EventType};
use snakepay_domain::ids::{CustomerId, CustomerKind};
use snakepay_http::{ApiError, MetadataUpdate, ParamReader, RequestIdExt, StripeParams};
use snakepay_store::customers::{self, CustomerRecord};
use snakepay_store::events;

use crate::auth::Auth;
use crate::idempotent::{self, IdempotentPost, Reply};
use crate::openapi::ApiRoutes;
use crate::routes::common::{self, now, owned_id};
use crate::state::AppState;
use snakepay_store::objects;

const ADDRESS_FIELDS: &[&str] = &["city", "country", "line1", "line2", "postal_code", "state"];

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.post(
        "/v1/customers",
        create,
        "Create a customer",
        &[
            "email",
            "name",
            "description",
            "phone",
            "metadata",
            "address",
            "expand",
        ],
    )
    .get(
        "/v1/customers/{id}",
        retrieve,
        "Retrieve a customer",
        &["expand"],
    )
}

fn address(params: &mut ParamReader) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let Some(mut nested) = params.nested("address")? else {
        return Ok(None);
    };
    let mut address = BTreeMap::new();
    for field in ADDRESS_FIELDS {
        if let Some(value) = nested.string(field)? {
            address.insert((*field).to_owned(), value);
        }
    }
    nested.finish()?;
    Ok(Some(address))
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
    let email = reader.string("email")?;
    let name = reader.string("name")?;
    let description = reader.string("description")?;
    let phone = reader.string("phone")?;
    let metadata = reader
        .metadata("metadata")?
        .map(MetadataUpdate::into_new_metadata)
        .unwrap_or_default();
    let address = address(&mut reader)?;
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    Ok(idempotent::execute(&state, request, |mut tx| {
        let (state, auth, request_id) = (&state, &auth, &request_id);
        let (email, name, description, phone, metadata, address) =
            (&email, &name, &description, &phone, &metadata, &address);
        async move {
            let context = &auth.0;
            let record = CustomerRecord {
                id: CustomerId::generate(state.region, context.shard())
                    .map_err(anyhow::Error::from)?,
                merchant_id: context.merchant_id,
                livemode: context.livemode,
                email: email.clone(),
                name: name.clone(),
                description: description.clone(),
                phone: phone.clone(),
                address: address.clone(),
                metadata: metadata.clone(),
                created: now(),
            };
            customers::insert(&mut tx, &record).await?;
            let object = objects::customer(&record);
            let effects = Effects {
                events: vec![EventType::CustomerCreated],
                ..Effects::none()
            };
            events::record(
                &mut tx,
                &common::events(auth, &effects, &object, request_id)?,
            )
            .await?;
            Ok((tx, Reply::ok(&object)?))
        }
    })
    .await)
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
    let customer = owned_id::<CustomerKind>(&state, &auth, &id, "customer", "id")?;
    let cache = state.caches.as_ref().map(|caches| &caches.customers);
    if let Some(cache) = cache
        && let Some((_, bytes)) = cache.get(&customer.to_string()).await
        && let Some(object) = common::cached_object(&bytes, &auth)
    {
        return Ok(axum::Json(object).into_response());
    }
    let pool = state.shard(auth.0.shard())?;
    let record = customers::find(pool, customer, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing("customer", &id, "id"))?;
    let object = objects::customer(&record);
    if let Some(cache) = cache
        && let Some(bytes) = common::cache_entry(&auth, &object)
    {
        // Version 1: customers are never changed after creation here. A
        // route that changes one must bump a version and invalidate.
        cache.populate(&customer.to_string(), 1, &bytes).await;
    }
    Ok(axum::Json(object).into_response())
}
