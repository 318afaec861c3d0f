//! Envelope encryption: [`Vault`] seals card data into a [`SealedRecord`].
//!
//! Each record gets its own random 256-bit data key. The data is encrypted
//! with AES-256-GCM under that data key, and the data key is encrypted
//! ("wrapped") with AES-256-GCM under the active key-encryption key (KEK),
//! each with its own random 96-bit nonce. Why the two layers: rotating a KEK
//! only re-wraps 32-byte data keys (`rewrap`, feature `rotate`) and never
//! touches the card data, and a KEK can live in a KMS that only ever sees
//! data keys.
//!
//! The caller's `aad` (the record's ID, such as the payment method ID) is
//! authenticated by both encryptions, so a sealed PAN copied onto another row
//! fails to open. The associated data of both layers also carry the format
//! version, and the data layer's a purpose label (`pan`, `cvc`, `raw`), so a
//! sealed CVC can never be opened as a PAN.
//!
//! Opening is compiled only with the `decrypt` feature, so a service built
//! without it (the External API) has no code path that turns a record back
//! into a card number.
//!
//! # Byte format, version 1
//!
//! Separate columns (recommended in PostgreSQL: `key_id text`,
//! `wrapped_data_key bytea`, `ciphertext bytea`):
//!
//! ```text
//! key_id            1–64 ASCII characters [A-Za-z0-9._-]
//! wrapped_data_key  61 bytes: version (0x01) | nonce (12) | encrypted data key (32) | GCM tag (16)
//! ciphertext        28+ bytes: nonce (12) | encrypted plaintext (n) | GCM tag (16)
//! ```
//!
//! Compact form (one `bytea`, [`SealedRecord::to_bytes`]):
//!
//! ```text
//! version (0x01) | key_id length (1 byte) | key_id | wrapped_data_key (61) | ciphertext
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

use crate::card::{Cvc, Pan};
use crate::fingerprint::{self, Fingerprint};
use crate::keys::{KEY_ID_MAX_LEN, KEY_LEN, KeyError, KeyRing, SecretKey};
use crate::provider::KeyProvider;

/// The record format this crate writes (and the only one it reads).
pub const FORMAT_VERSION: u8 = 1;
/// AES-GCM nonce length: 96 bits, the size GCM is designed for.
pub const NONCE_LEN: usize = 12;
/// AES-GCM authentication tag length: the full 128 bits.
pub const TAG_LEN: usize = 16;
/// Length of the `wrapped_data_key` part.
pub const WRAPPED_DATA_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;
/// Largest plaintext `seal` accepts. Card data is tens of bytes; the limit
/// keeps a bug from sealing megabytes into a card row.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Largest `aad` accepted: it is a record ID, not a payload.
pub const MAX_AAD_LEN: usize = 1024;

/// Labels that bind a ciphertext to the kind of data inside it.
const PURPOSE_RAW: &[u8] = b"raw";
const PURPOSE_PAN: &[u8] = b"pan";
const PURPOSE_CVC: &[u8] = b"cvc";

/// Why sealing, opening or re-wrapping failed. Never carries plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The record names a KEK that is not in the key ring (never loaded, or
    /// removed after a rotation).
    #[error("unknown key-encryption key {0:?}")]
    UnknownKeyId(String),
    /// The record's bytes do not have the version 1 layout.
    #[error("malformed sealed record: {0}")]
    Malformed(&'static str),
    /// Authentication failed: a byte was changed, the aad is not the one used
    /// when sealing, the purpose differs (a CVC opened as a PAN), or the KEK
    /// under this ID is not the one that sealed it. Deliberately one error:
    /// telling these apart would help an attacker, not an operator.
    #[error("sealed record failed authentication")]
    AuthenticationFailed,
    /// The decrypted bytes are not a valid card number or CVC (a record
    /// sealed with the generic `seal` and opened with a typed method).
    #[error("sealed record does not hold a valid {0}")]
    InvalidPlaintext(&'static str),
    #[error("plaintext longer than {MAX_PLAINTEXT_LEN} bytes")]
    PlaintextTooLong,
    #[error("aad longer than {MAX_AAD_LEN} bytes")]
    AadTooLong,
    #[error("AES-GCM encryption failed")]
    Encryption,
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("the key ring has no active key-encryption key")]
    NoActiveKey,
}

