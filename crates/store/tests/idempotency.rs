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
use snakepay_store::idempotency::{self, AfterFailure, Claim, ClaimOutcome, StoredResponse};
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
    idempotency::complete(&mut tx, &claim(merchant, "req_crashed"), 200, b"lost")
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
    idempotency::complete(&mut tx, &claim(merchant, "req_retry"), 200, b"retried")
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

    idempotency::complete(&mut first, &claim(merchant, "req_first"), 200, b"first")
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
    idempotency::complete(&mut tx, &claim(merchant, "req_new"), 200, b"new")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The old request, finishing late, no longer holds the key.
    let mut late = pool.begin().await.unwrap();
    let error = idempotency::complete(&mut late, &claim(merchant, "req_old"), 200, b"old")
        .await
        .unwrap_err();
    assert!(error.is::<idempotency::KeyNotHeld>());
    drop(late);
    // Nor can the holder store twice.
    let mut tx = pool.begin().await.unwrap();
    assert!(
        idempotency::complete(&mut tx, &claim(merchant, "req_new"), 500, b"again")
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

#[tokio::test]
async fn only_the_request_that_stored_a_response_can_upgrade_it_and_only_once() {
    use idempotency::ResponseBytes;
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let owner = claim(merchant, "req_owner");
    let mut tx = claimed(pool, &owner).await;
    let processing = ResponseBytes {
        status: 200,
        body: b"processing",
    };
    let declined = ResponseBytes {
        status: 402,
        body: b"declined",
    };
    idempotency::complete(&mut tx, &owner, 200, b"processing")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Another request (a replay of the key, say) cannot upgrade it.
    let other = claim(merchant, "req_other");
    assert!(
        !idempotency::replace_response(pool, &other, processing, declined)
            .await
            .unwrap()
    );
    assert!(
        idempotency::replace_response(pool, &owner, processing, declined)
            .await
            .unwrap()
    );
    // The key no longer holds what the owner stored in phase 1: a second
    // upgrade from it is refused.
    assert!(
        !idempotency::replace_response(
            pool,
            &owner,
            processing,
            ResponseBytes {
                status: 200,
                body: b"succeeded",
            },
        )
        .await
        .unwrap()
    );
    assert_eq!(
        claim_once(pool, &other).await,
        ClaimOutcome::Replay(stored(402, b"declined", "req_owner"))
    );
}
