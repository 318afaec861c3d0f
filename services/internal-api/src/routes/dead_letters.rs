//! `/v1/dead_letters`: messages that kept failing, parked for operators:
//! list (collecting what waits in the dead-letter queues first), inspect
//! (card data masked), replay into the queue they died in, or discard.
//! Operators with a multi-factor login only.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use snakepay_http::ApiError;
use snakepay_store::dead_letters::{self, DeadLetter};

use crate::auth::{Authed, Permission, noted};
use crate::dead_letters::{DeadLetters, mask, mask_text};
use crate::openapi::ApiRoutes;
use crate::routes::{Params, page_limit};
use crate::state::AppState;

pub fn routes(api: ApiRoutes) -> ApiRoutes {
    api.get(
        "/v1/dead_letters",
        list,
        Permission::DeadLetters,
        "Collect waiting dead letters from the broker, then list them, newest first",
        &["status", "queue", "before_id", "limit"],
    )
    .get(
        "/v1/dead_letters/{id}",
        inspect,
        Permission::DeadLetters,
        "A dead letter with its message and headers (card data masked)",
        &[],
    )
    .post(
        "/v1/dead_letters/{id}/replay",
        replay,
        Permission::DeadLetters,
        "Publish the message again to the queue it died in (after fixing the cause)",
        &[],
    )
    .post(
        "/v1/dead_letters/{id}/discard",
        discard,
        Permission::DeadLetters,
        "Mark the message discarded; it is kept for the record, never delivered",
        &[],
    )
}

fn broker(state: &AppState) -> Result<&DeadLetters, ApiError> {
    state.dead_letters.as_ref().ok_or_else(|| {
        ApiError::unavailable("No [broker] is configured: dead-letter queues cannot be reached.")
            .with_should_retry(false)
    })
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::resource_missing("dead_letter", id, "id"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    queue: Option<String>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let broker = broker(&state)?;
    let collected = broker.collect(state.store.control()).await.map_err(|e| {
        tracing::warn!(error.chain = %format!("{e:#}"), "collecting dead letters failed");
        ApiError::unavailable("The broker cannot be reached to collect dead letters.")
    })?;
    let (rows, has_more) = dead_letters::list(
        state.store.control(),
        params.status.as_deref(),
        params.queue.as_deref(),
        params.before_id,
        page_limit(params.limit)?,
    )
    .await
    .map_err(|e| ApiError::internal(&e.into()))?;
    Ok(noted(
        Json(json!({
            "object": "list",
            "data": rows,
            "has_more": has_more,
            "collected": collected,
            "queues": broker.queues(),
        })),
        json!({ "collected": collected }),
    ))
}

fn shown(row: &DeadLetter) -> serde_json::Value {
    let message = serde_json::from_slice::<serde_json::Value>(&row.body)
        .map(|value| mask(&value))
        .unwrap_or_else(|_| {
            serde_json::Value::from(mask_text(&String::from_utf8_lossy(&row.body)))
        });
    let mut shown = json!(row);
    if let Some(fields) = shown.as_object_mut() {
        fields.insert("message".to_owned(), message);
        fields.insert("headers".to_owned(), mask(&row.headers));
    }
    shown
}

async fn inspect(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = dead_letters::find(state.store.control(), parse_id(&id)?)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
        .ok_or_else(|| ApiError::resource_missing("dead_letter", &id, "id"))?;
    Ok(Json(shown(&row)).into_response())
}

fn not_pending(id: &str) -> ApiError {
    ApiError::invalid_request(
        Some("dead_letter_unexpected_state"),
        None,
        format!("Dead letter {id} is not pending: it was replayed or discarded already."),
    )
}

async fn replay(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let broker = broker(&state)?;
    let number = parse_id(&id)?;
    let control = state.store.control();
    // Claimed first: of two operators replaying at once, one publishes.
    let row = dead_letters::decide(control, number, "replayed", &authed.0.subject)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?;
    let Some(row) = row else {
        return match dead_letters::find(control, number)
            .await
            .map_err(|e| ApiError::internal(&e.into()))?
        {
            Some(_) => Err(not_pending(&id)),
            None => Err(ApiError::resource_missing("dead_letter", &id, "id")),
        };
    };
    if let Err(error) = broker.replay(&row.queue, &row.body).await {
        dead_letters::reopen(control, number)
            .await
            .map_err(|e| ApiError::internal(&e.into()))?;
        tracing::warn!(error.chain = %format!("{error:#}"), dead_letter.id = number, "replay failed");
        return Err(ApiError::unavailable(format!(
            "The message was not replayed: {error:#}"
        )));
    }
    Ok(noted(
        Json(shown(&row)),
        json!({ "queue": row.queue, "message_id": row.message_id, "decision": "replayed" }),
    ))
}

async fn discard(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let number = parse_id(&id)?;
    let control = state.store.control();
    match dead_letters::decide(control, number, "discarded", &authed.0.subject)
        .await
        .map_err(|e| ApiError::internal(&e.into()))?
    {
        Some(row) => Ok(noted(
            Json(shown(&row)),
            json!({ "queue": row.queue, "message_id": row.message_id, "decision": "discarded" }),
        )),
        None => match dead_letters::find(control, number)
            .await
            .map_err(|e| ApiError::internal(&e.into()))?
        {
            Some(_) => Err(not_pending(&id)),
            None => Err(ApiError::resource_missing("dead_letter", &id, "id")),
        },
    }
}
