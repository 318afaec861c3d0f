//! Least privilege in the database (PCI DSS 7.2), against the real server:
//! each service's role is refused what it must not do with PostgreSQL's
//! `insufficient_privilege` (42501) and allowed what its code needs; nobody,
//! the owner included, may change ledger or audit rows.
//!
//! The full payment flow on these roles is proved by the services' own test
//! suites, which start every service on its default `database_user`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::str::FromStr;

use serde_json::json;
use snakepay_store::audit::{self, Actor, NewEntry};
use snakepay_store::roles::{self, EXTERNAL_API, INTEGRATION, INTERNAL_API};
use snakepay_store::testing::{self, TestDatabases};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

const INSUFFICIENT_PRIVILEGE: &str = "42501";

#[derive(Debug, Clone, Copy)]
enum Db {
    Control,
    Shard,
}

async fn connect_as(db: &TestDatabases, which: Db, role: &str) -> PgConnection {
    let url = match which {
        Db::Control => db.control_url(),
        Db::Shard => db.shard_urls()[0].clone(),
    };
    let options = PgConnectOptions::from_str(&url).unwrap().username(role);
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("{role} cannot log in: {e}"))
}

/// Runs `sql` as `role` and returns the SQLSTATE it failed with, or `None`
/// if it succeeded. Each statement runs in a transaction that is rolled
/// back, so allowed writes leave nothing behind.
async fn outcome(db: &TestDatabases, which: Db, role: &str, sql: &str) -> Option<String> {
    let mut connection = connect_as(db, which, role).await;
    let mut tx = connection.begin().await.unwrap();
    let result = sqlx::query(sql).execute(&mut *tx).await;
    tx.rollback().await.ok();
    connection.close().await.ok();
    match result {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => Some(error.code().unwrap_or_default().into_owned()),
        Err(other) => panic!("{role}: {sql}: {other}"),
    }
}

async fn assert_refused(db: &TestDatabases, which: Db, role: &str, sql: &str) {
    assert_eq!(
        outcome(db, which, role, sql).await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE),
        "{role} on {which:?} must be refused: {sql}"
    );
}

async fn assert_allowed(db: &TestDatabases, which: Db, role: &str, sql: &str) {
    assert_eq!(
        outcome(db, which, role, sql).await,
        None,
        "{role} on {which:?} must be allowed: {sql}"
    );
}

/// What no service may do in any database: change the schema, or change
/// the immutable rows.
#[tokio::test]
async fn no_service_role_may_change_the_schema_or_the_ledger_or_the_audit_trail() {
    let db = testing::fresh(1).await.unwrap();
    for role in roles::ALL {
        for (which, sql) in [
            (Db::Shard, "create table intruder (a int)"),
            (
                Db::Shard,
                "alter table payment_intents add column intruder int",
            ),
            (Db::Shard, "drop table outbox"),
            (
                Db::Shard,
                "create index intruder on payment_intents (amount)",
            ),
            (Db::Shard, "drop trigger journals_immutable on journals"),
            (Db::Shard, "update journals set description = 'x'"),
            (Db::Shard, "update journal_lines set amount = 1"),
            (Db::Shard, "delete from journals"),
            (Db::Shard, "delete from journal_lines"),
            (Db::Shard, "truncate journal_lines"),
            (Db::Control, "create table intruder (a int)"),
            (Db::Control, "alter table merchants add column intruder int"),
            (
                Db::Control,
                "drop trigger audit_log_append_only on audit_log",
            ),
            (Db::Control, "update audit_log set outcome = 'allowed'"),
            (Db::Control, "delete from audit_log"),
            (Db::Control, "truncate audit_log"),
            (Db::Control, "delete from audit_chain_head"),
            (Db::Control, "select * from _sqlx_migrations"),
        ] {
            assert_refused(&db, which, role, sql).await;
        }
    }
}

#[tokio::test]
async fn the_external_api_cannot_read_sealed_card_data_or_signing_secrets() {
    let db = testing::fresh(1).await.unwrap();
    let role = EXTERNAL_API;
    for sql in [
        "select pan_wrapped_key from payment_methods",
        "select pan_ciphertext from payment_methods",
        "select cvc_wrapped_key from payment_methods",
        "select cvc_ciphertext from payment_methods",
        "select pan_key_id from payment_methods",
        "select * from payment_methods",
        "select to_jsonb(pm) from payment_methods pm",
        "update payment_methods set pan_ciphertext = null",
        "delete from payment_methods",
        "select secret_wrapped from webhook_endpoints",
        "select secret_ciphertext from webhook_endpoints",
        "select * from webhook_endpoints",
        "update webhook_endpoints set secret_ciphertext = null",
        // Nor the pipeline's own records.
        "select * from webhook_deliveries",
        "select * from request_log",
    ] {
        assert_refused(&db, Db::Shard, role, sql).await;
    }
    for sql in [
        "update api_keys set revoked_at = null",
        "insert into api_keys (id, merchant_id, kind, livemode, key_hash, last4, created)
             values ('key_x', 'acct_x', 'secret', false, '\\x00', '0000', 0)",
        "update merchants set kyc_status = 'verified'",
        // It appends to the audit trail but cannot read it back.
        "select * from audit_log",
        "select * from kyc_reviews",
        "select * from dead_letters",
    ] {
        assert_refused(&db, Db::Control, role, sql).await;
    }
    // What it does need.
    for sql in [
        "select id, merchant_id, brand, first6, last4, exp_month, exp_year, fingerprint, customer_id
             from payment_methods",
        "insert into payment_methods (id, merchant_id, livemode, brand, first6, last4, exp_month,
             exp_year, fingerprint, pan_key_id, pan_wrapped_key, pan_ciphertext, created)
             values ('pm_x', 'acct_x', false, 'visa', '424242', '4242', 12, 2030, 'f', 'k', '\\x00', '\\x00', 0)",
        "select id, url, enabled_events, status from webhook_endpoints",
        "select * from payment_intents",
        "delete from idempotency_keys",
        "insert into outbox (routing_key, payload) values ('x', '{}')",
    ] {
        assert_allowed(&db, Db::Shard, role, sql).await;
    }
    assert_allowed(
        &db,
        Db::Control,
        role,
        "select key_hash, merchant_id from api_keys",
    )
    .await;
}

