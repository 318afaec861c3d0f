//! Start-up and shutdown: builds the state (replaying the journal), the
//! router with its middleware, binds the listener, and stops gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::app::{App, SharedApp};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{DEFAULT_API_KEY, SimConfig};
use crate::engine::Ledger;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::idempotency::{Fingerprinter, Keys};
use crate::journal::Journal;
use crate::notify::{Notifier, NotifierSettings};
use crate::{admin, api, threeds};

/// The largest request body: an authorization is well under 1 KiB.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests before it cuts them off.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;

/// A simulator running in this process.
pub struct RunningSim {
    addr: SocketAddr,
    base_url: String,
    app: SharedApp,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSim {
    /// The address it listens on (the real port when configured with 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A handle that stops the simulator from elsewhere (e.g. a signal).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Stops accepting requests, cuts short the simulated timeouts, waits
    /// for in-flight requests (at most `SHUTDOWN_GRACE_MS`, 10 s) and closes the
    /// journal, so another simulator may open it.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait_inner().await
    }

    /// Waits until a [`ShutdownHandle`] stops the simulator.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut stopped = self.shutdown.subscribe();
        let _ = stopped.wait_for(|stop| *stop).await;
        self.wait_inner().await
    }

    async fn wait_inner(&mut self) -> anyhow::Result<()> {
        let result = match self.server.take() {
            Some(mut server) => {
                let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(joined) => joined
                        .context("the server task failed")?
                        .context("the server failed"),
                    Err(_) => {
                        tracing::warn!(
                            shutdown.grace_ms = SHUTDOWN_GRACE_MS,
                            "requests still running after the grace period; cutting them off"
                        );
                        server.abort();
                        Ok(())
                    }
                }
            }
            None => Ok(()),
        };
        self.app.journal.close();
        tracing::info!("processor simulator stopped");
        result
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // A test that panics drops the simulator: stop it and free the
        // journal rather than leave a server running in the background.
        if self.server.is_some() {
            let _ = self.shutdown.send(true);
            self.app.journal.close();
        }
    }
}

/// Stops a [`RunningSim`].
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

/// Starts the simulator with the system clock.
pub async fn start(config: SimConfig) -> anyhow::Result<RunningSim> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts the simulator with the given clock (tests decide what "today" is
/// for card expiry and notification timestamps).
pub async fn start_with_clock(config: SimConfig, clock: SharedClock) -> anyhow::Result<RunningSim> {
    let section = config.processor_sim;
    // Read before listening: a bad certificate stops the start.
    let tls = snakepay_http::tls::ServerTls::load_optional(section.tls.as_ref())?;
    if section.api_key == DEFAULT_API_KEY {
        tracing::warn!("processor simulator uses the built-in development API key");
    }
    let (journal, records) = match &section.journal_path {
        Some(path) => Journal::open(path)?,
        None => (Journal::in_memory(), Vec::new()),
    };
    let keys = Keys::default();
    let mut ledger = Ledger::default();
    let replayed = records.len();
    for record in records {
        if let Some((key, stored)) = record.stored_response() {
            keys.restore(key, stored);
        }
        ledger.apply(record);
    }

    let listener = tokio::net::TcpListener::bind(section.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", section.listen_addr))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{addr}");
    let public_url = section.public_url.as_ref().map_or_else(
        || base_url.clone(),
        |url| url.as_str().trim_end_matches('/').to_owned(),
    );

    let (shutdown, shutdown_rx) = watch::channel(false);
    let notifier = match (&section.notification_url, &section.notification_secret) {
        (Some(url), Some(secret)) => Some(Notifier::start(
            NotifierSettings {
                url: url.clone(),
                secret: secret.clone(),
                max_attempts: section.notification_max_attempts,
                backoff_ms: section.notification_backoff_ms,
                timeout_ms: section.notification_timeout_ms,
                trust: config.tls.clone(),
            },
            Arc::clone(&clock),
            shutdown_rx.clone(),
        )?),
        _ => None,
    };
    let faults = section.faults();
    let app = Arc::new(App {
        fingerprinter: Fingerprinter::new(&section.api_key),
        api_key: section.api_key.clone(),
        public_url,
        clock,
        ledger: Mutex::new(ledger),
        journal,
        keys,
        faults: Faults::new(faults.clone()),
        notifier,
        shutdown: shutdown_rx.clone(),
    });

    let router = router(Arc::clone(&app));
    let mut stop = shutdown_rx;
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let server = tokio::spawn(
        async move {
            match tls {
                None => {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                // In-flight requests get the same unbounded drain as plain HTTP.
                Some(tls) => {
                    snakepay_http::serve_tls(listener, Some(tls), router, stopped, Duration::MAX)
                        .await
                }
            }
        }
        .in_current_span(),
    );
    tracing::info!(
        sim.addr = %addr,
        sim.journal = section.journal_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        sim.replayed_records = replayed,
        sim.notifications = section.notification_url.is_some(),
        sim.config = ?faults,
        "processor simulator listening"
    );
    Ok(RunningSim {
        addr,
        base_url,
        app,
        shutdown,
        server: Some(server),
    })
}

/// What `main` calls: starts, runs until SIGTERM or SIGINT, stops gracefully.
pub async fn run(config: SimConfig) -> anyhow::Result<()> {
    // Registered before start-up, so a signal that arrives while the journal
    // is replayed is not lost (the default action would kill the process).
    let signals = Signals::register()?;
    let tls = snakepay_http::tls::ServerTls::load_optional(config.processor_sim.tls.as_ref())?;
    let _admin = snakepay_http::admin::spawn_admin(config.processor_sim.metrics_addr, tls)
        .await
        .context("binding the metrics address")?;
    let sim = start(config).await?;
    let handle = sim.shutdown_handle();
    tokio::spawn(
        async move {
            signals.recv().await;
            tracing::info!("shutdown signal received");
            handle.shutdown();
        }
        .in_current_span(),
    );
    sim.wait().await
}

#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn register() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn register() -> anyhow::Result<Signals> {
        Ok(Signals)
    }

    async fn recv(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn router(app: SharedApp) -> Router {
    let v1 = api::router().layer(middleware::from_fn_with_state(
        Arc::clone(&app),
        simulated_latency,
    ));
    let authenticated = v1
        .merge(admin::router())
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            require_api_key,
        ));
    let router = Router::new()
        .merge(authenticated)
        .merge(threeds::router())
        .route("/livez", routing::get(health))
        .route("/readyz", routing::get(health))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(app);
    snakepay_http::admin::record_requests(snakepay_http::admin::mark_routes(router))
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn not_found() -> Response {
    ApiError::not_found("not_found", "No such route.").into_response()
}

async fn require_api_key(State(app): State<SharedApp>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let valid =
        presented.is_some_and(|key| bool::from(key.as_bytes().ct_eq(app.api_key.as_bytes())));
    if valid {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

async fn simulated_latency(State(app): State<SharedApp>, request: Request, next: Next) -> Response {
    let latency = app.faults.latency();
    if !app.pause(latency).await {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "The processor is shutting down.",
        )
        .into_response();
    }
    next.run(request).await
}

/// One line per request. Only the method, path and status: bodies carry
/// card data and are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(
        http.method = %method,
        http.path = %path,
        http.status = response.status().as_u16(),
        http.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}
