//! The audit trail: an append-only, hash-chained log in the control database
//! (DESIGN.md §7; control migration `0004_audit_log.sql`).
//!
//! Every row carries `hash = SHA-256(prev_hash ‖ canonical(row))`, where the
//! canonical encoding is each field length-prefixed in a fixed order, so no
//! two different rows encode alike. Appends take the chain head's row lock,
//! so the chain is linear and IDs are gapless; [`verify_chain`] recomputes
//! every hash and reports the first row that was altered, deleted or
//! inserted out of turn. The database refuses UPDATE, DELETE and TRUNCATE
//! on the table for every role; the chain catches what a superuser could
//! still do.
//!
//! Any service (and the admin CLI) appends through [`append`]; frequent
//! events (card access, failed authentications) go through a [`Recorder`],
//! which buffers them in memory and appends them in batches ([`recorder`]).

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

use crate::unix_now_ms;

pub mod recorder;

pub use recorder::{Event, Recorder};

/// The hash the first row chains to.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Rows [`verify_chain`] reads per round trip.
const VERIFY_BATCH: i64 = 1_000;

/// The most rows one [`query`] returns.
pub const MAX_QUERY_LIMIT: i64 = 500;

/// Who did it: the staff token's subject and role, or `anonymous` for a
/// request that presented no valid token, or a system component's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

/// A row to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: &'a Actor,
    /// What was attempted, e.g. `GET /v1/merchants/{id}` or `refund.approve`.
    pub action: &'a str,
    /// What it was attempted on, e.g. `acct_…` or the request path.
    pub resource: Option<&'a str>,
    /// `allowed`, `denied`, `unauthenticated`, `failed`, or a status.
    pub outcome: &'a str,
    /// The client's address.
    pub origin: Option<&'a str>,
    pub details: &'a serde_json::Value,
}

/// A row as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: i64,
    pub at_ms: i64,
    pub actor_subject: String,
    pub actor_role: String,
    pub action: String,
    pub resource: Option<String>,
    pub outcome: String,
    pub origin: Option<String>,
    /// Canonical JSON text, exactly as hashed.
    pub details: String,
    #[serde(serialize_with = "as_hex")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "as_hex")]
    pub hash: Vec<u8>,
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

impl Entry {
    /// The hash this row must have, given its predecessor's.
    pub fn expected_hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        let (id, at_ms) = (self.id.to_string(), self.at_ms.to_string());
        let fields: [&[u8]; 9] = [
            id.as_bytes(),
            at_ms.as_bytes(),
            self.actor_subject.as_bytes(),
            self.actor_role.as_bytes(),
            self.action.as_bytes(),
            // An absent field and an empty one must not encode alike.
            self.resource
                .as_deref()
                .map_or(b"\x00absent", str::as_bytes),
            self.outcome.as_bytes(),
            self.origin.as_deref().map_or(b"\x00absent", str::as_bytes),
            self.details.as_bytes(),
        ];
        for field in fields {
            hasher.update(u64::try_from(field.len()).unwrap_or(u64::MAX).to_be_bytes());
            hasher.update(field);
        }
        hasher.finalize().into()
    }

    /// `details` parsed back into JSON.
    pub fn details_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.details).unwrap_or(serde_json::Value::Null)
    }
}

/// Appends one row, chained to the current head. Linear under concurrency:
/// the head row is locked until the append commits.
pub async fn append(pool: &PgPool, new: &NewEntry<'_>) -> anyhow::Result<Entry> {
    append_all(pool, std::slice::from_ref(new))
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("an append of one row returned none"))
}

