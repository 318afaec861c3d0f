//! TLS to the broker: `amqps://` URLs connect over rustls (ring), verifying
//! the broker's certificate against the public web roots, or only against
//! the authorities in the PEM file the URL names with `cacertfile` (see
//! `snakepay_config::tls`). Verification cannot be turned off.

use anyhow::Context;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};
use url::Url;

/// Opens a connection as `url` says, with its `cacertfile` (if any) as the
/// trusted authority.
pub async fn open(url: &str) -> anyhow::Result<Connection> {
    let parsed = Url::parse(url).context("the broker URL")?;
    let (stripped, ca_file) = snakepay_config::tls::split_ca_file(&parsed);
    let Some(ca_file) = ca_file else {
        return Connection::connect(url, ConnectionProperties::default())
            .await
            .context("connecting to the broker");
    };
    anyhow::ensure!(
        stripped.scheme() == "amqps",
        "`cacertfile` needs an amqps:// broker URL"
    );
    let ca = std::fs::read_to_string(&ca_file)
        .with_context(|| format!("reading the broker's CA file {}", ca_file.display()))?;
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: Some(ca),
    };
    let runtime = lapin::runtime::default_runtime().context("the AMQP runtime")?;
    Connection::connect_with_config(
        stripped.as_str(),
        ConnectionProperties::default(),
        tls,
        runtime,
    )
    .await
    .context("connecting to the broker over TLS")
}
