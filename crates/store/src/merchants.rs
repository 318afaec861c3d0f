//! Merchants and their API keys, in the region's control database.
//!
//! An API key reads `sk_test_<region><key id><secret>` (hex): the region lets
//! any region recognise a foreign key without a lookup, the key ID finds the
//! row with one index probe, and the secret part is checked by comparing
//! keyed hashes in constant time. Keys are never stored, only their
//! HMAC-SHA256 under a server-side secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use snakepay_domain::ids::{MerchantId, RegionNumber, ShardNumber};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::unix_now;

const KEY_ID_BYTES: usize = 6;
const KEY_SECRET_BYTES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Publishable,
}

impl KeyKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::Secret => "secret",
            KeyKind::Publishable => "publishable",
        }
    }

    fn prefix(self, livemode: bool) -> &'static str {
        match (self, livemode) {
            (KeyKind::Secret, false) => "sk_test_",
            (KeyKind::Secret, true) => "sk_live_",
            (KeyKind::Publishable, false) => "pk_test_",
            (KeyKind::Publishable, true) => "pk_live_",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KycStatus {
    Pending,
    Verified,
    Rejected,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KycStatus::Pending => "pending",
            KycStatus::Verified => "verified",
            KycStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<KycStatus> {
        [KycStatus::Pending, KycStatus::Verified, KycStatus::Rejected]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// The server-side secret API keys are hashed under. Masked `Debug`.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(***)")
    }
}

impl KeyHasher {
    /// At least 32 bytes of secret (configuration checks the length).
    pub fn new(secret: &[u8]) -> anyhow::Result<KeyHasher> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .map_err(|_| anyhow::anyhow!("invalid key-hashing secret length"))?;
        Ok(KeyHasher { mac })
    }

    fn hash(&self, key: &str) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Who a request is from, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub merchant_id: MerchantId,
    pub livemode: bool,
    pub kind: KeyKind,
    pub key_id: String,
    /// The merchant's own rate limit for this mode, if it has one.
    pub rate_limit_per_second: Option<u32>,
}

impl AuthContext {
    pub fn shard(&self) -> ShardNumber {
        self.merchant_id.shard()
    }
}

/// Why a key was refused. The API maps each to 401/403 with its own message.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid API Key provided")]
    Invalid,
    #[error("This API key has been revoked")]
    Revoked,
    #[error("This API key belongs to region {0}")]
    OtherRegion(RegionNumber),
    #[error("Live mode is not active for this account until its verification (KYC) is complete")]
    NotVerified,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub id: MerchantId,
    pub legal_name: String,
    pub country: String,
    pub home_region: String,
    pub kyc_status: KycStatus,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMerchant {
    pub legal_name: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
}

/// The shard with the fewest merchants: spreads merchants evenly, and a new
/// shard fills up first.
pub async fn least_loaded_shard(
    control: &PgPool,
    shard_count: usize,
) -> Result<ShardNumber, sqlx::Error> {
    let counts: Vec<(i16, i64)> =
        sqlx::query_as("select shard, count(*) from merchants group by shard")
            .fetch_all(control)
            .await?;
    let shard = (0..shard_count)
        .filter_map(|n| u8::try_from(n).ok())
        .min_by_key(|&n| {
            counts
                .iter()
                .find(|(shard, _)| *shard == i16::from(n))
                .map_or(0, |(_, count)| *count)
        })
        .unwrap_or(0);
    Ok(ShardNumber(shard))
}

pub async fn create_merchant(
    control: &PgPool,
    region_code: &str,
    region: RegionNumber,
    shard: ShardNumber,
    new: &NewMerchant,
) -> anyhow::Result<Merchant> {
    let id = MerchantId::generate(region, shard)?;
    let created = unix_now();
    sqlx::query(
        "insert into merchants (id, legal_name, country, home_region, shard, created)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.to_string())
    .bind(&new.legal_name)
    .bind(&new.country)
    .bind(region_code)
    .bind(i16::from(shard.0))
    .bind(created)
    .execute(control)
    .await?;
    Ok(Merchant {
        id,
        legal_name: new.legal_name.clone(),
        country: new.country.clone(),
        home_region: region_code.to_owned(),
        kyc_status: KycStatus::Pending,
        created,
    })
}

pub async fn set_kyc_status(
    control: &PgPool,
    merchant: MerchantId,
    status: KycStatus,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("update merchants set kyc_status = $2 where id = $1")
        .bind(merchant.to_string())
        .bind(status.as_str())
        .execute(control)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// A newly created key. `key` is shown to its owner once and never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedKey {
    pub key_id: String,
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CreatedKey({})", self.key_id)
    }
}