/// Appends rows in order in one transaction: one head lock and one
/// statement for the whole batch, which is what lets frequent events (card
/// access, authentication failures) be audited without serializing every
/// payment on the head row (see [`Recorder`]).
pub async fn append_all(pool: &PgPool, batch: &[NewEntry<'_>]) -> anyhow::Result<Vec<Entry>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await?;
    let (last_id, last_hash): (i64, Vec<u8>) =
        sqlx::query_as("select last_id, last_hash from audit_chain_head for update")
            .fetch_one(&mut *tx)
            .await?;
    let at_ms = unix_now_ms();
    let mut entries = Vec::with_capacity(batch.len());
    let mut prev_hash = last_hash;
    for (offset, new) in (1_i64..).zip(batch) {
        let mut entry = Entry {
            id: last_id + offset,
            at_ms,
            actor_subject: new.actor.subject.clone(),
            actor_role: new.actor.role.clone(),
            action: new.action.to_owned(),
            resource: new.resource.map(str::to_owned),
            outcome: new.outcome.to_owned(),
            origin: new.origin.map(str::to_owned),
            details: serde_json::to_string(new.details)?,
            prev_hash,
            hash: Vec::new(),
        };
        entry.hash = entry.expected_hash(&entry.prev_hash).to_vec();
        prev_hash = entry.hash.clone();
        entries.push(entry);
    }
    let column = |f: fn(&Entry) -> Option<String>| entries.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    let prev_hashes: Vec<Vec<u8>> = entries.iter().map(|e| e.prev_hash.clone()).collect();
    let hashes: Vec<Vec<u8>> = entries.iter().map(|e| e.hash.clone()).collect();
    let (head_id, head_hash) = (ids.last().copied(), hashes.last().cloned());
    // One round trip for the rows and the new head.
    sqlx::query(
        "with rows as (
             insert into audit_log (id, at_ms, actor_subject, actor_role, action, resource,
                 outcome, origin, details, prev_hash, hash)
             select id, $2, subject, role, action, resource, outcome, origin, details, prev, hash
             from unnest($1::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::bytea[], $11::bytea[])
                  as t(id, subject, role, action, resource, outcome, origin, details, prev, hash)
         )
         update audit_chain_head set last_id = $12, last_hash = $13",
    )
    .bind(&ids)
    .bind(at_ms)
    .bind(column(|e| Some(e.actor_subject.clone())))
    .bind(column(|e| Some(e.actor_role.clone())))
    .bind(column(|e| Some(e.action.clone())))
    .bind(column(|e| e.resource.clone()))
    .bind(column(|e| Some(e.outcome.clone())))
    .bind(column(|e| e.origin.clone()))
    .bind(column(|e| Some(e.details.clone())))
    .bind(&prev_hashes)
    .bind(&hashes)
    .bind(head_id)
    .bind(head_hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(entries)
}

/// The host this process runs on, as the origin of a service's own audit
/// events (staff requests carry the client's address instead).
pub fn this_host() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| {
            name.trim()
                .chars()
                .take(MAX_ORIGIN_CHARS)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
}

/// `audit_log.origin`'s limit.
const MAX_ORIGIN_CHARS: usize = 100;

/// Filters for [`query`]; every one is optional. Newest first; `before_id`
/// is the cursor (the last ID of the previous page).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_subject: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

const COLUMNS: &str = "id, at_ms, actor_subject, actor_role, action, resource, outcome, origin, details, prev_hash, hash";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: row.try_get("id")?,
        at_ms: row.try_get("at_ms")?,
        actor_subject: row.try_get("actor_subject")?,
        actor_role: row.try_get("actor_role")?,
        action: row.try_get("action")?,
        resource: row.try_get("resource")?,
        outcome: row.try_get("outcome")?,
        origin: row.try_get("origin")?,
        details: row.try_get("details")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// A page of the trail, newest first, and whether older rows match too.
pub async fn query(pool: &PgPool, filter: &AuditQuery) -> anyhow::Result<(Vec<Entry>, bool)> {
    let limit = filter.limit.clamp(1, MAX_QUERY_LIMIT);
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from audit_log
         where ($1::text is null or actor_subject = $1)
           and ($2::text is null or action = $2)
           and ($3::text is null or resource = $3)
           and ($4::text is null or outcome = $4)
           and ($5::bigint is null or at_ms >= $5)
           and ($6::bigint is null or at_ms < $6)
           and ($7::bigint is null or id < $7)
         order by id desc limit $8"
    ))
    .bind(&filter.actor_subject)
    .bind(&filter.action)
    .bind(&filter.resource)
    .bind(&filter.outcome)
    .bind(filter.from_ms)
    .bind(filter.to_ms)
    .bind(filter.before_id)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let mut entries = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let has_more = entries.len() > usize::try_from(limit).unwrap_or(0);
    entries.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((entries, has_more))
}

