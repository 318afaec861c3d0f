//! The HTTP client that calls merchants' endpoints, and its guard against
//! server-side request forgery.
//!
//! An endpoint URL is the merchant's to choose, and our dispatcher runs
//! inside our network: a URL that leads to 10.0.0.5 or to the cloud's
//! metadata service would let a merchant use us to reach them. The guard
//! has two halves, so that what is checked is what is connected to:
//!
//! - a URL whose host is an IP address is checked here, before sending
//!   (the HTTP connector connects to literal addresses without resolving);
//! - a host name is resolved by [`PublicOnlyResolver`], which the client
//!   uses for every connection. It refuses the name when *any* of its
//!   addresses is not public, and otherwise hands the connector exactly the
//!   addresses it checked, so a DNS answer that changes between a check and
//!   the connection (DNS rebinding) has nothing to slip through.
//!
//! Proxies from the environment are ignored (a proxy would resolve the name
//! itself), and redirects are not followed (a redirect is a new URL the
//! guard never saw).

use snakepay_config::sections::OutboundTlsConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use snakepay_http::net::is_public_ip;
use url::{Host, Url};

use crate::settings::WebhookSettings;

pub const USER_AGENT: &str = "Snakepay/1.0 (+webhooks)";
/// Idle connections kept per host: merchants' endpoints get bursts of
/// events, and a kept connection saves the TLS handshake.
const IDLE_CONNECTIONS_PER_HOST: usize = 4;
/// How long an idle connection is kept.
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// A destination the guard will not connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {host} is {address}, not a public address")]
pub struct RefusedAddress {
    pub host: String,
    pub address: IpAddr,
}

/// Why an endpoint URL cannot be called as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid endpoint URL: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Refused(#[from] RefusedAddress),
}

/// The client every delivery goes through: no redirects, no proxies, the
/// resolver guard unless private networks are allowed, certificates always
/// verified (rustls with the bundled web PKI roots).
pub fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    client_with_trust(settings, &OutboundTlsConfig::default())
}

/// [`client`], trusting `trust.ca_path` besides the web PKI roots (the local
/// run's own authority, for endpoints it serves itself).
pub fn client_with_trust(
    settings: &WebhookSettings,
    trust: &OutboundTlsConfig,
) -> anyhow::Result<reqwest::Client> {
    let timeout = Duration::from_millis(settings.attempt_timeout_ms);
    let mut builder = snakepay_http::tls::client_builder(trust)?
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
        .pool_idle_timeout(Duration::from_millis(IDLE_TIMEOUT_MS));
    if !settings.allow_private_networks {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    Ok(builder.build()?)
}

/// Parses an endpoint URL and checks what can be checked before sending:
/// an http(s) URL with a host, and, for a literal IP address, that the
/// address is public (unless `allow_private_networks`).
pub fn check_url(text: &str, allow_private_networks: bool) -> Result<Url, TargetError> {
    let url = Url::parse(text).map_err(|_| TargetError::Invalid("not an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(TargetError::Invalid("the scheme must be https or http"));
    }
    let address = match url.host() {
        None => return Err(TargetError::Invalid("no host")),
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
    };
    if let Some(address) = address
        && !allow_private_networks
        && !is_public_ip(address)
    {
        return Err(TargetError::Refused(RefusedAddress {
            host: url.host_str().unwrap_or_default().to_owned(),
            address,
        }));
    }
    Ok(url)
}

/// Resolves names with the system resolver and lets only public addresses
/// through; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(address) = addresses
                .iter()
                .map(SocketAddr::ip)
                .find(|ip| !is_public_ip(*ip))
            {
                return Err(RefusedAddress { host, address }.into());
            }
            if addresses.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            let addresses: Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Says why a request failed, for the attempt record and the log: the
/// guard's refusal, a timeout, or the transport's cause chain. The URL is
/// left out (it is on the endpoint, and may carry the merchant's tokens).
pub fn describe_error(error: reqwest::Error, timeout_ms: u64) -> String {
    let refused = std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .find_map(|e| e.downcast_ref::<RefusedAddress>())
    .cloned();
    if let Some(refused) = refused {
        return refused.to_string();
    }
    if error.is_timeout() {
        return format!("timeout: no answer within {timeout_ms} ms");
    }
    let kind = if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn literal_private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.1.2.3/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:192.168.0.1]/hook",
            // WHATWG URL parsing turns these spellings into 127.0.0.1.
            "http://0x7f.1/hook",
            "http://2130706433/hook",
        ] {
            assert!(
                matches!(check_url(url, false), Err(TargetError::Refused(_))),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(check_url("https://93.184.216.34/hook", false).is_ok());
        assert!(check_url("https://example.com/hook", false).is_ok());
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        for url in [
            "ftp://example.com/",
            "not a url",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(check_url(url, true), Err(TargetError::Invalid(_))),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let error = PublicOnlyResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        let refused = error.downcast_ref::<RefusedAddress>().unwrap();
        assert!(is_loopback(refused.address), "{refused}");
    }

    fn is_loopback(ip: IpAddr) -> bool {
        snakepay_http::net::is_loopback_ip(ip)
    }
}