pub async fn create_api_key(
    control: &PgPool,
    hasher: &KeyHasher,
    region: RegionNumber,
    merchant: MerchantId,
    kind: KeyKind,
    livemode: bool,
) -> anyhow::Result<CreatedKey> {
    let mut id_bytes = [0_u8; KEY_ID_BYTES];
    let mut secret = [0_u8; KEY_SECRET_BYTES];
    getrandom_fill(&mut id_bytes)?;
    getrandom_fill(&mut secret)?;
    let key_id_hex = hex::encode(id_bytes);
    let key = format!(
        "{}{:02x}{key_id_hex}{}",
        kind.prefix(livemode),
        region.0,
        hex::encode(secret)
    );
    let key_id = format!("key_{key_id_hex}");
    let last4 = key.get(key.len() - 4..).unwrap_or_default().to_owned();
    sqlx::query(
        "insert into api_keys (id, merchant_id, kind, livemode, key_hash, last4, created)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key_id)
    .bind(merchant.to_string())
    .bind(kind.as_str())
    .bind(livemode)
    .bind(hasher.hash(&key))
    .bind(last4)
    .bind(unix_now())
    .execute(control)
    .await?;
    Ok(CreatedKey { key_id, key })
}

fn getrandom_fill(bytes: &mut [u8]) -> anyhow::Result<()> {
    // Through the domain's ID generator's source: the OS CSPRNG.
    snakepay_domain::ids::fill_random(bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Parses a key's text into (kind, livemode, region, key id).
fn parse_key(key: &str) -> Option<(KeyKind, bool, RegionNumber, String)> {
    let (kind, livemode, body) = [
        (KeyKind::Secret, false),
        (KeyKind::Secret, true),
        (KeyKind::Publishable, false),
        (KeyKind::Publishable, true),
    ]
    .into_iter()
    .find_map(|(kind, live)| {
        key.strip_prefix(kind.prefix(live))
            .map(|body| (kind, live, body))
    })?;
    let expected_len = 2 + 2 * KEY_ID_BYTES + 2 * KEY_SECRET_BYTES;
    if body.len() != expected_len
        || !body
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let region = u8::from_str_radix(body.get(..2)?, 16).ok()?;
    let key_id = format!("key_{}", body.get(2..2 + 2 * KEY_ID_BYTES)?);
    Some((kind, livemode, RegionNumber(region), key_id))
}

/// key_hash, merchant_id, livemode, revoked_at, kyc_status, and the
/// merchant's live and test rate limits.
type KeyRow = (
    Vec<u8>,
    String,
    bool,
    Option<i64>,
    String,
    Option<i32>,
    Option<i32>,
);

/// Checks a presented key. Live keys work only for KYC-verified merchants.
pub async fn authenticate(
    control: &PgPool,
    hasher: &KeyHasher,
    region: RegionNumber,
    key: &str,
) -> Result<AuthContext, AuthError> {
    authenticate_for_cache(control, hasher, region, key)
        .await
        .map(|(context, _)| context)
}

/// What the API-key cache keeps of a key that authenticated (active, and
/// for live mode of a verified merchant): enough to check the next
/// presentation of the same key without the database. It holds the keyed
/// hash, never the key. Whoever revokes a key or changes a merchant's KYC
/// status must make the cache forget the merchant's keys
/// (`snakepay_cache::forget_api_keys`), so the change takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedKey {
    key_hash: String,
    merchant_id: String,
    livemode: bool,
    rate_limit_per_second: Option<u32>,
}

/// The ID a key is cached under (its key ID, not the secret part).
pub fn cache_id(key: &str) -> Option<String> {
    parse_key(key).map(|(_, _, _, key_id)| key_id)
}

/// [`authenticate`], also returning what the cache may keep.
pub async fn authenticate_for_cache(
    control: &PgPool,
    hasher: &KeyHasher,
    region: RegionNumber,
    key: &str,
) -> Result<(AuthContext, CachedKey), AuthError> {
    let (kind, livemode, key_region, key_id) = parse_key(key).ok_or(AuthError::Invalid)?;
    if key_region != region {
        return Err(AuthError::OtherRegion(key_region));
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "select k.key_hash, k.merchant_id, k.livemode, k.revoked_at, m.kyc_status,
                m.rate_limit_live_per_second, m.rate_limit_test_per_second
         from api_keys k join merchants m on m.id = k.merchant_id
         where k.id = $1",
    )
    .bind(&key_id)
    .fetch_optional(control)
    .await?;
    let Some((
        stored_hash,
        merchant_id,
        stored_livemode,
        revoked_at,
        kyc_status,
        live_rate,
        test_rate,
    )) = row
    else {
        return Err(AuthError::Invalid);
    };
    let presented = hasher.hash(key);
    if !bool::from(presented.as_slice().ct_eq(stored_hash.as_slice()))
        || stored_livemode != livemode
    {
        return Err(AuthError::Invalid);
    }
    if revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if livemode && KycStatus::parse(&kyc_status) != Some(KycStatus::Verified) {
        return Err(AuthError::NotVerified);
    }
    let rate_limit_per_second =
        if livemode { live_rate } else { test_rate }.and_then(|rate| u32::try_from(rate).ok());
    let cached = CachedKey {
        key_hash: hex::encode(&stored_hash),
        merchant_id: merchant_id.clone(),
        livemode,
        rate_limit_per_second,
    };
    let merchant_id = MerchantId::parse(&merchant_id).map_err(|_| AuthError::Invalid)?;
    Ok((
        AuthContext {
            merchant_id,
            livemode,
            kind,
            key_id,
            rate_limit_per_second,
        },
        cached,
    ))
}

/// Checks a presented key against its cached entry: the same keyed hash
/// (compared in constant time), mode and region. `None` sends the caller to
/// [`authenticate`], which gives the precise refusal.
pub fn authenticate_cached(
    hasher: &KeyHasher,
    region: RegionNumber,
    key: &str,
    cached: &CachedKey,
) -> Option<AuthContext> {
    let (kind, livemode, key_region, key_id) = parse_key(key)?;
    let stored = hex::decode(&cached.key_hash).ok()?;
    let presented = hasher.hash(key);
    let matches = bool::from(presented.as_slice().ct_eq(stored.as_slice()));
    if !matches || key_region != region || livemode != cached.livemode {
        return None;
    }
    Some(AuthContext {
        merchant_id: MerchantId::parse(&cached.merchant_id).ok()?,
        livemode,
        kind,
        key_id,
        rate_limit_per_second: cached.rate_limit_per_second,
    })
}

/// Sets a merchant's own rate limits (None: the deployment's default for
/// the mode). The caller makes the API-key cache forget the merchant's keys
/// (`key_ids_of`), so the new limits apply on the next request.
pub async fn set_rate_limits(
    control: &PgPool,
    merchant: MerchantId,
    live_per_second: Option<u32>,
    test_per_second: Option<u32>,
) -> Result<bool, sqlx::Error> {
    let as_column = |rate: Option<u32>| rate.and_then(|r| i32::try_from(r).ok());
    let result = sqlx::query(
        "update merchants set rate_limit_live_per_second = $2, rate_limit_test_per_second = $3
         where id = $1",
    )
    .bind(merchant.to_string())
    .bind(as_column(live_per_second))
    .bind(as_column(test_per_second))
    .execute(control)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Every key of a merchant, revoked or not: what a KYC change must make the
/// API-key cache forget.
pub async fn key_ids_of(
    control: &PgPool,
    merchant: MerchantId,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select id from api_keys where merchant_id = $1")
        .bind(merchant.to_string())
        .fetch_all(control)
        .await
}

pub async fn revoke_api_key(control: &PgPool, key_id: &str) -> Result<bool, sqlx::Error> {
    let result =
        sqlx::query("update api_keys set revoked_at = $2 where id = $1 and revoked_at is null")
            .bind(key_id)
            .bind(unix_now())
            .execute(control)
            .await?;
    Ok(result.rows_affected() == 1)
}

pub async fn find_merchant(
    control: &PgPool,
    id: MerchantId,
) -> Result<Option<Merchant>, sqlx::Error> {
    let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
        "select legal_name, country, home_region, kyc_status, created from merchants where id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(control)
    .await?;
    Ok(row.map(
        |(legal_name, country, home_region, kyc, created)| Merchant {
            id,
            legal_name,
            country,
            home_region,
            kyc_status: KycStatus::parse(&kyc).unwrap_or(KycStatus::Pending),
            created,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_into_kind_mode_region_and_id() {
        let key = format!(
            "sk_live_07{}{}",
            "ab".repeat(KEY_ID_BYTES),
            "cd".repeat(KEY_SECRET_BYTES)
        );
        let (kind, live, region, id) = parse_key(&key).unwrap();
        assert_eq!(
            (kind, live, region),
            (KeyKind::Secret, true, RegionNumber(7))
        );
        assert_eq!(id, format!("key_{}", "ab".repeat(KEY_ID_BYTES)));
        assert!(parse_key("sk_test_short").is_none());
        assert!(parse_key(&key.replace("sk_live_", "rk_live_")).is_none());
        assert!(parse_key(&key.to_uppercase()).is_none());
    }

    #[test]
    fn the_hasher_never_shows_its_secret() {
        assert_eq!(
            format!("{:?}", KeyHasher::new(b"secret").unwrap()),
            "KeyHasher(***)"
        );
    }
}
