//! The way out to processors (the NAT gateway of the cloud design): every
//! outbound call goes through one HTTP client that uses the configured
//! forward proxy (or none — never one picked up from the environment), and a
//! host allow-list checked before any connection is made. Certificates are
//! always verified (rustls with the web PKI roots plus the configured
//! `[tls] ca_path`); there is no switch to turn that off.

use std::time::Duration;

use anyhow::Context;
use snakepay_config::sections::OutboundTlsConfig;
use url::Url;

use crate::config::EgressSettings;
use crate::processor::CallError;

/// How long establishing a connection may take, within the call timeout.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Idle connections kept per host: enough for the consumer's concurrency.
const MAX_IDLE_PER_HOST: usize = 32;

#[derive(Clone)]
pub struct Egress {
    settings: EgressSettings,
    client: reqwest::Client,
}

impl Egress {
    /// `trust`: what certificates are verified against besides the web PKI
    /// roots (the local run's authority).
    pub fn new(settings: &EgressSettings, trust: &OutboundTlsConfig) -> anyhow::Result<Egress> {
        let mut builder = snakepay_http::tls::client_builder(trust)?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false);
        builder = match &settings.proxy_url {
            Some(proxy) => {
                builder.proxy(reqwest::Proxy::all(proxy.as_str()).context("egress.proxy_url")?)
            }
            None => builder.no_proxy(),
        };
        Ok(Egress {
            settings: settings.clone(),
            client: builder.build().context("building the egress HTTP client")?,
        })
    }

    /// The client, if `url`'s host is allowed; otherwise the call is refused
    /// before anything leaves the process.
    pub fn client_for(&self, url: &Url) -> Result<&reqwest::Client, CallError> {
        let host = url.host_str().unwrap_or_default();
        if self.settings.allows(host) {
            Ok(&self.client)
        } else {
            tracing::error!(
                egress.host = host,
                "egress refused a host outside the allow-list"
            );
            Err(CallError::EgressRefused(host.to_owned()))
        }
    }
}
