//! TLS to PostgreSQL (PCI DSS 4.2.1), configured in the database URL:
//! `sslmode=verify-full&sslrootcert=<CA file>` connects only to a server
//! whose certificate that authority signed for the host in the URL.
//!
//! The test runs its own PostgreSQL cluster (initdb in a temporary
//! directory, a free port, `ssl = on` with a certificate made by the test,
//! and a pg_hba.conf that refuses connections without TLS), never touching
//! the shared server other tests use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use snakepay_config::sections::DatabaseConfig;
use snakepay_http::test_pki::TestPki;
use snakepay_store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The server binaries of the newest PostgreSQL installed.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs PostgreSQL's tools as the `postgres` user when the tests run as
/// root (initdb and the server refuse root).
fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=postgres", "--regid=postgres", "--clear-groups"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn chown_to_server_user(path: &Path) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// A PostgreSQL cluster of this test's own, stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _pki: TestPki,
}

impl Cluster {
    /// Starts a cluster serving TLS with a certificate from `pki`, trust
    /// authentication, and no connections without TLS over TCP.
    fn start(pki: TestPki) -> Cluster {
        let bin = postgres_bin();
        let root = pki.dir().to_path_buf();
        let data = root.join("data");
        let server = pki.issue("postgres");
        chown_to_server_user(&root);
        let status = as_server_user(&bin.join("initdb"))
            .args(["--auth=trust", "--username=snakepay", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(status.status.success(), "initdb: {status:?}");
        let port = free_port();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n\
             ssl_min_protocol_version = 'TLSv1.2'\nfsync = off\nmax_connections = 20\n",
            root = root.display(),
            cert = server.cert_chain_path.display(),
            key = server.private_key_path.display(),
        )
        .unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        chown_to_server_user(&root);
        let cluster = Cluster {
            bin,
            data,
            port,
            _pki: pki,
        };
        let started = as_server_user(&cluster.bin.join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&cluster.data)
            .arg("-l")
            .arg(root.join("server.log"))
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "pg_ctl start: {started:?}\n{}",
            std::fs::read_to_string(root.join("server.log")).unwrap_or_default()
        );
        cluster
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://snakepay@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

fn verify_full(ca: &Path) -> String {
    format!("sslmode=verify-full&sslrootcert={}", ca.display())
}

/// rustls refused the server's certificate (sqlx reports it as an I/O
/// error of the handshake).
fn assert_untrusted(error: &sqlx::Error) {
    let shown = format!("{error:?}");
    assert!(
        shown.contains("InvalidCertificate(UnknownIssuer)"),
        "expected an untrusted certificate, got {shown}"
    );
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?.connect().await
}

#[tokio::test]
async fn verified_tls_connections_succeed_and_untrusted_or_plain_ones_fail() {
    let pki = TestPki::new("postgres");
    let ca = pki.ca_path();
    let cluster = Cluster::start(pki);

    // Trusting the server's authority: connected, over TLS 1.2 or newer.
    let mut connection = connect(&cluster.url(&verify_full(&ca))).await.unwrap();
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(ssl);
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
    connection.close().await.unwrap();

    // Another authority: the handshake fails, nothing is sent.
    let stranger = TestPki::new("stranger");
    let error = connect(&cluster.url(&verify_full(&stranger.ca_path())))
        .await
        .unwrap_err();
    assert_untrusted(&error);

    // The public web roots only (verify-full without sslrootcert).
    let error = connect(&cluster.url("sslmode=verify-full"))
        .await
        .unwrap_err();
    assert_untrusted(&error);

    // Without TLS the server refuses (pg_hba.conf `hostnossl … reject`).
    let error = connect(&cluster.url("sslmode=disable")).await.unwrap_err();
    assert!(
        error.to_string().contains("no encryption") || error.to_string().contains("pg_hba.conf"),
        "{error}"
    );
}

#[tokio::test]
async fn the_store_connects_with_the_tls_settings_of_its_configured_urls() {
    let pki = TestPki::new("store");
    let ca = pki.ca_path();
    let cluster = Cluster::start(pki);
    let config = |url: String| -> DatabaseConfig {
        snakepay_config::from_toml_str(&format!(
            "control_url = \"{url}\"\nshard_urls = [\"{url}\"]\nmax_connections = 2\n"
        ))
        .unwrap()
    };
    let store = Store::connect_lazy(&config(cluster.url(&verify_full(&ca)))).unwrap();
    store.ping().await.unwrap();
    store.close().await;

    let stranger = TestPki::new("stranger");
    let store =
        Store::connect_lazy(&config(cluster.url(&verify_full(&stranger.ca_path())))).unwrap();
    assert!(
        store.ping().await.is_err(),
        "an untrusted server is refused"
    );
    store.close().await;
}
