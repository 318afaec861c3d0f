//! Where the key ring comes from: the [`KeyProvider`] trait and its two
//! implementations.
//!
//! - [`FileKeyProvider`] (development, tests, the local run): the key ring
//!   file, mode 0600. `snakepay-admin keys init` creates it and
//!   `keys rotate` / `keys retire` rewrite it atomically (temporary file,
//!   fsync, rename), so a service reloading it never sees half a file.
//! - [`EnvKeyProvider`] (the cloud): the two halves of the key ring injected
//!   by ECS from two AWS Secrets Manager secrets into environment variables:
//!   [`KEK_RING_VARIABLE`] (the KEKs, JSON) and [`FINGERPRINT_KEY_VARIABLE`]
//!   (base64). The service makes no AWS call and links no AWS SDK: ECS's task
//!   execution role fetches the secrets (encrypted with the cell's
//!   `SecretsKey`) when the task starts. The provider is read-only: a
//!   rotation's new KEK is written to the secret by the operator (runbook in
//!   docs/security.md), then tasks are replaced.
//!
//! Why this and not a KMS call per record: see docs/security.md, "Key
//! management". In short, it needs no HTTP client, credential chain or
//! request signing in the vault, at the price of every sealing service
//! holding the KEKs in memory (no cryptographic boundary between sealing
//! and opening; the `decrypt` feature keeps the code out instead).
//!
//! The variable names deliberately lack the `SNAKEPAY_` prefix: that prefix
//! feeds the configuration loader, which must never read key material.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::keys::{KEY_RING_FILE_MAX_BYTES, KeyError, KeyRing};

/// The environment variable with the KEK ring (JSON, see `keys.rs`).
pub const KEK_RING_VARIABLE: &str = "VAULT_KEK_RING";
/// The environment variable with the fingerprint key (base64 of 32 bytes).
pub const FINGERPRINT_KEY_VARIABLE: &str = "VAULT_FINGERPRINT_KEY";

/// Where the key ring comes from. Services load it at start-up and reload
/// it while running (see `Vault::reloading`), so a rotation's new KEK
/// reaches them without a restart where the source can change.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// Reads the current key ring.
    fn load_key_ring(&self) -> Result<KeyRing, KeyError>;

    /// Saves a changed key ring (a rotation's new KEK, a retired old one).
    /// Providers whose keys are managed elsewhere answer
    /// [`KeyError::ReadOnly`].
    fn store_key_ring(&self, key_ring: &KeyRing) -> Result<(), KeyError>;

    /// Names the source for logs and messages (a path, variable names);
    /// never key material.
    fn describe(&self) -> String;
}

/// The provider a service's `[vault]` section names: `"file"` (the key ring
/// file at `key_ring_path`) or `"environment"` ([`EnvKeyProvider`]).
pub fn key_provider(kind: &str, key_ring_path: &Path) -> Result<Arc<dyn KeyProvider>, KeyError> {
    match kind {
        "file" => Ok(Arc::new(FileKeyProvider::new(key_ring_path))),
        "environment" => Ok(Arc::new(EnvKeyProvider::new())),
        other => Err(KeyError::UnknownProvider(other.to_owned())),
    }
}

/// Loads the key ring from a JSON file on local disk.
#[derive(Debug, Clone)]
pub struct FileKeyProvider {
    path: PathBuf,
}

impl FileKeyProvider {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a new key ring file readable by its owner only (mode 0600 on
    /// Unix). Fails if the file exists: overwriting a key ring would make
    /// every record sealed under it unreadable.
    pub fn create(path: impl AsRef<Path>, key_ring: &KeyRing) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let contents = key_ring.to_json()?;
        write_private(path, contents.as_bytes())?;
        Ok(Self::new(path))
    }

    fn io_error(&self, source: std::io::Error) -> KeyError {
        KeyError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl KeyProvider for FileKeyProvider {
    fn load_key_ring(&self) -> Result<KeyRing, KeyError> {
        let size = std::fs::metadata(&self.path)
            .map_err(|e| self.io_error(e))?
            .len();
        if size > KEY_RING_FILE_MAX_BYTES {
            return Err(KeyError::FileTooLarge {
                path: self.path.clone(),
            });
        }
        let contents =
            Zeroizing::new(std::fs::read_to_string(&self.path).map_err(|e| self.io_error(e))?);
        KeyRing::from_json(&contents)
    }

    /// Replaces the file atomically: the new ring goes to a temporary file
    /// next to it (mode 0600, fsynced), which is then renamed over the old
    /// one, and the directory is fsynced. A reader sees the old ring or the
    /// new one, never a mix, and a crash leaves one of the two.
    fn store_key_ring(&self, key_ring: &KeyRing) -> Result<(), KeyError> {
        let contents = key_ring.to_json()?;
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        // A leftover from a crashed earlier attempt holds keys too: replace it.
        match std::fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_error(e)),
        }
        write_private(&temporary, contents.as_bytes())?;
        std::fs::rename(&temporary, &self.path).map_err(|e| self.io_error(e))?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename itself durable. Not every platform can open a
            // directory, so a failure here is not an error.
            if let Ok(dir) = std::fs::File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("key ring file {}", self.path.display())
    }
}

/// Creates `path` (which must not exist) with mode 0600 and writes
/// `contents`, fsynced.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::io::Write as _;

    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// The cloud provider: the KEK ring and the fingerprint key from two
/// environment variables that ECS fills from two Secrets Manager secrets.
#[derive(Clone)]
pub struct EnvKeyProvider {
    lookup: Arc<Lookup>,
}

