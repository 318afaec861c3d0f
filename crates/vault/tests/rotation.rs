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

/// A service's vault that reloads its key ring file sees a rotation without
/// a restart: records re-wrapped under the new KEK open at once, and new
/// records are sealed under it once the reload interval has passed.
#[cfg(feature = "decrypt")]
#[test]
fn a_reloading_vault_follows_a_rotation_of_its_key_ring_file() {
    use std::sync::Arc;
    use std::time::Duration;

    use snakepay_vault::{FileKeyProvider, KeyProvider, Pan};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring.json");
    let provider = FileKeyProvider::create(&path, &KeyRing::generate("kek-1").unwrap()).unwrap();
    let interval = Duration::from_millis(100);
    let service = Vault::reloading(Arc::new(provider.clone()), interval).unwrap();
    let pan = Pan::parse("4000056655665556").unwrap();
    let before = service.seal_pan(&pan, b"pm_1").unwrap();
    assert_eq!(before.key_id(), "kek-1");

    // The operator's side: a new KEK, stored; one record re-wrapped.
    let mut ring = provider.load_key_ring().unwrap();
    ring.add_active_kek(&ring.next_kek_id()).unwrap();
    provider.store_key_ring(&ring).unwrap();
    let admin = Vault::new(provider.load_key_ring().unwrap());
    let rewrapped = admin.rewrap(&before, b"pm_1").unwrap();
    assert_eq!(rewrapped.key_id(), "kek-2");

    // The service has not reloaded yet, but a record under an unknown KEK
    // makes it read the file at once.
    assert_eq!(
        service
            .open_pan(&rewrapped, b"pm_1")
            .unwrap()
            .expose_digits(),
        "4000056655665556"
    );
    std::thread::sleep(interval + Duration::from_millis(20));
    assert_eq!(service.seal_pan(&pan, b"pm_2").unwrap().key_id(), "kek-2");
    // The old record still opens while kek-1 is in the ring...
    assert!(service.open_pan(&before, b"pm_1").is_ok());

    // ...and not once it is retired.
    let mut ring = provider.load_key_ring().unwrap();
    ring.remove_kek("kek-1").unwrap();
    provider.store_key_ring(&ring).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    assert!(matches!(
        service.open_pan(&before, b"pm_1"),
        Err(VaultError::UnknownKeyId(_))
    ));
    assert!(service.open_pan(&rewrapped, b"pm_1").is_ok());
    // A broken key ring file is not installed: the service keeps its keys.
    std::fs::write(dir.path().join("broken.json"), "{").unwrap();
    std::fs::rename(dir.path().join("broken.json"), &path).unwrap();
    std::thread::sleep(interval + Duration::from_millis(20));
    assert_eq!(service.seal_pan(&pan, b"pm_3").unwrap().key_id(), "kek-2");
    assert!(service.open_pan(&rewrapped, b"pm_1").is_ok());
}

/// Re-wrapping never weakens tamper detection: a changed byte anywhere in a
/// re-wrapped record, or its key ID changed back to the old KEK, is refused.
#[cfg(feature = "decrypt")]
#[test]
fn a_rewrapped_record_rejects_tampering() {
    let vault = Vault::new(ring_with(&[("kek-1", 1), ("kek-2", 2)], "kek-1"));
    let record = vault.seal(b"card data", b"pm_1").unwrap();
    let rotated = Vault::new(ring_with(&[("kek-1", 1), ("kek-2", 2)], "kek-2"));
    let rewrapped = rotated.rewrap(&record, b"pm_1").unwrap();
    let (id, wrapped, ciphertext) = rewrapped.clone().into_parts();
    for i in 1..wrapped.len() {
        let mut changed = wrapped.clone();
        changed[i] ^= 0x01;
        let bad = SealedRecord::from_parts(id.clone(), changed, ciphertext.clone()).unwrap();
        assert!(
            matches!(
                rotated.open(&bad, b"pm_1"),
                Err(VaultError::AuthenticationFailed)
            ),
            "wrapped byte {i}"
        );
    }
    for i in 0..ciphertext.len() {
        let mut changed = ciphertext.clone();
        changed[i] ^= 0x80;
        let bad = SealedRecord::from_parts(id.clone(), wrapped.clone(), changed).unwrap();
        assert!(
            matches!(
                rotated.open(&bad, b"pm_1"),
                Err(VaultError::AuthenticationFailed)
            ),
            "ciphertext byte {i}"
        );
    }
    let relabelled = SealedRecord::from_parts("kek-1", wrapped, ciphertext).unwrap();
    assert!(matches!(
        rotated.open(&relabelled, b"pm_1"),
        Err(VaultError::AuthenticationFailed)
    ));
    assert_eq!(&*rotated.open(&rewrapped, b"pm_1").unwrap(), b"card data");
}
