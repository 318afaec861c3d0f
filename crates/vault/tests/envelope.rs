//! Seal/open round trips and tamper detection. Needs `--features decrypt`.
#![cfg(feature = "decrypt")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use snakepay_vault::{
    Cvc, FileKeyProvider, KEY_LEN, KeyRing, Pan, SealedRecord, SecretKey, Vault, VaultError,
    WRAPPED_DATA_KEY_LEN,
};

fn vault() -> Vault {
    let ring = KeyRing::new(
        "kek-2026-11-a",
        vec![(
            "kek-2026-11-a".to_owned(),
            SecretKey::from_bytes([0x11; KEY_LEN]),
        )],
        SecretKey::from_bytes([0x22; KEY_LEN]),
    )
    .unwrap();
    Vault::new(ring)
}

/// Every record that differs from `record` in exactly one byte of one part.
fn single_byte_changes(record: &SealedRecord) -> Vec<SealedRecord> {
    let (id, wrapped, ciphertext) = record.clone().into_parts();
    let mut out = Vec::new();
    for i in 0..wrapped.len() {
        let mut changed = wrapped.clone();
        changed[i] ^= 0x01;
        // A changed version byte is already refused by `from_parts`.
        if let Ok(r) = SealedRecord::from_parts(id.clone(), changed, ciphertext.clone()) {
            out.push(r);
        }
    }
    for i in 0..ciphertext.len() {
        let mut changed = ciphertext.clone();
        changed[i] ^= 0x80;
        out.push(SealedRecord::from_parts(id.clone(), wrapped.clone(), changed).unwrap());
    }
    out
}

#[test]
fn pan_round_trips() {
    let vault = vault();
    for digits in ["4242424242424242", "378282246310005", "5555555555554444"] {
        let pan = Pan::parse(digits).unwrap();
        let record = vault.seal_pan(&pan, b"pm_1").unwrap();
        let opened = vault.open_pan(&record, b"pm_1").unwrap();
        assert_eq!(opened.expose_digits(), digits);
    }
}

#[test]
fn cvc_round_trips() {
    let vault = vault();
    for digits in ["123", "0000", "9876"] {
        let cvc = Cvc::parse(digits).unwrap();
        let record = vault.seal_cvc(&cvc, b"pm_1").unwrap();
        assert_eq!(
            vault.open_cvc(&record, b"pm_1").unwrap().expose_digits(),
            digits
        );
    }
}

#[test]
fn round_trips_through_the_compact_bytes() {
    let vault = vault();
    let pan = Pan::parse("4000002760003184").unwrap();
    let bytes = vault.seal_pan(&pan, b"pm_2").unwrap().to_bytes();
    let record = SealedRecord::from_bytes(&bytes).unwrap();
    assert_eq!(
        vault.open_pan(&record, b"pm_2").unwrap().expose_digits(),
        "4000002760003184"
    );
}

