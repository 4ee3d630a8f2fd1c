//! The secondary's side of the HTTP API: [`HttpSource`], a blocking [`PrimarySource`] over
//! HTTP, and [`NodeClient`], the signed-request client under it (also used by `status`).
//!
//! Requests run on one small process-wide tokio runtime; the blocking methods wait on it. Every
//! request has a connect timeout, a timeout for the response head, and a per-read timeout on
//! the body (a stalled primary fails the read instead of hanging a worker). A blob body is
//! streamed: [`BlobStream::reader`] yields the bytes as they arrive, so the blob store hashes
//! while writing and renames only when the checksum matches; a body shorter than its
//! `Content-Length` fails the read.
//!
//! Errors map to [`SourceError`]: `404 FILE_NOT_FOUND` → `MissingOnPrimary`, `404
//! RECORD_NOT_FOUND` → `RecordNotFound`, `400 UNKNOWN_REPLICABLE` → `UnknownReplicable`, `401` →
//! `Unauthorized`, 5xx, timeouts and I/O → `Transient`. The registry then retries with its
//! backoff; nothing here retries in a loop.
//!
//! [`PrimarySource`]: geo_diesel::geo_core::source::PrimarySource
//! [`BlobStream::reader`]: geo_diesel::geo_core::source::BlobStream::reader

mod source;
mod transport;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use geo_diesel::geo_core::source::SourceError;

use crate::api::LinkStatus;
use crate::auth::Credentials;

pub use source::{HttpSource, PREFETCH_LIMIT, PREFETCH_TTL};
pub use transport::NodeClient;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("geo-http-client")
            .enable_all()
            .build()
            .expect("the HTTP client runtime starts (threads and a timer)")
    })
}

/// How to reach a primary.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Base URL, e.g. `http://primary.example:8080` (no trailing path).
    pub base_url: String,
    /// This secondary's key pair.
    pub credentials: Credentials,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for a response head, and for each piece of a body.
    pub read_timeout: Duration,
}

impl HttpConfig {
    /// A config with the default timeouts (connect 5 s, read 30 s).
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        HttpConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            credentials,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a link to a primary, for status and metrics.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed (transport or a 5xx).
    pub errors: AtomicU64,
    /// Unix time of the last successful answer (0: never).
    pub last_ok_at: AtomicI64,
    /// Unix time of the last failure (0: never).
    pub last_error_at: AtomicI64,
    last_error: Mutex<String>,
}

impl LinkStats {
    fn ok(&self) {
        self.last_ok_at
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    }

    fn failed(&self, e: &SourceError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error_at
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
    }

    /// The last error's text.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The counters as the status reports them.
    pub fn snapshot(&self) -> LinkStatus {
        let at = |a: &AtomicI64| {
            let v = a.load(Ordering::Relaxed);
            (v > 0).then(|| chrono::DateTime::from_timestamp(v, 0))?
        };
        LinkStatus {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_ok_at: at(&self.last_ok_at),
            last_error_at: at(&self.last_error_at),
            last_error: Some(self.last_error()).filter(|s| !s.is_empty()),
        }
    }

    /// The counters as a JSON object (the status's `primary_link`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }
}
