//! Typed, prefixed, opaque IDs that route themselves.
//!
//! Every ID is `<prefix>_<29 characters>`, the characters being 145 bits in
//! lower-case Crockford base32 (a leading zero bit, then 144 bits):
//!
//! | bits | what | why |
//! | --- | --- | --- |
//! | 48 | Unix milliseconds | IDs sort by creation time, so B-tree inserts stay at the right edge and cursors are cheap |
//! | 8 | region number | a request by ID reaches the right regional deployment |
//! | 8 | shard number | a request by ID reaches its shard without a lookup |
//! | 80 | random (OS CSPRNG) | IDs cannot be guessed or enumerated |
//!
//! The alphabet is in ASCII order, so the textual order of two IDs of one kind
//! is their creation order. The layout is ours: clients must treat IDs as
//! opaque strings, which is what the prefix-and-noise look tells them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Lower-case Crockford base32: no i, l, o, u, and in ASCII order.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_BYTES: usize = 18;
/// 145 bits / 5 bits per character.
const BODY_CHARS: usize = 29;
const RANDOM_BYTES: usize = 10;

/// The region an ID was created in, as a small number (the region's code,
/// e.g. `eu-1`, maps to it in configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegionNumber(pub u8);

/// The shard that holds an object. Shard numbers start at 0 in every region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardNumber(pub u8);

impl fmt::Display for RegionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ShardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A kind of object that has IDs: its wire prefix and a human name for errors.
pub trait IdKind {
    const PREFIX: &'static str;
    const NAME: &'static str;
}

/// An ID of kind `K`. The type parameter keeps a refund ID from being passed
/// where a payment intent ID is expected.
pub struct Id<K> {
    body: [u8; BODY_BYTES],
    kind: PhantomData<fn() -> K>,
}

/// Why a string is not an ID of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an ID starting with `{expected}_`")]
    WrongPrefix { expected: &'static str },
    #[error("malformed {kind} ID")]
    Malformed { kind: &'static str },
}

/// The parts an ID is made from. Callers pass the clock and the randomness in,
/// so tests can build exact IDs; services use [`Id::generate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdParts {
    pub unix_ms: u64,
    pub region: RegionNumber,
    pub shard: ShardNumber,
    pub random: [u8; RANDOM_BYTES],
}

/// The OS random source failed: there is no safe fallback for an unguessable ID.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomnessUnavailable(String);

/// Fills `bytes` from the OS CSPRNG: the one source of randomness for IDs,
/// keys and secrets.
pub fn fill_random(bytes: &mut [u8]) -> Result<(), RandomnessUnavailable> {
    getrandom::fill(bytes).map_err(|e| RandomnessUnavailable(e.to_string()))
}

/// The last (time, random) handed out by this process.
static LAST_GENERATED: std::sync::Mutex<(u64, u128)> = std::sync::Mutex::new((0, 0));

const RANDOM_MAX: u128 = (1 << (8 * RANDOM_BYTES)) - 1;

/// Time and random part of the next ID, strictly greater than the last one
/// of this process. Within one millisecond (or if the clock steps back) the
/// random part grows by a random step of up to 2^32 rather than by one, so a
/// known ID does not reveal the next.
fn next_time_and_random() -> Result<(u64, [u8; RANDOM_BYTES]), RandomnessUnavailable> {
    let mut fresh = [0_u8; 16];
    fill_random(&mut fresh[16 - RANDOM_BYTES..])?;
    let fresh = u128::from_be_bytes(fresh);
    let mut step = [0_u8; 4];
    fill_random(&mut step)?;
    let step = u128::from(u32::from_be_bytes(step)) + 1;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    // A poisoned lock only means another thread panicked mid-update of two
    // integers; the value is still usable.
    let mut last = LAST_GENERATED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let next = if now_ms > last.0 {
        (now_ms, fresh)
    } else {
        match last.1.checked_add(step).filter(|r| *r <= RANDOM_MAX) {
            Some(random) => (last.0, random),
            // The random space of this millisecond is used up: borrow the next.
            None => (last.0 + 1, fresh),
        }
    };
    *last = next;
    let bytes = next.1.to_be_bytes();
    let mut random = [0_u8; RANDOM_BYTES];
    random.copy_from_slice(&bytes[16 - RANDOM_BYTES..]);
    Ok((next.0, random))
}

impl<K: IdKind> Id<K> {
    pub fn from_parts(parts: IdParts) -> Self {
        let mut body = [0_u8; BODY_BYTES];
        let time = parts.unix_ms.to_be_bytes();
        // The top two bytes of the 64-bit time are dropped: 48 bits of
        // milliseconds last until the year 10889.
        body[..6].copy_from_slice(&time[2..]);
        body[6] = parts.region.0;
        body[7] = parts.shard.0;
        body[8..].copy_from_slice(&parts.random);
        Id {
            body,
            kind: PhantomData,
        }
    }

