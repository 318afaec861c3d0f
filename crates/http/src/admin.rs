//! The admin port and HTTP request metrics (docs/metrics.md).
//!
//! - [`spawn_admin`] serves `GET /metrics` (Prometheus) and `GET /livez` on
//!   a listener of its own (`metrics_addr`), never on the public port.
//! - [`mark_routes`] and [`record_requests`] count every request by method,
//!   route template and status, and time it. The route template is only
//!   known inside the router, while a timeout or a 404 is answered by the
//!   edge around it; so the outer layer hands the request a slot, the inner
//!   one fills it with the matched template, and the outer one records
//!   whatever answered. The outer layer also opens the request's server
//!   span (docs/observability.md), continuing the caller's trace.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing};
use snakepay_telemetry::metrics::{self, HTTP, labels};
use tracing::Instrument;

use anyhow::Context;
use snakepay_config::sections::HttpConfig;

use crate::server::{ServerHandle, serve_tls, spawn_tls};
use crate::tls::ServerTls;

/// The route template of a request, filled in by [`mark_routes`].
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Records the matched route template for [`record_requests`]. Call on the
/// router that holds the routes, after they are all added.
pub fn mark_routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.route_layer(middleware::from_fn(mark_route))
}

async fn mark_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        request.extensions().get::<RouteSlot>(),
        request.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
        // Name the server span now, so the handler's log lines carry it.
        let span = tracing::Span::current();
        snakepay_telemetry::trace::rename(&span, format!("{} {}", request.method(), path.as_str()));
        span.record("http.route", path.as_str());
    }
    next.run(request).await
}

/// Counts and times every request; the outermost layer of a service.
pub fn record_requests(router: Router) -> Router {
    // Touch the family so a scrape lists it before the first request.
    let _ = &HTTP.requests;
    router.layer(middleware::from_fn(record))
}

async fn record(mut request: Request, next: Next) -> Response {
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().as_str().to_owned();
    // The server span: named `{method} {route}` once the router has matched
    // (the template, never the path, which holds IDs), a child of the
    // caller's span when it sent a `traceparent`, else a root of its own
    // (never a child of the serving task's lifecycle span).
    let span = tracing::info_span!(
        parent: None,
        "http.request",
        otel.name = %method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    snakepay_telemetry::trace::extract_http(&span, request.headers());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let route = slot.0.get().map_or("unmatched", String::as_str);
    if slot.0.get().is_none() {
        snakepay_telemetry::trace::rename(&span, format!("{method} {route}"));
    }
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    HTTP.requests
        .get_or_create(&labels([
            ("method", &method),
            ("route", route),
            ("status", response.status().as_str()),
        ]))
        .inc();
    HTTP.duration
        .get_or_create(&labels([("method", &method), ("route", route)]))
        .observe(metrics::seconds(started.elapsed()));
    response
}

/// The admin listener's routes.
pub fn admin_router() -> Router {
    Router::new()
        .route("/metrics", routing::get(scrape))
        .route("/livez", routing::get(|| async { "ok" }))
}

async fn scrape() -> Response {
    (
        [(http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
        .into_response()
}

/// Serves the admin routes on `addr` in the background (port 0 in tests),
/// when the service has a `metrics_addr`; with TLS when `tls` is given (the
/// service's own certificate).
pub async fn spawn_admin(
    addr: Option<SocketAddr>,
    tls: Option<ServerTls>,
) -> std::io::Result<Option<ServerHandle>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let handle = spawn_tls(addr, tls, admin_router(), Duration::from_millis(100)).await?;
    tracing::info!(http.addr = %handle.addr(), http.url = %handle.url(), "metrics listening");
    Ok(Some(handle))
}

/// Serves `app` on the listener `http` describes in the background, with the
/// admin listener (if any) attached to the returned handle, both with TLS
/// when `http.tls` is set: what every service's `start` does.
pub async fn spawn_with_admin(http: &HttpConfig, app: Router) -> anyhow::Result<ServerHandle> {
    let tls = ServerTls::load_optional(http.tls.as_ref())?;
    let grace = Duration::from_millis(http.shutdown_grace_ms);
    let admin = spawn_admin(http.metrics_addr, tls.clone())
        .await
        .context("binding the metrics address")?;
    let server = spawn_tls(http.listen_addr, tls, app, grace)
        .await
        .with_context(|| format!("binding {}", http.listen_addr))?;
    Ok(server.with_admin(admin))
}

/// Serves `app` and the admin listener as `http` describes until `shutdown`
/// resolves, then drains: what every service's `run` does.
pub async fn run_with_admin(
    http: &HttpConfig,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    service: &str,
) -> anyhow::Result<()> {
    let tls = ServerTls::load_optional(http.tls.as_ref())?;
    let _admin = spawn_admin(http.metrics_addr, tls.clone())
        .await
        .context("binding the metrics address")?;
    let listener = tokio::net::TcpListener::bind(http.listen_addr)
        .await
        .with_context(|| format!("binding {}", http.listen_addr))?;
    tracing::info!(
        http.addr = %listener.local_addr()?,
        http.tls = tls.is_some(),
        "{service} listening"
    );
    let grace = Duration::from_millis(http.shutdown_grace_ms);
    serve_tls(listener, tls, app, shutdown, grace).await?;
    Ok(())
}
