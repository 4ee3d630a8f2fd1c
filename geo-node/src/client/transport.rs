//! [`NodeClient`]: signed `GET`s to a site over reqwest's blocking client (rustls, HTTP/1.1),
//! error answers mapped to [`SourceError`], and blob bodies read as a blocking [`Read`].

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use geo_diesel::geo_core::source::SourceError;
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header;
use serde::de::DeserializeOwned;

use super::{ClientError, HttpConfig, LinkStats};
use crate::api::{ErrorBody, NodeStatus, geo_code};
use crate::auth::RequestData;

/// Largest JSON answer accepted (a body beyond it is an error, not an allocation).
pub(super) const MAX_JSON: usize = 64 * 1024 * 1024;

/// How long an idle connection stays in the pool.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A client that signs every request with the secondary's key pair.
///
/// Cloning is cheap and shares the connection pool and the counters.
#[derive(Clone)]
pub struct NodeClient {
    config: HttpConfig,
    /// The client, or why the configuration cannot make one (reported by every request).
    client: Result<Client, Arc<ClientError>>,
    stats: Arc<LinkStats>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(super) fn transient(
    what: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> SourceError {
    SourceError::transient(what.to_owned(), e)
}

/// An error with its causes, `a: b: c` (reqwest's own text stops at "error sending request").
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// A transport failure as the secondary reports it: the whole cause chain, and for a refused
/// certificate what to do about it.
fn transport_error(what: &str, e: &reqwest::Error) -> SourceError {
    let text = chain(e);
    let lower = text.to_ascii_lowercase();
    let text = if e.is_timeout() {
        format!("no answer in time ({text})")
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "TLS: the primary's certificate is not trusted ({text}); give its CA with --ca-file \
             (GEO_CA_FILE)"
        )
    } else {
        text
    };
    transient(what, text)
}

impl NodeClient {
    /// A client for `config`, or why the configuration is refused: plain `http://` to a host
    /// that is not loopback without [`HttpConfig::allow_insecure_http`], an unreadable
    /// [`HttpConfig::ca_file`], a bad URL.
    pub fn try_new(config: HttpConfig) -> Result<Self, ClientError> {
        let client = build(&config)?;
        Ok(NodeClient {
            config,
            client: Ok(client),
            stats: Arc::new(LinkStats::default()),
        })
    }

