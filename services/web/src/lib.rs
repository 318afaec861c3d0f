//! Snakepay's web front (DESIGN.md §1): serves the hosted checkout that
//! `web/build.mjs` builds, locally and wherever a CDN is not in front.
//! In the cloud the same files sit in S3 behind CloudFront.
//!
//! # Layout
//!
//! - [`config`]: `WebConfig`, the sections this service reads.
//! - `headers.rs`: the security headers on every response, and caching:
//!   content-hashed `/assets/` for a year, everything else revalidated.
//! - `demo.rs`: the demo shop (`[web.demo]`, local runs): its products and
//!   the server-side step that creates a PaymentIntent with the demo
//!   merchant's secret key.
//! - this file: the routes. `/assets/`, `/checkout/` and `/demo/` are the
//!   build's folders, served precompressed (brotli or gzip, as the client
//!   accepts); `/config.json` tells the pages which External API to call;
//!   `/livez` and `/readyz`.
//!
//! [`run`] serves until SIGTERM/SIGINT; [`start`] serves in the background
//! on the configured address (port 0 in tests) and returns a handle.

pub mod config;

mod demo;
mod headers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use snakepay_http::{Health, ReadinessCheck, ServerHandle, health_routes};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

pub use config::WebConfig;

/// What `web/build.mjs` writes: the page whose presence says "built".
const CHECKOUT_PAGE: &str = "checkout/index.html";
/// How long the readiness check waits for the External API's `/livez`.
const API_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

fn app(config: &WebConfig) -> anyhow::Result<Router> {
    let assets = &config.web.assets_dir;
    let checkout_page = assets.join(CHECKOUT_PAGE);
    anyhow::ensure!(
        checkout_page.is_file(),
        "{} is missing: build the web assets first (`npm ci && npm run build` in web/; scripts/run.sh does it)",
        checkout_page.display()
    );
    let api = &config.region.public_api_url;
    let api_base = api.as_str().trim_end_matches('/').to_owned();
    let policy = Arc::new(headers::SecurityHeaders::new(
        &api.origin().ascii_serialization(),
    )?);
    let browser_config = serde_json::json!({ "api_base_url": api_base });

    let mut checks = vec![ReadinessCheck::new("assets", move || {
        let page = checkout_page.clone();
        async move {
            match tokio::fs::metadata(&page).await {
                Ok(_) => Health::ok(),
                Err(_) => Health::down("the checkout page is missing"),
            }
        }
    })];
    let mut router = Router::new()
        .nest_service("/assets", static_files(&assets.join("assets")))
        .nest_service("/checkout", static_files(&assets.join("checkout")))
        .route(
            "/config.json",
            get(move || {
                let body = browser_config.clone();
                async move { axum::Json(body).into_response() }
            }),
        );
    if let Some(demo) = &config.web.demo {
        let shop = Arc::new(demo::Demo::load(
            &demo.merchant_file,
            &demo.merchant_name,
            api,
            &config.tls,
        )?);
        router = router
            .route("/", get(|| async { Redirect::to("/demo/") }))
            .route("/demo/products.json", get(demo::products))
            .route("/demo/pay", post(demo::pay).with_state(shop))
            .nest_service("/demo", static_files(&assets.join("demo")));
        checks.push(api_check(&api_base, &config.tls)?);
    }
    let http = &config.web.http;
    let router =
        snakepay_http::admin::mark_routes(router.fallback(not_found).merge(health_routes(checks)));
    Ok(snakepay_http::admin::record_requests(
        router
            .layer(DefaultBodyLimit::max(http.body_limit_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_millis(http.request_timeout_ms),
            ))
            .layer(axum::middleware::from_fn_with_state(
                policy,
                headers::middleware,
            )),
    ))
}

/// One of the build's folders: `index.html` for `/folder/`, the brotli or
/// gzip copy when the client takes it, 404 for anything else.
fn static_files(
    dir: &Path,
) -> ServeDir<tower_http::set_status::SetStatus<axum::routing::MethodRouter>> {
    ServeDir::new(PathBuf::from(dir))
        .precompressed_br()
        .precompressed_gzip()
        .not_found_service(axum::routing::any(not_found))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Not found\n",
    )
        .into_response()
}

/// The demo shop needs the External API; without it the checkout's own
/// pages still load, so a down API degrades rather than unreadies.
fn api_check(
    api_base: &str,
    trust: &snakepay_config::sections::OutboundTlsConfig,
) -> anyhow::Result<ReadinessCheck> {
    let client = snakepay_http::tls::client_builder(trust)?
        .timeout(API_CHECK_TIMEOUT)
        .build()?;
    let url = format!("{api_base}/livez");
    Ok(ReadinessCheck::new("external_api", move || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => Health::ok(),
                Ok(response) => Health::degraded(format!("livez answered {}", response.status())),
                Err(_) => Health::degraded("not reachable"),
            }
        }
    }))
}

/// Serves in the background; for tests and embedding.
pub async fn start(config: &WebConfig) -> anyhow::Result<ServerHandle> {
    let app = app(config)?;
    snakepay_http::admin::spawn_with_admin(&config.web.http, app).await
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn run(config: WebConfig) -> anyhow::Result<()> {
    let telemetry = config.telemetry.clone();
    snakepay_telemetry::run_instrumented("web", &telemetry, serve_until_shutdown(config)).await
}

async fn serve_until_shutdown(config: WebConfig) -> anyhow::Result<()> {
    let app = app(&config)?;
    if config.web.demo.is_some() {
        let scheme = if config.web.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let addr = config.web.http.listen_addr;
        tracing::info!(url = %format!("{scheme}://{addr}/demo/"), "demo shop open");
    }
    snakepay_http::admin::run_with_admin(
        &config.web.http,
        app,
        snakepay_http::shutdown_signal(),
        "web",
    )
    .await?;
    tracing::info!("web stopped");
    Ok(())
}
