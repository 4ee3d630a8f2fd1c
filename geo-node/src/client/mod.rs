//! The secondary's side of the HTTP API: [`HttpSource`], a blocking [`PrimarySource`] over
//! HTTP, and [`NodeClient`], the signed-request client under it (also used by `status`).
//!
//! Requests go through reqwest's blocking client: HTTP/1.1 over rustls (ring), connections
//! pooled and reused, `TCP_NODELAY` on. `https://` sites are verified against the system roots,
//! or only against the certificates of [`HttpConfig::ca_file`]; plain `http://` is refused
//! unless the host is loopback (`127.0.0.0/8`, `::1`, `localhost`) or
//! [`HttpConfig::allow_insecure_http`] is set ([`check_url`]). Every request has a connect
//! timeout, a timeout for the response head, and a per-read timeout on the body (a stalled
//! primary fails the read instead of hanging a worker). A blob body is streamed:
//! [`BlobStream::reader`] is the response itself, so the blob store hashes while writing and
//! renames only when the checksum matches; a body shorter than its `Content-Length` fails the
//! read.
//!
//! The checksum a download is compared against is trusted only with a valid MAC
//! ([`crate::auth::mac`]): a `retrieve` answer without one, a `retrieve_batch` blob without
//! one, fail for that record; a `checksums` entry without one is never taken for the primary's.
//!
//! Errors map to [`SourceError`]: `404 FILE_NOT_FOUND` → `MissingOnPrimary`, `404
//! RECORD_NOT_FOUND` → `RecordNotFound`, `400 UNKNOWN_REPLICABLE` → `UnknownReplicable`, `401` →
//! `Unauthorized`, 5xx, timeouts, TLS and I/O → `Transient`, an unauthentic checksum → `Other`
//! (naming the replicable and id). The registry then retries with its backoff; nothing here
//! retries in a loop.
//!
//! [`PrimarySource`]: geo_diesel::geo_core::source::PrimarySource
//! [`BlobStream::reader`]: geo_diesel::geo_core::source::BlobStream::reader

mod prefetch;
mod retrieve;
mod source;
mod transport;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use geo_diesel::geo_core::source::SourceError;

use crate::api::LinkStatus;
use crate::auth::Credentials;

pub use prefetch::{PREFETCH_LIMIT, PREFETCH_TTL};
pub use source::HttpSource;
pub use transport::NodeClient;

/// How to reach a primary.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Base URL, e.g. `https://primary.example:8443` (no trailing path).
    pub base_url: String,
    /// This secondary's key pair.
    pub credentials: Credentials,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for a response head, and for each piece of a body.
    pub read_timeout: Duration,
    /// PEM file of the CA certificates an `https://` site is verified against, instead of the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a host that is not loopback (tokens and content then cross the
    /// network readable by anyone on the path; the checksum MACs still refuse planted content).
    pub allow_insecure_http: bool,
}

impl HttpConfig {
    /// A config with the default timeouts (connect 5 s, read 30 s), the system roots, and plain
    /// HTTP only to loopback.
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        HttpConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            credentials,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            ca_file: None,
            allow_insecure_http: false,
        }
    }

    /// Verifies `https://` sites against the certificates in `path` (PEM) only.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
}

/// Why a [`NodeClient`] cannot be made from an [`HttpConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL does not parse, or is not `http://` or `https://` with a host.
    #[error("bad site URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Plain HTTP to a host that is not loopback, not allowed explicitly.
    #[error(
        "refusing plain HTTP to {host} ({url}): tokens and data would cross the network \
         unencrypted; use https://, or pass --allow-insecure-http (GEO_ALLOW_INSECURE_HTTP=true) \
         on a network you trust"
    )]
    InsecureHttp {
        /// The URL.
        url: String,
        /// Its host.
        host: String,
    },
    /// The CA file cannot be read.
    #[error("reading the CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable PEM certificate.
    #[error("the CA file {path} holds no usable PEM certificate: {reason}")]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("building the HTTP client: {0}")]
    Build(String),
}

/// Checks `url` against the plain-HTTP rule: `https://` always passes; `http://` passes when
/// its host is loopback (`127.0.0.0/8`, `::1`, `localhost`) or `allow_insecure_http` is set.
pub fn check_url(url: &str, allow_insecure_http: bool) -> Result<(), ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(host) => Ok(()),
        "http" => Err(ClientError::InsecureHttp {
            url: url.to_owned(),
            host: host.to_owned(),
        }),
        other => Err(bad(&format!("scheme {other:?} is not http or https"))),
    }
}

/// Whether a URL's host (as `Url::host_str` gives it: IPv6 in brackets) is loopback.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let name = bare.strip_suffix('.').unwrap_or(bare);
            name.eq_ignore_ascii_case("localhost")
        }
    }
}

/// The certificates of a PEM CA file (every `CERTIFICATE` block; at least one).
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| ClientError::BadCaFile {
        path: path.to_owned(),
        reason,
    };
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(transport::chain(&e)))?;
    if certs.is_empty() {
        return Err(bad("no -----BEGIN CERTIFICATE----- block".to_owned()));
    }
    Ok(certs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:1234",
            "http://LOCALHOST",
            "http://[::1]:80",
            "https://primary.example",
            "https://10.0.0.1:8443",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://primary.example",
            "http://10.0.0.1:8080",
            "http://128.0.0.1",
            "http://[::2]",
            "http://localhost.example",
            "http://0.0.0.0:8080",
        ] {
            let e = check_url(refused, false).unwrap_err();
            assert!(
                matches!(e, ClientError::InsecureHttp { .. }),
                "{refused}: {e}"
            );
            assert!(e.to_string().contains("--allow-insecure-http"), "{e}");
            assert!(check_url(refused, true).is_ok(), "{refused} allowed");
        }
        for bad in ["ftp://127.0.0.1", "127.0.0.1:8080", "http://"] {
            assert!(
                matches!(check_url(bad, true), Err(ClientError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_client_is_refused_for_plain_http_abroad_and_a_bad_ca_file() {
        let creds = Credentials::generate();
        let e = NodeClient::try_new(HttpConfig::new("http://primary.example", creds.clone()))
            .unwrap_err();
        assert!(matches!(e, ClientError::InsecureHttp { .. }), "{e}");
        // The infallible constructor gives a client that reports the refusal on every request.
        let c = NodeClient::new(HttpConfig::new("http://primary.example", creds.clone()));
        let e = c.status().unwrap_err();
        assert!(e.to_string().contains("refusing plain HTTP"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = NodeClient::try_new(
            HttpConfig::new("https://primary.example", creds.clone()).with_ca_file(&missing),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::CaFile { .. }), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = NodeClient::try_new(
            HttpConfig::new("https://primary.example", creds).with_ca_file(&junk),
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::BadCaFile { .. }), "{e}");
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
