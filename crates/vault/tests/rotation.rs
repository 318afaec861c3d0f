//! Online KEK rotation. Needs `--features rotate` (and `decrypt` for the
//! tests that open records afterwards).
#![cfg(feature = "rotate")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use snakepay_vault::{KEY_LEN, KeyRing, SealedRecord, SecretKey, Vault, VaultError};

fn ring_with(keks: &[(&str, u8)], active: &str) -> KeyRing {
    KeyRing::new(
        active,
        keks.iter()
            .map(|&(id, byte)| (id.to_owned(), SecretKey::from_bytes([byte; KEY_LEN])))
            .collect(),
        SecretKey::from_bytes([0xf0; KEY_LEN]),
    )
    .unwrap()
}

#[test]
fn rewrap_moves_the_record_to_the_active_key_and_keeps_the_ciphertext() {
    let old = Vault::new(ring_with(&[("kek-old", 1)], "kek-old"));
    let record = old.seal(b"card data", b"pm_1").unwrap();

    let rotated = Vault::new(ring_with(&[("kek-old", 1), ("kek-new", 2)], "kek-new"));
    assert!(rotated.needs_rewrap(&record));
    let rewrapped = rotated.rewrap(&record, b"pm_1").unwrap();
    assert_eq!(rewrapped.key_id(), "kek-new");
    assert_eq!(rewrapped.ciphertext(), record.ciphertext());
    assert_ne!(rewrapped.wrapped_data_key(), record.wrapped_data_key());
    assert!(!rotated.needs_rewrap(&rewrapped));
}

#[test]
fn rewrap_checks_the_aad_and_the_key_id() {
    let vault = Vault::new(ring_with(&[("kek-old", 1), ("kek-new", 2)], "kek-new"));
    let record = vault.seal(b"card data", b"pm_1").unwrap();
    assert!(matches!(
        vault.rewrap(&record, b"pm_2"),
        Err(VaultError::AuthenticationFailed)
    ));
    let (_, wrapped, ciphertext) = record.into_parts();
    let unknown = SealedRecord::from_parts("kek-gone", wrapped, ciphertext).unwrap();
    assert!(matches!(
        vault.rewrap(&unknown, b"pm_1"),
        Err(VaultError::UnknownKeyId(_))
    ));
}

#[cfg(feature = "decrypt")]
#[test]
fn after_rewrap_the_old_kek_is_no_longer_needed() {
    use snakepay_vault::Pan;

    let pan = Pan::parse("4242424242424242").unwrap();
    let before = Vault::new(ring_with(&[("kek-old", 1)], "kek-old"));
    let record = before.seal_pan(&pan, b"pm_1").unwrap();
    let fingerprint = before.fingerprint(&pan);

    // Step 1: add a new active KEK, keep the old one, re-wrap every record.
    let mut ring = ring_with(&[("kek-old", 1)], "kek-old");
    ring.add_active_kek("kek-new").unwrap();
    let during = Vault::new(ring);
    let rewrapped = during.rewrap(&record, b"pm_1").unwrap();
    // Both the old and the re-wrapped record open while both KEKs exist.
    assert!(during.open_pan(&record, b"pm_1").is_ok());
    assert!(during.open_pan(&rewrapped, b"pm_1").is_ok());

    // Step 2: drop the old KEK. Only the re-wrapped record still opens.
    let json = during.key_ring().to_json().unwrap();
    let mut ring = KeyRing::from_json(&json).unwrap();
    ring.remove_kek("kek-old").unwrap();
    assert_eq!(ring.kek_ids().collect::<Vec<_>>(), ["kek-new"]);
    let after = Vault::new(ring);
    assert_eq!(
        after.open_pan(&rewrapped, b"pm_1").unwrap().expose_digits(),
        "4242424242424242"
    );
    assert!(matches!(
        after.open_pan(&record, b"pm_1"),
        Err(VaultError::UnknownKeyId(_))
    ));
    // The fingerprint key did not rotate, so lookups keep working.
    assert_eq!(after.fingerprint(&pan), fingerprint);
}