    /// A client for `config`. A configuration [`try_new`](NodeClient::try_new) refuses gives a
    /// client whose every request fails with that error (as a [`SourceError::Other`]).
    pub fn new(config: HttpConfig) -> Self {
        let client = build(&config).map_err(|e| {
            tracing::error!(primary = %config.base_url, error = %e, "the HTTP client cannot be built");
            Arc::new(e)
        });
        NodeClient {
            config,
            client,
            stats: Arc::new(LinkStats::default()),
        }
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Sends a signed `GET path_and_query` bound to `data`; returns the response (head read,
    /// body not yet) on 200, the mapped error otherwise. Reading its body waits at most the
    /// read timeout for each piece.
    pub fn get(&self, path_and_query: &str, data: &RequestData) -> Result<Response, SourceError> {
        self.get_from(path_and_query, data, 0)
    }

    /// [`get`](NodeClient::get) asking for the bytes from `offset` on (`Range: bytes=<offset>-`
    /// when it is not 0); a `206 Partial Content` or `416 Range Not Satisfiable` answer is
    /// returned too, for the caller to read its `Content-Range`.
    pub fn get_from(
        &self,
        path_and_query: &str,
        data: &RequestData,
        offset: u64,
    ) -> Result<Response, SourceError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let r = self.get_inner(path_and_query, data, offset);
        match &r {
            Ok(_) => self.stats.ok(),
            Err(e @ SourceError::Transient { .. }) => self.stats.failed(e),
            // Nothing was sent: the configuration is refused.
            Err(e) if self.client.is_err() => self.stats.failed(e),
            // The primary answered: the link works.
            Err(_) => self.stats.ok(),
        }
        r
    }

    fn get_inner(
        &self,
        path_and_query: &str,
        data: &RequestData,
        offset: u64,
    ) -> Result<Response, SourceError> {
        let what = format!("GET {path_and_query}");
        let client = self
            .client
            .as_ref()
            .map_err(|e| SourceError::other(what.clone(), Arc::clone(e)))?;
        let auth = self
            .config
            .credentials
            .authorization(data, chrono::Utc::now().timestamp());
        let mut req = client
            .get(format!("{}{path_and_query}", self.config.base_url))
            .header(header::AUTHORIZATION, auth);
        if offset > 0 {
            req = req.header(header::RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().map_err(|e| transport_error(&what, &e))?;
        if resp.status() == StatusCode::OK
            || (offset > 0
                && matches!(
                    resp.status(),
                    StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE
                ))
        {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Option<ErrorBody> = self
            .collect(resp, 64 * 1024)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let code = body.as_ref().map_or("", |b| b.geo_code.as_str());
        let message = body.as_ref().map_or_else(
            || status.to_string(),
            |b| format!("{status}: {}", b.message),
        );
        Err(match (status, code, data) {
            (StatusCode::UNAUTHORIZED, _, _) => SourceError::Unauthorized { message },
            (
                StatusCode::NOT_FOUND,
                geo_code::FILE_NOT_FOUND,
                RequestData::Blob {
                    replicable_name,
                    replicable_id,
                },
            ) => SourceError::MissingOnPrimary {
                replicable: replicable_name.clone(),
                id: *replicable_id,
            },
            (
                StatusCode::NOT_FOUND,
                geo_code::RECORD_NOT_FOUND,
                RequestData::Blob {
                    replicable_name,
                    replicable_id,
                },
            ) => SourceError::RecordNotFound {
                replicable: replicable_name.clone(),
                id: *replicable_id,
            },
            (StatusCode::GONE, geo_code::EVENTS_PRUNED, _) => match body.as_ref() {
                Some(ErrorBody {
                    pruned_through: Some(pruned_through),
                    consumed: Some(consumed),
                    ..
                }) => SourceError::EventsPruned {
                    pruned_through: *pruned_through,
                    consumed: *consumed,
                },
                _ => SourceError::other(what, message),
            },
            (StatusCode::BAD_REQUEST, geo_code::UNKNOWN_REPLICABLE, _) => {
                SourceError::UnknownReplicable {
                    replicable: replicable_of(path_and_query, data),
                }
            }
            (s, _, _) if s.is_server_error() => transient(&what, message),
            _ => SourceError::other(what, message),
        })
    }

    /// The whole body of `resp`, at most `limit` bytes.
    fn collect(&self, resp: Response, limit: usize) -> Result<Bytes, SourceError> {
        let expected = resp.content_length();
        if expected.is_some_and(|n| n > limit as u64) {
            return Err(SourceError::other(
                "reading an answer",
                format!("answer larger than {limit} bytes"),
            ));
        }
        let mut out = Vec::with_capacity(expected.unwrap_or(0) as usize);
        let n = body_reader(resp)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| transient("reading an answer", chain(&e)))?;
        if n > limit {
            return Err(SourceError::other(
                "reading an answer",
                format!("answer larger than {limit} bytes"),
            ));
        }
        Ok(Bytes::from(out))
    }

    /// `GET` a whole answer of at most `limit` bytes.
    pub fn get_bytes(&self, path_and_query: &str, limit: usize) -> Result<Bytes, SourceError> {
        let data = RequestData::get(path_and_query);
        let resp = self.get(path_and_query, &data)?;
        self.collect(resp, limit)
            .inspect_err(|e| self.stats.failed(e))
    }

    /// `GET` and decode a JSON answer.
    pub fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, SourceError> {
        let body = self.get_bytes(path_and_query, MAX_JSON)?;
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::other(format!("decoding GET {path_and_query}"), e))
    }

    /// `GET /api/geo/status`.
    pub fn status(&self) -> Result<NodeStatus, SourceError> {
        self.get_json("/api/geo/status")
    }
}

/// The reqwest client of `config`: HTTP/1.1 over rustls (ring), pooled connections with
/// `TCP_NODELAY`, the system roots or the CA file, and the plain-HTTP rule checked first.
fn build(config: &HttpConfig) -> Result<Client, ClientError> {
    super::check_url(&config.base_url, config.allow_insecure_http)?;
    let mut builder = Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE)
        .connect_timeout(config.connect_timeout)
        // The blocking client applies this to each wait: for the response head, and for each
        // read of the body (a stalled primary fails the read, a slow but moving one does not).
        .timeout(config.read_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("geo-node/", env!("CARGO_PKG_VERSION")))
        .https_only(false)
        .no_proxy();
    if let Some(path) = &config.ca_file {
        builder = builder.tls_built_in_root_certs(false);
        for cert in super::read_ca_file(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| ClientError::Build(chain(&e)))
}

fn replicable_of(path: &str, data: &RequestData) -> String {
    match data {
        RequestData::Blob {
            replicable_name, ..
        } => replicable_name.clone(),
        RequestData::Request { .. } => path
            .split('?')
            .next()
            .and_then(|p| p.split('/').nth(4))
            .unwrap_or("")
            .to_owned(),
    }
}

/// The body of `resp` as a [`Read`] that fails with `UnexpectedEof` when the body ends before
/// its `Content-Length` (a cut connection is never a short, complete-looking blob).
pub(super) fn body_reader(resp: Response) -> impl Read + Send + 'static {
    let expected = resp.content_length();
    LengthChecked {
        inner: resp,
        received: 0,
        expected,
    }
}

struct LengthChecked<R> {
    inner: R,
    received: u64,
    expected: Option<u64>,
}

impl<R: Read> Read for LengthChecked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out).map_err(|e| {
            let timed_out = e.kind() == io::ErrorKind::TimedOut
                || e.get_ref()
                    .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
                    .is_some_and(reqwest::Error::is_timeout);
            if timed_out {
                io::Error::new(io::ErrorKind::TimedOut, "the primary stopped sending")
            } else {
                e
            }
        })?;
        self.received += n as u64;
        if n == 0
            && !out.is_empty()
            && let Some(expected) = self.expected
            && expected != self.received
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body ended after {} of {expected} bytes", self.received),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_shorter_than_announced_fails() {
        let mut r = LengthChecked {
            inner: &b"abc"[..],
            received: 0,
            expected: Some(5),
        };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("3 of 5"), "{e}");
        let mut r = LengthChecked {
            inner: &b"abcde"[..],
            received: 0,
            expected: Some(5),
        };
        out.clear();
        assert_eq!(r.read_to_end(&mut out).unwrap(), 5);
    }
}
