//! TLS to Redis (PCI DSS 4.2.1), configured in the URL: `rediss://` with
//! `cacertfile=<CA file>` connects only to a server whose certificate that
//! authority signed. The test runs a Redis server of its own with a TLS
//! port and a certificate made by the test (never the shared one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use snakepay_cache::{Redis, Unavailable};
use snakepay_config::sections::RedisConfig;
use snakepay_http::test_pki::TestPki;

/// How long the test server may take to open its port.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server speaking TLS only, killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
    pki: TestPki,
}

impl TlsRedis {
    async fn start() -> TlsRedis {
        let pki = TestPki::new("redis");
        let server = pki.issue("redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(&server.cert_chain_path)
            .arg("--tls-key-file")
            .arg(&server.private_key_path)
            .arg("--tls-ca-cert-file")
            .arg(pki.ca_path())
            .args([
                "--tls-auth-clients",
                "no",
                "--tls-protocols",
                "TLSv1.2 TLSv1.3",
            ])
            .arg("--dir")
            .arg(pki.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH");
        let redis = TlsRedis { child, port, pki };
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        redis
    }

    fn client(&self, url: &str) -> anyhow::Result<std::sync::Arc<Redis>> {
        let config: RedisConfig = snakepay_config::from_toml_str(&format!(
            // Generous: a TLS handshake on a busy test machine is not a cache
            // lookup.
            "url = \"{url}\"\ntimeout_ms = 10000\n"
        ))
        .unwrap();
        Redis::new(&config)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ping(redis: &Redis) -> Result<String, Unavailable> {
    redis
        .call(|mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
}

#[tokio::test]
async fn a_verified_tls_connection_works_and_an_untrusted_server_is_refused() {
    let server = TlsRedis::start().await;
    let trusted = server
        .client(&format!(
            "rediss://127.0.0.1:{}/0?cacertfile={}",
            server.port,
            server.pki.ca_path().display()
        ))
        .unwrap();
    assert_eq!(ping(&trusted).await.unwrap(), "PONG");

    let stranger = TestPki::new("stranger");
    let untrusted = server
        .client(&format!(
            "rediss://127.0.0.1:{}/0?cacertfile={}",
            server.port,
            stranger.ca_path().display()
        ))
        .unwrap();
    let error = ping(&untrusted).await.unwrap_err();
    assert!(matches!(error, Unavailable::Failed(_)), "{error:?}");

    // The system and web roots do not know the test authority either.
    let roots_only = server
        .client(&format!("rediss://127.0.0.1:{}/0", server.port))
        .unwrap();
    assert!(ping(&roots_only).await.is_err());
}

#[tokio::test]
async fn turning_verification_off_or_a_ca_without_tls_is_refused() {
    let server = TlsRedis::start().await;
    let error = server
        .client(&format!("rediss://127.0.0.1:{}/0#insecure", server.port))
        .map(|_| ())
        .unwrap_err();
    assert!(format!("{error:#}").contains("insecure"), "{error:#}");
    let error = server
        .client(&format!(
            "redis://127.0.0.1:{}/0?cacertfile={}",
            server.port,
            server.pki.ca_path().display()
        ))
        .map(|_| ())
        .unwrap_err();
    assert!(format!("{error:#}").contains("rediss"), "{error:#}");
}
