//! The idempotency record: a key is claimed in the transaction that stores
//! its answer, a second request waits for that transaction and replays it,
//! and only the request holding a key can store or upgrade its answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use snakepay_store::idempotency::{
    self, AfterFailure, AnswerTo, Claim, ClaimOutcome, ResponseBytes, Settled, Stage,
    StoredResponse,
};
use snakepay_store::testing;

fn claim<'a>(merchant: MerchantId, request_id: &'a str) -> Claim<'a> {
    Claim {
        merchant_id: merchant,
        livemode: false,
        key: "key-1",
        fingerprint: "f",
        request_id,
    }
}

/// Claims `claim` in a transaction of its own, left open.
async fn claimed(
    pool: &sqlx::PgPool,
    claim: &Claim<'_>,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        idempotency::claim(&mut tx, claim).await.unwrap(),
        ClaimOutcome::Claimed
    );
    tx
}

fn response(status: u16, body: &[u8]) -> ResponseBytes<'_> {
    ResponseBytes { status, body }
}

/// Stores a final response in the transaction that claimed the key.
async fn complete(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    owner: &Claim<'_>,
    status: u16,
    body: &[u8],
) -> anyhow::Result<()> {
    idempotency::complete(tx, owner, response(status, body), Stage::Final).await
}

/// A stored response as a replay returns it.
fn stored(status: u16, body: &[u8], request_id: &str) -> StoredResponse {
    StoredResponse {
        status,
        body: body.to_vec(),
        request_id: request_id.to_owned(),
    }
}

async fn claim_once(pool: &sqlx::PgPool, claim: &Claim<'_>) -> ClaimOutcome {
    let mut tx = pool.begin().await.unwrap();
    idempotency::claim(&mut tx, claim).await.unwrap()
}

#[tokio::test]
async fn a_claim_lives_and_dies_with_its_transaction() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let mut tx = claimed(pool, &claim(merchant, "req_crashed")).await;
    complete(&mut tx, &claim(merchant, "req_crashed"), 200, b"lost")
        .await
        .unwrap();
    // The request died before committing: nothing of it stays.
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("select count(*) from idempotency_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let mut tx = claimed(pool, &claim(merchant, "req_retry")).await;
    complete(&mut tx, &claim(merchant, "req_retry"), 200, b"retried")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        claim_once(pool, &claim(merchant, "req_replay")).await,
        ClaimOutcome::Replay(stored(200, b"retried", "req_retry"))
    );
}

#[tokio::test]
async fn a_second_claim_waits_for_the_first_transaction_and_then_replays_or_refuses() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap().clone();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let mut first = claimed(&pool, &claim(merchant, "req_first")).await;

    let same = tokio::spawn({
        let pool = pool.clone();
        async move { claim_once(&pool, &claim(merchant, "req_same")).await }
    });
    let other = tokio::spawn({
        let pool = pool.clone();
        async move {
            let different = Claim {
                fingerprint: "g",
                ..claim(merchant, "req_other")
            };
            claim_once(&pool, &different).await
        }
    });
    // Both wait on the first transaction's uncommitted row.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!same.is_finished() && !other.is_finished());

    complete(&mut first, &claim(merchant, "req_first"), 200, b"first")
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        same.await.unwrap(),
        ClaimOutcome::Replay(stored(200, b"first", "req_first"))
    );
    assert_eq!(other.await.unwrap(), ClaimOutcome::Mismatch);
}