/// Where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainBreak {
    /// The row's content no longer matches its hash, or its `prev_hash`
    /// is not its predecessor's hash.
    Altered { id: i64 },
    /// Rows are missing: `expected_id` was next but `found_id` came (or
    /// nothing did, for rows deleted from the end).
    Missing {
        expected_id: i64,
        found_id: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Rows that checked out before the first break (all of them if none).
    pub verified_rows: i64,
    pub first_break: Option<ChainBreak>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Recomputes the whole chain from the first row, in batches, and checks it
/// ends where the head says. Reads without locking: appends that commit
/// meanwhile are simply beyond the head it read first.
pub async fn verify_chain(pool: &PgPool) -> anyhow::Result<Verification> {
    let (head_id, head_hash): (i64, Vec<u8>) =
        sqlx::query_as("select last_id, last_hash from audit_chain_head")
            .fetch_one(pool)
            .await?;
    let mut expected_id = 1_i64;
    let mut prev_hash = GENESIS_HASH.to_vec();
    let mut verified = 0_i64;
    loop {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from audit_log where id >= $1 and id <= $2 order by id limit $3"
        ))
        .bind(expected_id)
        .bind(head_id)
        .bind(VERIFY_BATCH)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let entry = from_row(row)?;
            if entry.id != expected_id {
                return Ok(Verification {
                    verified_rows: verified,
                    first_break: Some(ChainBreak::Missing {
                        expected_id,
                        found_id: Some(entry.id),
                    }),
                });
            }
            if entry.prev_hash != prev_hash
                || entry.hash.as_slice() != entry.expected_hash(&prev_hash).as_slice()
            {
                return Ok(Verification {
                    verified_rows: verified,
                    first_break: Some(ChainBreak::Altered { id: entry.id }),
                });
            }
            prev_hash = entry.hash;
            expected_id += 1;
            verified += 1;
        }
    }
    let first_break = if expected_id <= head_id {
        Some(ChainBreak::Missing {
            expected_id,
            found_id: None,
        })
    } else if prev_hash != head_hash {
        // The last row was altered together with its hash, or replaced.
        Some(ChainBreak::Altered { id: head_id })
    } else {
        None
    };
    Ok(Verification {
        verified_rows: verified,
        first_break,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            id: 1,
            at_ms: 2,
            actor_subject: "alice".into(),
            actor_role: "operator".into(),
            action: "a".into(),
            resource: None,
            outcome: "allowed".into(),
            origin: Some("127.0.0.1".into()),
            details: "{}".into(),
            prev_hash: GENESIS_HASH.to_vec(),
            hash: Vec::new(),
        }
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = entry();
        let hash = base.expected_hash(&GENESIS_HASH);
        let mut empty_resource = base.clone();
        empty_resource.resource = Some(String::new());
        let mut shifted = base.clone();
        // Moving a byte between adjacent fields must change the encoding.
        shifted.actor_subject = "alic".into();
        shifted.actor_role = "eoperator".into();
        for other in [empty_resource, shifted] {
            assert_ne!(other.expected_hash(&GENESIS_HASH), hash);
        }
        assert_ne!(base.expected_hash(&[1; 32]), hash);
    }
}
