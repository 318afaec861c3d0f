//! What a service built without `decrypt` (the External API) can do: parse,
//! seal, fingerprint and store, never open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_vault::{CardBrand, CardSummary, Cvc, Expiry, KeyRing, Pan, SealedRecord, Vault};

#[test]
fn tokenizing_a_card_keeps_only_safe_data_in_clear() {
    let vault = Vault::new(KeyRing::generate("kek-2026-11-a").unwrap());
    let pan = Pan::parse("4242 4242 4242 4242").unwrap();
    let cvc = Cvc::parse_for_brand("123", pan.brand()).unwrap();
    let expiry = Expiry::parse("12", "34").unwrap();

    let sealed_pan = vault.seal_pan(&pan, b"pm_1").unwrap();
    let sealed_cvc = vault.seal_cvc(&cvc, b"pm_1").unwrap();
    let summary = CardSummary::new(&pan, expiry);
    let fingerprint = vault.fingerprint(&pan);

    assert_eq!(summary.brand, CardBrand::Visa);
    assert_eq!((summary.exp_month, summary.exp_year), (12, 2034));
    let stored = format!(
        "{:?} {:?} {} {:?} {:?} {:?} {:?}",
        sealed_pan.to_bytes(),
        sealed_cvc.to_bytes(),
        serde_json::to_string(&summary).unwrap(),
        fingerprint,
        pan,
        cvc,
        vault,
    );
    assert!(!stored.contains("4242424242424242"));
    assert!(!stored.contains("42424242"));
    assert!(
        SealedRecord::from_bytes(&sealed_pan.to_bytes()).unwrap() == sealed_pan,
        "the compact form round-trips"
    );
}