/// An encrypted value with everything needed to open it except the keys.
///
/// Not secret: it can be stored and logged (it shows only the key ID and
/// lengths in `Debug`, to keep logs short).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecord {
    key_id: String,
    wrapped_data_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl SealedRecord {
    /// Rebuilds a record from its three database columns, checking the layout
    /// (not the authenticity: that happens when it is opened).
    pub fn from_parts(
        key_id: impl Into<String>,
        wrapped_data_key: Vec<u8>,
        ciphertext: Vec<u8>,
    ) -> Result<Self, VaultError> {
        let key_id = key_id.into();
        if crate::keys::validate_key_id(&key_id).is_err() {
            return Err(VaultError::Malformed("invalid key ID"));
        }
        if wrapped_data_key.len() != WRAPPED_DATA_KEY_LEN {
            return Err(VaultError::Malformed(
                "wrapped data key has the wrong length",
            ));
        }
        if wrapped_data_key.first() != Some(&FORMAT_VERSION) {
            return Err(VaultError::Malformed("unsupported format version"));
        }
        if ciphertext.len() < NONCE_LEN + TAG_LEN {
            return Err(VaultError::Malformed("ciphertext too short"));
        }
        if ciphertext.len() > NONCE_LEN + MAX_PLAINTEXT_LEN + TAG_LEN {
            return Err(VaultError::Malformed("ciphertext too long"));
        }
        Ok(Self {
            key_id,
            wrapped_data_key,
            ciphertext,
        })
    }

    /// The ID of the KEK that wrapped the data key (a `text` column; index it
    /// to find the records a rotation still has to re-wrap).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Version byte, nonce, encrypted data key and tag (61 bytes).
    pub fn wrapped_data_key(&self) -> &[u8] {
        &self.wrapped_data_key
    }

    /// Nonce, encrypted data and tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The three columns: key ID, wrapped data key, ciphertext.
    pub fn into_parts(self) -> (String, Vec<u8>, Vec<u8>) {
        (self.key_id, self.wrapped_data_key, self.ciphertext)
    }

    /// The compact single-value form (layout in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + self.key_id.len() + self.wrapped_data_key.len() + self.ciphertext.len(),
        );
        out.push(FORMAT_VERSION);
        // A valid key ID has at most KEY_ID_MAX_LEN (64) bytes, so it fits.
        out.push(u8::try_from(self.key_id.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.wrapped_data_key);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses the compact form written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(VaultError::Malformed("empty"));
        };
        if version != FORMAT_VERSION {
            return Err(VaultError::Malformed("unsupported format version"));
        }
        let Some((&id_len, rest)) = rest.split_first() else {
            return Err(VaultError::Malformed("truncated key ID"));
        };
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > KEY_ID_MAX_LEN || rest.len() < id_len + WRAPPED_DATA_KEY_LEN {
            return Err(VaultError::Malformed("truncated record"));
        }
        let (id, rest) = rest.split_at(id_len);
        let (wrapped, ciphertext) = rest.split_at(WRAPPED_DATA_KEY_LEN);
        let key_id =
            std::str::from_utf8(id).map_err(|_| VaultError::Malformed("invalid key ID"))?;
        Self::from_parts(key_id, wrapped.to_vec(), ciphertext.to_vec())
    }
}

impl std::fmt::Debug for SealedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRecord")
            .field("key_id", &self.key_id)
            .field("wrapped_data_key_len", &self.wrapped_data_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals and (with feature `decrypt`) opens card data, and computes card
/// fingerprints, with the keys of one [`KeyRing`].
///
/// `Debug` shows key IDs only.
///
/// Opening exists only when the crate is built with the `decrypt` feature;
/// without it this does not compile:
///
#[cfg_attr(not(feature = "decrypt"), doc = "```compile_fail")]
#[cfg_attr(feature = "decrypt", doc = "```")]
/// fn open(vault: &snakepay_vault::Vault, record: &snakepay_vault::SealedRecord) {
///     let _ = vault.open_pan(record, b"pm_123");
/// }
/// ```
pub struct Vault {
    /// The current key ring. Readers take a snapshot (`Arc` clone) so a
    /// reload never changes keys under an operation in progress.
    keys: RwLock<Arc<KeyRing>>,
    /// Present when the vault reloads its ring from a provider.
    reload: Option<Reload>,
}

/// How a reloading vault refreshes its key ring.
struct Reload {
    provider: Arc<dyn KeyProvider>,
    /// Sealing checks for a new ring at most this often, so a rotation's new
    /// KEK is used by every instance within this time.
    interval: Duration,
    /// When the ring was last read (or tried).
    last: Mutex<Instant>,
}

/// How often a reloading vault reads its provider again while sealing.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("keys", &*self.ring())
            .field(
                "provider",
                &self.reload.as_ref().map(|r| r.provider.describe()),
            )
            .finish()
    }
}