#[test]
fn every_single_byte_change_is_rejected() {
    let vault = vault();
    let pan = Pan::parse("4242424242424242").unwrap();
    let record = vault.seal_pan(&pan, b"pm_1").unwrap();
    let changed = single_byte_changes(&record);
    assert_eq!(
        changed.len(),
        WRAPPED_DATA_KEY_LEN - 1 + record.ciphertext().len()
    );
    for bad in changed {
        assert!(
            matches!(
                vault.open_pan(&bad, b"pm_1"),
                Err(VaultError::AuthenticationFailed)
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn every_single_byte_change_of_the_compact_form_is_rejected() {
    let vault = vault();
    let record = vault.seal(b"some secret", b"rec_9").unwrap();
    let bytes = record.to_bytes();
    for i in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[i] ^= mask;
            let opened = SealedRecord::from_bytes(&changed).and_then(|r| vault.open(&r, b"rec_9"));
            assert!(opened.is_err(), "byte {i} mask {mask:#x}");
        }
    }
}

#[test]
fn wrong_aad_is_rejected() {
    let vault = vault();
    let pan = Pan::parse("4242424242424242").unwrap();
    let record = vault.seal_pan(&pan, b"pm_1").unwrap();
    for aad in [&b"pm_2"[..], b"", b"pm_1 ", b"PM_1"] {
        assert!(matches!(
            vault.open_pan(&record, aad),
            Err(VaultError::AuthenticationFailed)
        ));
    }
}

#[test]
fn a_record_moved_to_another_row_does_not_open() {
    let vault = vault();
    let first = vault
        .seal_pan(&Pan::parse("4242424242424242").unwrap(), b"pm_1")
        .unwrap();
    let second = vault
        .seal_pan(&Pan::parse("5555555555554444").unwrap(), b"pm_2")
        .unwrap();
    // Swap the wrapped keys between rows: each half is valid, the pair is not.
    let mixed = SealedRecord::from_parts(
        "kek-2026-11-a",
        first.wrapped_data_key().to_vec(),
        second.ciphertext().to_vec(),
    )
    .unwrap();
    assert!(vault.open_pan(&mixed, b"pm_1").is_err());
    assert!(vault.open_pan(&mixed, b"pm_2").is_err());
}

#[test]
fn kinds_cannot_be_confused() {
    let vault = vault();
    let cvc_record = vault
        .seal_cvc(&Cvc::parse("123").unwrap(), b"pm_1")
        .unwrap();
    assert!(matches!(
        vault.open_pan(&cvc_record, b"pm_1"),
        Err(VaultError::AuthenticationFailed)
    ));
    assert!(vault.open(&cvc_record, b"pm_1").is_err());
    let raw = vault.seal(b"4242424242424242", b"pm_1").unwrap();
    assert!(vault.open_pan(&raw, b"pm_1").is_err());
}

#[test]
fn unknown_key_id_is_rejected() {
    let vault = vault();
    let record = vault.seal(b"data", b"id").unwrap();
    let (_, wrapped, ciphertext) = record.into_parts();
    let renamed = SealedRecord::from_parts("kek-2020-01-a", wrapped, ciphertext).unwrap();
    match vault.open(&renamed, b"id") {
        Err(VaultError::UnknownKeyId(id)) => assert_eq!(id, "kek-2020-01-a"),
        other => panic!("expected UnknownKeyId, got {other:?}"),
    }
}

#[test]
fn relabelled_key_id_is_rejected_even_if_known() {
    // Two KEKs in the ring; a record's key ID is changed to the other one.
    let ring = KeyRing::new(
        "kek-a",
        vec![
            ("kek-a".to_owned(), SecretKey::from_bytes([1; KEY_LEN])),
            ("kek-b".to_owned(), SecretKey::from_bytes([2; KEY_LEN])),
        ],
        SecretKey::from_bytes([3; KEY_LEN]),
    )
    .unwrap();
    let vault = Vault::new(ring);
    let (_, wrapped, ciphertext) = vault.seal(b"data", b"id").unwrap().into_parts();
    let relabelled = SealedRecord::from_parts("kek-b", wrapped, ciphertext).unwrap();
    assert!(matches!(
        vault.open(&relabelled, b"id"),
        Err(VaultError::AuthenticationFailed)
    ));
}

#[test]
fn a_different_key_ring_cannot_open() {
    let record = vault().seal(b"data", b"id").unwrap();
    let other = Vault::new(
        KeyRing::new(
            "kek-2026-11-a",
            vec![(
                "kek-2026-11-a".to_owned(),
                SecretKey::from_bytes([0x33; KEY_LEN]),
            )],
            SecretKey::from_bytes([0x22; KEY_LEN]),
        )
        .unwrap(),
    );
    assert!(matches!(
        other.open(&record, b"id"),
        Err(VaultError::AuthenticationFailed)
    ));
}

#[test]
fn key_ring_file_round_trip_keeps_records_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault-keys.json");
    let contents = snakepay_vault::generate_key_ring_file("kek-2026-11-a").unwrap();
    std::fs::write(&path, contents.as_bytes()).unwrap();

    let first = Vault::load(&FileKeyProvider::new(&path)).unwrap();
    let pan = Pan::parse("4242 4242 4242 4242").unwrap();
    let record = first.seal_pan(&pan, b"pm_7").unwrap();
    let fingerprint = first.fingerprint(&pan);

    // A second process loading the same file opens the record and computes
    // the same fingerprint.
    let second = Vault::load(&FileKeyProvider::new(&path)).unwrap();
    assert_eq!(
        second.open_pan(&record, b"pm_7").unwrap().expose_digits(),
        "4242424242424242"
    );
    assert_eq!(second.fingerprint(&pan), fingerprint);

    // A freshly generated ring has different keys.
    let fresh = Vault::new(KeyRing::generate("kek-2026-11-a").unwrap());
    assert!(fresh.open_pan(&record, b"pm_7").is_err());
    assert_ne!(fresh.fingerprint(&pan), fingerprint);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let vault = vault();
        let record = vault.seal(&plaintext, &aad).unwrap();
        let back = SealedRecord::from_bytes(&record.to_bytes()).unwrap();
        let opened = vault.open(&back, &aad).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        position in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let vault = vault();
        let mut bytes = vault.seal(&plaintext, b"rec").unwrap().to_bytes();
        let i = position.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let opened = SealedRecord::from_bytes(&bytes).and_then(|r| vault.open(&r, b"rec"));
        prop_assert!(opened.is_err());
    }
}
