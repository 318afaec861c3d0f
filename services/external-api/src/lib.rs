//! Snakepay's External API: the merchant-facing, Stripe-compatible API
//! (../shared/API.md).
//!
//! # Layout
//!
//! - [`config`]: `ExternalApiConfig`, the sections this service reads.
//! - `state.rs`: what handlers share (store, key hasher, vault, region).
//! - `auth.rs`: the `Auth` extractor (API keys → merchant, mode, key kind),
//!   then the key's rate limit (`rate_limit.rs`), before any parameter is read.
//! - `idempotent.rs`: POSTs under Stripe's idempotency rules, the response
//!   stored in the same transaction as the change.
//! - `outcome/`: waiting for the processor's outcome after a confirm,
//!   capture, cancel or refund (the reply queue, the waiter registry, the
//!   final answer), when `[broker]` is configured.
//! - `cards.rs`: tokenizing card details into the vault.
//! - `routes/`: one module per resource; `openapi.rs`: the document,
//!   generated from the same route registrations.
//! - `checkout_cors` (below): CORS for the hosted checkout's origins, on the
//!   two routes a publishable key may use.
//!
//! [`run`] serves until SIGTERM/SIGINT; [`start`] serves in the background
//! on the configured address (port 0 in tests) and returns a handle.

pub mod config;

mod auth;
mod cards;
mod idempotent;
mod openapi;
mod outcome;
mod rate_limit;
mod request_log;
mod routes;
mod state;

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use anyhow::Context;
use snakepay_cache::SharedRateLimiter;
use snakepay_domain::ids::RegionNumber;
use snakepay_http::{EdgeLimits, Health, ReadinessCheck, ServerHandle, health_routes, stripe_edge};
use snakepay_store::Store;
use snakepay_store::merchants::KeyHasher;
use snakepay_vault::Vault;

pub use config::ExternalApiConfig;
use state::{AppState, Inner};

/// Where the shared rate limiter keeps its per-key state in Redis.
const RATE_LIMIT_PREFIX: &str = "ratelimit:";

/// How often expired idempotency keys are deleted.
const REAPER_INTERVAL: Duration = Duration::from_secs(15 * 60);

fn app(config: &ExternalApiConfig) -> anyhow::Result<(axum::Router, AppState)> {
    let store = Store::connect_lazy_as(&config.database, &config.external_api.database_user)?;
    store.export_pool_metrics();
    let vault = open_vault(&config.vault)?;
    let redis = config
        .redis
        .as_ref()
        .map(snakepay_cache::Redis::new)
        .transpose()?;
    let outcomes = match &config.broker {
        Some(_) => outcome::Outcomes::new(Duration::from_millis(
            config.external_api.wait_for_outcome_ms,
        )),
        None => outcome::Outcomes::disabled(),
    };
    let state = AppState(Arc::new(Inner {
        store: store.clone(),
        hasher: KeyHasher::new(&config.api_keys.hash_secret())?,
        vault,
        region: RegionNumber(config.region.number),
        other_regions: config.external_api.other_regions.clone(),
        fingerprint_key: idempotent::RequestFingerprintKey::derive(&config.api_keys.hash_secret())?,
        rate_limits: rate_limit::RateLimits::new(
            config.external_api.rate_limit_live_per_second,
            config.external_api.rate_limit_test_per_second,
            redis
                .as_ref()
                .map(|redis| SharedRateLimiter::new(Arc::clone(redis), RATE_LIMIT_PREFIX)),
        )
        .with_auth_failures_per_second(config.external_api.auth_failures_per_second),
        outcomes: outcomes.clone(),
        caches: redis.as_ref().map(snakepay_cache::Caches::new),
        audit: snakepay_store::audit::Recorder::start(store.control().clone()),
    }));
    let readiness_store = store.clone();
    let mut checks = vec![ReadinessCheck::new("postgres", move || {
        let store = readiness_store.clone();
        async move {
            match store.ping().await {
                Ok(()) => Health::ok(),
                Err(error) => Health::down(format!("{error:#}")),
            }
        }
    })];
    checks.extend(outcomes.readiness_check());
    if let Some(redis) = redis {
        // Redis down means slower, never unready: requests are still served.
        checks.push(ReadinessCheck::new("redis", move || {
            let redis = Arc::clone(&redis);
            async move {
                match redis.degraded_reason() {
                    None => Health::ok(),
                    Some(reason) => Health::degraded(reason),
                }
            }
        }));
    }
    let request_log = config
        .broker
        .as_ref()
        .filter(|_| config.external_api.request_log)
        .map(|broker| {
            request_log::RequestLog::start(
                broker.url.expose().to_string(),
                snakepay_bus::Topology::from_config(broker),
            )
        });
    let routes = routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            request_log,
            request_log::middleware,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(checkout_cors::CheckoutCors::new(
                &config.external_api.checkout_origins,
            )?),
            checkout_cors::middleware,
        ))
        .with_state(state.clone())
        .merge(health_routes(checks));
    let routes = snakepay_http::admin::mark_routes(routes);
    let http = &config.external_api.http;
    let limits = EdgeLimits {
        body_limit_bytes: http.body_limit_bytes,
        request_timeout: Duration::from_millis(http.request_timeout_ms),
        path_prefix: config.external_api.path_prefix.clone(),
        max_in_flight: http.max_in_flight,
    };
    let app = snakepay_http::admin::record_requests(stripe_edge(routes, limits));
    Ok((app, state))
}

