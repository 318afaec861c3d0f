//! TLS on the service listeners (PCI DSS 4.2.1): a listener configured with
//! a certificate speaks TLS 1.2 and 1.3 only, refuses a TLS 1.1 client with a
//! `protocol_version` alert, and serves nothing to a client that does not
//! trust the certificate's authority; the admin listener (`/metrics`) uses the
//! same certificate; and outbound clients built by `tls::client_builder`
//! trust the configured authority.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use snakepay_config::sections::{HttpConfig, OutboundTlsConfig};
use snakepay_http::ServerHandle;
use snakepay_http::test_pki::TestPki;
use snakepay_http::tls::{ServerTls, client_builder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GRACE: Duration = Duration::from_millis(100);

/// A server whose one route counts the requests it served and answers with
/// the peer address it saw.
async fn counting_server(pki: &TestPki) -> (ServerHandle, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let app = Router::new().route(
        "/hello",
        get(
            move |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    format!("hello {}", peer.ip())
                }
            },
        ),
    );
    let tls = ServerTls::load(&pki.issue("server")).unwrap();
    let server = snakepay_http::spawn_tls("127.0.0.1:0", Some(tls), app, GRACE)
        .await
        .unwrap();
    (server, served)
}

fn trusting_client(pki: &TestPki) -> reqwest::Client {
    client_builder(&pki.trust()).unwrap().build().unwrap()
}

