//! The accept loop of a listener and the serving of one connection (plain or TLS) under the
//! header-read and idle timeouts and the connection cap of [`super::serve`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::conn::{Expired, Held, Slot, Tracker, Watched};
use crate::metrics::ConnectionEnd;
use crate::tls::ServerTls;

/// One listening socket: what it serves and under which limits.
pub(super) struct Listener {
    pub(super) app: Router,
    pub(super) tracker: Arc<Tracker>,
    pub(super) tls: Option<ServerTls>,
    pub(super) name: &'static str,
}

impl Listener {
    /// Accepts until the stop, then waits for the connections to end.
    pub(super) async fn run(
        self,
        listener: tokio::net::TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let acceptor = self.tls.as_ref().map(ServerTls::acceptor);
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or a transient accept error): wait a moment
                    // rather than spin; the timeouts free connections meanwhile.
                    tracing::warn!(listener = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small answers go out at once (no Nagle delay behind a delayed ACK).
            let _ = tcp.set_nodelay(true);
            let Some(slot) = self.tracker.admit() else {
                tracing::debug!(listener = self.name, %peer, "refused a connection at the cap");
                drop(tcp);
                continue;
            };
            let app = self.app.clone();
            let stop = stop.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => serve_connection(tcp, peer, slot, app, stop).await,
                    Some(acceptor) => serve_tls(acceptor, tcp, peer, slot, app, stop).await,
                }
            });
        }
        drop(listener);
        // Graceful: the connections were told to stop; wait until they have.
        while self.tracker.len() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Serves one connection until it ends, times out, is evicted, or the server stops.
async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::clone(slot.conn());
    let limits = *slot.tracker().limits();
    let io = TokioIo::new(Watched::new(io, Arc::clone(&conn)));
    let tower = TowerToHyperService::new(app);
    let on_request = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        // The connection serves until the response body is sent (or dropped).
        let guard = on_request.begin();
        let answer = hyper::service::Service::call(&tower, req);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(move |body| Held::new(body, guard)))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Our own timeouts (below) tell a head that is late from a keep-alive that is idle.
    builder
        .keep_alive(true)
        .header_read_timeout(Option::<Duration>::None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&limits);
        let sleep = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = conn.changed() => {
                if conn.is_evicted() {
                    tracing::debug!(%peer, "closed to make room under the connection cap");
                    break;
                }
            }
            () = sleep => {
                match conn.expired(&limits, tokio::time::Instant::now()) {
                    Some(Expired::HeaderTimeout) => {
                        slot.tracker().count_end(ConnectionEnd::HeaderTimeout);
                        tracing::debug!(%peer, "closed: request head not complete in time");
                        break;
                    }
                    Some(Expired::IdleTimeout) => {
                        slot.tracker().count_end(ConnectionEnd::IdleTimeout);
                        tracing::debug!(%peer, "closed: idle");
                        break;
                    }
                    None => {}
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Serving nothing (idle, or half a head): closed now; else after its answer.
                if !conn.serving() {
                    break;
                }
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
    drop(slot);
}

/// Completes the TLS handshake (within the header-read timeout; an eviction or the stop ends it
/// too), then serves the connection.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    stop: watch::Receiver<bool>,
) {
    let limits = *slot.tracker().limits();
    let conn = Arc::clone(slot.conn());
    let mut stop_hs = stop.clone();
    let tls = tokio::select! {
        r = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)) => r,
        () = conn.evicted() => return,
        _ = stop_hs.wait_for(|s| *s) => return,
    };
    match tls {
        Ok(Ok(stream)) => serve_connection(stream, peer, slot, app, stop).await,
        Ok(Err(e)) => {
            slot.tracker().count_end(ConnectionEnd::TlsHandshake);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            slot.tracker().count_end(ConnectionEnd::HeaderTimeout);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}
