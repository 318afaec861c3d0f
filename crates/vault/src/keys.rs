//! Key material: key-encryption keys (KEKs), the fingerprint key, the key
//! ring that holds them, its file format and the providers that load it.
//!
//! Why two kinds of key: a KEK only wraps per-record data keys (see
//! `envelope.rs`), and the fingerprint key only computes HMAC fingerprints (see
//! `fingerprint.rs`). Using one key for both would tie the lifetime of every
//! fingerprint to KEK rotation and mix two cryptographic uses of one secret,
//! so [`KeyRing::new`] refuses a fingerprint key equal to any KEK.
//!
//! # Key ring file (JSON, version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "active_kek_id": "kek-2026-11-b",
//!   "keks": [
//!     { "id": "kek-2026-11-a", "key": "<32 bytes, standard base64>" },
//!     { "id": "kek-2026-11-b", "key": "<32 bytes, standard base64>" }
//!   ],
//!   "fingerprint_key": "<32 bytes, standard base64>"
//! }
//! ```
//!
//! The active KEK seals new records; the others stay only to open and re-wrap
//! records sealed before a rotation. Unknown fields are rejected so a typo
//! (`"active_kek"`) fails at start-up instead of silently meaning "no key".
//!
//! # Key versions
//!
//! A KEK's ID is its version: `snakepay-admin keys rotate` names the new KEK
//! `kek-<n+1>` ([`KeyRing::next_kek_id`]), and every sealed record stores the
//! ID of the KEK that wrapped its data key, so a reader always knows which
//! version to use and a rotation can find what it still has to re-wrap.
//!
//! # KEK ring without the fingerprint key (the environment provider)
//!
//! The cloud keeps the two kinds of key in two secrets, so that access to one
//! does not imply the other. The KEK half has the same shape as the file
//! without `fingerprint_key`; the fingerprint key is base64 on its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every key in the ring: 256 bits.
pub const KEY_LEN: usize = 32;
/// Longest key ID. Key IDs are stored next to every ciphertext (a `text`
/// column, one length byte in the compact format), so they stay short.
pub const KEY_ID_MAX_LEN: usize = 64;
/// The key ring file format this crate reads and writes.
pub const KEY_RING_FILE_VERSION: u32 = 1;
/// Refuse key ring files larger than this: a real one is well under 100 bytes
/// per key, so anything bigger is the wrong file.
pub(crate) const KEY_RING_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// Why key material could not be loaded, built or written. Messages name key
/// IDs and file paths, never key bytes or file contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot access key ring file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key ring file {path} is larger than {KEY_RING_FILE_MAX_BYTES} bytes")]
    FileTooLarge { path: PathBuf },
    /// Only the position is kept: serde_json's messages can quote the
    /// offending value, which might be key material.
    #[error("key ring is not valid JSON in the expected shape (line {line}, column {column})")]
    Format { line: usize, column: usize },
    #[error("key ring file version {0} is not supported (expected {KEY_RING_FILE_VERSION})")]
    UnsupportedVersion(u32),
    #[error(
        "invalid key ID {0:?}: use 1 to {KEY_ID_MAX_LEN} characters from a-z, A-Z, 0-9, '-', '_', '.'"
    )]
    InvalidKeyId(String),
    #[error("key ID {0:?} appears more than once")]
    DuplicateKeyId(String),
    #[error("the active key ID {0:?} is not in the key ring")]
    UnknownActiveKey(String),
    #[error("the active key {0:?} cannot be removed")]
    CannotRemoveActiveKey(String),
    #[error("key {0:?} is not valid base64")]
    InvalidBase64(String),
    #[error("key {0:?} must be exactly {KEY_LEN} bytes")]
    InvalidKeyLength(String),
    #[error("the fingerprint key must differ from every key-encryption key")]
    FingerprintKeyReused,
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("environment variable {0} is not set (or not UTF-8)")]
    MissingVariable(&'static str),
    #[error("the key provider {0} is read-only: change its keys where they are managed")]
    ReadOnly(String),
    #[error("unknown key provider {0:?}: use \"file\" or \"environment\"")]
    UnknownProvider(String),
}