/// Deletes idempotency keys past their retention, on every shard, and lets
/// the rate limiter forget idle keys.
fn spawn_reaper(state: AppState) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(REAPER_INTERVAL);
        loop {
            interval.tick().await;
            state.rate_limits.forget_idle();
            for (shard, pool) in state.store.shards() {
                match snakepay_store::idempotency::reap(pool).await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(
                        db.shard = shard.0,
                        idempotency.reaped = count,
                        "reaped idempotency keys"
                    ),
                    Err(error) => {
                        tracing::warn!(db.shard = shard.0, error = %error, "idempotency reaper failed")
                    }
                }
            }
        }
    }.in_current_span());
}

/// Listens for outcome replies in the background when a broker is
/// configured (and waiting is on); never waits for the broker itself.
fn spawn_reply_listener(
    state: &AppState,
    config: &ExternalApiConfig,
) -> Option<tokio::task::JoinHandle<()>> {
    let broker = config.broker.as_ref()?;
    state
        .outcomes
        .listen(broker.url.expose().as_str().to_owned())
}

/// Serves in the background; for tests and embedding.
pub async fn start(config: &ExternalApiConfig) -> anyhow::Result<ServerHandle> {
    let (app, state) = app(config)?;
    spawn_reply_listener(&state, config);
    spawn_reaper(state);
    snakepay_http::admin::spawn_with_admin(&config.external_api.http, app).await
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn run(config: ExternalApiConfig) -> anyhow::Result<()> {
    let telemetry = config.telemetry.clone();
    snakepay_telemetry::run_instrumented("external-api", &telemetry, serve_until_shutdown(config))
        .await
}

async fn serve_until_shutdown(config: ExternalApiConfig) -> anyhow::Result<()> {
    let (app, state) = app(&config)?;
    let store = state.store.clone();
    let audit = state.audit.clone();
    let listener_task = spawn_reply_listener(&state, &config);
    spawn_reaper(state);
    snakepay_http::admin::run_with_admin(
        &config.external_api.http,
        app,
        snakepay_http::shutdown_signal(),
        "external api",
    )
    .await?;
    // Drops the broker connection, and with it the reply queue.
    if let Some(task) = listener_task {
        task.abort();
    }
    // Failed authentications of the last fraction of a second are still in
    // the audit buffer.
    if let Err(error) = audit.flush().await {
        tracing::warn!(
            error = format!("{error:#}"),
            "flushing the audit buffer at shutdown"
        );
    }
    store.close().await;
    tracing::info!("external api stopped");
    Ok(())
}

/// CORS for the hosted checkout (web/), which calls the API from the
/// browser with a publishable key. Only the configured checkout origins are
/// allowed, and only on the two routes a publishable key can use; every
/// other route answers cross-origin requests without CORS headers, so
/// browsers refuse them. CORS grants no authority of its own: the key and
/// the client secret still decide what a request may do.
mod checkout_cors {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::{MatchedPath, Request, State};
    use axum::middleware::Next;
    use axum::response::Response;
    use http::{HeaderName, HeaderValue, Method, header};
    use tower::{Layer, ServiceExt};
    use tower_http::cors::{AllowOrigin, CorsLayer};

    /// Retrieve an intent (GET) with its client secret.
    const RETRIEVE_ROUTE: &str = "/v1/payment_intents/{id}";
    /// Confirm an intent (POST) with its client secret.
    const CONFIRM_ROUTE: &str = "/v1/payment_intents/{id}/confirm";
    /// How long a browser may reuse a preflight answer.
    const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

    pub struct CheckoutCors {
        retrieve: Option<CorsLayer>,
        confirm: Option<CorsLayer>,
    }

    impl CheckoutCors {
        pub fn new(origins: &[String]) -> anyhow::Result<CheckoutCors> {
            if origins.is_empty() {
                return Ok(CheckoutCors {
                    retrieve: None,
                    confirm: None,
                });
            }
            let origins = origins
                .iter()
                .map(|origin| HeaderValue::from_str(origin))
                .collect::<Result<Vec<_>, _>>()?;
            let layer = |method: Method| {
                CorsLayer::new()
                    .allow_origin(AllowOrigin::list(origins.clone()))
                    .allow_methods([method])
                    .allow_headers([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                        HeaderName::from_static("idempotency-key"),
                        HeaderName::from_static("stripe-version"),
                    ])
                    .expose_headers([HeaderName::from_static(
                        snakepay_http::layers::REQUEST_ID_HEADER,
                    )])
                    .max_age(PREFLIGHT_MAX_AGE)
            };
            Ok(CheckoutCors {
                retrieve: Some(layer(Method::GET)),
                confirm: Some(layer(Method::POST)),
            })
        }
    }

    pub async fn middleware(
        State(cors): State<Arc<CheckoutCors>>,
        request: Request,
        next: Next,
    ) -> Response {
        let layer = match request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
        {
            Some(RETRIEVE_ROUTE) => cors.retrieve.as_ref(),
            Some(CONFIRM_ROUTE) => cors.confirm.as_ref(),
            _ => None,
        };
        match layer {
            Some(layer) => match layer.layer(next).oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None => next.run(request).await,
        }
    }
}

/// The vault with the configured key provider, reloading its key ring so a
/// `snakepay-admin keys rotate` reaches this service without a restart.
fn open_vault(config: &snakepay_config::sections::VaultConfig) -> anyhow::Result<Vault> {
    let provider = snakepay_vault::key_provider(&config.key_provider, &config.key_ring_path)?;
    let description = provider.describe();
    Vault::reloading(provider, snakepay_vault::DEFAULT_RELOAD_INTERVAL)
        .with_context(|| format!("loading the vault's keys from the {description}"))
}
