//! Helpers every route uses: IDs from paths and parameters, list paging,
//! `expand[]`, and turning a transition's effects into rows.

use snakepay_domain::effects::Effects;
use snakepay_domain::ids::{Id, IdKind};
use snakepay_http::{ApiError, Param, ParamReader};
use snakepay_store::effects::EffectContext;
use snakepay_store::events::{EventRecord, EventSource};
use snakepay_store::idempotency::AnswerTo;
use snakepay_store::intents::ListQuery;

use crate::auth::Auth;
use crate::state::AppState;

/// The largest and default page sizes of lists (API.md).
pub const MAX_LIST_LIMIT: i64 = 100;
pub const DEFAULT_LIST_LIMIT: i64 = 10;

pub fn now() -> i64 {
    snakepay_store::unix_now()
}

/// Parses an ID of kind `K` that must belong to the caller: same region,
/// the merchant's shard. Anything else is "no such object" (or a pointer to
/// the object's home region) — never a hint that the ID exists elsewhere.
/// "No such <object>" for a value the client sent. The value is echoed only
/// when it could be an ID: a card number sent in the wrong field must not come
/// back in the error, nor be stored with the idempotent response.
pub fn missing(object: &str, text: &str, param: &str) -> ApiError {
    let looks_like_id = text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !has_digit_run(text, 10);
    if looks_like_id {
        ApiError::resource_missing(object, text, param)
    } else {
        let mut error = ApiError::resource_missing(object, "", param);
        error.message =
            format!("No such {object}; the value given for `{param}` is not a valid ID.");
        error
    }
}

fn has_digit_run(text: &str, length: usize) -> bool {
    let mut run = 0;
    for byte in text.bytes() {
        run = if byte.is_ascii_digit() { run + 1 } else { 0 };
        if run >= length {
            return true;
        }
    }
    false
}

pub fn owned_id<K: IdKind>(
    state: &AppState,
    auth: &Auth,
    text: &str,
    object: &str,
    param: &str,
) -> Result<Id<K>, ApiError> {
    let missing = || missing(object, text, param);
    let id = Id::<K>::parse(text).map_err(|_| missing())?;
    if id.region() != state.region {
        let mut error = missing();
        error.message = format!(
            "No such {object}: '{text}'; it belongs to {}",
            state.describe_region(id.region())
        );
        return Err(error);
    }
    if id.shard() != auth.0.shard() {
        return Err(missing());
    }
    Ok(id)
}

/// `limit`, `starting_after`, `ending_before`, `created` (exact or
/// `created[gt|gte|lt|lte]`).
pub fn list_query(params: &mut ParamReader) -> Result<ListQuery, ApiError> {
    let limit = params.i64("limit")?.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::parameter_invalid(
            "parameter_invalid_integer",
            "limit",
            format!("Invalid limit: must be between 1 and {MAX_LIST_LIMIT}"),
        ));
    }
    let mut query = ListQuery {
        limit,
        starting_after: params.string("starting_after")?,
        ending_before: params.string("ending_before")?,
        ..ListQuery::default()
    };
    match params.take("created") {
        None => {}
        Some(Param::Value(text)) if text.is_empty() => {}
        // An exact timestamp.
        Some(Param::Value(text)) => {
            let exact = parse_timestamp(&text, "created")?;
            query.created_gte = Some(exact);
            query.created_lte = Some(exact);
        }
        Some(Param::Map(range)) => {
            for (operator, value) in range {
                let path = format!("created[{operator}]");
                let Param::Value(text) = value else {
                    return Err(ApiError::parameter_invalid(
                        "parameter_invalid_integer",
                        &path,
                        format!("Invalid {path}: expected an integer"),
                    ));
                };
                let bound = Some(parse_timestamp(&text, &path)?);
                match operator.as_str() {
                    "gt" => query.created_gt = bound,
                    "gte" => query.created_gte = bound,
                    "lt" => query.created_lt = bound,
                    "lte" => query.created_lte = bound,
                    _ => return Err(ApiError::parameter_unknown(&path)),
                }
            }
        }
        Some(Param::List(_)) => {
            return Err(ApiError::parameter_invalid(
                "parameter_invalid_integer",
                "created",
                "Invalid created: expected an integer or a range",
            ));
        }
    }
    Ok(query)
}

/// Checks that a list's cursors are IDs of `K` the caller could own.
pub fn check_cursors<K: IdKind>(
    state: &AppState,
    auth: &Auth,
    query: &ListQuery,
    object: &str,
) -> Result<(), ApiError> {
    for (cursor, param) in [
        (&query.starting_after, "starting_after"),
        (&query.ending_before, "ending_before"),
    ] {
        if let Some(cursor) = cursor {
            owned_id::<K>(state, auth, cursor, object, param)?;
        }
    }
    Ok(())
}

fn parse_timestamp(text: &str, path: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::parameter_invalid(
            "parameter_invalid_integer",
            path,
            format!("Invalid {path}: expected an integer"),
        )
    })
}

/// `expand[]`: the allowed expansions of this object, or 400.
pub fn expansions(params: &mut ParamReader, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let requested = params.string_list("expand")?;
    for name in &requested {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid_request(
                Some("parameter_invalid_expand"),
                Some("expand"),
                format!("This property cannot be expanded ({name})."),
            ));
        }
    }
    Ok(requested)
}

/// One event per event type in `effects`, each with `snapshot` as its object.
pub fn events(
    auth: &Auth,
    effects: &Effects,
    snapshot: &serde_json::Value,
    request_id: &str,
) -> anyhow::Result<Vec<EventRecord>> {
    let source = EventSource {
        merchant_id: auth.0.merchant_id,
        livemode: auth.0.livemode,
        api_version: snakepay_http::API_VERSION,
        request_id: Some(request_id),
        created: now(),
    };
    snakepay_store::events::for_types(source, &effects.events, snapshot)
}

/// Who caused a change made through the API, the reply queue to wake, and
/// the request there that the outcome may answer (`outcome::Expectation`).
pub fn effect_context<'a>(
    auth: &Auth,
    request_id: &'a str,
    reply_to: Option<&'a str>,
    answer_to: Option<&'a AnswerTo>,
    description: &'a str,
) -> EffectContext<'a> {
    EffectContext {
        source: EventSource {
            merchant_id: auth.0.merchant_id,
            livemode: auth.0.livemode,
            api_version: snakepay_http::API_VERSION,
            request_id: Some(request_id),
            created: now(),
        },
        reply_to,
        answer_to,
        description,
    }
}

/// An object as the read caches keep it: its owner, checked on every hit
/// (an ID guessed across merchants must miss), and its JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedObject {
    merchant_id: snakepay_domain::ids::MerchantId,
    livemode: bool,
    object: serde_json::Value,
}

/// The cached JSON of an object, if the entry belongs to the caller.
pub fn cached_object(bytes: &[u8], auth: &Auth) -> Option<serde_json::Value> {
    let cached: CachedObject = serde_json::from_slice(bytes).ok()?;
    (cached.merchant_id == auth.0.merchant_id && cached.livemode == auth.0.livemode)
        .then_some(cached.object)
}

/// The cache entry of an object just loaded for the caller (loads filter
/// by the caller's merchant and mode, so the caller is the owner).
pub fn cache_entry(auth: &Auth, object: &serde_json::Value) -> Option<Vec<u8>> {
    serde_json::to_vec(&CachedObject {
        merchant_id: auth.0.merchant_id,
        livemode: auth.0.livemode,
        object: object.clone(),
    })
    .ok()
}
