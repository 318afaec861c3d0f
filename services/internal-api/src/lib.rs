//! Snakepay's Internal API: the back office that staff and internal systems
//! call, never exposed publicly (DESIGN.md §1, §7).
//!
//! # Layout
//!
//! - [`config`]: `InternalApiConfig`, the sections this service reads.
//! - [`tokens`]: staff tokens (EdDSA JWTs): issuing (local development,
//!   `snakepay-admin token issue`) and verifying against a JWKS file or URL.
//! - `auth.rs`: roles and permissions, and the middleware that checks the
//!   token and writes every request to the audit trail
//!   (`snakepay_store::audit`).
//! - `openapi.rs`: route registration with the permission each route needs,
//!   enforced and documented in the same call; `/v1/openapi.json`.
//! - `routes/`: one module per resource (merchants and KYC, API keys,
//!   payments search and story, refunds with maker-checker, ledger,
//!   reconciliation, dead letters, audit).
//! - `dead_letters.rs`: moving dead-lettered messages from the broker into
//!   the control database, replaying and discarding them.
//!
//! [`run`] serves until SIGTERM/SIGINT; [`start`] serves in the background
//! on the configured address (port 0 in tests) and returns a handle.

pub mod config;
pub mod tokens;

mod auth;
mod dead_letters;
mod openapi;
mod routes;
mod state;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use snakepay_domain::ids::RegionNumber;
use snakepay_http::{EdgeLimits, Health, ReadinessCheck, ServerHandle, health_routes, stripe_edge};
use snakepay_store::Store;
use snakepay_store::merchants::KeyHasher;

pub use auth::Permission;
pub use config::InternalApiConfig;
use state::{AppState, Inner};

/// Unix seconds now.
pub fn now() -> i64 {
    snakepay_store::unix_now()
}

async fn app(config: &InternalApiConfig) -> anyhow::Result<axum::Router> {
    let section = &config.internal_api;
    let store = Store::connect_lazy_as(&config.database, &config.internal_api.database_user)?;
    let verifier = tokens::Verifier::with_trust(
        section.jwks_source(),
        &section.token_issuer,
        &section.token_audience,
        &config.tls,
    )?;
    // A JWKS that cannot be read at start-up is logged, not fatal: an
    // identity provider may be briefly down, and the verifier retries when
    // a token arrives.
    match verifier.load().await {
        Ok(count) => tracing::info!(auth.jwks_keys = count, "staff token keys loaded"),
        Err(error) => {
            tracing::error!(error.chain = %format!("{error:#}"), "staff token keys not loaded yet")
        }
    }
    let redis = config
        .redis
        .as_ref()
        .map(snakepay_cache::Redis::new)
        .transpose()?;
    let state = AppState(Arc::new(Inner {
        store: store.clone(),
        hasher: KeyHasher::new(&config.api_keys.hash_secret())?,
        region: RegionNumber(config.region.number),
        region_code: config.region.code.clone(),
        verifier,
        intent_cache: redis.as_ref().map(|redis| {
            snakepay_cache::VersionedCache::of(Arc::clone(redis), &snakepay_cache::PAYMENT_INTENTS)
        }),
        redis: redis.clone(),
        refund_approval_threshold: section.refund_approval_threshold,
        dead_letters: config.broker.as_ref().map(dead_letters::DeadLetters::new),
        processor_sim: section.processor_sim.clone(),
        http: snakepay_http::tls::client_builder(&config.tls)?
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?,
    }));
    let readiness_store = store.clone();
    let checks = vec![ReadinessCheck::new("postgres", move || {
        let store = readiness_store.clone();
        async move {
            match store.ping().await {
                Ok(()) => Health::ok(),
                Err(error) => Health::down(format!("{error:#}")),
            }
        }
    })];
    store.export_pool_metrics();
    let routes = snakepay_http::admin::mark_routes(
        routes::router(state.clone()).merge(health_routes(checks)),
    );
    let limits = EdgeLimits {
        body_limit_bytes: section.http.body_limit_bytes,
        request_timeout: Duration::from_millis(section.http.request_timeout_ms),
        path_prefix: None,
        max_in_flight: section.http.max_in_flight,
    };
    Ok(snakepay_http::admin::record_requests(stripe_edge(
        routes, limits,
    )))
}

/// Serves in the background; for tests and embedding.
pub async fn start(config: &InternalApiConfig) -> anyhow::Result<ServerHandle> {
    let app = app(config).await?;
    snakepay_http::admin::spawn_with_admin(&config.internal_api.http, app).await
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn run(config: InternalApiConfig) -> anyhow::Result<()> {
    let telemetry = config.telemetry.clone();
    snakepay_telemetry::run_instrumented("internal-api", &telemetry, serve_until_shutdown(config))
        .await
}

async fn serve_until_shutdown(config: InternalApiConfig) -> anyhow::Result<()> {
    let app = app(&config).await?;
    snakepay_http::admin::run_with_admin(
        &config.internal_api.http,
        app,
        snakepay_http::shutdown_signal(),
        "internal api",
    )
    .await?;
    tracing::info!("internal api stopped");
    Ok(())
}