#[tokio::test]
async fn an_earlier_versions_bare_claim_is_in_use_until_stale_then_taken_over_and_fenced() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    // What the previous version committed before executing.
    sqlx::query(
        "insert into idempotency_keys (merchant_id, livemode, key, fingerprint, request_id, locked_at)
         values ($1, false, 'key-1', 'f', 'req_old', now())",
    )
    .bind(merchant.to_string())
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(
        claim_once(pool, &claim(merchant, "req_new")).await,
        ClaimOutcome::InUse
    );
    sqlx::query("update idempotency_keys set locked_at = now() - interval '10 minutes'")
        .execute(pool)
        .await
        .unwrap();
    let mut tx = claimed(pool, &claim(merchant, "req_new")).await;
    complete(&mut tx, &claim(merchant, "req_new"), 200, b"new")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The old request, finishing late, no longer holds the key.
    let mut late = pool.begin().await.unwrap();
    let error = complete(&mut late, &claim(merchant, "req_old"), 200, b"old")
        .await
        .unwrap_err();
    assert!(error.is::<idempotency::KeyNotHeld>());
    drop(late);
    // Nor can the holder store twice.
    let mut tx = pool.begin().await.unwrap();
    assert!(
        complete(&mut tx, &claim(merchant, "req_new"), 500, b"again")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_error_after_a_rollback_is_stored_unless_another_request_answered_first() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    assert_eq!(
        idempotency::complete_unchanged(pool, &claim(merchant, "req_a"), 400, b"invalid")
            .await
            .unwrap(),
        AfterFailure::Stored
    );
    assert_eq!(
        claim_once(pool, &claim(merchant, "req_b")).await,
        ClaimOutcome::Replay(stored(400, b"invalid", "req_a"))
    );
    // A retry that fails too replays the stored answer instead.
    match idempotency::complete_unchanged(pool, &claim(merchant, "req_c"), 500, b"err")
        .await
        .unwrap()
    {
        AfterFailure::Replay(stored) => assert_eq!(stored.body, b"invalid"),
        other => panic!("{other:?}"),
    }
    let different = Claim {
        fingerprint: "g",
        ..claim(merchant, "req_d")
    };
    assert_eq!(
        idempotency::complete_unchanged(pool, &different, 500, b"err")
            .await
            .unwrap(),
        AfterFailure::Mismatch
    );
}

/// Phase 2: a response stored as awaiting its outcome is settled once, by
/// whoever comes first — the request that stored it, or the outcome's
/// writer — and the one that comes second learns what was settled.
#[tokio::test]
async fn a_response_awaiting_its_outcome_is_settled_once_by_whoever_comes_first() {
    use snakepay_store::compose::Statement;

    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let awaiting = |key: &'static str, request_id: &'static str| Claim {
        key,
        ..claim(merchant, request_id)
    };
    let store_phase1 = |owner: Claim<'static>| async move {
        let mut tx = claimed(pool, &owner).await;
        idempotency::complete(
            &mut tx,
            &owner,
            response(200, b"processing"),
            Stage::AwaitingOutcome,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    };
    // The outcome's writer: its CTE alone, answering `owner`; whether it
    // stored the answer.
    let outcome_answers = |owner: Claim<'static>, body: &'static [u8]| async move {
        let to = AnswerTo {
            request_id: owner.request_id.to_owned(),
            idempotency_key: Some(owner.key.to_owned()),
        };
        let mut statement = Statement::new();
        statement.push("with ");
        idempotency::push_outcome_answer(
            &mut statement,
            merchant,
            false,
            &to,
            owner.key,
            response(200, body),
            "true",
        )
        .unwrap();
        statement.push(" select exists (select 1 from answered)");
        statement.fetch_scalar::<bool>(pool).await.unwrap().unwrap()
    };
    let mut conn = pool.acquire().await.unwrap();

    // The request settles first, with its final answer: the outcome's
    // writer then stores nothing, and a replay gets the request's answer.
    let owner = awaiting("key-a", "req_a");
    store_phase1(owner.clone()).await;
    // Another request (a replay of the key, say) cannot settle it.
    let other = awaiting("key-a", "req_other");
    assert_eq!(
        idempotency::settle_response(&mut conn, &other, Some(response(402, b"declined")))
            .await
            .unwrap(),
        Settled::Gone
    );
    assert_eq!(
        idempotency::settle_response(&mut conn, &owner, Some(response(402, b"declined")))
            .await
            .unwrap(),
        Settled::Ours
    );
    assert!(!outcome_answers(owner.clone(), b"succeeded").await);
    assert_eq!(
        claim_once(pool, &other).await,
        ClaimOutcome::Replay(stored(402, b"declined", "req_a"))
    );

    // The outcome's writer settles first: the request learns its answer.
    let owner = awaiting("key-b", "req_b");
    store_phase1(owner.clone()).await;
    assert!(outcome_answers(owner.clone(), b"succeeded").await);
    assert!(
        !outcome_answers(owner.clone(), b"again").await,
        "settled once"
    );
    assert_eq!(
        idempotency::settle_response(&mut conn, &owner, Some(response(200, b"mine")))
            .await
            .unwrap(),
        Settled::Theirs(stored(200, b"succeeded", "req_b"))
    );

    // The wait ran out: the request settles phase 1's answer as it is, and
    // an outcome that commits later no longer changes it.
    let owner = awaiting("key-c", "req_c");
    store_phase1(owner.clone()).await;
    assert_eq!(
        idempotency::settle_response(&mut conn, &owner, None)
            .await
            .unwrap(),
        Settled::Ours
    );
    assert!(!outcome_answers(owner.clone(), b"succeeded").await);
    assert_eq!(
        claim_once(pool, &awaiting("key-c", "req_replay")).await,
        ClaimOutcome::Replay(stored(200, b"processing", "req_c"))
    );

    // A final response (not awaiting an outcome) is never settled again.
    let owner = awaiting("key-d", "req_d");
    let mut tx = claimed(pool, &owner).await;
    complete(&mut tx, &owner, 200, b"done").await.unwrap();
    tx.commit().await.unwrap();
    assert!(!outcome_answers(owner.clone(), b"succeeded").await);
    assert_eq!(
        idempotency::settle_response(&mut conn, &owner, Some(response(402, b"declined")))
            .await
            .unwrap(),
        Settled::Theirs(stored(200, b"done", "req_d"))
    );
}

