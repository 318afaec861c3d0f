//! The audit trail against the real control database: appends chain, the
//! table refuses changes, and tampering (by someone able to lift that
//! refusal) is found by `verify_chain`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;
use snakepay_store::audit::{self, Actor, AuditQuery, ChainBreak, NewEntry};
use snakepay_store::testing;
use sqlx::PgPool;

fn alice() -> Actor {
    Actor {
        subject: "alice".into(),
        role: "operator".into(),
    }
}

async fn append_n(pool: &PgPool, n: usize) {
    for i in 0..n {
        audit::append(
            pool,
            &NewEntry {
                actor: &alice(),
                action: "GET /v1/merchants/{id}",
                resource: Some(&format!("acct_{i}")),
                outcome: "allowed",
                origin: Some("127.0.0.1"),
                details: &json!({ "status": 200, "i": i }),
            },
        )
        .await
        .unwrap();
    }
}

/// Runs `sql` as the attacker would: with the append-only triggers lifted.
async fn tamper(pool: &PgPool, sql: &str) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("alter table audit_log disable trigger audit_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    sqlx::query("alter table audit_log enable trigger audit_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn concurrent_appends_form_one_linear_chain_that_verifies() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control().clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { append_n(&pool, 10).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let verification = audit::verify_chain(&pool).await.unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.verified_rows, 80);

    let (page, has_more) = audit::query(
        &pool,
        &AuditQuery {
            resource: Some("acct_3".into()),
            limit: 5,
            ..AuditQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page.len(), 5);
    assert!(has_more);
    assert!(page.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(page[0].details_json()["status"], 200);
}

#[tokio::test]
async fn the_table_refuses_updates_and_deletes() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control();
    append_n(pool, 1).await;
    for sql in [
        "update audit_log set outcome = 'denied'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let error = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
}

#[tokio::test]
async fn an_altered_row_is_reported_as_the_first_break() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control();
    append_n(pool, 10).await;
    tamper(pool, "update audit_log set outcome = 'denied' where id = 4").await;
    let verification = audit::verify_chain(pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Altered { id: 4 })
    );
    assert_eq!(verification.verified_rows, 3);
}

#[tokio::test]
async fn a_row_altered_together_with_its_hash_breaks_the_next_link() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control();
    append_n(pool, 5).await;
    // The attacker recomputes row 2's own hash, but row 3 still points at
    // the old one.
    tamper(
        pool,
        "update audit_log set actor_subject = 'mallory', hash = sha256(hash) where id = 2",
    )
    .await;
    let verification = audit::verify_chain(pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Altered { id: 2 })
    );
}

#[tokio::test]
async fn a_deleted_row_is_reported_missing_in_the_middle_and_at_the_end() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control();
    append_n(pool, 6).await;
    tamper(pool, "delete from audit_log where id = 6").await;
    let verification = audit::verify_chain(pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Missing {
            expected_id: 6,
            found_id: None
        })
    );
    tamper(pool, "delete from audit_log where id = 3").await;
    let verification = audit::verify_chain(pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Missing {
            expected_id: 3,
            found_id: Some(4)
        })
    );
    assert_eq!(verification.verified_rows, 2);
}
