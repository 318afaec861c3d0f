//! `/v1/webhook_endpoints`: create, retrieve, list, update and delete the
//! URLs that receive a merchant's events.
//!
//! The signing secret (`whsec_…`) is generated here, sealed by the vault
//! before it reaches the database, and shown once: in the response of the
//! create that made it. Nothing else returns it, and it is never logged.
//!
//! Idempotent replays of a create do not carry it either. The replayed body
//! is the stored one, and storing the secret in it would keep it in clear in
//! `idempotency_keys`; this service seals but cannot open vault records
//! (no `decrypt` feature), so it cannot put the secret back. The stored body
//! is therefore the endpoint without its secret, and only the response of
//! the request that executed adds it.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};
use snakepay_domain::effects::EventType;
use snakepay_domain::ids::{WebhookEndpointId, WebhookEndpointKind, fill_random};
use snakepay_http::{ApiError, MetadataUpdate, ParamReader, RequestIdExt, StripeParams};
use snakepay_store::intents::SealedColumns;
use snakepay_store::webhook_endpoints::{self, EndpointStatus, WebhookEndpointRecord};

use crate::auth::Auth;
use crate::idempotent::{self, IdempotentPost, Reply, WorkError};
use crate::openapi::ApiRoutes;
use crate::routes::common::{self, now, owned_id};
use crate::state::AppState;
use snakepay_store::objects;

const OBJECT: &str = "webhook_endpoint";
const LIST_URL: &str = "/v1/webhook_endpoints";
/// Stripe's limit on endpoint URLs.
const URL_MAX_CHARS: usize = 2048;
/// A bound on descriptions, the same as the database's CHECK.
const DESCRIPTION_MAX_CHARS: usize = 5000;
/// Random bytes in a signing secret: 256 bits, as HMAC-SHA256's key size.
const SECRET_RANDOM_BYTES: usize = 32;
const SECRET_PREFIX: &str = "whsec_";
/// Subscribes to every event type.
const ALL_EVENTS: &str = "*";

/// The routes, registered with their documentation like every resource's.
pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.post(
        "/v1/webhook_endpoints",
        create,
        "Create a webhook endpoint (its signing secret is returned only here)",
        &["url", "enabled_events", "description", "metadata", "expand"],
    )
    .get(
        "/v1/webhook_endpoints",
        list,
        "List webhook endpoints",
        &[
            "limit",
            "starting_after",
            "ending_before",
            "created",
            "expand",
        ],
    )
    .get(
        "/v1/webhook_endpoints/{id}",
        retrieve,
        "Retrieve a webhook endpoint",
        &["expand"],
    )
    .post(
        "/v1/webhook_endpoints/{id}",
        update,
        "Update a webhook endpoint",
        &[
            "url",
            "enabled_events",
            "description",
            "metadata",
            "disabled",
            "expand",
        ],
    )
    .delete(
        "/v1/webhook_endpoints/{id}",
        delete,
        "Delete a webhook endpoint",
        &[],
    )
}

/// A signing secret in clear. `Debug` masks it; [`SigningSecret::expose`] is
/// the one way to read it.
struct SigningSecret(String);