    /// A new ID created now, in `region` and `shard`, with 80 random bits.
    /// IDs generated by one process are strictly increasing (see
    /// [`next_time_and_random`]), so objects created in one transaction list
    /// in creation order.
    pub fn generate(
        region: RegionNumber,
        shard: ShardNumber,
    ) -> Result<Self, RandomnessUnavailable> {
        let (unix_ms, random) = next_time_and_random()?;
        Ok(Self::from_parts(IdParts {
            unix_ms,
            region,
            shard,
            random,
        }))
    }

    pub fn parts(&self) -> IdParts {
        let mut time = [0_u8; 8];
        time[2..].copy_from_slice(&self.body[..6]);
        let mut random = [0_u8; RANDOM_BYTES];
        random.copy_from_slice(&self.body[8..]);
        IdParts {
            unix_ms: u64::from_be_bytes(time),
            region: RegionNumber(self.body[6]),
            shard: ShardNumber(self.body[7]),
            random,
        }
    }

    pub fn region(&self) -> RegionNumber {
        RegionNumber(self.body[6])
    }

    pub fn shard(&self) -> ShardNumber {
        ShardNumber(self.body[7])
    }

    /// Parses `<prefix>_<body>`; any other prefix, length or character is refused.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let body = text
            .strip_prefix(K::PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .ok_or(IdError::WrongPrefix {
                expected: K::PREFIX,
            })?;
        let malformed = IdError::Malformed { kind: K::NAME };
        if body.len() != BODY_CHARS {
            return Err(malformed);
        }
        let mut bits: u32 = 0;
        let mut bit_count = 0;
        let mut bytes = [0_u8; BODY_BYTES];
        let mut out = 0;
        for (position, character) in body.bytes().enumerate() {
            let value = decode_char(character).ok_or(malformed.clone())?;
            // The first character carries the padding bit, which must be 0.
            if position == 0 && value >= 16 {
                return Err(malformed);
            }
            bits = (bits << 5) | u32::from(value);
            bit_count += 5;
            if position == 0 {
                // Drop the padding bit so that the rest aligns on bytes.
                bit_count -= 1;
            }
            while bit_count >= 8 {
                bit_count -= 8;
                let byte =
                    u8::try_from((bits >> bit_count) & 0xff).map_err(|_| malformed.clone())?;
                *bytes.get_mut(out).ok_or(malformed.clone())? = byte;
                out += 1;
            }
            bits &= (1 << bit_count) - 1;
        }
        if out != BODY_BYTES {
            return Err(malformed);
        }
        Ok(Id {
            body: bytes,
            kind: PhantomData,
        })
    }

    fn encode_body(&self) -> [u8; BODY_CHARS] {
        let mut text = [b'0'; BODY_CHARS];
        // Start with the zero padding bit already "in" the accumulator.
        let mut bits: u32 = 0;
        let mut bit_count = 1;
        let mut position = 0;
        for &byte in &self.body {
            bits = (bits << 8) | u32::from(byte);
            bit_count += 8;
            while bit_count >= 5 {
                bit_count -= 5;
                let index = ((bits >> bit_count) & 0x1f) as usize;
                if let (Some(slot), Some(&character)) =
                    (text.get_mut(position), ALPHABET.get(index))
                {
                    *slot = character;
                }
                position += 1;
            }
            bits &= (1 << bit_count) - 1;
        }
        text
    }
}

fn decode_char(character: u8) -> Option<u8> {
    ALPHABET
        .iter()
        .position(|&c| c == character)
        .and_then(|p| u8::try_from(p).ok())
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.encode_body();
        f.write_str(K::PREFIX)?;
        f.write_str("_")?;
        // The alphabet is ASCII, so this is always valid UTF-8.
        f.write_str(std::str::from_utf8(&body).map_err(|_| fmt::Error)?)
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Id::parse(s)
    }
}

// Manual impls: derives would demand `K: Clone` etc. of the marker types.
impl<K> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Id<K> {}
impl<K> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body
    }
}
impl<K> Eq for Id<K> {}
impl<K> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Id<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.body.cmp(&other.body)
    }
}
impl<K> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.body.hash(state);
    }
}

impl<K: IdKind> Serialize for Id<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Id::parse(&text).map_err(serde::de::Error::custom)
    }
}

