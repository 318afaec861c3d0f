//! Serving a router: graceful shutdown with a bounded grace period, the
//! process's shutdown signal, and a handle that makes port-0 test servers easy.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tracing::Instrument;

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::middleware::AddExtension;
use axum::serve::IncomingStream;
use axum::{Extension, Router};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::Layer;

use crate::tls::{ServerTls, TlsListener};

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish and closes idle connections. If some are
/// still running after `grace`, returns anyway: the caller is about to exit,
/// and an orchestrator's kill deadline is shorter than an unbounded wait.
///
/// Handlers can extract `axum::extract::ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    serve_tls(listener, None, app, shutdown, grace).await
}

/// [`serve`], speaking TLS when `tls` is given (crates/http, `tls.rs`).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Option<ServerTls>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let (fired_tx, fired_rx) = oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(
            shutdown.grace_ms = millis(grace),
            "shutdown requested; draining in-flight requests"
        );
        let _ = fired_tx.send(());
    }
    // axum runs the signal on a task of its own; it stays in the caller's
    // span, so the line it logs has the service's trace.
    .in_current_span();
    let grace_expired = async move {
        if fired_rx.await.is_err() {
            // The server ended without a shutdown request; it wins the select.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    let server = async move {
        match tls {
            None => {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(signal)
                .into_future()
                .await
            }
            Some(tls) => {
                axum::serve(TlsListener::new(listener, &tls)?, WithPeer(app))
                    .with_graceful_shutdown(signal)
                    .into_future()
                    .await
            }
        }
    };
    tokio::select! {
        result = server => result,
        () = grace_expired => {
            tracing::warn!(shutdown.grace_ms = millis(grace), "grace period over; abandoning requests still in flight");
            Ok(())
        }
    }
}

/// Gives each TLS connection's requests `ConnectInfo<SocketAddr>`, as
/// `into_make_service_with_connect_info` does for plain TCP.
#[derive(Clone)]
struct WithPeer(Router);

impl<'a> tower::Service<IncomingStream<'a, TlsListener>> for WithPeer {
    type Response = AddExtension<Router, ConnectInfo<SocketAddr>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: IncomingStream<'a, TlsListener>) -> Self::Future {
        let peer = ConnectInfo(*incoming.remote_addr());
        std::future::ready(Ok(Extension(peer).layer(self.0.clone())))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error.chain = %error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(error.chain = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// A server running on a background task: bind to `127.0.0.1:0`, read the
/// real address, shut it down. Services use it in their `run` too.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    /// The service's admin listener (`/metrics`), stopped with it.
    admin: Option<Box<ServerHandle>>,
    /// `https` when the listener speaks TLS.
    scheme: &'static str,
}

/// Binds `addr` (port 0 picks a free port) and serves `app` in the background.
pub async fn spawn(
    addr: impl ToSocketAddrs,
    app: Router,
    grace: Duration,
) -> io::Result<ServerHandle> {
    spawn_tls(addr, None, app, grace).await
}

/// [`spawn`], speaking TLS when `tls` is given.
pub async fn spawn_tls(
    addr: impl ToSocketAddrs,
    tls: Option<ServerTls>,
    app: Router,
    grace: Duration,
) -> io::Result<ServerHandle> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped handle shuts the server down too.
        let _ = rx.await;
    };
    let task = tokio::spawn(serve_tls(listener, tls, app, shutdown, grace).in_current_span());
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        task,
        admin: None,
        scheme,
    })
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` (`https://` with TLS), without a trailing slash.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Attaches the service's admin listener, which then lives and stops
    /// with this server.
    pub fn with_admin(mut self, admin: Option<ServerHandle>) -> ServerHandle {
        self.admin = admin.map(Box::new);
        self
    }

    /// The admin listener's address (`/metrics`), if the service has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(admin) = &mut self.admin {
            admin.begin_shutdown();
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.begin_shutdown();
        self.wait().await
    }

    /// Waits until the server has stopped (after [`ServerHandle::begin_shutdown`]).
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)?
    }
}