impl SigningSecret {
    fn generate() -> anyhow::Result<SigningSecret> {
        let mut bytes = [0_u8; SECRET_RANDOM_BYTES];
        fill_random(&mut bytes)?;
        Ok(SigningSecret(format!(
            "{SECRET_PREFIX}{}",
            hex::encode(bytes)
        )))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

/// The Stripe JSON of an endpoint, without its secret.
fn object(record: &WebhookEndpointRecord) -> Value {
    json!({
        "id": record.id.to_string(),
        "object": OBJECT,
        "api_version": null,
        "application": null,
        "created": record.created,
        "description": record.description,
        "enabled_events": record.enabled_events,
        "livemode": record.livemode,
        "metadata": record.metadata,
        "status": record.status.as_str(),
        "url": record.url,
    })
}

/// `url`: an absolute http(s) URL with a host, HTTPS in live mode.
fn endpoint_url(text: String, livemode: bool) -> Result<String, ApiError> {
    let invalid = |why: &str| {
        ApiError::parameter_invalid("url_invalid", "url", format!("Invalid URL: {why}."))
    };
    if text.chars().count() > URL_MAX_CHARS {
        return Err(invalid(&format!(
            "it must be at most {URL_MAX_CHARS} characters long"
        )));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| invalid("it must be an absolute URL such as https://example.com/webhooks"))?;
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        return Err(invalid("it must name a host"));
    };
    if let Some(why) = refused_host(host, livemode) {
        return Err(invalid(why));
    }
    // The scheme is checked on the text, lower case, as the database's CHECK does.
    if text.starts_with("https://") {
        return Ok(text);
    }
    if text.starts_with("http://") {
        if livemode {
            return Err(invalid("live mode endpoints must use HTTPS"));
        }
        return Ok(text);
    }
    Err(invalid(
        "it must start with https:// (or http:// in test mode)",
    ))
}

/// Why deliveries must not go to `host`: it is an address inside a network
/// (ours, or the cloud's metadata service at 169.254.169.254), reachable
/// from the dispatcher but not meant for merchants (server-side request
/// forgery). Test mode may use the loopback interface, where developers run
/// their receivers. Names that *resolve* to such addresses are the
/// dispatcher's to refuse at delivery time (DNS can change after saving).
fn refused_host(host: &str, livemode: bool) -> Option<&'static str> {
    use snakepay_http::net::{is_loopback_ip, is_public_ip};
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) if is_public_ip(ip) => false,
        Ok(ip) if is_loopback_ip(ip) => true,
        Ok(_) => return Some("it must not point at a private, link-local or reserved address"),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    (loopback && livemode).then_some("live mode endpoints must not point at the loopback interface")
}

/// `enabled_events[]`: known event types or `*`, at least one; duplicates
/// are dropped, the order kept. `None` if the parameter is absent.
fn enabled_events(params: &mut ParamReader) -> Result<Option<Vec<String>>, ApiError> {
    if !params.has("enabled_events") {
        return Ok(None);
    }
    let requested = params.string_list("enabled_events")?;
    if requested.is_empty() {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_empty",
            "enabled_events",
            "Invalid enabled_events: it must list at least one event type, or '*' for all.",
        ));
    }
    let mut events: Vec<String> = Vec::with_capacity(requested.len());
    for (index, name) in requested.into_iter().enumerate() {
        if name != ALL_EVENTS && EventType::parse(&name).is_none() {
            let param = format!("enabled_events[{index}]");
            return Err(ApiError::parameter_invalid(
                "parameter_invalid_enum",
                &param,
                format!(
                    "Invalid {param}: '{name}' is not an event type. Use one of {}, or '*'.",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            ));
        }
        if !events.contains(&name) {
            events.push(name);
        }
    }
    Ok(Some(events))
}

/// `description`: `Some(None)` when set to `""` (unset), `None` when absent.
fn description(params: &mut ParamReader) -> Result<Option<Option<String>>, ApiError> {
    if !params.has("description") {
        return Ok(None);
    }
    let description = params.string("description")?;
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX_CHARS)
    {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_string",
            "description",
            format!(
                "Invalid description: it must be at most {DESCRIPTION_MAX_CHARS} characters long."
            ),
        ));
    }
    Ok(Some(description))
}

fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::internal(&error.into())
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
    let url = endpoint_url(reader.required_string("url")?, auth.0.livemode)?;
    let enabled_events = enabled_events(&mut reader)?
        .ok_or_else(|| ApiError::parameter_missing("enabled_events"))?;
    let description = description(&mut reader)?.flatten();
    let metadata = reader
        .metadata("metadata")?
        .map(MetadataUpdate::into_new_metadata)
        .unwrap_or_default();
    common::expansions(&mut reader, &[])?;
    reader.finish()?;

    // Made before the transaction, so that a retried transaction seals and
    // inserts the very secret this response reveals.
    let record = WebhookEndpointRecord {
        id: WebhookEndpointId::generate(state.region, auth.0.shard()).map_err(internal)?,
        merchant_id: auth.0.merchant_id,
        livemode: auth.0.livemode,
        url,
        enabled_events,
        description,
        metadata,
        status: EndpointStatus::Enabled,
        created: now(),
    };
    let secret = SigningSecret::generate().map_err(internal)?;
    let (key_id, wrapped_key, ciphertext) = state
        .vault
        .seal(secret.expose().as_bytes(), record.id.to_string().as_bytes())
        .map_err(internal)?
        .into_parts();
    let sealed = SealedColumns {
        key_id,
        wrapped_key,
        ciphertext,
    };

    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    let response = idempotent::execute(&state, request, |mut tx| {
        let (record, sealed) = (&record, &sealed);
        async move {
            webhook_endpoints::insert(&mut tx, record, sealed).await?;
            Ok((tx, Reply::ok(&object(record))?))
        }
    })
    .await;
    reveal_secret(response, &record, &secret)
}

/// Adds the secret to the response of the request that created the
/// endpoint. Replays and errors pass through unchanged (see the module
/// docs for why replays do not carry it).
fn reveal_secret(
    response: Response,
    record: &WebhookEndpointRecord,
    secret: &SigningSecret,
) -> Result<Response, ApiError> {
    let replayed = response.headers().contains_key("idempotent-replayed");
    if response.status() != StatusCode::OK || replayed {
        return Ok(response);
    }
    let mut body = object(record);
    if let Some(fields) = body.as_object_mut() {
        fields.insert(
            "secret".to_owned(),
            Value::String(secret.expose().to_owned()),
        );
    }
    let (mut parts, _stored_body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let bytes = serde_json::to_vec(&body).map_err(internal)?;
    Ok(Response::from_parts(parts, axum::body::Body::from(bytes)))
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
    let endpoint = owned_id::<WebhookEndpointKind>(&state, &auth, &id, OBJECT, "id")?;
    let pool = state.shard(auth.0.shard())?;
    let record = webhook_endpoints::find(pool, endpoint, auth.0.merchant_id, auth.0.livemode)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::resource_missing(OBJECT, &id, "id"))?;
    Ok(axum::Json(object(&record)).into_response())
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    let mut reader = params.reader();
    let query = common::list_query(&mut reader)?;
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    common::check_cursors::<WebhookEndpointKind>(&state, &auth, &query, OBJECT)?;
    let pool = state.shard(auth.0.shard())?;
    let page = webhook_endpoints::list(pool, auth.0.merchant_id, auth.0.livemode, &query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let data = page.items.iter().map(object).collect();
    Ok(axum::Json(objects::list(LIST_URL, data, page.has_more)).into_response())
}

/// What an update changes; `None` leaves a field as it is.
struct UpdateInput {
    url: Option<String>,
    enabled_events: Option<Vec<String>>,
    description: Option<Option<String>>,
    metadata: Option<MetadataUpdate>,
    disabled: Option<bool>,
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
    let url = if reader.has("url") {
        Some(endpoint_url(
            reader.required_string("url")?,
            auth.0.livemode,
        )?)
    } else {
        None
    };
    let input = UpdateInput {
        url,
        enabled_events: enabled_events(&mut reader)?,
        description: description(&mut reader)?,
        metadata: reader.metadata("metadata")?,
        disabled: reader.bool("disabled")?,
    };
    common::expansions(&mut reader, &[])?;
    reader.finish()?;
    let endpoint = owned_id::<WebhookEndpointKind>(&state, &auth, &id, OBJECT, "id")?;
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: key.as_deref(),
        fingerprint,
    };
    Ok(idempotent::execute(&state, request, |mut tx| {
        let (auth, input, id) = (&auth, &input, &id);
        async move {
            let context = &auth.0;
            let mut record = webhook_endpoints::load_for_update(
                &mut tx,
                endpoint,
                context.merchant_id,
                context.livemode,
            )
            .await?
            .ok_or_else(|| ApiError::resource_missing(OBJECT, id, "id"))?;
            if let Some(url) = &input.url {
                record.url.clone_from(url);
            }
            if let Some(events) = &input.enabled_events {
                record.enabled_events.clone_from(events);
            }
            if let Some(description) = &input.description {
                record.description.clone_from(description);
            }
            if let Some(metadata) = &input.metadata {
                metadata.apply(&mut record.metadata, "metadata")?;
            }
            if let Some(disabled) = input.disabled {
                record.status = if disabled {
                    EndpointStatus::Disabled
                } else {
                    EndpointStatus::Enabled
                };
            }
            webhook_endpoints::update(&mut tx, &record).await?;
            Ok((tx, Reply::ok(&object(&record))?))
        }
    })
    .await)
}

