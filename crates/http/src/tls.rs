//! TLS for every listener and every outbound HTTP call (PCI DSS 4.2.1).
//!
//! - [`ServerTls::load`] reads a listener's certificate chain and key (PEM)
//!   at start-up and builds a rustls server configuration that speaks TLS
//!   1.3 and 1.2 only, with the ring provider; a bad file stops the service
//!   before it listens.
//! - [`TlsListener`] turns a TCP listener into one that yields finished TLS
//!   streams, so `axum::serve` (and its graceful shutdown) works unchanged.
//!   Handshakes run on tasks of their own, bounded in number and time, so a
//!   slow or silent client cannot stall the accept loop.
//! - [`client_builder`] is where every outbound `reqwest` client starts: the
//!   public web roots plus the configured extra certificate authority, TLS
//!   1.2 or newer, and certificate verification that cannot be turned off.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::SupportedProtocolVersion;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use snakepay_config::sections::{OutboundTlsConfig, ServerTlsConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The only protocol versions a listener accepts: older ones (SSL, TLS 1.0
/// and 1.1) are refused with a `protocol_version` alert.
pub const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A client that has not finished its handshake by then is disconnected.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Handshakes in progress at once per listener; beyond it the listener stops
/// accepting until one finishes (back-pressure instead of unbounded tasks).
pub const MAX_PENDING_HANDSHAKES: usize = 1_024;

/// Finished handshakes waiting for the server to pick them up.
const ACCEPTED_QUEUE_LEN: usize = 64;

/// The pause after a failed `accept` (file descriptors exhausted, say), so
/// the loop does not spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// A listener's TLS configuration, loaded and checked.
#[derive(Clone)]
pub struct ServerTls(Arc<rustls::ServerConfig>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls(..)")
    }
}

impl ServerTls {
    /// Reads the certificate chain and private key; errors name the file,
    /// never the key's content.
    pub fn load(config: &ServerTlsConfig) -> anyhow::Result<ServerTls> {
        let chain = read_certificates(&config.cert_chain_path)?;
        let key = PrivateKeyDer::from_pem_file(&config.private_key_path).with_context(|| {
            format!(
                "reading the private key {}",
                config.private_key_path.display()
            )
        })?;
        ServerTls::from_der(chain, key)
    }

    /// `load` for a listener that may have no TLS.
    pub fn load_optional(config: Option<&ServerTlsConfig>) -> anyhow::Result<Option<ServerTls>> {
        config.map(ServerTls::load).transpose()
    }

    /// Builds the configuration from a certificate chain and key in DER.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<ServerTls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .context("choosing the TLS versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the certificate does not match its private key")?;
        // The services speak HTTP/1.1 only (axum's `http1` feature).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls(Arc::new(config)))
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.0)
    }
}

/// Every certificate in a PEM file, in order; an empty file is an error.
pub fn read_certificates(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificates in {}", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// A TCP listener whose connections come out as finished TLS streams.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting and handshaking in the background; the loop stops
    /// when the `TlsListener` is dropped (at shutdown).
    pub fn new(listener: TcpListener, tls: &ServerTls) -> io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE_LEN);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls.config()), tx));
        Ok(TlsListener {
            accepted,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(
                Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
                acceptor.accept(tcp),
            )
            .await;
            match handshake {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                // Scanners and old clients fail here all day: not a warning.
                Ok(Err(error)) => {
                    tracing::debug!(net.peer = %peer, error = %error, "TLS handshake refused");
                }
                Err(_) => {
                    tracing::debug!(net.peer = %peer, "TLS handshake timed out");
                }
            }
        });
    }
}

/// The start of every outbound HTTP client: rustls, TLS 1.2 or newer, the
/// public web roots plus `trust.ca_path`. Nothing in the code base calls
/// `danger_accept_invalid_certs`; verification is always on.
pub fn client_builder(trust: &OutboundTlsConfig) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .tls_built_in_root_certs(true);
    if let Some(path) = &trust.ca_path {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the trusted CA file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing the trusted CA file {}", path.display()))?;
        if certificates.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", path.display());
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}
