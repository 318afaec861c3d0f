//! Certificates for tests (feature `testing`): a throw-away certificate
//! authority per test, and server certificates it signs, written as PEM
//! files into a temporary directory that disappears with the [`TestPki`].
//!
//! Two `TestPki`s are two unrelated authorities: a client that trusts one
//! does not trust certificates of the other, which is how tests build an
//! "untrusted" server.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use snakepay_config::sections::{OutboundTlsConfig, ServerTlsConfig};

pub struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl TestPki {
    /// A new certificate authority named `name`; its certificate is at
    /// [`TestPki::ca_path`].
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("writing ca.pem");
        TestPki { dir, ca, ca_key }
    }

    /// The authority's certificate, PEM.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What a client that trusts this authority is configured with.
    pub fn trust(&self) -> OutboundTlsConfig {
        OutboundTlsConfig {
            ca_path: Some(self.ca_path()),
        }
    }

    /// Issues a server certificate for `localhost` and `127.0.0.1` and
    /// writes `NAME.crt` and `NAME.key` (mode 0600, as PostgreSQL demands).
    pub fn issue(&self, name: &str) -> ServerTlsConfig {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("server certificate");
        let cert_chain_path = self.dir.path().join(format!("{name}.crt"));
        let private_key_path = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_chain_path, certificate.pem()).expect("writing the certificate");
        write_private(&private_key_path, &key.serialize_pem());
        ServerTlsConfig {
            cert_chain_path,
            private_key_path,
        }
    }
}

fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).expect("creating the key file");
    file.write_all(contents.as_bytes())
        .expect("writing the key file");
}
