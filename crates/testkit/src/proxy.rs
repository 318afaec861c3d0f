//! A TCP fault proxy: a service connects to the proxy's port instead of its
//! dependency, and the test cuts or delays that path.
//!
//! - [`FaultProxy::cut`] closes every open connection and refuses new ones
//!   (accepted, then closed at once) until [`FaultProxy::heal`]: to the
//!   service it looks like the dependency died or the network broke.
//! - [`FaultProxy::delay`] holds every chunk of data, both ways, for a
//!   while before passing it on: a slow network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes read per chunk.
const CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Cut,
    Delay(Duration),
}

/// The proxy; it stops accepting when dropped (open connections then end
/// with their peers).
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(mode);
        let accept = tokio::spawn(accept_loop(listener, target, Arc::clone(&mode)));
        Ok(FaultProxy { port, mode, accept })
    }

    /// `host:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Delays every chunk by `delay`, both ways.
    pub fn delay(&self, delay: Duration) {
        self.mode.send_replace(Mode::Delay(delay));
    }

    /// Back to passing traffic as it comes.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.mode.send_replace(Mode::Cut);
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        let mode = mode.subscribe();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            let mut cut = mode.clone();
            let pipes = async {
                tokio::join!(
                    pipe(client_read, upstream_write, mode.clone()),
                    pipe(upstream_read, client_write, mode.clone()),
                )
            };
            tokio::select! {
                _ = pipes => {}
                _ = cut.wait_for(|m| *m == Mode::Cut) => {}
            }
        });
    }
}

/// Copies one direction, applying the current delay to each chunk.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0_u8; CHUNK_BYTES];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let current = *mode.borrow();
        if let Mode::Delay(delay) = current {
            tokio::time::sleep(delay).await;
        }
        let Some(chunk) = buffer.get(..read) else {
            break;
        };
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
