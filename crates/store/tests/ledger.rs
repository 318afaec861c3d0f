//! The ledger is enforced by the database itself: these tests go around the
//! Rust code and write SQL directly, as a buggy or malicious code path would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_domain::Currency;
use snakepay_domain::Money;
use snakepay_domain::ids::ShardNumber;
use snakepay_domain::ledger::postings;
use snakepay_store::ledger::{self, JournalContext};
use snakepay_store::testing;

fn context() -> JournalContext<'static> {
    JournalContext {
        merchant_id: "acct_test",
        livemode: false,
        payment_intent_id: Some("pi_test"),
        refund_id: None,
        description: "test",
    }
}

async fn insert_journal(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> i64 {
    sqlx::query_scalar("insert into journals (merchant_id, livemode, description) values ('acct_test', false, 'raw') returning id")
        .fetch_one(&mut **tx)
        .await
        .unwrap()
}

async fn insert_line(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    journal: i64,
    account: &str,
    currency: &str,
    side: &str,
    amount: i64,
) {
    sqlx::query(
        "insert into journal_lines (journal_id, merchant_id, livemode, account, currency, side, amount)
         values ($1, 'acct_test', false, $2, $3, $4, $5)",
    )
    .bind(journal)
    .bind(account)
    .bind(currency)
    .bind(side)
    .bind(amount)
    .execute(&mut **tx)
    .await
    .unwrap();
}

fn is_check_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23514"))
}

#[tokio::test]
async fn a_balanced_journal_from_the_posting_rules_commits() {
    let db = testing::fresh(2).await.unwrap();
    let pool = db.store.shard(ShardNumber(1)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let amount = Money::new(1_250, Currency::USD).unwrap();
    ledger::post(
        &mut tx,
        context(),
        &postings::capture_of_hold(amount, amount).unwrap(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let lines: i64 = sqlx::query_scalar("select count(*) from journal_lines")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(lines, 4);
}

#[tokio::test]
async fn an_unbalanced_journal_is_rejected_at_commit_and_nothing_is_written() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let journal = insert_journal(&mut tx).await;
    insert_line(
        &mut tx,
        journal,
        "processor_receivable",
        "usd",
        "debit",
        1_000,
    )
    .await;
    // The statements succeed: the check is deferred to commit…
    insert_line(&mut tx, journal, "merchant_payable", "usd", "credit", 999).await;
    // …where it refuses the whole transaction.
    let error = tx.commit().await.unwrap_err();
    assert!(is_check_violation(&error), "{error}");
    let journals: i64 = sqlx::query_scalar("select count(*) from journals")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(journals, 0);
}

#[tokio::test]
async fn a_journal_balanced_in_total_but_not_per_currency_is_rejected() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let journal = insert_journal(&mut tx).await;
    insert_line(
        &mut tx,
        journal,
        "processor_receivable",
        "usd",
        "debit",
        1_000,
    )
    .await;
    insert_line(&mut tx, journal, "merchant_payable", "eur", "credit", 1_000).await;
    assert!(is_check_violation(&tx.commit().await.unwrap_err()));
}

#[tokio::test]
async fn a_journal_without_lines_is_rejected() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    insert_journal(&mut tx).await;
    assert!(is_check_violation(&tx.commit().await.unwrap_err()));
}

#[tokio::test]
async fn the_application_role_cannot_update_delete_or_truncate_ledger_rows() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let amount = Money::new(500, Currency::EUR).unwrap();
    ledger::post(&mut tx, context(), &postings::capture(amount).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The tests connect as the application role, which owns the tables.
    let role: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(role, "snakepay");
    for statement in [
        "update journal_lines set amount = amount + 1",
        "update journal_lines set side = 'credit' where side = 'debit'",
        "delete from journal_lines",
        "update journals set description = 'edited'",
        "delete from journals",
        "truncate journal_lines",
        "truncate journals cascade",
    ] {
        let error = sqlx::query(statement).execute(pool).await.unwrap_err();
        match &error {
            sqlx::Error::Database(db) => {
                assert_eq!(db.code().as_deref(), Some("42501"), "{statement}: {error}")
            }
            other => panic!("{statement}: {other}"),
        }
    }
    let total: i64 = sqlx::query_scalar("select sum(amount)::bigint from journal_lines")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(total, 1_000, "the lines are unchanged");
}
