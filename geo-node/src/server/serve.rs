//! [`ServerHandle`]: a site's server on its own tokio runtime, stopped gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{NodeState, router};

/// How long requests in flight may run after a stop.
const GRACE: Duration = Duration::from_secs(2);

/// A running server on its own tokio runtime. Stops (gracefully) on [`ServerHandle::stop`] or
/// drop.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<NodeState>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
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

impl ServerHandle {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves `state` on a new runtime with `threads`
    /// worker threads, on a background thread.
    pub fn start(addr: &str, state: Arc<NodeState>, threads: usize) -> Result<Self, ServeError> {
        let listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let local = listener.local_addr().map_err(ServeError::Runtime)?;
        listener
            .set_nonblocking(true)
            .map_err(ServeError::Runtime)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("geo-http")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let app = router(Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name("geo-http-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        // Small answers go out at once (no Nagle delay behind a delayed ACK).
                        Ok(l) => axum::serve::ListenerExt::tap_io(l, |tcp| {
                            let _ = tcp.set_nodelay(true);
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot use the listening socket");
                            return;
                        }
                    };
                    let mut graceful = rx.clone();
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = graceful.wait_for(|stop| *stop).await;
                    });
                    // Requests in flight get a grace period, then the server stops anyway.
                    let mut hard = rx;
                    let deadline = async move {
                        let _ = hard.wait_for(|stop| *stop).await;
                        tokio::time::sleep(GRACE).await;
                    };
                    tokio::select! {
                        r = serve => if let Err(e) = r {
                            tracing::error!(error = %e, "HTTP server failed");
                        },
                        () = deadline => tracing::info!("stopped with requests still in flight"),
                    }
                });
                // Do not wait for streaming bodies whose clients went quiet.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Runtime)?;
        tracing::info!(addr = %local, "Geo HTTP server listening");
        Ok(ServerHandle {
            addr: local,
            shutdown: Some(tx),
            thread: Some(thread),
            state,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
