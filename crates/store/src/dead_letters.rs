//! Dead letters parked in the control database (migration
//! `0007_dead_letters.sql`): the Internal API moves messages from the
//! broker's dead-letter queues here, and operators replay or discard them.

use serde::Serialize;
use sqlx::PgPool;

use crate::unix_now_ms;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: String,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
    pub reason: Option<String>,
    pub collected_at_ms: i64,
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, queue, message_id, message_type, body, headers, reason, collected_at_ms, status, decided_by, decided_at_ms";

#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub queue: &'a str,
    pub message_id: Option<&'a str>,
    pub message_type: Option<&'a str>,
    pub body: &'a [u8],
    pub headers: &'a serde_json::Value,
    pub reason: Option<&'a str>,
}

/// Parks a message; a message already parked and still pending is not
/// parked twice. Returns whether a row was added.
pub async fn park(control: &PgPool, new: &NewDeadLetter<'_>) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "insert into dead_letters (queue, message_id, message_type, body, headers, reason, collected_at_ms)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (queue, message_id) where status = 'pending' and message_id is not null do nothing",
    )
    .bind(new.queue)
    .bind(new.message_id)
    .bind(new.message_type)
    .bind(new.body)
    .bind(new.headers)
    .bind(new.reason)
    .bind(unix_now_ms())
    .execute(control)
    .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find(control: &PgPool, id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from dead_letters where id = $1"))
        .bind(id)
        .fetch_optional(control)
        .await
}

/// Newest first; `before_id` is the cursor.
pub async fn list(
    control: &PgPool,
    status: Option<&str>,
    queue: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<(Vec<DeadLetter>, bool), sqlx::Error> {
    let mut rows: Vec<DeadLetter> = sqlx::query_as(&format!(
        "select {COLUMNS} from dead_letters
         where ($1::text is null or status = $1) and ($2::text is null or queue = $2)
           and ($3::bigint is null or id < $3)
         order by id desc limit $4"
    ))
    .bind(status)
    .bind(queue)
    .bind(before_id)
    .bind(limit + 1)
    .fetch_all(control)
    .await?;
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_more))
}

/// Marks a pending dead letter `replayed` or `discarded`; `None` when it
/// was not pending (someone else decided first).
pub async fn decide(
    control: &PgPool,
    id: i64,
    status: &str,
    by: &str,
) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update dead_letters set status = $2, decided_by = $3, decided_at_ms = $4
         where id = $1 and status = 'pending' returning {COLUMNS}"
    ))
    .bind(id)
    .bind(status)
    .bind(by)
    .bind(unix_now_ms())
    .fetch_optional(control)
    .await
}

/// Undoes a claim whose replay failed, so the message can be tried again.
pub async fn reopen(control: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update dead_letters set status = 'pending', decided_by = null, decided_at_ms = null
         where id = $1 and status = 'replayed'",
    )
    .bind(id)
    .execute(control)
    .await?;
    Ok(())
}