#[tokio::test]
async fn the_back_office_reads_clear_columns_only_and_the_pipeline_never_sees_key_hashes() {
    let db = testing::fresh(1).await.unwrap();
    for sql in [
        "select pan_ciphertext from payment_methods",
        "select cvc_wrapped_key from payment_methods",
        "select secret_ciphertext from webhook_endpoints",
        "insert into payment_methods (id, merchant_id, livemode, brand, first6, last4, exp_month,
             exp_year, fingerprint, pan_key_id, pan_wrapped_key, pan_ciphertext, created)
             values ('pm_x', 'acct_x', false, 'visa', '424242', '4242', 12, 2030, 'f', 'k', '\\x00', '\\x00', 0)",
        "delete from idempotency_keys",
        "delete from outbox",
    ] {
        assert_refused(&db, Db::Shard, INTERNAL_API, sql).await;
    }
    for sql in [
        "select id, brand, last4 from payment_methods",
        "select * from payment_intents",
        "select * from webhook_deliveries",
    ] {
        assert_allowed(&db, Db::Shard, INTERNAL_API, sql).await;
    }
    for sql in [
        "select * from audit_log",
        "select * from kyc_reviews",
        "update api_keys set revoked_at = 1",
    ] {
        assert_allowed(&db, Db::Control, INTERNAL_API, sql).await;
    }

    // The pipeline decrypts, so it reads sealed columns; it never touches
    // keys or the back office's tables, and of idempotency records it only
    // stores a waiting request's final answer, never reading one.
    for sql in [
        "select pan_ciphertext, pan_wrapped_key, cvc_ciphertext from payment_methods",
        "select secret_ciphertext from webhook_endpoints",
        "update payment_methods set cvc_key_id = null, cvc_wrapped_key = null, cvc_ciphertext = null",
        // The relay: takes a batch of rows and deletes them once published.
        "delete from outbox
          where id = any(array(select id from outbox order by id limit 10 for update skip locked))
         returning id, routing_key, payload, headers, created_at",
        "update idempotency_keys set response_status = 200, response_body = '\\x00',
             recovery_point = 'finished'
         where merchant_id = 'acct_x' and livemode = false and key = 'k' and request_id = 'req_x'
           and recovery_point = 'awaiting_outcome'",
    ] {
        assert_allowed(&db, Db::Shard, INTEGRATION, sql).await;
    }
    for sql in [
        "update payment_methods set pan_ciphertext = null",
        "insert into payment_methods (id, merchant_id, livemode, brand, first6, last4, exp_month,
             exp_year, fingerprint, pan_key_id, pan_wrapped_key, pan_ciphertext, created)
             values ('pm_x', 'acct_x', false, 'visa', '424242', '4242', 12, 2030, 'f', 'k', '\\x00', '\\x00', 0)",
        "select * from idempotency_keys",
        "select response_body from idempotency_keys",
        "update idempotency_keys set fingerprint = 'f'",
        "delete from idempotency_keys",
    ] {
        assert_refused(&db, Db::Shard, INTEGRATION, sql).await;
    }
    for sql in [
        "select key_hash from api_keys",
        "select * from audit_log",
        "update merchants set kyc_status = 'verified'",
        "select * from refund_requests",
    ] {
        assert_refused(&db, Db::Control, INTEGRATION, sql).await;
    }
    assert_allowed(
        &db,
        Db::Control,
        INTEGRATION,
        "select id, shard from merchants",
    )
    .await;
}

/// Every service appends to the audit trail through its own role, and the
/// owner — who holds every privilege — is still refused by the triggers.
#[tokio::test]
async fn every_role_appends_to_the_audit_trail_and_not_even_the_owner_may_change_rows() {
    let db = testing::fresh(1).await.unwrap();
    for role in roles::ALL {
        let options = PgConnectOptions::from_str(&db.control_url())
            .unwrap()
            .username(role);
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        audit::append(
            &pool,
            &NewEntry {
                actor: &Actor {
                    subject: role.into(),
                    role: "service".into(),
                },
                action: "test.append",
                resource: None,
                outcome: "allowed",
                origin: None,
                details: &json!({}),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{role} cannot append: {e:#}"));
        pool.close().await;
    }
    let verification = audit::verify_chain(db.store.control()).await.unwrap();
    assert!(verification.intact(), "{verification:?}");
    assert_eq!(verification.verified_rows, 3);

    // The owner (the migrating role) runs here through the test pools.
    let owner_refusals = [
        (
            db.store.control(),
            "update audit_log set outcome = 'denied'",
        ),
        (db.store.control(), "delete from audit_log"),
        (db.store.control(), "truncate audit_log"),
    ];
    for (pool, sql) in owner_refusals {
        let error = sqlx::query(sql).execute(pool).await.unwrap_err();
        let code = error.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some(INSUFFICIENT_PRIVILEGE), "{sql}");
    }
    // With no ledger rows a row trigger never fires, but TRUNCATE's does;
    // rows themselves are covered by crates/store/tests/ledger.rs.
    let shard = db.store.shards().next().unwrap().1;
    let error = sqlx::query("truncate journal_lines")
        .execute(shard)
        .await
        .unwrap_err();
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some(INSUFFICIENT_PRIVILEGE));
}