/// A key inserted with its answer as a CTE of a larger write: the whole
/// statement writes or nothing does. Taken keys (committed, or held by an
/// open transaction, which the statement waits for) fail it with the key's
/// own error, and the write beside it is not made.
#[tokio::test]
async fn a_key_answered_inside_a_write_fails_the_whole_write_when_taken() {
    use snakepay_store::compose::Statement;

    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    // The write beside the key: a row in the outbox, counted by its key.
    let write = |owner: &Claim<'_>, marker: &str| {
        let mut statement = Statement::new();
        statement.push("with answered as (");
        idempotency::push_answered(
            &mut statement,
            owner,
            response(200, b"created"),
            Stage::Final,
        )
        .unwrap();
        statement.push(
            "), command as (insert into outbox (routing_key, payload) values ($1, '{}')) select 1",
        );
        statement.bind(marker.to_owned()).unwrap();
        statement
    };
    let written = |marker: &'static str| async move {
        let count: i64 = sqlx::query_scalar("select count(*) from outbox where routing_key = $1")
            .bind(marker)
            .fetch_one(pool)
            .await
            .unwrap();
        count
    };

    let owner = claim(merchant, "req_first");
    write(&owner, "first").execute(pool).await.unwrap();
    assert_eq!(written("first").await, 1);
    assert_eq!(
        claim_once(pool, &claim(merchant, "req_retry")).await,
        ClaimOutcome::Replay(stored(200, b"created", "req_first"))
    );

    // Committed: the second write fails whole, with the key's error.
    let error = write(&claim(merchant, "req_second"), "second")
        .execute(pool)
        .await
        .unwrap_err();
    assert!(idempotency::is_held_elsewhere(&error), "{error}");
    assert_eq!(written("second").await, 0);

    // Held by an open transaction that then commits: the write waits for
    // it, then fails the same way.
    let held = Claim {
        key: "key-2",
        ..claim(merchant, "req_holder")
    };
    let holder = claimed(pool, &held).await;
    let waiting = tokio::spawn({
        let pool = pool.clone();
        let statement = write(
            &Claim {
                key: "key-2",
                ..claim(merchant, "req_waiter")
            },
            "waiter",
        );
        async move { statement.execute(&pool).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the write waits for the key's holder"
    );
    holder.commit().await.unwrap();
    let error = waiting.await.unwrap().unwrap_err();
    assert!(idempotency::is_held_elsewhere(&error), "{error}");
    assert_eq!(written("waiter").await, 0);

    // A write that fails for another reason is not mistaken for a taken key.
    let mut broken = Statement::new();
    broken.push("with answered as (");
    idempotency::push_answered(
        &mut broken,
        &Claim {
            key: "key-3",
            ..owner.clone()
        },
        response(200, b"x"),
        Stage::Final,
    )
    .unwrap();
    broken
        .push("), bad as (insert into outbox (routing_key, payload) values (null, '{}')) select 1");
    let error = broken.execute(pool).await.unwrap_err();
    assert!(!idempotency::is_held_elsewhere(&error), "{error}");
    assert_eq!(
        claim_once(
            pool,
            &Claim {
                key: "key-3",
                ..owner
            }
        )
        .await,
        ClaimOutcome::Claimed
    );
}