macro_rules! id_kinds {
    ($($(#[$doc:meta])* $alias:ident, $marker:ident, $prefix:literal, $name:literal;)*) => {
        $(
            #[doc = concat!("Marker for [`", stringify!($alias), "`] (`", $prefix, "_…`).")]
            #[derive(Debug)]
            pub enum $marker {}
            impl IdKind for $marker {
                const PREFIX: &'static str = $prefix;
                const NAME: &'static str = $name;
            }
            $(#[$doc])*
            pub type $alias = Id<$marker>;
        )*
    };
}

id_kinds! {
    /// A merchant account; its shard is the merchant's home shard.
    MerchantId, MerchantKind, "acct", "merchant";
    /// A PaymentIntent.
    PaymentIntentId, PaymentIntentKind, "pi", "payment intent";
    /// One authorization attempt of an intent; processor idempotency keys derive from it.
    AttemptId, AttemptKind, "pa", "payment attempt";
    /// The charge an attempt produced (`latest_charge`).
    ChargeId, ChargeKind, "ch", "charge";
    /// A refund.
    RefundId, RefundKind, "re", "refund";
    /// A customer.
    CustomerId, CustomerKind, "cus", "customer";
    /// A tokenized payment method (card data lives encrypted in the vault).
    PaymentMethodId, PaymentMethodKind, "pm", "payment method";
    /// An event (webhook payload).
    EventId, EventKind, "evt", "event";
    /// A merchant's webhook endpoint.
    WebhookEndpointId, WebhookEndpointKind, "we", "webhook endpoint";
    /// An API request, as echoed in `Request-Id`.
    RequestId, RequestKind, "req", "request";
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(unix_ms: u64, random: [u8; RANDOM_BYTES]) -> IdParts {
        IdParts {
            unix_ms,
            region: RegionNumber(3),
            shard: ShardNumber(1),
            random,
        }
    }

    #[test]
    fn an_id_has_its_prefix_and_a_29_character_body() {
        let id = PaymentIntentId::from_parts(parts(1_700_000_000_000, [7; RANDOM_BYTES]));
        let text = id.to_string();
        assert!(text.starts_with("pi_"), "{text}");
        assert_eq!(text.len(), 3 + BODY_CHARS);
        assert_eq!(PaymentIntentId::parse(&text).unwrap(), id);
    }

    #[test]
    fn region_and_shard_and_time_are_recoverable() {
        let id = RefundId::from_parts(parts(1_234_567, [0xff; RANDOM_BYTES]));
        let back = RefundId::parse(&id.to_string()).unwrap();
        assert_eq!(back.region(), RegionNumber(3));
        assert_eq!(back.shard(), ShardNumber(1));
        assert_eq!(back.parts().unix_ms, 1_234_567);
        assert_eq!(back.parts().random, [0xff; RANDOM_BYTES]);
    }

    #[test]
    fn foreign_prefixes_and_malformed_bodies_are_rejected() {
        let charge = ChargeId::from_parts(parts(1, [1; RANDOM_BYTES])).to_string();
        assert_eq!(
            PaymentIntentId::parse(&charge),
            Err(IdError::WrongPrefix { expected: "pi" })
        );
        let body = &charge[3..];
        for bad in [
            String::new(),
            "pi_".to_owned(),
            format!("pi{body}"),
            format!("pi_{}", &body[1..]),
            format!("pi_{body}0"),
            format!("pi_{}", body.to_uppercase()),
            format!("pi_{}i", &body[..BODY_CHARS - 1]),
            format!("pi_z{}", &body[1..]),
            format!("pi__{}", &body[1..]),
        ] {
            assert!(
                PaymentIntentId::parse(&bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        // A customer prefix is not a prefix match for "cu".
        assert!(CustomerId::parse(&format!("cu_{body}")).is_err());
    }

    #[test]
    fn generated_ids_are_distinct_and_carry_the_requested_route() {
        let a = EventId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
        let b = EventId::generate(RegionNumber(1), ShardNumber(0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.shard(), ShardNumber(0));
        assert_eq!(a.region(), RegionNumber(1));
    }

    #[test]
    fn ids_generated_by_one_process_are_strictly_increasing() {
        let ids: Vec<EventId> = (0..2_000)
            .map(|_| EventId::generate(RegionNumber(1), ShardNumber(0)).unwrap())
            .collect();
        for pair in ids.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{} then {}: {:?} {:?}",
                pair[0],
                pair[1],
                pair[0].parts(),
                pair[1].parts()
            );
            assert!(pair[0].to_string() < pair[1].to_string());
        }
    }

    #[test]
    fn serde_uses_the_textual_form() {
        let id = CustomerId::from_parts(parts(99, [5; RANDOM_BYTES]));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<CustomerId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<CustomerId>("\"cus_nope\"").is_err());
    }

    proptest! {
        #[test]
        fn any_id_round_trips_through_text(unix_ms in 0_u64..(1 << 48), region: u8, shard: u8, random: [u8; RANDOM_BYTES]) {
            let id = AttemptId::from_parts(IdParts { unix_ms, region: RegionNumber(region), shard: ShardNumber(shard), random });
            let parsed = AttemptId::parse(&id.to_string()).unwrap();
            prop_assert_eq!(parsed, id);
            prop_assert_eq!(parsed.parts(), id.parts());
        }

        #[test]
        fn text_order_is_creation_order(a in 0_u64..(1 << 48), b in 0_u64..(1 << 48), ra: [u8; RANDOM_BYTES], rb: [u8; RANDOM_BYTES]) {
            let first = PaymentIntentId::from_parts(parts(a, ra));
            let second = PaymentIntentId::from_parts(parts(b, rb));
            if a < b {
                prop_assert!(first.to_string() < second.to_string());
                prop_assert!(first < second);
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,40}") {
            let _ = PaymentIntentId::parse(&text);
        }
    }
}
