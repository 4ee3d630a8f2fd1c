//! The connections of one listener: the cap, the header-read and idle timeouts, and who gives
//! way at the cap.
//!
//! Each accepted connection has a [`Conn`] that knows what it is doing:
//!
//! - **waiting for a request head** (from its accept, or from the first byte after an idle
//!   keep-alive period): closed when the head is not complete within the header-read timeout;
//! - **serving** (a request in flight, until its response body is sent or dropped): never
//!   timed out here, whatever the time a long poll or a large blob takes;
//! - **idle** between keep-alive requests: closed after the idle timeout without a byte.
//!
//! At the cap ([`Tracker::admit`]) the oldest connection that serves nothing (idle, or still
//! sending its head) is closed to make room, so connections that hang on half a header can never
//! keep a signed request out; only when every connection is serving is the new one closed at
//! once. Connections are therefore never more than the cap.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::NodeState;
use crate::metrics::ConnectionEnd;

/// The timeouts and the cap of a listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// A request head (or a TLS handshake and the first head) must be complete within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Its request head was not complete in time.
    HeaderTimeout,
    /// It sent nothing for the idle timeout.
    IdleTimeout,
}

#[derive(Debug)]
struct Phase {
    /// Requests whose response is not finished.
    in_flight: usize,
    /// When the head of the next request began (or the connection was accepted).
    header_since: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
}

/// One connection's state, shared by its task, its I/O and its requests.
#[derive(Debug)]
pub(super) struct Conn {
    phase: Mutex<Phase>,
    /// Wakes the connection's task: its deadline moved earlier, or it was evicted.
    wake: Notify,
    evicted: AtomicBool,
}

impl Conn {
    fn new(now: Instant) -> Self {
        Conn {
            phase: Mutex::new(Phase {
                in_flight: 0,
                header_since: Some(now),
                idle_since: now,
            }),
            wake: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes came in: outside a request, they begin the next request's head.
    fn read_some(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.header_since.is_none() {
            p.header_since = Some(Instant::now());
            drop(p);
            self.wake.notify_one();
        }
    }

    /// A request head was read: the connection serves until the guard drops (with the
    /// response body).
    pub(super) fn begin(self: &Arc<Self>) -> RequestGuard {
        let mut p = self.phase();
        p.in_flight += 1;
        p.header_since = None;
        RequestGuard(Arc::clone(self))
    }

    /// When the connection times out, unless it serves a request.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let p = self.phase();
        if p.in_flight > 0 {
            return None;
        }
        Some(match p.header_since {
            Some(since) => since + limits.header_read_timeout,
            None => p.idle_since + limits.idle_timeout,
        })
    }

    /// Whether the connection is past its deadline at `now`, and why.
    pub(super) fn expired(&self, limits: &Limits, now: Instant) -> Option<Expired> {
        let p = self.phase();
        if p.in_flight > 0 {
            return None;
        }
        match p.header_since {
            Some(since) if now >= since + limits.header_read_timeout => {
                Some(Expired::HeaderTimeout)
            }
            None if now >= p.idle_since + limits.idle_timeout => Some(Expired::IdleTimeout),
            _ => None,
        }
    }

    /// Whether the connection was closed to make room for another.
    pub(super) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Waits until the connection's deadline may have moved, or it was evicted.
    pub(super) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Resolves when the connection is evicted.
    pub(super) async fn evicted(&self) {
        while !self.is_evicted() {
            self.wake.notified().await;
        }
    }

    /// Whether a request is in flight on the connection.
    pub(super) fn serving(&self) -> bool {
        self.phase().in_flight > 0
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// A request in flight on its connection; dropped when the response body is done.
#[derive(Debug)]
pub(super) struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut p = self.0.phase();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.idle_since = Instant::now();
            p.header_since = None;
            drop(p);
            self.0.wake.notify_one();
        }
    }
}

/// The open connections of one listener, at most [`Limits::max_connections`].
#[derive(Debug)]
pub(super) struct Tracker {
    limits: Limits,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    metrics: Option<Arc<NodeState>>,
}