impl Vault {
    /// A vault with a fixed key ring.
    pub fn new(keys: KeyRing) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            reload: None,
        }
    }

    /// Loads the key ring from `provider` once; it never changes afterwards.
    pub fn load(provider: &dyn KeyProvider) -> Result<Self, KeyError> {
        provider.load_key_ring().map(Self::new)
    }

    /// Loads the key ring from `provider` now, and again while running: when
    /// sealing or opening, at most every `interval`, and at once (rate-limited) when a
    /// record names a KEK the ring does not have. This is how a rotation's
    /// new KEK reaches running services: new records are sealed under it
    /// within `interval`, and records already re-wrapped under it open at
    /// once. A failed reload keeps the previous ring (and logs why).
    pub fn reloading(provider: Arc<dyn KeyProvider>, interval: Duration) -> Result<Self, KeyError> {
        let keys = provider.load_key_ring()?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            reload: Some(Reload {
                provider,
                interval,
                last: Mutex::new(Instant::now()),
            }),
        })
    }

    /// A snapshot of the current key ring.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring()
    }

    /// The ID of the KEK new records are sealed under.
    pub fn active_key_id(&self) -> String {
        self.ring().active_kek_id().to_owned()
    }

    fn ring(&self) -> Arc<KeyRing> {
        // A poisoned lock only means a panic elsewhere while swapping an
        // `Arc`; the value inside is still a whole ring.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reloads the ring from the provider if it is due, or at once when
    /// `forced` (a record named a KEK the ring lacks). Returns whether the
    /// ring changed.
    ///
    /// Forced reloads are not rate-limited: any delay would let a reader
    /// that just reloaded miss a KEK stored a moment later and fail on a
    /// record re-wrapped under it. They happen only for records under a KEK
    /// this instance has not seen, which outside a rotation means a KEK
    /// retired while still in use (`keys retire` refuses that); the cost is
    /// one read of a small file.
    fn refresh(&self, forced: bool) -> bool {
        let Some(reload) = &self.reload else {
            return false;
        };
        {
            let mut last = reload
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !forced && last.elapsed() < reload.interval {
                return false;
            }
            *last = Instant::now();
        }
        match reload.provider.load_key_ring() {
            Ok(ring) => {
                let changed = {
                    let current = self.ring();
                    current.active_kek_id() != ring.active_kek_id()
                        || !current.kek_ids().eq(ring.kek_ids())
                };
                if changed {
                    tracing::info!(
                        vault.active_kek_id = ring.active_kek_id(),
                        vault.kek_ids = ?ring.kek_ids().collect::<Vec<_>>(),
                        "vault key ring reloaded"
                    );
                }
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(ring);
                changed
            }
            Err(error) => {
                tracing::warn!(
                    vault.provider = %reload.provider.describe(),
                    error = %error,
                    "vault key ring could not be reloaded; keeping the current one"
                );
                false
            }
        }
    }

    /// Seals arbitrary bytes. `aad` is the ID of the record that will hold
    /// the result; the same `aad` must be passed to open it.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<SealedRecord, VaultError> {
        self.seal_with_purpose(PURPOSE_RAW, plaintext, aad)
    }

    /// Seals a card number (its digits only).
    pub fn seal_pan(&self, pan: &Pan, aad: &[u8]) -> Result<SealedRecord, VaultError> {
        self.seal_with_purpose(PURPOSE_PAN, pan.expose_digits().as_bytes(), aad)
    }

    /// Seals a CVC, to hand it to the integration service for one
    /// authorization. PCI DSS forbids keeping it afterwards: delete the record
    /// once the authorization is done.
    pub fn seal_cvc(&self, cvc: &Cvc, aad: &[u8]) -> Result<SealedRecord, VaultError> {
        self.seal_with_purpose(PURPOSE_CVC, cvc.expose_digits().as_bytes(), aad)
    }

    /// The keyed fingerprint of a card number (see `fingerprint.rs`). Uses
    /// the fingerprint key, never a KEK: fingerprints stay stable across KEK
    /// rotations.
    pub fn fingerprint(&self, pan: &Pan) -> Fingerprint {
        fingerprint::fingerprint(self.ring().fingerprint_key(), pan)
    }

    fn seal_with_purpose(
        &self,
        purpose: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<SealedRecord, VaultError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(VaultError::PlaintextTooLong);
        }
        self.refresh(false);
        let ring = self.ring();
        let key_id = ring.active_kek_id();
        let kek = ring.active_kek().ok_or(VaultError::NoActiveKey)?;

        let data_key = SecretKey::generate_raw().map_err(VaultError::Random)?;
        let ciphertext = encrypt(&data_key, &data_aad(purpose, aad)?, plaintext)?;
        let wrapped_data_key = wrap(kek, key_id, aad, &data_key)?;
        Ok(SealedRecord {
            key_id: key_id.to_owned(),
            wrapped_data_key,
            ciphertext,
        })
    }
}

