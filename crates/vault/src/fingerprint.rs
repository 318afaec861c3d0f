//! Card fingerprints: recognise the same card number again (duplicate
//! detection, "this customer already saved this card") without decrypting.
//!
//! A fingerprint is HMAC-SHA256 over the PAN digits under a dedicated
//! fingerprint key. It is never a plain hash: card numbers have so little
//! entropy (a known BIN, the Luhn digit, 6–9 unknown digits) that an unkeyed
//! SHA-256 can be reversed by trying every number in minutes.

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::card::Pan;
use crate::keys::{KEY_LEN, SecretKey};

/// Separates this use of the fingerprint key from any future one (say, a
/// fingerprint of a bank account number), so equal inputs in different
/// domains never give equal fingerprints.
const PAN_DOMAIN: &[u8] = b"snakepay-vault/fingerprint/pan/v1\0";
/// SHA-256's block size: HMAC pads shorter keys to it with zero bytes.
const SHA256_BLOCK_LEN: usize = 64;

/// A keyed card fingerprint: 64 lowercase hex characters. Safe to store, index
/// and log; it reveals nothing about the card without the fingerprint key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a fingerprint read back from storage: 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        let valid =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self(text.to_owned()))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or("a fingerprint is 64 lowercase hex digits")
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> Self {
        fingerprint.0
    }
}

/// Computes the fingerprint of `pan` under `key`.
pub(crate) fn fingerprint(key: &SecretKey, pan: &Pan) -> Fingerprint {
    let mut mac = keyed_hmac(key);
    mac.update(PAN_DOMAIN);
    mac.update(pan.expose_digits().as_bytes());
    Fingerprint(hex::encode(mac.finalize().into_bytes()))
}

/// HMAC-SHA256 keyed with `key`, built without a fallible call: HMAC itself
/// zero-pads a key shorter than the hash block (RFC 2104, section 2), so
/// padding our 32-byte key to 64 bytes ourselves gives the same MAC as
/// `new_from_slice(key)` while the compiler sees that the length is right.
fn keyed_hmac(key: &SecretKey) -> Hmac<Sha256> {
    let mut block = zeroize::Zeroizing::new([0u8; SHA256_BLOCK_LEN]);
    if let Some(prefix) = block.first_chunk_mut::<KEY_LEN>() {
        prefix.copy_from_slice(key.expose_bytes());
    }
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(
        hmac::digest::generic_array::GenericArray::from_slice(block.as_slice()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pan(digits: &str) -> Pan {
        Pan::parse(digits).unwrap()
    }

    #[test]
    fn stable_for_the_same_card_and_key() {
        let key = SecretKey::from_bytes([5; KEY_LEN]);
        let first = fingerprint(&key, &pan("4242424242424242"));
        let again = fingerprint(&key, &pan("4242 4242 4242 4242"));
        assert_eq!(first, again);
        assert_eq!(first.as_str().len(), 64);
        assert!(Fingerprint::parse(first.as_str()).is_some());
    }

    #[test]
    fn differs_between_cards_and_between_keys() {
        let key = SecretKey::from_bytes([5; KEY_LEN]);
        let other_key = SecretKey::from_bytes([6; KEY_LEN]);
        let card = pan("4242424242424242");
        assert_ne!(
            fingerprint(&key, &card),
            fingerprint(&key, &pan("5555555555554444"))
        );
        assert_ne!(fingerprint(&key, &card), fingerprint(&other_key, &card));
    }

    #[test]
    fn is_keyed_not_a_plain_hash() {
        use sha2::Digest as _;
        let key = SecretKey::from_bytes([5; KEY_LEN]);
        let card = pan("4242424242424242");
        let plain = hex::encode(Sha256::digest(card.expose_digits().as_bytes()));
        let with_domain = hex::encode(Sha256::digest(
            [PAN_DOMAIN, card.expose_digits().as_bytes()].concat(),
        ));
        let fp = fingerprint(&key, &card);
        assert_ne!(fp.as_str(), plain);
        assert_ne!(fp.as_str(), with_domain);
        assert!(!fp.as_str().contains(card.expose_digits()));
    }

    #[test]
    fn zero_padded_key_matches_the_standard_construction() {
        let key = SecretKey::from_bytes(*b"0123456789abcdef0123456789abcdef");
        let mut ours = keyed_hmac(&key);
        ours.update(b"what do ya want for nothing?");
        let mut reference = Hmac::<Sha256>::new_from_slice(key.expose_bytes()).unwrap();
        reference.update(b"what do ya want for nothing?");
        assert_eq!(
            ours.finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn serde_uses_the_hex_string_and_validates_it() {
        let key = SecretKey::from_bytes([5; KEY_LEN]);
        let fp = fingerprint(&key, &pan("4242424242424242"));
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{fp}\""));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        assert!(serde_json::from_str::<Fingerprint>("\"abc\"").is_err());
        assert!(Fingerprint::parse(&"A".repeat(64)).is_none());
    }
}
