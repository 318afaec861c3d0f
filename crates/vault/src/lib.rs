//! Snakepay's card vault: card data types and envelope encryption.
//!
//! The External API parses and seals cards with this crate but cannot open
//! them; the integration service, the only part that talks to the processor,
//! builds it with the `decrypt` feature. PCI DSS rules shape every type here:
//! card numbers and CVCs are never printed, serialized or stored in clear.
//!
//! # Layout
//!
//! - `card.rs` — [`Pan`], [`Cvc`], [`Expiry`] (parse, don't validate; masked
//!   `Debug`; zeroized), [`CardSummary`] (the only card data stored in clear)
//!   and [`CardError`] with its Stripe error codes.
//! - `luhn.rs` — the Luhn check digit.
//! - `brand.rs` — [`CardBrand`] detection from the leading digits.
//! - `keys.rs` — [`SecretKey`], the [`KeyRing`] of versioned key-encryption
//!   keys plus the separate fingerprint key, its JSON file format,
//!   [`generate_key_ring_file`].
//! - `provider.rs` — [`KeyProvider`]: [`FileKeyProvider`] (local key ring
//!   file) and [`EnvKeyProvider`] (the cloud: two Secrets Manager secrets
//!   injected into the environment); [`key_provider`] picks one by name.
//! - `envelope.rs` — [`Vault`] (seal; open with `decrypt`; rewrap with
//!   `rotate`; optional reloading of the ring during a rotation) and the
//!   [`SealedRecord`] storage format.
//! - `fingerprint.rs` — keyed HMAC-SHA256 card [`Fingerprint`]s.
//!
//! # Cargo features
//!
//! - `decrypt` — `Vault::open`, `Vault::open_pan`, `Vault::open_cvc`. Only
//!   the integration service enables it (and `snakepay-webhooks`, which it
//!   runs); `tests/decrypt_boundary.rs` fails if another package does.
//! - `rotate` — `Vault::rewrap` and `Vault::needs_rewrap`, which decrypt data
//!   keys (never card data) to re-wrap them under the active KEK. Only the
//!   admin CLI enables it.
//!
//! Neither feature is a cryptographic boundary on its own: KEKs are symmetric,
//! so a service that can seal with the local key ring file also holds what it
//! takes to unwrap. The features keep the decrypting code out of the services
//! that must not have it. A hard boundary needs wrapping done by a KMS whose
//! permissions let the External API encrypt but not decrypt; the cloud
//! provider does not do that yet (docs/security.md, "Key management").

mod brand;
mod card;
mod envelope;
mod fingerprint;
mod keys;
mod luhn;
mod provider;

pub use brand::CardBrand;
pub use card::{CardError, CardSummary, Cvc, Expiry, PAN_MAX_DIGITS, PAN_MIN_DIGITS, Pan};
pub use envelope::{
    DEFAULT_RELOAD_INTERVAL, FORMAT_VERSION, MAX_AAD_LEN, MAX_PLAINTEXT_LEN, NONCE_LEN,
    SealedRecord, TAG_LEN, Vault, VaultError, WRAPPED_DATA_KEY_LEN,
};
pub use fingerprint::Fingerprint;
pub use keys::{
    KEY_ID_MAX_LEN, KEY_LEN, KEY_RING_FILE_VERSION, KeyError, KeyRing, SecretKey,
    generate_key_ring_file, validate_key_id,
};
pub use provider::{
    EnvKeyProvider, FINGERPRINT_KEY_VARIABLE, FileKeyProvider, KEK_RING_VARIABLE, KeyProvider,
    key_provider,
};