/// A 256-bit secret key, zeroed on drop. `Debug` prints `SecretKey(***)`.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// Wraps existing key bytes (tests, or a provider that fetched them).
    /// The caller's array is a copy: zeroize it if it came from a secret.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        Self::generate_raw().map_err(KeyError::Random)
    }

    /// [`generate`](Self::generate) with the bare error, for `envelope.rs`.
    pub(crate) fn generate_raw() -> Result<Self, getrandom::Error> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(key.as_mut_slice())?;
        Ok(Self(key))
    }

    /// The raw key bytes, for the cipher and HMAC in this crate only.
    pub(crate) fn expose_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn from_base64(key_name: &str, encoded: &str) -> Result<Self, KeyError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(encoded.trim())
                .map_err(|_| KeyError::InvalidBase64(key_name.to_owned()))?,
        );
        Self::from_slice(&decoded).ok_or_else(|| KeyError::InvalidKeyLength(key_name.to_owned()))
    }

    /// Copies key bytes from a buffer the caller wipes; `None` unless the
    /// slice is exactly [`KEY_LEN`] bytes.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Some(Self(key))
    }

    fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_slice())
    }

    fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Checks that a key ID is short and uses only characters that are safe in
/// file names, log lines and SQL text columns.
pub fn validate_key_id(id: &str) -> Result<(), KeyError> {
    let valid_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if id.is_empty() || id.len() > KEY_ID_MAX_LEN || !valid_chars {
        return Err(KeyError::InvalidKeyId(id.to_owned()));
    }
    Ok(())
}

/// The KEKs (one of them active) and the fingerprint key.
///
/// `Debug` shows key IDs only.
pub struct KeyRing {
    active_kek_id: String,
    keks: BTreeMap<String, SecretKey>,
    fingerprint_key: SecretKey,
}

impl KeyRing {
    /// Builds a key ring from keys already in memory (tests, or a provider).
    pub fn new(
        active_kek_id: &str,
        keks: Vec<(String, SecretKey)>,
        fingerprint_key: SecretKey,
    ) -> Result<Self, KeyError> {
        let mut map = BTreeMap::new();
        for (id, key) in keks {
            validate_key_id(&id)?;
            if key.ct_eq(&fingerprint_key) {
                return Err(KeyError::FingerprintKeyReused);
            }
            if map.contains_key(&id) {
                return Err(KeyError::DuplicateKeyId(id));
            }
            map.insert(id, key);
        }
        if !map.contains_key(active_kek_id) {
            return Err(KeyError::UnknownActiveKey(active_kek_id.to_owned()));
        }
        Ok(Self {
            active_kek_id: active_kek_id.to_owned(),
            keks: map,
            fingerprint_key,
        })
    }

    /// A new key ring with one fresh random KEK (active) and a fresh random
    /// fingerprint key.
    pub fn generate(kek_id: &str) -> Result<Self, KeyError> {
        Self::new(
            kek_id,
            vec![(kek_id.to_owned(), SecretKey::generate()?)],
            SecretKey::generate()?,
        )
    }

    /// Adds a fresh random KEK and makes it the active one; the previous KEKs
    /// stay for opening and re-wrapping older records. The first step of a
    /// rotation.
    pub fn add_active_kek(&mut self, kek_id: &str) -> Result<(), KeyError> {
        validate_key_id(kek_id)?;
        if self.keks.contains_key(kek_id) {
            return Err(KeyError::DuplicateKeyId(kek_id.to_owned()));
        }
        self.keks.insert(kek_id.to_owned(), SecretKey::generate()?);
        kek_id.clone_into(&mut self.active_kek_id);
        Ok(())
    }

    /// Drops a retired KEK once no record refers to it any more (the last
    /// step of a rotation). Records still wrapped under it become unreadable,
    /// so the caller checks first. Removing an absent key is not an error.
    pub fn remove_kek(&mut self, kek_id: &str) -> Result<(), KeyError> {
        if kek_id == self.active_kek_id {
            return Err(KeyError::CannotRemoveActiveKey(kek_id.to_owned()));
        }
        self.keks.remove(kek_id);
        Ok(())
    }

