//! Staff tokens: JWTs signed with Ed25519 (`EdDSA`), verified against a
//! JWKS (a file, or an identity provider's URL), so production tokens can
//! come from the company's identity provider while local development signs
//! its own with `snakepay-admin token issue`.
//!
//! Claims: `iss`, `aud`, `sub` (who), `role` (`viewer`, `operator`,
//! `admin`), `amr` (RFC 8176 authentication methods; `mfa` marks a
//! multi-factor login), `iat`, `exp`, `jti`. Only `EdDSA` is accepted, and
//! only keys of type OKP/Ed25519 are taken from the JWKS, so a token can
//! never pick a weaker algorithm or an HMAC "key" made of public data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::config::JwksSource;

/// Clock skew tolerated on `exp` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// The longest lifetime `issue` grants: a leaked token ages out in a shift.
pub const MAX_TTL_SECONDS: i64 = 12 * 60 * 60;
/// How often an unknown `kid` may make the verifier reload the JWKS: key
/// rotation is picked up at once, and a flood of forged `kid`s cannot
/// hammer the identity provider.
const JWKS_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Fetching a JWKS URL.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS accepted.
const JWKS_MAX_BYTES: usize = 256 * 1024;
/// The `amr` value of a multi-factor login.
pub const MFA: &str = "mfa";

/// Staff roles, each allowed everything the previous one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    #[serde(default)]
    pub amr: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl Claims {
    pub fn mfa(&self) -> bool {
        self.amr.iter().any(|method| method == MFA)
    }
}

/// A verified staff member, as handlers see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub subject: String,
    pub role: Role,
    pub mfa: bool,
}

/// Why a token was refused (all are 401s; the reason is logged and
/// audited, the client gets a generic message).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the signing keys cannot be loaded: {0}")]
    KeysUnavailable(String),
}

/// The local signing key file: the private key in PKCS#8 DER (base64) and
/// its key ID. Development only.
#[derive(Serialize, Deserialize)]
struct SigningKeyFile {
    kid: String,
    alg: String,
    private_key_pkcs8: String,
}

/// The local signing key, loaded. Masked `Debug`.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, ***)", self.kid)
    }
}