#[cfg(feature = "decrypt")]
impl Vault {
    /// Opens a record made by [`seal`](Self::seal) with the same `aad`.
    pub fn open(
        &self,
        record: &SealedRecord,
        aad: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
        self.open_with_purpose(PURPOSE_RAW, record, aad)
    }

    /// Opens a record made by [`seal_pan`](Self::seal_pan) with the same `aad`.
    pub fn open_pan(&self, record: &SealedRecord, aad: &[u8]) -> Result<Pan, VaultError> {
        let digits = self.open_with_purpose(PURPOSE_PAN, record, aad)?;
        let text = std::str::from_utf8(&digits)
            .map_err(|_| VaultError::InvalidPlaintext("card number"))?;
        Pan::parse(text).map_err(|_| VaultError::InvalidPlaintext("card number"))
    }

    /// Opens a record made by [`seal_cvc`](Self::seal_cvc) with the same `aad`.
    pub fn open_cvc(&self, record: &SealedRecord, aad: &[u8]) -> Result<Cvc, VaultError> {
        let digits = self.open_with_purpose(PURPOSE_CVC, record, aad)?;
        let text = std::str::from_utf8(&digits).map_err(|_| VaultError::InvalidPlaintext("CVC"))?;
        Cvc::parse(text).map_err(|_| VaultError::InvalidPlaintext("CVC"))
    }

    fn open_with_purpose(
        &self,
        purpose: &[u8],
        record: &SealedRecord,
        aad: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
        let data_key = self.unwrap_data_key(record, aad)?;
        decrypt(&data_key, &data_aad(purpose, aad)?, record.ciphertext())
    }
}

#[cfg(feature = "rotate")]
impl Vault {
    /// Whether `record` is wrapped under a KEK other than the active one.
    pub fn needs_rewrap(&self, record: &SealedRecord) -> bool {
        record.key_id() != self.ring().active_kek_id()
    }

    /// Re-wraps the record's data key under the active KEK; the ciphertext is
    /// returned unchanged, so the card data is never decrypted. `aad` must be
    /// the one used when sealing, because it is bound into the wrapped key.
    ///
    /// Once every record is re-wrapped, the old KEK can be removed from the
    /// key ring ([`KeyRing::remove_kek`]).
    pub fn rewrap(&self, record: &SealedRecord, aad: &[u8]) -> Result<SealedRecord, VaultError> {
        let data_key = self.unwrap_data_key(record, aad)?;
        let ring = self.ring();
        let key_id = ring.active_kek_id();
        let kek = ring.active_kek().ok_or(VaultError::NoActiveKey)?;
        Ok(SealedRecord {
            key_id: key_id.to_owned(),
            wrapped_data_key: wrap(kek, key_id, aad, &data_key)?,
            ciphertext: record.ciphertext.clone(),
        })
    }
}