async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    RequestIdExt(request_id): RequestIdExt,
    StripeParams(params): StripeParams,
) -> Result<Response, ApiError> {
    auth.require_secret()?;
    params.reader().finish()?;
    let endpoint = owned_id::<WebhookEndpointKind>(&state, &auth, &id, OBJECT, "id")?;
    // Idempotency keys are for POSTs only (API.md): a DELETE is idempotent
    // by nature, and a repeated one answers 404 as Stripe's does.
    let request = idempotent::Request {
        auth: &auth,
        request_id: &request_id,
        idempotency_key: None,
        fingerprint: String::new(),
    };
    Ok(idempotent::execute(&state, request, |mut tx| {
        let (auth, id) = (&auth, &id);
        async move {
            let context = &auth.0;
            let deleted = webhook_endpoints::soft_delete(
                &mut tx,
                endpoint,
                context.merchant_id,
                context.livemode,
                now(),
            )
            .await?;
            if !deleted {
                return Err(WorkError::Api(ApiError::resource_missing(OBJECT, id, "id")));
            }
            let reply = json!({ "id": endpoint.to_string(), "object": OBJECT, "deleted": true });
            Ok((tx, Reply::ok(&reply)?))
        }
    })
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_masked_in_debug() {
        let a = SigningSecret::generate().unwrap();
        let b = SigningSecret::generate().unwrap();
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(
            a.expose().len(),
            SECRET_PREFIX.len() + 2 * SECRET_RANDOM_BYTES
        );
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn urls_are_checked_for_scheme_host_length_and_mode() {
        assert!(endpoint_url("https://example.com/hook".into(), true).is_ok());
        assert!(endpoint_url("http://localhost:8080/hook".into(), false).is_ok());
        assert!(endpoint_url("http://example.com/hook".into(), true).is_err());
        assert!(endpoint_url("ftp://example.com/hook".into(), false).is_err());
        assert!(endpoint_url("not a url".into(), false).is_err());
        assert!(endpoint_url("/relative/path".into(), false).is_err());
        let long = format!("https://example.com/{}", "a".repeat(URL_MAX_CHARS));
        assert!(endpoint_url(long, false).is_err());
    }

    #[test]
    fn urls_into_private_networks_are_refused_and_loopback_only_in_test_mode() {
        for internal in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/hook",
            "https://192.168.1.1/hook",
            "https://172.16.0.1/hook",
            "https://100.64.0.1/hook",
            "https://0.0.0.0/hook",
            "https://[fd00::1]/hook",
            "https://[fe80::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
        ] {
            assert!(endpoint_url(internal.into(), false).is_err(), "{internal}");
            assert!(endpoint_url(internal.into(), true).is_err(), "{internal}");
        }
        for loopback in [
            "https://127.0.0.1:9000/hook",
            "https://localhost/hook",
            "https://[::1]/hook",
        ] {
            assert!(endpoint_url(loopback.into(), false).is_ok(), "{loopback}");
            assert!(endpoint_url(loopback.into(), true).is_err(), "{loopback}");
        }
        assert!(endpoint_url("https://93.184.216.34/hook".into(), true).is_ok());
    }
}
