//! [`NodeClient`]: signed `GET`s to a primary over hyper, error answers mapped to
//! [`SourceError`], and blob bodies read as a blocking [`Read`] with a timeout per piece.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, Bytes};
use geo_diesel::geo_core::source::SourceError;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use super::{HttpConfig, LinkStats, runtime};
use crate::api::{ErrorBody, NodeStatus, geo_code};
use crate::auth::RequestData;

/// Largest JSON answer accepted (a body beyond it is an error, not an allocation).
pub(super) const MAX_JSON: usize = 64 * 1024 * 1024;

/// A client that signs every request with the secondary's key pair.
#[derive(Clone)]
pub struct NodeClient {
    config: HttpConfig,
    client: Client<HttpConnector, Empty<Bytes>>,
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

impl NodeClient {
    /// A client for `config`.
    pub fn new(config: HttpConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
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

    /// Sends a signed `GET path_and_query` bound to `data`; returns the response head and
    /// body on 200, the mapped error otherwise.
    pub fn get(
        &self,
        path_and_query: &str,
        data: &RequestData,
    ) -> Result<Response<Incoming>, SourceError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let r = self.get_inner(path_and_query, data);
        match &r {
            Ok(_) => self.stats.ok(),
            Err(e @ SourceError::Transient { .. }) => self.stats.failed(e),
            // The primary answered: the link works.
            Err(_) => self.stats.ok(),
        }
        r
    }

    fn get_inner(
        &self,
        path_and_query: &str,
        data: &RequestData,
    ) -> Result<Response<Incoming>, SourceError> {
        let what = format!("GET {path_and_query}");
        let auth = self
            .config
            .credentials
            .authorization(data, chrono::Utc::now().timestamp());
        let req = Request::get(format!("{}{path_and_query}", self.config.base_url))
            .header(header::AUTHORIZATION, auth)
            .body(Empty::<Bytes>::new())
            .map_err(|e| SourceError::other(what.clone(), e))?;
        let timeout = self.config.read_timeout + self.config.connect_timeout;
        let resp = runtime()
            .block_on(async { tokio::time::timeout(timeout, self.client.request(req)).await })
            .map_err(|_| {
                transient(
                    &what,
                    io::Error::new(io::ErrorKind::TimedOut, "no answer in time"),
                )
            })?
            .map_err(|e| transient(&what, e))?;
        if resp.status() == StatusCode::OK {
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
            (StatusCode::BAD_REQUEST, geo_code::UNKNOWN_REPLICABLE, _) => {
                SourceError::UnknownReplicable {
                    replicable: replicable_of(path_and_query, data),
                }
            }
            (s, _, _) if s.is_server_error() => transient(&what, message),
            _ => SourceError::other(what, message),
        })
    }

    fn collect(&self, resp: Response<Incoming>, limit: usize) -> Result<Bytes, SourceError> {
        let read_timeout = self.config.read_timeout;
        runtime().block_on(async move {
            let mut body = resp.into_body();
            let mut out = bytes::BytesMut::new();
            loop {
                let frame = tokio::time::timeout(read_timeout, body.frame())
                    .await
                    .map_err(|_| {
                        transient(
                            "reading an answer",
                            io::Error::new(io::ErrorKind::TimedOut, "read timed out"),
                        )
                    })?;
                match frame {
                    None => return Ok(out.freeze()),
                    Some(Err(e)) => return Err(transient("reading an answer", e)),
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            if out.len() + d.len() > limit {
                                return Err(SourceError::other(
                                    "reading an answer",
                                    format!("answer larger than {limit} bytes"),
                                ));
                            }
                            out.extend_from_slice(&d);
                        }
                    }
                }
            }
        })
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
        let data = RequestData::get(path_and_query);
        let resp = self.get(path_and_query, &data)?;
        let body = self
            .collect(resp, MAX_JSON)
            .inspect_err(|e| self.stats.failed(e))?;
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::other(format!("decoding GET {path_and_query}"), e))
    }

    /// `GET /api/geo/status`.
    pub fn status(&self) -> Result<NodeStatus, SourceError> {
        self.get_json("/api/geo/status")
    }
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

/// A blob body read as a blocking [`Read`], with a timeout per piece. Fails with
/// `UnexpectedEof` when the body ends before its announced length.
pub(super) struct BodyReader {
    body: Incoming,
    buf: Bytes,
    read_timeout: Duration,
    received: u64,
    expected: Option<u64>,
    done: bool,
}

impl BodyReader {
    /// Reads `body`, waiting at most `read_timeout` for each piece; `expected` is the announced
    /// length.
    pub(super) fn new(body: Incoming, read_timeout: Duration, expected: Option<u64>) -> Self {
        BodyReader {
            body,
            buf: Bytes::new(),
            read_timeout,
            received: 0,
            expected,
            done: false,
        }
    }

    /// Takes a frame: `Ok(true)` when data (or trailers) came, `Ok(false)` at the end.
    fn take(
        &mut self,
        frame: Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>,
    ) -> io::Result<bool> {
        match frame {
            None => {
                self.done = true;
                match self.expected {
                    Some(n) if n != self.received => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the body ended after {} of {n} bytes", self.received),
                    )),
                    _ => Ok(false),
                }
            }
            Some(Err(e)) => Err(io::Error::other(e)),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    self.received += d.len() as u64;
                    self.buf = d;
                }
                Ok(true)
            }
        }
    }

    fn copy_out(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        n
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        use futures_util::FutureExt;
        while self.buf.is_empty() {
            if self.done {
                return Ok(0);
            }
            let timeout = self.read_timeout;
            let body = &mut self.body;
            let frame = runtime()
                .block_on(async { tokio::time::timeout(timeout, body.frame()).await })
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the primary stopped sending")
                })?;
            self.take(frame)?;
        }
        let mut n = self.copy_out(out);
        // Fill the caller's buffer with frames that have already arrived, without waiting: one
        // trip through the runtime per read call, not per frame.
        while n < out.len() && !self.done {
            if self.buf.is_empty() {
                match self.body.frame().now_or_never() {
                    None => break,
                    Some(frame) => {
                        if !self.take(frame)? {
                            break;
                        }
                    }
                }
            }
            n += self.copy_out(&mut out[n..]);
        }
        Ok(n)
    }
}