    /// The ID for the next KEK version: `kek-<n+1>`, where `n` is the highest
    /// version among the ring's `kek-<n>` IDs (0 when there is none). IDs are
    /// never reused, so a record's key ID always names one key.
    pub fn next_kek_id(&self) -> String {
        let highest = self
            .keks
            .keys()
            .filter_map(|id| id.strip_prefix("kek-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("kek-{}", highest.saturating_add(1))
    }

    /// The ID of the KEK that wraps new data keys.
    pub fn active_kek_id(&self) -> &str {
        &self.active_kek_id
    }

    /// All KEK IDs, in sorted order.
    pub fn kek_ids(&self) -> impl Iterator<Item = &str> {
        self.keks.keys().map(String::as_str)
    }

    pub(crate) fn active_kek(&self) -> Option<&SecretKey> {
        self.keks.get(&self.active_kek_id)
    }

    #[cfg(any(feature = "decrypt", feature = "rotate", test))]
    pub(crate) fn kek(&self, kek_id: &str) -> Option<&SecretKey> {
        self.keks.get(kek_id)
    }

    pub(crate) fn fingerprint_key(&self) -> &SecretKey {
        &self.fingerprint_key
    }

    /// Parses the contents of a key ring file (format in the module docs).
    pub fn from_json(contents: &str) -> Result<Self, KeyError> {
        let file: KeyRingFile = serde_json::from_str(contents).map_err(|e| KeyError::Format {
            line: e.line(),
            column: e.column(),
        })?;
        if file.version != KEY_RING_FILE_VERSION {
            return Err(KeyError::UnsupportedVersion(file.version));
        }
        let mut keks = Vec::with_capacity(file.keks.len());
        for entry in &file.keks {
            validate_key_id(&entry.id)?;
            keks.push((
                entry.id.clone(),
                SecretKey::from_base64(&entry.id, &entry.key)?,
            ));
        }
        let fingerprint_key = SecretKey::from_base64("fingerprint_key", &file.fingerprint_key)?;
        Self::new(&file.active_kek_id, keks, fingerprint_key)
    }

    /// Builds a key ring from its two halves as the cloud stores them: the
    /// KEK ring (JSON, the file format without `fingerprint_key`) and the
    /// fingerprint key (standard base64 of 32 bytes).
    pub fn from_split_json(keks: &str, fingerprint_key_base64: &str) -> Result<Self, KeyError> {
        let file: KekRingFile = serde_json::from_str(keks).map_err(|e| KeyError::Format {
            line: e.line(),
            column: e.column(),
        })?;
        if file.version != KEY_RING_FILE_VERSION {
            return Err(KeyError::UnsupportedVersion(file.version));
        }
        let mut ring = Vec::with_capacity(file.keks.len());
        for entry in &file.keks {
            validate_key_id(&entry.id)?;
            ring.push((
                entry.id.clone(),
                SecretKey::from_base64(&entry.id, &entry.key)?,
            ));
        }
        let fingerprint_key = SecretKey::from_base64("fingerprint_key", fingerprint_key_base64)?;
        Self::new(&file.active_kek_id, ring, fingerprint_key)
    }

    /// Writes the key ring in the file format (pretty JSON, trailing newline).
    /// The returned text holds key material and is zeroed on drop.
    pub fn to_json(&self) -> Result<Zeroizing<String>, KeyError> {
        let file = KeyRingFile {
            version: KEY_RING_FILE_VERSION,
            active_kek_id: self.active_kek_id.clone(),
            keks: self
                .keks
                .iter()
                .map(|(id, key)| KekEntry {
                    id: id.clone(),
                    key: key.to_base64(),
                })
                .collect(),
            fingerprint_key: self.fingerprint_key.to_base64(),
        };
        // Allocate generously up front: a buffer that grows would leave copies
        // of the base64 keys behind in freed memory.
        let capacity = 512 + self.keks.len() * (KEY_ID_MAX_LEN + 128);
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        serde_json::to_writer_pretty(&mut *out, &file).map_err(|e| KeyError::Format {
            line: e.line(),
            column: e.column(),
        })?;
        out.push(b'\n');
        // serde_json writes UTF-8, and every byte here is ASCII anyway.
        let text = String::from_utf8(std::mem::take(&mut *out))
            .map_err(|_| KeyError::Format { line: 0, column: 0 })?;
        Ok(Zeroizing::new(text))
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("active_kek_id", &self.active_kek_id)
            .field("kek_ids", &self.keks.keys().collect::<Vec<_>>())
            .field("fingerprint_key", &self.fingerprint_key)
            .finish()
    }
}

/// Contents for a new key ring file: one fresh KEK with the given ID (active)
/// and a fresh fingerprint key. The admin CLI writes it with
/// [`FileKeyProvider::create`](crate::FileKeyProvider::create).
pub fn generate_key_ring_file(kek_id: &str) -> Result<Zeroizing<String>, KeyError> {
    KeyRing::generate(kek_id)?.to_json()
}

/// The on-disk shape. Wiped on drop because its strings hold base64 keys.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyRingFile {
    version: u32,
    active_kek_id: String,
    keks: Vec<KekEntry>,
    fingerprint_key: String,
}

/// The KEK half of the key ring, as the cloud's KEK secret holds it.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KekRingFile {
    version: u32,
    active_kek_id: String,
    keks: Vec<KekEntry>,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KekEntry {
    id: String,
    key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_ring() -> KeyRing {
        KeyRing::new(
            "kek-b",
            vec![
                ("kek-a".to_owned(), SecretKey::from_bytes([1; KEY_LEN])),
                ("kek-b".to_owned(), SecretKey::from_bytes([2; KEY_LEN])),
            ],
            SecretKey::from_bytes([3; KEY_LEN]),
        )
        .unwrap()
    }

    #[test]
    fn json_round_trip_keeps_every_key() {
        let ring = fixed_ring();
        let json = ring.to_json().unwrap();
        let back = KeyRing::from_json(&json).unwrap();
        assert_eq!(back.active_kek_id(), "kek-b");
        assert_eq!(back.kek_ids().collect::<Vec<_>>(), ["kek-a", "kek-b"]);
        assert_eq!(back.kek("kek-a").unwrap().expose_bytes(), &[1; KEY_LEN]);
        assert_eq!(back.kek("kek-b").unwrap().expose_bytes(), &[2; KEY_LEN]);
        assert_eq!(back.fingerprint_key().expose_bytes(), &[3; KEY_LEN]);
    }

    #[test]
    fn file_format_is_as_documented() {
        let json = fixed_ring().to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["active_kek_id"], "kek-b");
        assert_eq!(value["keks"][0]["id"], "kek-a");
        assert_eq!(value["keks"][0]["key"], BASE64.encode([1u8; KEY_LEN]));
        assert_eq!(value["fingerprint_key"], BASE64.encode([3u8; KEY_LEN]));
    }

