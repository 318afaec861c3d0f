//! Merchants, shards and API keys against the real control database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_domain::ids::{RegionNumber, ShardNumber};
use snakepay_store::merchants::{self, AuthError, KeyHasher, KeyKind, KycStatus, NewMerchant};
use snakepay_store::testing;

const REGION: RegionNumber = RegionNumber(1);

fn hasher() -> KeyHasher {
    KeyHasher::new(&[7; 32]).unwrap()
}

async fn merchant(db: &testing::TestDatabases) -> merchants::Merchant {
    let control = db.store.control();
    let shard = merchants::least_loaded_shard(control, db.store.shard_count())
        .await
        .unwrap();
    merchants::create_merchant(
        control,
        "local",
        REGION,
        shard,
        &NewMerchant {
            legal_name: "Shop".into(),
            country: "DE".into(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn merchants_are_spread_over_both_shards_and_their_ids_name_their_shard() {
    let db = testing::fresh(2).await.unwrap();
    let mut shards = Vec::new();
    for _ in 0..4 {
        shards.push(merchant(&db).await.id.shard());
    }
    assert_eq!(
        shards.iter().filter(|s| **s == ShardNumber(0)).count(),
        2,
        "{shards:?}"
    );
    assert_eq!(
        shards.iter().filter(|s| **s == ShardNumber(1)).count(),
        2,
        "{shards:?}"
    );
}

#[tokio::test]
async fn a_test_key_authenticates_its_merchant_and_mode() {
    let db = testing::fresh(2).await.unwrap();
    let m = merchant(&db).await;
    let key = merchants::create_api_key(
        db.store.control(),
        &hasher(),
        REGION,
        m.id,
        KeyKind::Secret,
        false,
    )
    .await
    .unwrap();
    assert!(key.key.starts_with("sk_test_"));
    let auth = merchants::authenticate(db.store.control(), &hasher(), REGION, &key.key)
        .await
        .unwrap();
    assert_eq!(auth.merchant_id, m.id);
    assert!(!auth.livemode);
    assert_eq!(auth.kind, KeyKind::Secret);
    // The key itself is stored nowhere.
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from api_keys where encode(key_hash, 'escape') like '%' || $1 || '%'",
    )
    .bind(&key.key[8..])
    .fetch_one(db.store.control())
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn wrong_tampered_revoked_and_foreign_keys_are_refused() {
    let db = testing::fresh(1).await.unwrap();
    let m = merchant(&db).await;
    let control = db.store.control();
    let key = merchants::create_api_key(control, &hasher(), REGION, m.id, KeyKind::Secret, false)
        .await
        .unwrap();

    let mut tampered = key.key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert!(matches!(
        merchants::authenticate(control, &hasher(), REGION, &tampered).await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        merchants::authenticate(control, &hasher(), REGION, "sk_test_nonsense").await,
        Err(AuthError::Invalid)
    ));
    // Same key text presented as live mode: a different key.
    let as_live = key.key.replace("sk_test_", "sk_live_");
    assert!(matches!(
        merchants::authenticate(control, &hasher(), REGION, &as_live).await,
        Err(AuthError::Invalid)
    ));
    // A key hashed under another secret does not verify.
    let other = KeyHasher::new(&[8; 32]).unwrap();
    assert!(matches!(
        merchants::authenticate(control, &other, REGION, &key.key).await,
        Err(AuthError::Invalid)
    ));
    assert!(matches!(
        merchants::authenticate(control, &hasher(), RegionNumber(2), &key.key).await,
        Err(AuthError::OtherRegion(RegionNumber(1)))
    ));

    assert!(
        merchants::revoke_api_key(control, &key.key_id)
            .await
            .unwrap()
    );
    assert!(matches!(
        merchants::authenticate(control, &hasher(), REGION, &key.key).await,
        Err(AuthError::Revoked)
    ));
}

#[tokio::test]
async fn live_keys_work_only_after_kyc_verification() {
    let db = testing::fresh(1).await.unwrap();
    let m = merchant(&db).await;
    let control = db.store.control();
    let live = merchants::create_api_key(control, &hasher(), REGION, m.id, KeyKind::Secret, true)
        .await
        .unwrap();
    assert!(matches!(
        merchants::authenticate(control, &hasher(), REGION, &live.key).await,
        Err(AuthError::NotVerified)
    ));
    merchants::set_kyc_status(control, m.id, KycStatus::Verified)
        .await
        .unwrap();
    let auth = merchants::authenticate(control, &hasher(), REGION, &live.key)
        .await
        .unwrap();
    assert!(auth.livemode);
    assert_eq!(
        merchants::find_merchant(control, m.id)
            .await
            .unwrap()
            .unwrap()
            .kyc_status,
        KycStatus::Verified
    );
}