impl SigningKey {
    /// A fresh Ed25519 key from the OS CSPRNG.
    pub fn generate() -> anyhow::Result<SigningKey> {
        let random = ring::rand::SystemRandom::new();
        let document = ring::signature::Ed25519KeyPair::generate_pkcs8(&random)
            .map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
        let mut kid = [0_u8; 8];
        snakepay_domain::ids::fill_random(&mut kid).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(SigningKey {
            kid: format!("staff-{}", hex_lower(&kid)),
            pkcs8: document.as_ref().to_vec(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (`kty` OKP, `crv` Ed25519).
    pub fn public_jwk(&self) -> anyhow::Result<Jwk> {
        use ring::signature::KeyPair;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&self.pkcs8)
            .map_err(|_| anyhow::anyhow!("the signing key is not an Ed25519 PKCS#8 key"))?;
        Ok(Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<SigningKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        let file: SigningKeyFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing the signing key {}", path.display()))?;
        anyhow::ensure!(file.alg == "EdDSA", "the signing key must be EdDSA");
        let pkcs8 = STANDARD
            .decode(file.private_key_pkcs8.trim())
            .context("the signing key is not base64")?;
        let key = SigningKey {
            kid: file.kid,
            pkcs8,
        };
        key.public_jwk()?;
        Ok(key)
    }

    /// Writes the key (owner-only permissions) and a JWKS with its public
    /// half next to it, refusing to overwrite an existing key.
    pub fn create_files(&self, key_path: &Path, jwks_path: &Path) -> anyhow::Result<()> {
        for path in [key_path, jwks_path] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let file = SigningKeyFile {
            kid: self.kid.clone(),
            alg: "EdDSA".to_owned(),
            private_key_pkcs8: STANDARD.encode(&self.pkcs8),
        };
        write_new_private(key_path, &serde_json::to_vec_pretty(&file)?)?;
        let jwks = JwkSet {
            keys: vec![self.public_jwk()?],
        };
        std::fs::write(jwks_path, serde_json::to_vec_pretty(&jwks)?)
            .with_context(|| format!("writing {}", jwks_path.display()))?;
        Ok(())
    }

    /// Signs a token for `subject` with `role`, valid `ttl_seconds` from `now`.
    pub fn issue(&self, request: &TokenRequest<'_>) -> anyhow::Result<String> {
        anyhow::ensure!(
            request.ttl_seconds <= MAX_TTL_SECONDS,
            "a staff token lives at most {MAX_TTL_SECONDS} seconds"
        );
        anyhow::ensure!(
            !request.subject.is_empty() && request.subject.len() <= 200,
            "the subject must be 1 to 200 characters"
        );
        let mut jti = [0_u8; 16];
        snakepay_domain::ids::fill_random(&mut jti).map_err(|e| anyhow::anyhow!("{e}"))?;
        let claims = Claims {
            iss: request.issuer.to_owned(),
            aud: request.audience.to_owned(),
            sub: request.subject.to_owned(),
            role: request.role,
            amr: if request.mfa {
                vec!["pwd".to_owned(), MFA.to_owned()]
            } else {
                vec!["pwd".to_owned()]
            },
            iat: request.now,
            exp: request.now.saturating_add(request.ttl_seconds),
            jti: hex_lower(&jti),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_ed_der(&self.pkcs8),
        )?)
    }
}

/// What a token says; see [`SigningKey::issue`].
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub subject: &'a str,
    pub role: Role,
    pub mfa: bool,
    pub now: i64,
    pub ttl_seconds: i64,
}

#[cfg(unix)]
fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    anyhow::ensure!(!path.exists(), "{} exists", path.display());
    std::fs::write(path, bytes)?;
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies staff tokens against the configured JWKS, reloading it when a
/// token names a key it does not know (rotation), at most every
/// [`JWKS_RELOAD_MIN_INTERVAL`].
pub struct Verifier {
    source: JwksSource,
    validation: Validation,
    http: reqwest::Client,
    keys: RwLock<LoadedKeys>,
}

struct LoadedKeys {
    by_kid: HashMap<String, DecodingKey>,
    loaded_at: Option<Instant>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({:?})", self.source)
    }
}

impl Verifier {
    pub fn new(source: JwksSource, issuer: &str, audience: &str) -> anyhow::Result<Verifier> {
        Verifier::with_trust(source, issuer, audience, &Default::default())
    }

    /// [`Verifier::new`] whose JWKS fetches also trust `trust.ca_path`.
    pub fn with_trust(
        source: JwksSource,
        issuer: &str,
        audience: &str,
        trust: &snakepay_config::sections::OutboundTlsConfig,
    ) -> anyhow::Result<Verifier> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let http = snakepay_http::tls::client_builder(trust)?
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .context("building the JWKS client")?;
        Ok(Verifier {
            source,
            validation,
            http,
            keys: RwLock::new(LoadedKeys {
                by_kid: HashMap::new(),
                loaded_at: None,
            }),
        })
    }

    /// Loads the keys now; for start-up, so a broken JWKS shows at once.
    pub async fn load(&self) -> anyhow::Result<usize> {
        let by_kid = self.fetch().await?;
        let count = by_kid.len();
        let mut keys = self.keys.write().await;
        keys.by_kid = by_kid;
        keys.loaded_at = Some(Instant::now());
        Ok(count)
    }

