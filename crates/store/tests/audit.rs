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

fn card_event(i: usize) -> audit::Event {
    audit::Event {
        actor: Actor {
            subject: "snakepay_integration".into(),
            role: "service".into(),
        },
        action: "card.open".into(),
        resource: Some(format!("pm_{i}")),
        outcome: "allowed".into(),
        origin: Some("integration-1".into()),
        details: json!({ "i": i }),
    }
}

/// Frequent events go through the buffer: written in batches (one head
/// lock each), in order, into the same chain as single appends, and the
/// chain of batched rows detects tampering like any other.
#[tokio::test]
async fn buffered_events_join_the_same_chain_in_order_and_tampering_with_them_is_found() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control().clone();
    let recorder = audit::Recorder::start(pool.clone());
    append_n(&pool, 2).await;
    // More than one batch's worth, so the writer splits it.
    let events = audit::recorder::MAX_BATCH_ROWS + 7;
    for i in 0..events {
        recorder.record(card_event(i));
    }
    recorder.flush().await.unwrap();
    append_n(&pool, 1).await;
    let total = i64::try_from(events).unwrap() + 3;

    let verification = audit::verify_chain(&pool).await.unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.verified_rows, total);
    let resources: Vec<String> =
        sqlx::query_scalar("select resource from audit_log where action = 'card.open' order by id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<String> = (0..events).map(|i| format!("pm_{i}")).collect();
    assert_eq!(
        resources, expected,
        "every event, once, in the order recorded"
    );

    tamper(&pool, "delete from audit_log where id = 500").await;
    let verification = audit::verify_chain(&pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Missing {
            expected_id: 500,
            found_id: Some(501)
        })
    );
    tamper(
        &pool,
        "update audit_log set outcome = 'failed' where id = 300",
    )
    .await;
    let verification = audit::verify_chain(&pool).await.unwrap();
    assert_eq!(
        verification.first_break,
        Some(ChainBreak::Altered { id: 300 })
    );
}

/// Two services' buffers and the back office's single appends racing: one
/// linear chain, nothing lost.
#[tokio::test]
async fn concurrent_recorders_and_single_appends_form_one_chain() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.control().clone();
    let recorders = [
        audit::Recorder::start(pool.clone()),
        audit::Recorder::start(pool.clone()),
    ];
    let appender = {
        let pool = pool.clone();
        tokio::spawn(async move { append_n(&pool, 20).await })
    };
    for round in 0..20 {
        for (n, recorder) in recorders.iter().enumerate() {
            for i in 0..10 {
                recorder.record(card_event(round * 100 + n * 10 + i));
            }
        }
        tokio::task::yield_now().await;
    }
    appender.await.unwrap();
    for recorder in &recorders {
        recorder.flush().await.unwrap();
    }
    let verification = audit::verify_chain(&pool).await.unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.verified_rows, 20 + 2 * 20 * 10);
}

/// An event that cannot be written yet (the control database refuses) is
/// kept and written by a later flush, once the database accepts again.
#[tokio::test]
async fn events_survive_a_failed_write_and_are_written_on_the_next_flush() {
    use std::str::FromStr;
    let db = testing::fresh(1).await.unwrap();
    let owner = db.store.control().clone();
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.control_url())
        .unwrap()
        .username(snakepay_store::roles::INTEGRATION);
    let service = PgPool::connect_with(options).await.unwrap();
    let recorder = audit::Recorder::start(service.clone());

    sqlx::query("revoke insert on audit_log from snakepay_integration")
        .execute(&owner)
        .await
        .unwrap();
    recorder.record(card_event(1));
    recorder.record(card_event(2));
    let refused = recorder.flush().await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("permission denied"),
        "{refused:#}"
    );

    sqlx::query("grant insert on audit_log to snakepay_integration")
        .execute(&owner)
        .await
        .unwrap();
    recorder.record(card_event(3));
    recorder.flush().await.unwrap();
    let resources: Vec<String> = sqlx::query_scalar("select resource from audit_log order by id")
        .fetch_all(&owner)
        .await
        .unwrap();
    assert_eq!(resources, ["pm_1", "pm_2", "pm_3"]);
    assert!(audit::verify_chain(&owner).await.unwrap().intact());
}
