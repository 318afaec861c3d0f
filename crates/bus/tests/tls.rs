//! TLS to RabbitMQ (PCI DSS 4.2.1), configured in the URL: `amqps://` with
//! `cacertfile=<CA file>` connects only to a broker whose certificate that
//! authority signed.
//!
//! The test runs a RabbitMQ node of its own (own node name, ports, database
//! and log directories in a temporary directory; TLS listener only) with a
//! certificate made by the test, and stops it at the end. The shared broker
//! other tests use is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use snakepay_http::test_pki::TestPki;

/// How long the node may take to boot on a busy machine.
const STARTUP_WAIT: Duration = Duration::from_secs(120);
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct TlsBroker {
    child: Child,
    node: String,
    port: u16,
    pki: TestPki,
}

impl TlsBroker {
    async fn start() -> TlsBroker {
        let pki = TestPki::new("rabbitmq");
        let server = pki.issue("rabbitmq");
        let dir = pki.dir().to_path_buf();
        let port = free_port();
        let mut suffix = [0_u8; 6];
        getrandom::fill(&mut suffix).unwrap();
        let node = format!("snakepay-tls-{}@localhost", hex(&suffix));
        let config = dir.join("rabbitmq.conf");
        std::fs::write(
            &config,
            format!(
                "listeners.tcp = none\nlisteners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\n\
                 ssl_options.keyfile = {key}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n\
                 ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n\
                 loopback_users = none\n",
                ca = pki.ca_path().display(),
                cert = server.cert_chain_path.display(),
                key = server.private_key_path.display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let child = Command::new(PathBuf::from(RABBITMQ_BIN).join("rabbitmq-server"))
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server in /usr/lib/rabbitmq/bin");
        let broker = TlsBroker {
            child,
            node,
            port,
            pki,
        };
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the test's RabbitMQ node never listened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        broker
    }

    fn url(&self, query: &str) -> String {
        format!("amqps://guest:guest@127.0.0.1:{}/%2f?{query}", self.port)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = Command::new(PathBuf::from(RABBITMQ_BIN).join("rabbitmqctl"))
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_verified_amqps_connection_works_and_an_untrusted_broker_is_refused() {
    let broker = TlsBroker::start().await;
    let trusted = broker.url(&format!("cacertfile={}", broker.pki.ca_path().display()));
    let connection = snakepay_bus::connect(&trusted).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "tls-test".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(queue.name().as_str(), "tls-test");
    let _ = connection.close(200, "done".into()).await;

    let stranger = TestPki::new("stranger");
    let untrusted = broker.url(&format!("cacertfile={}", stranger.ca_path().display()));
    let error = snakepay_bus::connect(&untrusted).await.unwrap_err();
    assert!(format!("{error:#}").contains("TLS"), "{error:#}");

    // The public web roots alone do not know the test authority.
    assert!(snakepay_bus::connect(&broker.url("")).await.is_err());

    // A CA file with plain AMQP is a configuration mistake, refused.
    let plain = trusted.replace("amqps://", "amqp://");
    let error = snakepay_bus::connect(&plain).await.unwrap_err();
    assert!(format!("{error:#}").contains("amqps"), "{error:#}");
}
