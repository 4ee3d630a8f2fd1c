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

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::api::{self, ErrorBody, geo_code};
use crate::auth::{Credentials, RequestData};

/// Largest JSON answer accepted (a body beyond it is an error, not an allocation).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// How long a blob path learned from a checksums answer is used instead of asking again.
const PATH_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most bytes of prefetched blobs held in memory (a batch beyond it leaves the rest to
/// `retrieve`).
pub const PREFETCH_LIMIT: usize = 32 * 1024 * 1024;

/// How long a prefetched blob waits for the sync pass that asked for it; after that it is
/// dropped and the blob is fetched again.
pub const PREFETCH_TTL: Duration = Duration::from_secs(10);

/// Largest `retrieve_batch` answer accepted.
const MAX_BATCH_ANSWER: usize = MAX_JSON + api::MAX_BATCH_BYTES as usize;

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

    /// The counters as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let t = |a: &AtomicI64| {
            let v = a.load(Ordering::Relaxed);
            (v > 0).then(|| {
                chrono::DateTime::from_timestamp(v, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_default()
            })
        };
        serde_json::json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "last_ok_at": t(&self.last_ok_at),
            "last_error_at": t(&self.last_error_at),
            "last_error": Some(self.last_error()).filter(|s| !s.is_empty()),
        })
    }
}

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

