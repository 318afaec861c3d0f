//! TLS to Redis: `rediss://` URLs connect over rustls (ring), verifying the
//! server's certificate against the system and web roots, or only against
//! the authorities in the PEM file the URL names with `cacertfile` (see
//! `snakepay_config::tls`). The redis crate's `#insecure` switch, which
//! turns verification off, is refused.

use anyhow::Context;
use redis::TlsCertificates;
use url::Url;

/// The client for `url`, with its `cacertfile` (if any) as the only trusted
/// authority.
pub fn client(url: &Url) -> anyhow::Result<redis::Client> {
    anyhow::ensure!(
        url.fragment().is_none(),
        "the Redis URL must not have a fragment (`#insecure` would turn certificate verification off)"
    );
    let (stripped, ca_file) = snakepay_config::tls::split_ca_file(url);
    let Some(ca_file) = ca_file else {
        return redis::Client::open(stripped.as_str()).context("redis url");
    };
    anyhow::ensure!(
        stripped.scheme() == "rediss",
        "`cacertfile` needs a rediss:// URL"
    );
    let root_cert = std::fs::read(&ca_file)
        .with_context(|| format!("reading the Redis CA file {}", ca_file.display()))?;
    redis::Client::build_with_tls(
        stripped.as_str(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        },
    )
    .context("redis url")
}