#[cfg(any(feature = "decrypt", feature = "rotate"))]
impl Vault {
    /// Unwraps the record's data key. A record under a KEK this ring lacks
    /// makes a reloading vault read its provider again first: during a
    /// rotation, another instance may have re-wrapped the record under the
    /// new KEK before this one saw it.
    fn unwrap_data_key(&self, record: &SealedRecord, aad: &[u8]) -> Result<SecretKey, VaultError> {
        self.refresh(false);
        let mut ring = self.ring();
        if ring.kek(record.key_id()).is_none() && self.refresh(true) {
            ring = self.ring();
        }
        let kek = ring
            .kek(record.key_id())
            .ok_or_else(|| VaultError::UnknownKeyId(record.key_id().to_owned()))?;
        let Some((&version, encrypted)) = record.wrapped_data_key().split_first() else {
            return Err(VaultError::Malformed("empty wrapped data key"));
        };
        if version != FORMAT_VERSION {
            return Err(VaultError::Malformed("unsupported format version"));
        }
        let key_bytes = decrypt(kek, &wrap_aad(record.key_id(), aad)?, encrypted)?;
        SecretKey::from_slice(&key_bytes).ok_or(VaultError::Malformed(
            "wrapped data key has the wrong length",
        ))
    }
}

/// Wraps a data key under a KEK: `version | nonce | encrypted key | tag`.
fn wrap(
    kek: &SecretKey,
    key_id: &str,
    aad: &[u8],
    data_key: &SecretKey,
) -> Result<Vec<u8>, VaultError> {
    let sealed = encrypt(kek, &wrap_aad(key_id, aad)?, data_key.expose_bytes())?;
    let mut out = Vec::with_capacity(WRAPPED_DATA_KEY_LEN);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Associated data for wrapping a data key. Every field is length-prefixed so
/// two different (key ID, aad) pairs can never encode to the same bytes.
fn wrap_aad(key_id: &str, aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut out = b"snakepay-vault/data-key".to_vec();
    out.push(FORMAT_VERSION);
    push_prefixed(&mut out, key_id.as_bytes())?;
    push_prefixed(&mut out, aad)?;
    Ok(out)
}

/// Associated data for encrypting the payload.
fn data_aad(purpose: &[u8], aad: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut out = b"snakepay-vault/data".to_vec();
    out.push(FORMAT_VERSION);
    push_prefixed(&mut out, purpose)?;
    push_prefixed(&mut out, aad)?;
    Ok(out)
}

fn push_prefixed(out: &mut Vec<u8>, field: &[u8]) -> Result<(), VaultError> {
    if field.len() > MAX_AAD_LEN {
        return Err(VaultError::AadTooLong);
    }
    let len = u16::try_from(field.len()).map_err(|_| VaultError::AadTooLong)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// AES-256-GCM with a fresh random nonce: `nonce | ciphertext | tag`.
///
/// Random 96-bit nonces are safe here because every data key encrypts exactly
/// one message, and a KEK wraps far fewer than the 2^32 keys after which
/// NIST SP 800-38D asks for a new key.
fn encrypt(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.expose_bytes()));
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(VaultError::Random)?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| VaultError::Encryption)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The inverse of [`encrypt`]. Any change to the nonce, ciphertext, tag, key
/// or aad gives `AuthenticationFailed`, never a panic.
#[cfg(any(feature = "decrypt", feature = "rotate"))]
fn decrypt(
    key: &SecretKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
    let Some((nonce, rest)) = sealed.split_first_chunk::<NONCE_LEN>() else {
        return Err(VaultError::Malformed("ciphertext too short"));
    };
    if rest.len() < TAG_LEN {
        return Err(VaultError::Malformed("ciphertext too short"));
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.expose_bytes()));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: rest, aad })
        .map(zeroize::Zeroizing::new)
        .map_err(|_| VaultError::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(active: &str) -> KeyRing {
        KeyRing::new(
            active,
            vec![
                ("kek-a".to_owned(), SecretKey::from_bytes([1; KEY_LEN])),
                ("kek-b".to_owned(), SecretKey::from_bytes([2; KEY_LEN])),
            ],
            SecretKey::from_bytes([3; KEY_LEN]),
        )
        .unwrap()
    }

    #[test]
    fn sealed_record_has_the_documented_layout() {
        let vault = Vault::new(ring("kek-a"));
        let pan = Pan::parse("4242424242424242").unwrap();
        let record = vault.seal_pan(&pan, b"pm_123").unwrap();
        assert_eq!(record.key_id(), "kek-a");
        assert_eq!(record.wrapped_data_key().len(), WRAPPED_DATA_KEY_LEN);
        assert_eq!(record.wrapped_data_key()[0], FORMAT_VERSION);
        assert_eq!(record.ciphertext().len(), NONCE_LEN + 16 + TAG_LEN);

        let bytes = record.to_bytes();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(bytes[1], 5);
        assert_eq!(&bytes[2..7], b"kek-a");
        assert_eq!(
            bytes.len(),
            2 + 5 + WRAPPED_DATA_KEY_LEN + record.ciphertext().len()
        );
        assert_eq!(SealedRecord::from_bytes(&bytes).unwrap(), record);

        let (id, wrapped, ciphertext) = record.clone().into_parts();
        assert_eq!(
            SealedRecord::from_parts(id, wrapped, ciphertext).unwrap(),
            record
        );
    }

    #[test]
    fn ciphertext_never_contains_the_plaintext() {
        let vault = Vault::new(ring("kek-a"));
        let pan = Pan::parse("4242424242424242").unwrap();
        let record = vault.seal_pan(&pan, b"pm_123").unwrap();
        let bytes = record.to_bytes();
        assert!(
            !bytes
                .windows(16)
                .any(|w| w == pan.expose_digits().as_bytes())
        );
        assert!(!format!("{record:?}").contains("4242"));
        // Fresh data key and nonce each time: equal input, different output.
        assert_ne!(vault.seal_pan(&pan, b"pm_123").unwrap(), record);
    }

    #[test]
    fn rejects_malformed_layouts() {
        let vault = Vault::new(ring("kek-a"));
        let record = vault.seal(b"hello", b"id").unwrap();
        let bytes = record.to_bytes();
        assert!(SealedRecord::from_bytes(&[]).is_err());
        assert!(SealedRecord::from_bytes(&[FORMAT_VERSION]).is_err());
        assert!(SealedRecord::from_bytes(&[2, 5]).is_err());
        for len in 0..bytes
            .len()
            .min(2 + 5 + WRAPPED_DATA_KEY_LEN + NONCE_LEN + TAG_LEN)
        {
            assert!(SealedRecord::from_bytes(&bytes[..len]).is_err(), "{len}");
        }
        let mut bad_version = bytes.clone();
        bad_version[0] = 2;
        assert!(SealedRecord::from_bytes(&bad_version).is_err());
        assert!(SealedRecord::from_parts("kek a", vec![1; 61], vec![0; 40]).is_err());
        assert!(SealedRecord::from_parts("kek-a", vec![1; 60], vec![0; 40]).is_err());
        assert!(SealedRecord::from_parts("kek-a", vec![2; 61], vec![0; 40]).is_err());
        assert!(SealedRecord::from_parts("kek-a", vec![1; 61], vec![0; 27]).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let vault = Vault::new(ring("kek-a"));
        assert!(matches!(
            vault.seal(&vec![0; MAX_PLAINTEXT_LEN + 1], b"id"),
            Err(VaultError::PlaintextTooLong)
        ));
        assert!(matches!(
            vault.seal(b"x", &vec![0; MAX_AAD_LEN + 1]),
            Err(VaultError::AadTooLong)
        ));
        assert!(vault.seal(b"", b"").is_ok());
    }

    #[test]
    fn fingerprint_uses_the_fingerprint_key() {
        let pan = Pan::parse("4242424242424242").unwrap();
        let a = Vault::new(ring("kek-a")).fingerprint(&pan);
        // Same fingerprint key, different active KEK: same fingerprint.
        let b = Vault::new(ring("kek-b")).fingerprint(&pan);
        assert_eq!(a, b);
        let other = KeyRing::new(
            "kek-a",
            vec![("kek-a".to_owned(), SecretKey::from_bytes([1; KEY_LEN]))],
            SecretKey::from_bytes([4; KEY_LEN]),
        )
        .unwrap();
        assert_ne!(Vault::new(other).fingerprint(&pan), a);
    }
}