fn transient(what: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> SourceError {
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

    /// `GET /api/geo/status` as JSON.
    pub fn status(&self) -> Result<serde_json::Value, SourceError> {
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
struct BodyReader {
    body: Incoming,
    buf: Bytes,
    read_timeout: Duration,
    received: u64,
    expected: Option<u64>,
    done: bool,
}

impl BodyReader {
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

/// What a `retrieve_batch` answer said about one record, kept until its download.
enum Prefetched {
    /// The bytes and the checksum they must have.
    Blob { checksum: Checksum, data: Bytes },
    /// The file is missing on the primary.
    Missing,
}

struct PrefetchEntry {
    path: String,
    at: Instant,
    what: Prefetched,
}

impl PrefetchEntry {
    fn bytes(&self) -> usize {
        match &self.what {
            Prefetched::Blob { data, .. } => data.len(),
            Prefetched::Missing => 0,
        }
    }
}

/// Small blobs fetched in a batch, keyed by (replicable, id), bounded by [`PREFETCH_LIMIT`].
#[derive(Default)]
struct Prefetch {
    entries: HashMap<(String, i64), PrefetchEntry>,
    bytes: usize,
}

impl Prefetch {
    fn retain(&mut self, mut keep: impl FnMut(&(String, i64), &PrefetchEntry) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let kept = keep(k, e);
            if !kept {
                freed += e.bytes();
            }
            kept
        });
        self.bytes -= freed;
    }

    fn insert(&mut self, name: &str, id: i64, entry: PrefetchEntry) {
        if self.bytes + entry.bytes() > PREFETCH_LIMIT {
            return;
        }
        self.bytes += entry.bytes();
        if let Some(old) = self.entries.insert((name.to_owned(), id), entry) {
            self.bytes -= old.bytes();
        }
    }

    /// Takes the entry of (name, id) when it is fresh and, if `path` is given, for that path.
    fn take(&mut self, name: &str, id: i64, path: Option<&str>) -> Option<PrefetchEntry> {
        let e = self.entries.remove(&(name.to_owned(), id))?;
        self.bytes -= e.bytes();
        (e.at.elapsed() < PREFETCH_TTL && path.is_none_or(|p| p == e.path)).then_some(e)
    }
}

/// A [`PrimarySource`] over the primary's HTTP API.
///
/// [`blob_paths`](PrimarySource::blob_paths) (one call per type per sync pass) asks
/// `retrieve_batch` once per [`api::MAX_IDS`] ids: the answer carries the paths and the bytes
/// of the small blobs, which wait in memory (at most [`PREFETCH_LIMIT`] bytes, at most
/// [`PREFETCH_TTL`]) for [`open_blob_at`](PrimarySource::open_blob_at) to hand them out once,
/// with their checksum so the blob store still verifies before renaming. A new `blob_paths`
/// call for a type drops what an earlier pass left of it. Anything else is fetched with
/// `retrieve`.
pub struct HttpSource {
    client: NodeClient,
    paths: Mutex<HashMap<(String, i64), (String, Instant)>>,
    prefetch: Mutex<Prefetch>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source reading the primary described by `config`.
    pub fn new(config: HttpConfig) -> Self {
        HttpSource {
            client: NodeClient::new(config),
            paths: Mutex::new(HashMap::new()),
            prefetch: Mutex::new(Prefetch::default()),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    /// The link's counters.
    pub fn stats(&self) -> Arc<LinkStats> {
        Arc::clone(self.client.stats())
    }

    /// Bytes of prefetched blobs waiting in memory.
    pub fn prefetched_bytes(&self) -> usize {
        self.prefetch_lock().bytes
    }

    fn prefetch_lock(&self) -> std::sync::MutexGuard<'_, Prefetch> {
        self.prefetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The prefetched blob of (name, id), if any; `path` must match when given.
    fn prefetched(
        &self,
        name: &str,
        id: i64,
        path: Option<&str>,
    ) -> Option<Result<BlobStream, SourceError>> {
        let e = self.prefetch_lock().take(name, id, path)?;
        Some(match e.what {
            Prefetched::Blob { checksum, data } => Ok(BlobStream {
                size: Some(data.len() as u64),
                reader: Box::new(data.reader()),
                checksum: Some(checksum),
            }),
            Prefetched::Missing => Err(SourceError::MissingOnPrimary {
                replicable: name.to_owned(),
                id,
            }),
        })
    }

    fn seg(s: &str) -> Result<&str, SourceError> {
        if api::valid_replicable_name(s) {
            Ok(s)
        } else {
            Err(SourceError::UnknownReplicable {
                replicable: s.to_owned(),
            })
        }
    }
}

impl PrimarySource for HttpSource {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let limit = limit.min(api::MAX_EVENTS);
        let r: api::EventsResponse = self
            .client
            .get_json(&format!("/api/geo/events?after={after_id}&limit={limit}"))?;
        Ok(r.events)
    }

    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(api::MAX_IDS) {
            let r: api::EventsResponse = self
                .client
                .get_json(&format!("/api/geo/events?ids={}", api::join_ids(chunk)))?;
            out.extend(r.events);
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        let r: api::LastEventResponse = self.client.get_json("/api/geo/events/last")?;
        Ok(r.last_event_id)
    }

    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        let name = Self::seg(replicable)?;
        let mut out = Vec::new();
        let (mut from, end) = (*range.start(), *range.end());
        while from <= end {
            let to = from.saturating_add(api::MAX_ID_RANGE - 1).min(end);
            let r: api::IdsResponse = self
                .client
                .get_json(&format!("/api/geo/ids/{name}?from={from}&to={to}"))?;
            out.extend(r.ids);
            if to == i64::MAX {
                break;
            }
            from = to + 1;
        }
        Ok(out)
    }

    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
        let name = Self::seg(replicable)?;
        let r: api::IdsResponse = self.client.get_json(&format!("/api/geo/ids/{name}"))?;
        Ok(r.max_id)
    }

    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        let name = Self::seg(replicable)?;
        let mut out = BTreeMap::new();
        let now = Instant::now();
        for chunk in ids.chunks(api::MAX_IDS) {
            let r: api::ChecksumsResponse = self.client.get_json(&format!(
                "/api/geo/checksums/{name}?ids={}",
                api::join_ids(chunk)
            ))?;
            out.extend(
                r.checksums
                    .into_iter()
                    .map(api::ChecksumEntry::into_primary),
            );
            let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
            paths.retain(|_, (_, at)| now.duration_since(*at) < PATH_CACHE_TTL);
            for (id, p) in r.blob_paths {
                paths.insert((name.to_owned(), id), (p, now));
            }
        }
        Ok(out)
    }

    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
        let name = Self::seg(replicable)?;
        // A path learned with the checksums just before is used once, then asked again.
        if let Some((p, at)) = self
            .paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(name.to_owned(), id))
            && at.elapsed() < PATH_CACHE_TTL
        {
            return Ok(Some(p));
        }
        let r: api::BlobPathResponse = self
            .client
            .get_json(&format!("/api/geo/blob_path/{name}/{id}"))?;
        Ok(r.blob_path)
    }

    fn blob_paths(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, String>, SourceError> {
        let name = Self::seg(replicable)?;
        // A new pass over this type: whatever an earlier one left is not used.
        self.prefetch_lock()
            .retain(|(n, _), e| n != name && e.at.elapsed() < PREFETCH_TTL);
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(api::MAX_IDS) {
            let path = format!(
                "/api/geo/retrieve_batch/{name}?ids={}",
                api::join_ids(chunk)
            );
            let body = self.client.get_bytes(&path, MAX_BATCH_ANSWER)?;
            let entries = api::batch::decode(body)
                .map_err(|e| SourceError::other(format!("GET {path}"), e))?;
            let asked: std::collections::HashSet<i64> = chunk.iter().copied().collect();
            let now = Instant::now();
            let mut cache = self.prefetch_lock();
            for entry in entries {
                let id = entry.id();
                if !asked.contains(&id) {
                    return Err(SourceError::other(
                        format!("GET {path}"),
                        format!("the answer holds id {id}, which was not asked"),
                    ));
                }
                let (path, what) = match entry {
                    api::batch::BatchEntry::RecordNotFound { .. } => continue,
                    api::batch::BatchEntry::Individual { path, .. } => {
                        out.insert(id, path);
                        continue;
                    }
                    api::batch::BatchEntry::FileNotFound { path, .. } => {
                        (path, Prefetched::Missing)
                    }
                    api::batch::BatchEntry::Blob {
                        path,
                        checksum,
                        data,
                        ..
                    } => (path, Prefetched::Blob { checksum, data }),
                };
                out.insert(id, path.clone());
                cache.insert(
                    name,
                    id,
                    PrefetchEntry {
                        path,
                        at: now,
                        what,
                    },
                );
            }
        }
        Ok(out)
    }

    fn open_blob_at(
        &self,
        replicable: &str,
        id: i64,
        path: &BlobPath,
    ) -> Result<BlobStream, SourceError> {
        let name = Self::seg(replicable)?;
        match self.prefetched(name, id, Some(path.as_str())) {
            Some(r) => r,
            None => self.retrieve(name, id),
        }
    }

    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let name = Self::seg(replicable)?;
        match self.prefetched(name, id, None) {
            Some(r) => r,
            None => self.retrieve(name, id),
        }
    }
}

impl HttpSource {
    /// `GET /api/geo/retrieve/{name}/{id}`, streamed.
    fn retrieve(&self, name: &str, id: i64) -> Result<BlobStream, SourceError> {
        let path = format!("/api/geo/retrieve/{name}/{id}");
        let resp = self.client.get(&path, &RequestData::blob(name, id))?;
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let checksum = match resp.headers().get(api::CHECKSUM_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| Checksum::from_hex(s).ok())
                    .ok_or_else(|| {
                        SourceError::other(format!("GET {path}"), "bad X-Geo-Checksum header")
                    })?,
            ),
        };
        Ok(BlobStream {
            reader: Box::new(BodyReader {
                body: resp.into_body(),
                buf: Bytes::new(),
                read_timeout: self.client.config.read_timeout,
                received: 0,
                expected: size,
                done: false,
            }),
            size,
            checksum,
        })
    }
}
