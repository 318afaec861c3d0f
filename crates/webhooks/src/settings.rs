//! [`WebhookSettings`]: the dispatcher's limits, embedded by the service
//! that runs it (the integration service's `[integration.webhooks]`).

use serde::Deserialize;
use snakepay_config::sections::in_range;
use snakepay_config::{ConfigError, Validate, key};

/// Every limit of the dispatcher, with its unit. Each key has a default, so
/// an empty section is a valid one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// How long one POST may take, connecting included, before it counts as
    /// failed. Stripe's receivers are told to answer quickly and work later.
    pub attempt_timeout_ms: u64,
    /// The wait after the first failed attempt; each further failure
    /// doubles it, up to [`max_backoff_ms`](Self::max_backoff_ms), with
    /// jitter so that an endpoint coming back is not hit by every retry at
    /// once.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How long after its first attempt a delivery is retried before it is
    /// given up (`failed`). API.md: up to 3 days.
    pub retry_window_seconds: u64,
    /// Deliveries claimed per shard in one pass.
    pub batch_size: u32,
    /// POSTs in flight at once, over all shards.
    pub max_concurrent_deliveries: u32,
    /// How long the dispatcher sleeps when a pass found nothing due.
    pub poll_interval_ms: u64,
    /// Lets deliveries reach loopback, private and other non-public
    /// addresses. Only for tests and local runs, whose receivers listen on
    /// 127.0.0.1; in a deployment it would open server-side request forgery.
    pub allow_private_networks: bool,
}

/// Bounds the settings must stay within.
pub const ATTEMPT_TIMEOUT_MS_MAX: u64 = 60_000;
pub const BACKOFF_MS_MAX: u64 = 24 * 60 * 60 * 1000;
pub const RETRY_WINDOW_SECONDS_MAX: u64 = 30 * 24 * 60 * 60;
pub const BATCH_SIZE_MAX: u32 = 10_000;
pub const MAX_CONCURRENT_DELIVERIES_MAX: u32 = 1_024;
pub const POLL_INTERVAL_MS_MAX: u64 = 60_000;

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            attempt_timeout_ms: 10_000,
            initial_backoff_ms: 60_000,
            max_backoff_ms: 6 * 60 * 60 * 1000,
            retry_window_seconds: 3 * 24 * 60 * 60,
            batch_size: 64,
            max_concurrent_deliveries: 32,
            poll_interval_ms: 1_000,
            allow_private_networks: false,
        }
    }
}

impl Validate for WebhookSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        in_range(
            self.attempt_timeout_ms,
            1,
            ATTEMPT_TIMEOUT_MS_MAX,
            &key(prefix, "attempt_timeout_ms"),
        )?;
        in_range(
            self.initial_backoff_ms,
            1,
            BACKOFF_MS_MAX,
            &key(prefix, "initial_backoff_ms"),
        )?;
        in_range(
            self.max_backoff_ms,
            self.initial_backoff_ms,
            BACKOFF_MS_MAX,
            &key(prefix, "max_backoff_ms"),
        )?;
        in_range(
            self.retry_window_seconds,
            1,
            RETRY_WINDOW_SECONDS_MAX,
            &key(prefix, "retry_window_seconds"),
        )?;
        in_range(
            self.batch_size,
            1,
            BATCH_SIZE_MAX,
            &key(prefix, "batch_size"),
        )?;
        in_range(
            self.max_concurrent_deliveries,
            1,
            MAX_CONCURRENT_DELIVERIES_MAX,
            &key(prefix, "max_concurrent_deliveries"),
        )?;
        in_range(
            self.poll_interval_ms,
            1,
            POLL_INTERVAL_MS_MAX,
            &key(prefix, "poll_interval_ms"),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(default)]
        webhooks: WebhookSettings,
    }

    impl Validate for Wrapper {
        fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
            self.webhooks.validate(&key(prefix, "webhooks"))
        }
    }

    #[test]
    fn an_empty_section_takes_every_default() {
        let wrapper: Wrapper = snakepay_config::from_toml_str("[webhooks]\n").unwrap();
        assert_eq!(wrapper.webhooks, WebhookSettings::default());
        assert_eq!(wrapper.webhooks.retry_window_seconds, 259_200);
        assert_eq!(wrapper.webhooks.attempt_timeout_ms, 10_000);
        assert!(!wrapper.webhooks.allow_private_networks);
    }

    #[test]
    fn unknown_keys_and_out_of_range_values_are_refused_by_name() {
        let error =
            snakepay_config::from_toml_str::<Wrapper>("[webhooks]\ntimeout_ms = 5\n").unwrap_err();
        assert_eq!(error.key(), Some("webhooks.timeout_ms"));
        let error = snakepay_config::from_toml_str::<Wrapper>(
            "[webhooks]\ninitial_backoff_ms = 5000\nmax_backoff_ms = 1000\n",
        )
        .unwrap_err();
        assert_eq!(error.key(), Some("webhooks.max_backoff_ms"));
        let error =
            snakepay_config::from_toml_str::<Wrapper>("[webhooks]\nbatch_size = 0\n").unwrap_err();
        assert_eq!(error.key(), Some("webhooks.batch_size"));
    }
}
