//! [`ServerHandle`]: a site's server on its own tokio runtime, stopped gracefully.
//!
//! The accept loop is ours (hyper's HTTP/1.1 connections serving the axum router), so that a
//! primary holds under abuse ([`ServeOptions`]):
//!
//! - **HTTPS** with [`ServeOptions::tls`]: rustls, HTTP/1.1 (ALPN `http/1.1`); the handshake
//!   counts towards the header-read timeout.
//! - **Header-read timeout**: a connection's request head must be complete within it (from
//!   the accept, or from its first byte after an idle keep-alive period).
//! - **Idle timeout**: a keep-alive connection that sends nothing for this long is closed. A
//!   request in flight (a long poll, a large blob) is never timed out here.
//! - **Connection cap**: at the cap, the oldest connection that serves nothing (idle, or still
//!   sending its head) is closed to make room, so half-open connections never keep a signed
//!   request out; when every connection is serving a request, the new one is closed at once.
//! - **`/metrics` on its own listener** with [`ServeOptions::metrics_listen`] (plain HTTP, as
//!   Prometheus scrapes); the main listener then answers 404 there. Without it, `/metrics` is
//!   served on the main listener only when that listener is on a loopback address.
//!
//! The per-access-key limit on requests in flight is in the router ([`NodeState`]'s
//! `with_max_requests_per_key`), where the key is known.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::accept::Listener;
use super::conn::{Limits, Tracker};
use super::{NodeState, router_with};
use crate::tls::ServerTls;

/// How long requests in flight may run after a stop.
const GRACE: Duration = Duration::from_secs(2);

/// Most connections the metrics listener keeps open (a scraper needs one or two).
const METRICS_MAX_CONNECTIONS: usize = 64;

/// How a server listens: worker threads, HTTPS, timeouts, the connection cap and where
/// `/metrics` is served. [`ServeOptions::default`] holds the defaults the CLI shows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Worker threads of the server's runtime.
    pub threads: usize,
    /// Serve HTTPS only, with this certificate and key.
    pub tls: Option<ServerTls>,
    /// A request head (with the TLS handshake, for a new connection) must be complete within
    /// this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once on the main listener.
    pub max_connections: usize,
    /// Serve `/metrics` on this address (plain HTTP) and not on the main listener.
    pub metrics_listen: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            threads: 2,
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            metrics_listen: None,
        }
    }
}

impl ServeOptions {
    /// The defaults.
    pub fn new() -> Self {
        ServeOptions::default()
    }

    /// Worker threads (at least one).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Serve HTTPS with `tls`.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The header-read timeout.
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// The idle keep-alive timeout.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The connection cap (at least one).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Serve `/metrics` on `addr` instead of the main listener.
    pub fn metrics_listen(mut self, addr: impl Into<String>) -> Self {
        self.metrics_listen = Some(addr.into());
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections.max(1),
        }
    }
}

/// A running server on its own tokio runtime. Stops (gracefully) on [`ServerHandle::stop`] or
/// drop.
pub struct ServerHandle {
    addr: SocketAddr,
    https: bool,
    metrics_addr: Option<SocketAddr>,
    metrics_on_main: bool,
    tracker: Arc<Tracker>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<NodeState>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("https", &self.https)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("starting the server runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn bind(addr: &str) -> Result<(std::net::TcpListener, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    let local = listener.local_addr().map_err(ServeError::Runtime)?;
    listener
        .set_nonblocking(true)
        .map_err(ServeError::Runtime)?;
    Ok((listener, local))
}

impl ServerHandle {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves `state` on a new runtime with `threads`
    /// worker threads, on a background thread, with the default [`ServeOptions`].
    pub fn start(addr: &str, state: Arc<NodeState>, threads: usize) -> Result<Self, ServeError> {
        ServerHandle::start_with(addr, state, ServeOptions::default().threads(threads))
    }

    /// Binds `addr` and serves `state` as `options` say.
    pub fn start_with(
        addr: &str,
        state: Arc<NodeState>,
        options: ServeOptions,
    ) -> Result<Self, ServeError> {
        let (listener, local) = bind(addr)?;
        let metrics = match &options.metrics_listen {
            Some(m) => Some(bind(m)?),
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
        let metrics_on_main = metrics.is_none() && local.ip().is_loopback();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("geo-http")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let (tx, rx) = watch::channel(false);
        let limits = options.limits();
        let tracker = Arc::new(Tracker::new(limits, Some(Arc::clone(&state))));
        let main = Listener {
            app: router_with(Arc::clone(&state), metrics_on_main),
            tracker: Arc::clone(&tracker),
            tls: options.tls.clone(),
            name: "api",
        };
        let scrape = metrics.map(|(l, _)| {
            let limits = Limits {
                max_connections: METRICS_MAX_CONNECTIONS.min(limits.max_connections),
                ..limits
            };
            (
                l,
                Listener {
                    app: super::metrics_router(Arc::clone(&state)),
                    tracker: Arc::new(Tracker::new(limits, None)),
                    tls: None,
                    name: "metrics",
                },
            )
        });
        let thread = std::thread::Builder::new()
            .name("geo-http-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut loops = Vec::new();
                    for (std, listener) in std::iter::once((listener, main)).chain(scrape) {
                        match tokio::net::TcpListener::from_std(std) {
                            Ok(l) => loops.push(tokio::spawn(listener.run(l, rx.clone()))),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot use the listening socket");
                                return;
                            }
                        }
                    }
                    // Each loop stops accepting on the stop, then waits for its connections;
                    // requests in flight get a grace period, then the server stops anyway.
                    let all = futures_util::future::join_all(loops);
                    let mut hard = rx;
                    let deadline = async move {
                        let _ = hard.wait_for(|stop| *stop).await;
                        tokio::time::sleep(GRACE).await;
                    };
                    tokio::select! {
                        _ = all => {},
                        () = deadline => tracing::info!("stopped with requests still in flight"),
                    }
                });
                // Do not wait for streaming bodies whose clients went quiet.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Runtime)?;
        let https = options.tls.is_some();
        tracing::info!(
            addr = %local,
            scheme = if https { "https" } else { "http" },
            header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
            idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
            max_connections = limits.max_connections,
            "Geo HTTP server listening"
        );
        match metrics_addr {
            Some(m) => tracing::info!(addr = %m, "metrics listening (GET /metrics)"),
            None if !metrics_on_main => tracing::info!(
                addr = %local,
                "/metrics is not served on a non-loopback listener: give --metrics-listen ADDR \
                 (GEO_METRICS_LISTEN) to serve it on its own address"
            ),
            None => {}
        }
        Ok(ServerHandle {
            addr: local,
            https,
            metrics_addr,
            metrics_on_main,
            tracker,
            shutdown: Some(tx),
            thread: Some(thread),
            state,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` when serving TLS, else `http://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The metrics listener's address, when `/metrics` has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Where `GET /metrics` is answered: `http://ADDR/metrics` on the metrics listener, or
    /// on the main listener (loopback only); `None` when it is served nowhere.
    pub fn metrics_url(&self) -> Option<String> {
        match self.metrics_addr {
            Some(a) => Some(format!("http://{a}/metrics")),
            None if self.metrics_on_main => Some(format!("{}/metrics", self.url())),
            None => None,
        }
    }

    /// Connections open on the main listener now.
    pub fn open_connections(&self) -> usize {
        self.tracker.len()
    }

    /// The shared state (counters).
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Stops accepting, lets requests in flight finish (up to about a second), and waits.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Blocks until the server stops by itself (it does not, unless it fails) or
    /// `stop` is asked from elsewhere.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
