//! The idempotency record's fence: only the request holding a key can store
//! its answer, so a request that lost its claim cannot commit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use snakepay_store::idempotency::{self, AfterFailure, Claim, ClaimOutcome};
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

#[tokio::test]
async fn a_request_that_lost_its_claim_can_neither_store_nor_overwrite_an_answer() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let first = claim(merchant, "req_first");
    assert_eq!(
        idempotency::claim(pool, &first).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // A retry takes the key over after the lock expired.
    sqlx::query("update idempotency_keys set request_id = 'req_second'")
        .execute(pool)
        .await
        .unwrap();
    let second = claim(merchant, "req_second");

    let mut tx = pool.begin().await.unwrap();
    let error = idempotency::complete(&mut tx, &first, 200, b"first")
        .await
        .unwrap_err();
    assert!(error.is::<idempotency::KeyNotHeld>());
    drop(tx);
    assert_eq!(
        idempotency::complete_unchanged(pool, &first, 500, b"err")
            .await
            .unwrap(),
        AfterFailure::NotHeld
    );

    let mut tx = pool.begin().await.unwrap();
    idempotency::complete(&mut tx, &second, 200, b"second")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The first request's late error does not overwrite the answer: it replays it.
    match idempotency::complete_unchanged(pool, &first, 500, b"err")
        .await
        .unwrap()
    {
        AfterFailure::Replay(stored) => assert_eq!(
            (stored.status, stored.body.as_slice()),
            (200, b"second".as_slice())
        ),
        other => panic!("{other:?}"),
    }
    // Nor can the holder itself store twice.
    let mut tx = pool.begin().await.unwrap();
    assert!(
        idempotency::complete(&mut tx, &second, 500, b"again")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_released_key_can_be_claimed_again() {
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let first = claim(merchant, "req_a");
    assert_eq!(
        idempotency::claim(pool, &first).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        idempotency::claim(pool, &claim(merchant, "req_b"))
            .await
            .unwrap(),
        ClaimOutcome::InUse
    );
    idempotency::release(pool, &first).await.unwrap();
    assert_eq!(
        idempotency::claim(pool, &claim(merchant, "req_b"))
            .await
            .unwrap(),
        ClaimOutcome::Claimed
    );
}

#[tokio::test]
async fn only_the_request_that_stored_a_response_can_upgrade_it_and_only_once() {
    use idempotency::ResponseBytes;
    let db = testing::fresh(1).await.unwrap();
    let pool = db.store.shard(ShardNumber(0)).unwrap();
    let merchant = MerchantId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
    let owner = claim(merchant, "req_owner");
    assert_eq!(
        idempotency::claim(pool, &owner).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let processing = ResponseBytes {
        status: 200,
        body: b"processing",
    };
    let declined = ResponseBytes {
        status: 402,
        body: b"declined",
    };
    // Nothing stored yet: there is nothing to upgrade.
    assert!(
        !idempotency::replace_response(pool, &owner, processing, declined)
            .await
            .unwrap()
    );
    let mut tx = pool.begin().await.unwrap();
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
    match idempotency::claim(pool, &other).await.unwrap() {
        ClaimOutcome::Replay(stored) => assert_eq!(
            (
                stored.status,
                stored.body.as_slice(),
                stored.request_id.as_str()
            ),
            (402, b"declined".as_slice(), "req_owner")
        ),
        other => panic!("{other:?}"),
    }
}