    pub async fn verify(&self, token: &str) -> Result<Staff, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no kid".to_owned()))?;
        let claims = {
            let mut found = self.decode_with(&kid, token).await;
            if found.is_none() && self.reload_allowed().await {
                self.load()
                    .await
                    .map_err(|e| TokenError::KeysUnavailable(format!("{e:#}")))?;
                found = self.decode_with(&kid, token).await;
            }
            found.ok_or(TokenError::UnknownKey)??
        };
        if claims.iat > crate::now().saturating_add(LEEWAY_SECONDS.try_into().unwrap_or(0)) {
            return Err(TokenError::Invalid("issued in the future".to_owned()));
        }
        Ok(Staff {
            mfa: claims.mfa(),
            subject: claims.sub,
            role: claims.role,
        })
    }

    async fn decode_with(&self, kid: &str, token: &str) -> Option<Result<Claims, TokenError>> {
        let keys = self.keys.read().await;
        let key = keys.by_kid.get(kid)?;
        Some(
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .map(|data| data.claims)
                .map_err(|error| match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid(error.to_string()),
                }),
        )
    }

    async fn reload_allowed(&self) -> bool {
        let keys = self.keys.read().await;
        keys.loaded_at
            .is_none_or(|at| at.elapsed() >= JWKS_RELOAD_MIN_INTERVAL)
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let bytes = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("reading the JWKS {}", path.display()))?,
            JwksSource::Url(url) => {
                let response = self
                    .http
                    .get(url.clone())
                    .send()
                    .await
                    .with_context(|| format!("fetching the JWKS {url}"))?
                    .error_for_status()?;
                response.bytes().await?.to_vec()
            }
        };
        anyhow::ensure!(bytes.len() <= JWKS_MAX_BYTES, "the JWKS is too large");
        let set: JwkSet = serde_json::from_slice(&bytes).context("parsing the JWKS")?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let is_ed25519 = matches!(
                &jwk.algorithm,
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519
            );
            let (true, Some(kid)) = (is_ed25519, jwk.common.key_id.as_ref()) else {
                continue;
            };
            by_kid.insert(kid.clone(), DecodingKey::from_jwk(jwk)?);
        }
        Ok(by_kid)
    }
}

/// The signing key at `path`, created (with the JWKS at `jwks_path`) if
/// there is none yet. Returns the key and whether it was created.
pub fn ensure_signing_key(path: &Path, jwks_path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    if path.exists() {
        return Ok((SigningKey::load(path)?, false));
    }
    let key = SigningKey::generate()?;
    key.create_files(path, jwks_path)?;
    Ok((key, true))
}

/// The JWKS path of a local setup, when the configured source is a file.
pub fn jwks_file(source: &JwksSource) -> Option<PathBuf> {
    match source {
        JwksSource::File(path) => Some(path.clone()),
        JwksSource::Url(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(now: i64, ttl: i64) -> TokenRequest<'static> {
        TokenRequest {
            issuer: "iss",
            audience: "aud",
            subject: "alice",
            role: Role::Operator,
            mfa: true,
            now,
            ttl_seconds: ttl,
        }
    }

    async fn verifier_for(key: &SigningKey, dir: &Path) -> Verifier {
        let jwks = dir.join("jwks.json");
        key.create_files(&dir.join("key.json"), &jwks).unwrap();
        let verifier = Verifier::new(JwksSource::File(jwks), "iss", "aud").unwrap();
        verifier.load().await.unwrap();
        verifier
    }

    #[tokio::test]
    async fn an_issued_token_verifies_with_its_claims() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let verifier = verifier_for(&key, dir.path()).await;
        let token = key.issue(&request(crate::now(), 600)).unwrap();
        let staff = verifier.verify(&token).await.unwrap();
        assert_eq!(
            staff,
            Staff {
                subject: "alice".into(),
                role: Role::Operator,
                mfa: true
            }
        );
        let reloaded = SigningKey::load(&dir.path().join("key.json")).unwrap();
        assert!(
            verifier
                .verify(&reloaded.issue(&request(crate::now(), 60)).unwrap())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn expired_foreign_and_altered_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let verifier = verifier_for(&key, dir.path()).await;
        let expired = key.issue(&request(crate::now() - 3600, 600)).unwrap();
        assert!(matches!(
            verifier.verify(&expired).await,
            Err(TokenError::Expired)
        ));
        let stranger = SigningKey::generate().unwrap();
        let foreign = stranger.issue(&request(crate::now(), 600)).unwrap();
        assert!(matches!(
            verifier.verify(&foreign).await,
            Err(TokenError::UnknownKey)
        ));
        // The stranger's signature under our key ID.
        let mut forged = SigningKey::generate().unwrap();
        forged.kid = key.kid.clone();
        let forged = forged.issue(&request(crate::now(), 600)).unwrap();
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(TokenError::Invalid(_))
        ));
        assert!(
            key.issue(&request(crate::now(), MAX_TTL_SECONDS + 1))
                .is_err()
        );
    }

    #[test]
    fn the_signing_key_never_shows_in_debug_output() {
        let key = SigningKey::generate().unwrap();
        assert!(!format!("{key:?}").contains(&STANDARD.encode(&key.pkcs8)));
    }
}