/// Reads one environment variable.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl EnvKeyProvider {
    /// Reads the process environment.
    pub fn new() -> Self {
        Self::with_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` instead of the process environment
    /// (tests: changing the environment of a running process is unsafe).
    pub fn with_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            lookup: Arc::new(lookup),
        }
    }

    fn variable(&self, name: &'static str) -> Result<Zeroizing<String>, KeyError> {
        (self.lookup)(name)
            .map(Zeroizing::new)
            .ok_or(KeyError::MissingVariable(name))
    }
}

impl Default for EnvKeyProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EnvKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvKeyProvider")
            .field("kek_ring", &KEK_RING_VARIABLE)
            .field("fingerprint_key", &FINGERPRINT_KEY_VARIABLE)
            .finish()
    }
}

impl KeyProvider for EnvKeyProvider {
    fn load_key_ring(&self) -> Result<KeyRing, KeyError> {
        let keks = self.variable(KEK_RING_VARIABLE)?;
        let fingerprint_key = self.variable(FINGERPRINT_KEY_VARIABLE)?;
        KeyRing::from_split_json(&keks, &fingerprint_key)
    }

    fn store_key_ring(&self, _key_ring: &KeyRing) -> Result<(), KeyError> {
        Err(KeyError::ReadOnly(self.describe()))
    }

    fn describe(&self) -> String {
        format!("environment variables {KEK_RING_VARIABLE} and {FINGERPRINT_KEY_VARIABLE}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KEY_LEN, SecretKey};
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    fn fixed_ring() -> KeyRing {
        KeyRing::new(
            "kek-2",
            vec![
                ("kek-1".to_owned(), SecretKey::from_bytes([1; KEY_LEN])),
                ("kek-2".to_owned(), SecretKey::from_bytes([2; KEY_LEN])),
            ],
            SecretKey::from_bytes([3; KEY_LEN]),
        )
        .unwrap()
    }

    #[test]
    fn file_provider_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let provider = FileKeyProvider::create(&path, &fixed_ring()).unwrap();
        let loaded = provider.load_key_ring().unwrap();
        assert_eq!(loaded.active_kek_id(), "kek-2");
        assert_eq!(loaded.kek("kek-1").unwrap().expose_bytes(), &[1; KEY_LEN]);
        assert_eq!(loaded.fingerprint_key().expose_bytes(), &[3; KEY_LEN]);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwrites an existing key ring.
        assert!(matches!(
            FileKeyProvider::create(&path, &fixed_ring()),
            Err(KeyError::Io { .. })
        ));
        let missing = FileKeyProvider::new(dir.path().join("absent.json"));
        assert!(matches!(missing.load_key_ring(), Err(KeyError::Io { .. })));
        assert!(!provider.describe().contains("AAAA"));
    }

    #[test]
    fn file_provider_stores_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let provider = FileKeyProvider::create(&path, &fixed_ring()).unwrap();
        let mut ring = provider.load_key_ring().unwrap();
        ring.add_active_kek("kek-3").unwrap();
        // A leftover temporary file from a crash is replaced, not an error.
        std::fs::write(dir.path().join("keys.json.new"), "garbage").unwrap();
        provider.store_key_ring(&ring).unwrap();
        let loaded = provider.load_key_ring().unwrap();
        assert_eq!(loaded.active_kek_id(), "kek-3");
        assert_eq!(
            loaded.kek_ids().collect::<Vec<_>>(),
            ["kek-1", "kek-2", "kek-3"]
        );
        assert!(!dir.path().join("keys.json.new").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn environment_provider_reads_both_halves_and_is_read_only() {
        let keks = format!(
            r#"{{"version":1,"active_kek_id":"kek-1","keks":[{{"id":"kek-1","key":"{}"}}]}}"#,
            BASE64.encode([7u8; KEY_LEN])
        );
        let fingerprint = BASE64.encode([8u8; KEY_LEN]);
        let provider = EnvKeyProvider::with_lookup(move |name| match name {
            KEK_RING_VARIABLE => Some(keks.clone()),
            FINGERPRINT_KEY_VARIABLE => Some(fingerprint.clone()),
            _ => None,
        });
        let ring = provider.load_key_ring().unwrap();
        assert_eq!(ring.active_kek_id(), "kek-1");
        assert_eq!(ring.kek("kek-1").unwrap().expose_bytes(), &[7; KEY_LEN]);
        assert_eq!(ring.fingerprint_key().expose_bytes(), &[8; KEY_LEN]);
        assert!(matches!(
            provider.store_key_ring(&ring),
            Err(KeyError::ReadOnly(_))
        ));

        let half = EnvKeyProvider::with_lookup(|name| {
            (name == KEK_RING_VARIABLE).then(|| "{}".to_owned())
        });
        assert!(matches!(
            half.load_key_ring(),
            Err(KeyError::MissingVariable(FINGERPRINT_KEY_VARIABLE))
        ));
    }

    #[test]
    fn provider_is_chosen_by_name() {
        let path = Path::new("/nonexistent/keys.json");
        assert!(
            key_provider("file", path)
                .unwrap()
                .describe()
                .contains("/nonexistent/keys.json")
        );
        assert!(
            key_provider("environment", path)
                .unwrap()
                .describe()
                .contains(KEK_RING_VARIABLE)
        );
        assert!(matches!(
            key_provider("kms", path),
            Err(KeyError::UnknownProvider(_))
        ));
    }
}