    #[test]
    fn debug_shows_ids_but_no_key_material() {
        let ring = fixed_ring();
        let shown = format!("{ring:?}");
        assert!(shown.contains("kek-a") && shown.contains("kek-b"));
        assert!(!shown.contains(&BASE64.encode([1u8; KEY_LEN])));
        assert!(!shown.contains("[1, 1"));
        assert!(!shown.contains("1, 1, 1"));
        assert_eq!(
            format!("{:?}", SecretKey::from_bytes([7; KEY_LEN])),
            "SecretKey(***)"
        );
    }

    #[test]
    fn generated_rings_are_random_and_valid() {
        let first = KeyRing::from_json(&generate_key_ring_file("kek-2026-11-a").unwrap()).unwrap();
        let second = KeyRing::generate("kek-2026-11-a").unwrap();
        assert_eq!(first.active_kek_id(), "kek-2026-11-a");
        let a = first.kek("kek-2026-11-a").unwrap();
        let b = second.kek("kek-2026-11-a").unwrap();
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        assert_ne!(a.expose_bytes(), first.fingerprint_key().expose_bytes());
    }

    #[test]
    fn rejects_inconsistent_rings() {
        let fp = || SecretKey::from_bytes([9; KEY_LEN]);
        let kek = |id: &str, byte| (id.to_owned(), SecretKey::from_bytes([byte; KEY_LEN]));
        assert!(matches!(
            KeyRing::new("missing", vec![kek("kek-a", 1)], fp()),
            Err(KeyError::UnknownActiveKey(_))
        ));
        assert!(matches!(
            KeyRing::new("kek-a", vec![kek("kek-a", 1), kek("kek-a", 2)], fp()),
            Err(KeyError::DuplicateKeyId(_))
        ));
        assert!(matches!(
            KeyRing::new("kek-a", vec![kek("kek-a", 9)], fp()),
            Err(KeyError::FingerprintKeyReused)
        ));
        for bad_id in ["", "kek a", "kek/a", "ké", &"k".repeat(KEY_ID_MAX_LEN + 1)] {
            assert!(
                matches!(
                    KeyRing::new(bad_id, vec![kek(bad_id, 1)], fp()),
                    Err(KeyError::InvalidKeyId(_))
                ),
                "{bad_id:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_files_without_quoting_them() {
        let good_key = BASE64.encode([1u8; KEY_LEN]);
        let fp_key = BASE64.encode([2u8; KEY_LEN]);
        let file = |version: u32, key: &str, extra: &str| {
            format!(
                r#"{{"version":{version},"active_kek_id":"kek-a","keks":[{{"id":"kek-a","key":"{key}"}}],"fingerprint_key":"{fp_key}"{extra}}}"#
            )
        };
        assert!(KeyRing::from_json(&file(1, &good_key, "")).is_ok());
        assert!(matches!(
            KeyRing::from_json(&file(2, &good_key, "")),
            Err(KeyError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            KeyRing::from_json(&file(1, "not base64!", "")),
            Err(KeyError::InvalidBase64(_))
        ));
        let short = BASE64.encode([1u8; 16]);
        assert!(matches!(
            KeyRing::from_json(&file(1, &short, "")),
            Err(KeyError::InvalidKeyLength(_))
        ));
        assert!(matches!(
            KeyRing::from_json(&file(1, &good_key, r#","active_kek":"x""#)),
            Err(KeyError::Format { .. })
        ));
        // A key in the wrong place: the error must not repeat it.
        let misplaced = format!(r#"{{"version":"{good_key}"}}"#);
        let err = KeyRing::from_json(&misplaced).unwrap_err();
        assert!(!err.to_string().contains(&good_key), "{err}");
        assert!(!format!("{err:?}").contains(&good_key));
    }

    #[test]
    fn rotation_adds_an_active_key_and_keeps_the_old_one() {
        let mut ring = fixed_ring();
        ring.add_active_kek("kek-c").unwrap();
        assert_eq!(ring.active_kek_id(), "kek-c");
        assert_eq!(ring.kek_ids().count(), 3);
        assert!(matches!(
            ring.add_active_kek("kek-a"),
            Err(KeyError::DuplicateKeyId(_))
        ));
        assert!(matches!(
            ring.remove_kek("kek-c"),
            Err(KeyError::CannotRemoveActiveKey(_))
        ));
        ring.remove_kek("kek-a").unwrap();
        assert_eq!(ring.kek_ids().collect::<Vec<_>>(), ["kek-b", "kek-c"]);
    }

    #[test]
    fn next_kek_id_is_one_above_the_highest_version() {
        let mut ring = KeyRing::generate("kek-test").unwrap();
        assert_eq!(ring.next_kek_id(), "kek-1");
        ring.add_active_kek("kek-1").unwrap();
        ring.add_active_kek("kek-9").unwrap();
        ring.add_active_kek("kek-10").unwrap();
        assert_eq!(ring.next_kek_id(), "kek-11");
        // A retired version is never handed out again.
        ring.add_active_kek("kek-11").unwrap();
        ring.remove_kek("kek-10").unwrap();
        assert_eq!(ring.next_kek_id(), "kek-12");
    }

    #[test]
    fn split_json_gives_the_same_ring_as_the_file() {
        let kek = BASE64.encode([1u8; KEY_LEN]);
        let fp = BASE64.encode([2u8; KEY_LEN]);
        let keks = format!(
            r#"{{"version":1,"active_kek_id":"kek-1","keks":[{{"id":"kek-1","key":"{kek}"}}]}}"#
        );
        let ring = KeyRing::from_split_json(&keks, &fp).unwrap();
        assert_eq!(ring.active_kek_id(), "kek-1");
        assert_eq!(ring.kek("kek-1").unwrap().expose_bytes(), &[1; KEY_LEN]);
        assert_eq!(ring.fingerprint_key().expose_bytes(), &[2; KEY_LEN]);
        // The fingerprint key belongs in its own secret, not in the KEK one.
        let with_fp = format!(
            r#"{{"version":1,"active_kek_id":"kek-1","keks":[{{"id":"kek-1","key":"{kek}"}}],"fingerprint_key":"{fp}"}}"#
        );
        assert!(matches!(
            KeyRing::from_split_json(&with_fp, &fp),
            Err(KeyError::Format { .. })
        ));
        // And it must still differ from every KEK.
        assert!(matches!(
            KeyRing::from_split_json(&keks, &kek),
            Err(KeyError::FingerprintKeyReused)
        ));
    }
}