#[tokio::test]
async fn a_client_that_trusts_the_authority_is_served_over_tls_12_and_13() {
    let pki = TestPki::new("listener");
    let (server, served) = counting_server(&pki).await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = client_builder(&pki.trust())
            .unwrap()
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let response = client
            .get(format!("{}/hello", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version:?}");
        assert_eq!(response.text().await.unwrap(), "hello 127.0.0.1");
    }
    assert_eq!(served.load(Ordering::SeqCst), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_authority_fails_the_handshake_and_is_not_served() {
    let pki = TestPki::new("listener");
    let (server, served) = counting_server(&pki).await;
    // The public web roots only, as any client that was not given our CA.
    let stranger = client_builder(&OutboundTlsConfig::default())
        .unwrap()
        .build()
        .unwrap();
    let error = stranger
        .get(format!("{}/hello", server.url()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    // Trusting another authority does not help either.
    let other = TestPki::new("other");
    let error = trusting_client(&other)
        .get(format!("{}/hello", server.url()))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    // Plain HTTP on the TLS port is not served either.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/hello", server.addr()))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    assert_eq!(served.load(Ordering::SeqCst), 0, "nothing was served");
    // The listener still serves a client that trusts it afterwards.
    let response = trusting_client(&pki)
        .get(format!("{}/hello", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await.unwrap();
}

/// A TLS 1.1 ClientHello, by hand: rustls clients cannot speak TLS 1.1.
/// Record and hello both say 0x0302 and there is no `supported_versions`
/// extension, so the highest version offered is TLS 1.1. A pure TLS 1.1
/// client sends no extensions; some add `signature_algorithms`
/// (`with_signature_algorithms`), which gets them further into rustls's
/// checks, to the version comparison.
fn tls11_client_hello(with_signature_algorithms: bool) -> Vec<u8> {
    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x02]); // client_version: TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    // TLS 1.1 cipher suites: RSA/ECDHE with AES-CBC-SHA.
    let suites: [u16; 4] = [0xc013, 0xc014, 0x002f, 0x0035];
    hello.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null only
    if with_signature_algorithms {
        // rsa_pkcs1_sha256, ecdsa_secp256r1_sha256, rsa_pkcs1_sha1.
        let schemes: [u16; 3] = [0x0401, 0x0403, 0x0201];
        let mut extension = vec![0x00, 0x0d]; // signature_algorithms
        extension.extend_from_slice(&u16::try_from(2 + schemes.len() * 2).unwrap().to_be_bytes());
        extension.extend_from_slice(&u16::try_from(schemes.len() * 2).unwrap().to_be_bytes());
        for scheme in schemes {
            extension.extend_from_slice(&scheme.to_be_bytes());
        }
        hello.extend_from_slice(&u16::try_from(extension.len()).unwrap().to_be_bytes());
        hello.extend_from_slice(&extension);
    }
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x02]; // handshake record, TLS 1.1
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends a TLS 1.1 ClientHello and reads everything the server answers
/// until it closes the connection.
async fn answer_to_tls11(addr: std::net::SocketAddr, with_signature_algorithms: bool) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&tls11_client_hello(with_signature_algorithms))
        .await
        .unwrap();
    let mut answer = Vec::new();
    // The server closes after its alert; a read error (reset) ends it too.
    let _ = stream.read_to_end(&mut answer).await;
    answer
}

/// TLS alert descriptions (RFC 8446 §6).
const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

/// The answer is exactly one fatal alert record with `description`: type
/// 21, any version, length 2, level 2 (fatal). No ServerHello (type 22),
/// no certificate, nothing else.
fn assert_fatal_alert(answer: &[u8], description: u8) {
    assert_eq!(
        answer.len(),
        7,
        "one alert record and nothing else: {answer:02x?}"
    );
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a handshake: {answer:02x?}"
    );
    assert_eq!(&answer[3..5], &[0x00, 0x02], "{answer:02x?}");
    assert_eq!(answer[5], 2, "a fatal alert: {answer:02x?}");
    assert_eq!(answer[6], description, "{answer:02x?}");
}

/// Both kinds of TLS 1.1 hello are refused before any handshake message.
async fn assert_tls11_refused(addr: std::net::SocketAddr) {
    assert_fatal_alert(&answer_to_tls11(addr, true).await, PROTOCOL_VERSION);
    // Without `signature_algorithms` rustls stops one check earlier.
    assert_fatal_alert(&answer_to_tls11(addr, false).await, HANDSHAKE_FAILURE);
}

#[tokio::test]
async fn a_tls_11_client_gets_a_protocol_version_alert_and_no_handshake() {
    let pki = TestPki::new("listener");
    let (server, served) = counting_server(&pki).await;
    assert_tls11_refused(server.addr()).await;
    assert_eq!(served.load(Ordering::SeqCst), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_over_tls_with_the_same_certificate() {
    let pki = TestPki::new("admin");
    let http: HttpConfig = toml_http(&pki);
    let server = snakepay_http::admin::spawn_with_admin(&http, Router::new())
        .await
        .unwrap();
    assert!(server.url().starts_with("https://"));
    let admin = server.admin_addr().unwrap();
    let response = trusting_client(&pki)
        .get(format!("https://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_tls11_refused(admin).await;
    let stranger = client_builder(&OutboundTlsConfig::default())
        .unwrap()
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("https://{admin}/metrics"))
            .send()
            .await
            .is_err()
    );
    server.shutdown().await.unwrap();
}

fn toml_http(pki: &TestPki) -> HttpConfig {
    let tls = pki.issue("service");
    let text = format!(
        "listen_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\n[tls]\ncert_chain_path = {:?}\nprivate_key_path = {:?}\n",
        tls.cert_chain_path.display().to_string(),
        tls.private_key_path.display().to_string(),
    );
    snakepay_config::from_toml_str(&text).unwrap()
}

#[tokio::test]
async fn bad_certificate_files_stop_the_listener_at_start_up() {
    let pki = TestPki::new("broken");
    let mut http = toml_http(&pki);
    // The key of another certificate.
    let other = pki.issue("other");
    if let Some(tls) = http.tls.as_mut() {
        tls.private_key_path = other.private_key_path.clone();
    }
    let error = snakepay_http::admin::spawn_with_admin(&http, Router::new())
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("does not match"), "{error:#}");
    // A certificate file that holds no certificate.
    if let Some(tls) = http.tls.as_mut() {
        tls.cert_chain_path = other.private_key_path.clone();
    }
    let error = snakepay_http::admin::spawn_with_admin(&http, Router::new())
        .await
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("no PEM certificate"),
        "{error:#}"
    );
    // And a missing file is refused by the configuration already.
    let text = "listen_addr = \"127.0.0.1:0\"\n[tls]\ncert_chain_path = \"/nonexistent.crt\"\nprivate_key_path = \"/nonexistent.key\"\n";
    let error = snakepay_config::from_toml_str::<HttpConfig>(text).unwrap_err();
    assert_eq!(error.key(), Some("tls.cert_chain_path"), "{error}");
}

#[tokio::test]
async fn an_outbound_client_refuses_a_ca_file_without_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let error = client_builder(&OutboundTlsConfig {
        ca_path: Some(path),
    })
    .map(|_| ())
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("no PEM certificate"),
        "{error:#}"
    );
}