impl Tracker {
    /// A tracker for a listener with `limits`; the site's metrics count its connections when
    /// given.
    pub(super) fn new(limits: Limits, metrics: Option<Arc<NodeState>>) -> Self {
        Tracker {
            limits,
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            metrics,
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections open now.
    pub(super) fn len(&self) -> usize {
        self.open().len()
    }

    /// Admits a just-accepted connection. At the cap, the oldest connection serving nothing
    /// is evicted to make room; when every one is serving, `None`: close the new one.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open();
        if open.len() >= self.limits.max_connections.max(1) {
            let victim = open.iter().find(|(_, c)| !c.serving()).map(|(id, _)| *id);
            match victim.and_then(|id| open.remove(&id)) {
                Some(c) => {
                    c.evict();
                    self.count_end(ConnectionEnd::Evicted);
                }
                None => {
                    drop(open);
                    self.count_end(ConnectionEnd::Refused);
                    return None;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(Instant::now()));
        open.insert(id, Arc::clone(&conn));
        let n = open.len();
        drop(open);
        if let Some(m) = &self.metrics {
            m.metrics().connections_open(n);
        }
        Some(Slot {
            tracker: Arc::clone(self),
            id,
            conn,
        })
    }

    /// Counts a connection the server closed (or refused) for `why`.
    pub(super) fn count_end(&self, why: ConnectionEnd) {
        if let Some(m) = &self.metrics {
            m.metrics().connection_ended(why);
        }
    }
}

/// An admitted connection's place under the cap; released on drop.
#[derive(Debug)]
pub(super) struct Slot {
    tracker: Arc<Tracker>,
    id: u64,
    conn: Arc<Conn>,
}

impl Slot {
    /// The connection's state.
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The listener's tracker.
    pub(super) fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.tracker.open();
        open.remove(&self.id);
        let n = open.len();
        drop(open);
        if let Some(m) = &self.tracker.metrics {
            m.metrics().connections_open(n);
        }
    }
}

/// A connection's byte stream, telling its [`Conn`] when bytes come in.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, conn: Arc<Conn>) -> Self {
        Watched { inner, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps `guard` alive until the body is done (sent or dropped), and
/// is otherwise the body itself: its frames, its end and its size hint (so a known length
/// still goes out as `Content-Length`).
#[derive(Debug)]
pub(super) struct Held<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> Held<B, G> {
    pub(super) fn new(body: B, guard: G) -> Self {
        Held {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin, G: Unpin> http_body::Body for Held<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: max,
        }
    }

    #[test]
    fn a_head_times_out_then_an_idle_connection() {
        let l = limits(4);
        let t = Arc::new(Tracker::new(l, None));
        let slot = t.admit().unwrap();
        let c = slot.conn();
        let accepted = c.deadline(&l).unwrap() - l.header_read_timeout;
        assert_eq!(c.expired(&l, accepted + Duration::from_secs(9)), None);
        assert_eq!(
            c.expired(&l, accepted + l.header_read_timeout),
            Some(Expired::HeaderTimeout)
        );
        // A request: no deadline while it is served, however long.
        let g = c.begin();
        assert_eq!(c.deadline(&l), None);
        assert_eq!(c.expired(&l, accepted + Duration::from_secs(3600)), None);
        let before = Instant::now();
        drop(g);
        let idle = c.deadline(&l).unwrap() - l.idle_timeout;
        assert!(idle >= before, "idle from the end of the response");
        assert_eq!(c.expired(&l, idle + Duration::from_secs(59)), None);
        assert_eq!(
            c.expired(&l, idle + l.idle_timeout),
            Some(Expired::IdleTimeout)
        );
        // A byte after the idle period starts the next head's clock (earlier than idle's).
        let before = Instant::now();
        c.read_some();
        let head = c.deadline(&l).unwrap() - l.header_read_timeout;
        assert!(head >= before);
        assert_eq!(
            c.expired(&l, head + l.header_read_timeout),
            Some(Expired::HeaderTimeout)
        );
        // Bytes of a request being served change nothing.
        let _g = c.begin();
        c.read_some();
        assert_eq!(c.deadline(&l), None);
    }

    #[test]
    fn at_the_cap_the_oldest_connection_serving_nothing_gives_way() {
        let t = Arc::new(Tracker::new(limits(2), None));
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let _busy = a.conn().begin();
        let c = t.admit().unwrap();
        assert!(!a.conn().is_evicted());
        assert!(b.conn().is_evicted(), "b served nothing");
        assert_eq!(t.len(), 2);
        // Every connection serving: the next one is refused.
        let _busy_c = c.conn().begin();
        assert!(t.admit().is_none());
        drop(b);
        assert_eq!(t.len(), 2, "b's slot was already given to c");
        drop(c);
        assert_eq!(t.len(), 1);
        assert!(t.admit().is_some());
    }
}
