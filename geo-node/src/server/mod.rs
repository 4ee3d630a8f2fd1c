//! The HTTP server of a site (axum on tokio).
//!
//! A primary serves everything an HTTP secondary's [`PrimarySource`] needs, read through any
//! [`PrimarySource`] on its side (in production geo-diesel's `DirectSource` over its database
//! and blob store). Blobs are streamed in [`CHUNK`]-sized pieces through a bounded channel from
//! a blocking reader, so a 5 GiB blob costs the same memory as a 5 KiB one. A secondary serves
//! its own status and metrics. Every `/api/geo/` endpoint is authenticated
//! ([`crate::auth`]); `/metrics` is open, as Prometheus scrapes it.
//!
//! Database and file calls are blocking and run on tokio's blocking pool (`spawn_blocking`).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{BlobError, BlobPath, BlobStore};
use geo_diesel::geo_core::checksum::checksum_bytes;
use geo_diesel::geo_core::clock::{Clock, SystemClock};
use geo_diesel::geo_core::source::{BlobStream, PrimarySource, SourceError};
use geo_diesel::geo_core::{find_replicable, replicables};
use geo_diesel::secondary::Secondary;
use geo_diesel::verifier::PrimaryVerifier;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{self, ErrorBody, geo_code};
use crate::auth::{AuthError, DEFAULT_LEEWAY, KeyRing, RequestData};
use crate::client::LinkStats;
use crate::metrics::Metrics;

/// Bytes per piece of a streamed blob.
pub const CHUNK: usize = 256 * 1024;

/// How long requests in flight may run after a stop.
const GRACE: Duration = Duration::from_secs(2);

/// Pieces buffered between the file reader and the socket.
const CHANNEL_DEPTH: usize = 4;

/// The primary half of a site's server.
#[derive(Clone)]
pub struct PrimaryService {
    /// Where the primary's data is read.
    pub source: Arc<dyn PrimarySource>,
    /// The primary's verification workers, for status.
    pub verifier: Option<Arc<PrimaryVerifier>>,
    /// The primary's database, when local: lets batch answers use set-based queries.
    pub db: Option<DbPool>,
    /// The primary's blob store, when local: blobs are opened here once their path is known
    /// (one query fewer per blob than `source.open_blob`).
    pub store: Option<Arc<dyn BlobStore>>,
}

impl PrimaryService {
    /// Serves a primary's own database and blob store (through geo-diesel's `DirectSource`).
    pub fn direct(
        db: DbPool,
        store: Arc<dyn BlobStore>,
        verifier: Option<Arc<PrimaryVerifier>>,
    ) -> Self {
        PrimaryService {
            source: Arc::new(DirectSource::new(db.clone(), Arc::clone(&store))),
            verifier,
            db: Some(db),
            store: Some(store),
        }
    }

    /// Serves whatever `source` reads (a test double, a proxy).
    pub fn from_source(
        source: Arc<dyn PrimarySource>,
        verifier: Option<Arc<PrimaryVerifier>>,
    ) -> Self {
        PrimaryService {
            source,
            verifier,
            db: None,
            store: None,
        }
    }

    fn open(
        &self,
        name: &'static str,
        id: i64,
        path: &BlobPath,
    ) -> Result<BlobStream, SourceError> {
        let Some(store) = &self.store else {
            return self.source.open_blob_at(name, id, path);
        };
        match store.open(path) {
            Ok(b) => Ok(BlobStream {
                reader: b.reader,
                size: Some(b.size),
                checksum: None,
            }),
            Err(e) if e.is_not_found() => Err(SourceError::MissingOnPrimary {
                replicable: name.to_owned(),
                id,
            }),
            Err(e) => Err(SourceError::transient(
                format!("opening the file of {name} {id}"),
                e,
            )),
        }
    }

    fn blob_paths(
        &self,
        name: &'static str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, String>, ApiError> {
        if let (Some(db), Some(d)) = (&self.db, find_replicable(name)) {
            let mut conn = db.get().map_err(|e| {
                ApiError::from_source(&SourceError::transient("primary database pool", e))
            })?;
            return geo_diesel::primary::blob_paths(&mut conn, d, ids)
                .map(|v| v.into_iter().collect())
                .map_err(|e| {
                    ApiError::from_source(&SourceError::transient("reading blob paths", e))
                });
        }
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(p) = self
                .source
                .blob_path(name, *id)
                .map_err(|e| ApiError::from_source(&e))?
            {
                out.insert(*id, p);
            }
        }
        Ok(out)
    }
}

/// The secondary half of a site's server (status and metrics only).
#[derive(Clone)]
pub struct SecondaryService {
    /// The secondary runtime.
    pub secondary: Arc<Secondary>,
    /// Its link to the primary (to report the primary's last event id and the link's health).
    pub source: Arc<dyn PrimarySource>,
    /// Request counters of the link, when it is an HTTP link.
    pub link: Option<Arc<LinkStats>>,
}

/// Everything the handlers share.
pub struct NodeState {
    name: String,
    keys: KeyRing,
    leeway: i64,
    clock: Arc<dyn Clock>,
    primary: Option<PrimaryService>,
    secondary: Option<SecondaryService>,
    metrics: Metrics,
    started: Instant,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("leeway", &self.leeway)
            .field("primary", &self.primary.is_some())
            .field("secondary", &self.secondary.is_some())
            .finish_non_exhaustive()
    }
}

impl NodeState {
    /// A site named `name` (the `name` label of its metrics) accepting `keys`.
    pub fn new(name: impl Into<String>, keys: KeyRing) -> Self {
        NodeState {
            name: name.into(),
            keys,
            leeway: DEFAULT_LEEWAY,
            clock: Arc::new(SystemClock),
            primary: None,
            secondary: None,
            metrics: Metrics::default(),
            started: Instant::now(),
        }
    }

    /// Serves primary data from `service`.
    pub fn with_primary(mut self, service: PrimaryService) -> Self {
        self.primary = Some(service);
        self
    }

    /// Reports this secondary's status and metrics.
    pub fn with_secondary(mut self, service: SecondaryService) -> Self {
        self.secondary = Some(service);
        self
    }

    /// Clock leeway for tokens, in seconds (default [`DEFAULT_LEEWAY`]).
    pub fn with_leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds.max(0);
        self
    }

    /// The clock tokens are checked against (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn authorize(&self, headers: &HeaderMap, data: &RequestData) -> Result<(), ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        match self
            .keys
            .verify(header, data, self.clock.now().timestamp(), self.leeway)
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.metrics.auth_failure(&e);
                tracing::warn!(reason = %e, "refused a Geo request");
                Err(ApiError::unauthorized(&e))
            }
        }
    }

    fn primary(&self) -> Result<&PrimaryService, ApiError> {
        self.primary.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                geo_code::NOT_A_PRIMARY,
                "this site is not a primary",
            )
        })
    }
}

/// An error answer: a status and a JSON [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                geo_code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, geo_code::BAD_REQUEST, message)
    }

    fn unauthorized(e: &AuthError) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            geo_code::UNAUTHORIZED,
            e.to_string(),
        )
    }

    fn from_source(e: &SourceError) -> Self {
        match e {
            SourceError::UnknownReplicable { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                geo_code::UNKNOWN_REPLICABLE,
                e.to_string(),
            ),
            SourceError::RecordNotFound { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                geo_code::RECORD_NOT_FOUND,
                e.to_string(),
            ),
            SourceError::MissingOnPrimary { .. } => ApiError::new(
                StatusCode::NOT_FOUND,
                geo_code::FILE_NOT_FOUND,
                e.to_string(),
            ),
            SourceError::Transient { source, .. } | SourceError::Other { source, .. }
                if matches!(
                    source.downcast_ref::<BlobError>(),
                    Some(BlobError::Escapes { .. } | BlobError::InvalidPath(_))
                ) =>
            {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    geo_code::BLOB_PATH_REFUSED,
                    e.to_string(),
                )
            }
            SourceError::Transient { .. } | SourceError::Unauthorized { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                geo_code::UNAVAILABLE,
                e.to_string(),
            ),
            SourceError::Other { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                geo_code::INTERNAL,
                e.to_string(),
            ),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            geo_code::INTERNAL,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

fn known_replicable(name: &str) -> Result<&'static str, ApiError> {
    if !api::valid_replicable_name(name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            geo_code::UNKNOWN_REPLICABLE,
            "bad replicable name",
        ));
    }
    find_replicable(name).map(|d| d.name).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            geo_code::UNKNOWN_REPLICABLE,
            format!("unknown replicable {name:?}"),
        )
    })
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    match s.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(format!("bad id {s:?}"))),
    }
}

fn request_data(uri: &Uri) -> RequestData {
    RequestData::get(uri.path_and_query().map_or("/", |p| p.as_str()))
}

/// The router of a site.
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/api/geo/retrieve/{replicable}/{id}", get(retrieve))
        .route("/api/geo/blob_path/{replicable}/{id}", get(blob_path))
        .route("/api/geo/events", get(events))
        .route("/api/geo/events/last", get(last_event))
        .route("/api/geo/ids/{replicable}", get(ids))
        .route("/api/geo/checksums/{replicable}", get(checksums))
        .route("/api/geo/retrieve_batch/{replicable}", get(retrieve_batch))
        .route("/api/geo/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                geo_code::BAD_REQUEST,
                "no such endpoint",
            )
        })
        .with_state(state)
}

async fn retrieve(
    State(state): State<Arc<NodeState>>,
    Path((replicable, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let result = retrieve_inner(&state, &replicable, &id, &headers).await;
    let code = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    state.metrics.request("retrieve", code.as_u16());
    tracing::debug!(replicable = %replicable, id = %id, status = code.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "retrieve");
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn retrieve_inner(
    state: &Arc<NodeState>,
    replicable: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    state.authorize(headers, &RequestData::blob(replicable, id))?;
    let name = known_replicable(replicable)?;
    let service = state.primary()?.clone();
    let opened = blocking(move || {
        let source = &service.source;
        let path = source
            .blob_path(name, id)
            .map_err(|e| ApiError::from_source(&e))?
            .ok_or_else(|| {
                ApiError::from_source(&SourceError::RecordNotFound {
                    replicable: name.to_owned(),
                    id,
                })
            })?;
        let path = BlobPath::new(&path).map_err(|e| {
            ApiError::new(StatusCode::FORBIDDEN, geo_code::BLOB_PATH_REFUSED, e.to_string())
        })?;
        let checksum = match source.primary_checksum(name, id) {
            Ok(c) => c.and_then(|c| c.verified_checksum().copied()),
            Err(e) => {
                tracing::debug!(replicable = name, id, error = %e, "no checksum for the retrieve header");
                None
            }
        };
        let blob = service
            .open(name, id, &path)
            .map_err(|e| ApiError::from_source(&e))?;
        let size = blob.size;
        let mut reader: Box<dyn Read + Send> = match size {
            Some(n) => Box::new(blob.reader.take(n)),
            None => blob.reader,
        };
        // Read the first piece here: small blobs need no second trip to the blocking pool.
        let first = read_chunk(&mut reader).map_err(|e| {
            ApiError::from_source(&SourceError::transient(
                format!("reading the file of {name} {id}"),
                e,
            ))
        })?;
        Ok((size, checksum, first, reader))
    })
    .await?;
    let (size, checksum, first, reader) = opened;
    let metrics_bytes = Arc::clone(&state.metrics.bytes_served);
    metrics_bytes.fetch_add(first.len() as u64, Ordering::Relaxed);
    let body = if first.len() < CHUNK {
        Body::from(first)
    } else {
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHANNEL_DEPTH);
        let replicable = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            if tx.blocking_send(Ok(first)).is_err() {
                return;
            }
            loop {
                match read_chunk(&mut reader) {
                    Ok(b) if b.is_empty() => return,
                    Ok(b) => {
                        metrics_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if tx.blocking_send(Ok(b)).is_err() {
                            // The client went away.
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(replicable = %replicable, id, error = %e, "reading a blob failed mid-stream");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(n) = size {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(c) = checksum
        && let Ok(v) = HeaderValue::from_str(&c.to_hex())
    {
        h.insert(api::CHECKSUM_HEADER, v);
    }
    Ok(response)
}

/// Reads up to [`CHUNK`] bytes (fewer only at the end of the data).
fn read_chunk(reader: &mut dyn Read) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    while filled < CHUNK {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

fn json_response(
    endpoint: &'static str,
    state: &NodeState,
    r: Result<Value, ApiError>,
) -> Response {
    match r {
        Ok(v) => {
            state.metrics.request(endpoint, 200);
            axum::Json(v).into_response()
        }
        Err(e) => {
            state.metrics.request(endpoint, e.status.as_u16());
            e.into_response()
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

async fn blob_path(
    State(state): State<Arc<NodeState>>,
    Path((replicable, id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let id = parse_id(&id)?;
        let name = known_replicable(&replicable)?;
        let source = state.primary()?.source.clone();
        blocking(move || {
            let p = source
                .blob_path(name, id)
                .map_err(|e| ApiError::from_source(&e))?;
            to_value(&api::BlobPathResponse { blob_path: p })
        })
        .await
    }
    .await;
    json_response("blob_path", &state, r)
}

/// Query of `/api/geo/events`.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<i64>,
    limit: Option<usize>,
    ids: Option<String>,
}

async fn events(
    State(state): State<Arc<NodeState>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let source = state.primary()?.source.clone();
        let events = match q.ids {
            Some(ids) => {
                let ids = api::parse_ids(&ids).map_err(ApiError::bad_request)?;
                blocking(move || {
                    source
                        .events_by_ids(&ids)
                        .map_err(|e| ApiError::from_source(&e))
                })
                .await?
            }
            None => {
                let after = q.after.unwrap_or(0);
                let limit = q.limit.unwrap_or(1000).min(api::MAX_EVENTS);
                blocking(move || {
                    source
                        .events_after(after, limit)
                        .map_err(|e| ApiError::from_source(&e))
                })
                .await?
            }
        };
        to_value(&api::EventsResponse { events })
    }
    .await;
    json_response("events", &state, r)
}

async fn last_event(State(state): State<Arc<NodeState>>, uri: Uri, headers: HeaderMap) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let source = state.primary()?.source.clone();
        let last =
            blocking(move || source.max_event_id().map_err(|e| ApiError::from_source(&e))).await?;
        to_value(&api::LastEventResponse {
            last_event_id: last,
        })
    }
    .await;
    json_response("events_last", &state, r)
}

/// Query of `/api/geo/ids/{replicable}`.
#[derive(Debug, Deserialize)]
struct IdsQuery {
    from: Option<i64>,
    to: Option<i64>,
}

async fn ids(
    State(state): State<Arc<NodeState>>,
    Path(replicable): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<IdsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let name = known_replicable(&replicable)?;
        let range = match (q.from, q.to) {
            (Some(a), Some(b)) if a <= b && b.saturating_sub(a) < api::MAX_ID_RANGE => Some(a..=b),
            (None, None) => None,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "from and to go together, from <= to, at most {} ids",
                    api::MAX_ID_RANGE
                )));
            }
        };
        let source = state.primary()?.source.clone();
        blocking(move || {
            let ids = match range {
                Some(r) => source
                    .model_ids(name, r)
                    .map_err(|e| ApiError::from_source(&e))?,
                None => Vec::new(),
            };
            let max_id = source
                .max_model_id(name)
                .map_err(|e| ApiError::from_source(&e))?;
            to_value(&api::IdsResponse { ids, max_id })
        })
        .await
    }
    .await;
    json_response("ids", &state, r)
}

/// Query of `/api/geo/checksums/{replicable}` and `/api/geo/retrieve_batch/{replicable}`: a
/// comma-separated id list.
#[derive(Debug, Deserialize)]
struct IdListQuery {
    ids: Option<String>,
}

async fn checksums(
    State(state): State<Arc<NodeState>>,
    Path(replicable): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<IdListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let name = known_replicable(&replicable)?;
        let ids = api::parse_ids(q.ids.as_deref().unwrap_or("")).map_err(ApiError::bad_request)?;
        let service = state.primary()?.clone();
        blocking(move || {
            let sums = service
                .source
                .primary_checksums(name, &ids)
                .map_err(|e| ApiError::from_source(&e))?;
            // The paths come along so the secondary needs no request per download for them.
            let blob_paths = service.blob_paths(name, &ids)?;
            to_value(&api::ChecksumsResponse {
                checksums: sums
                    .iter()
                    .map(|(id, p)| api::ChecksumEntry::new(*id, p))
                    .collect(),
                blob_paths,
            })
        })
        .await
    }
    .await;
    json_response("checksums", &state, r)
}

async fn retrieve_batch(
    State(state): State<Arc<NodeState>>,
    Path(replicable): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<IdListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let started = Instant::now();
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let name = known_replicable(&replicable)?;
        let ids = api::parse_ids(q.ids.as_deref().unwrap_or("")).map_err(ApiError::bad_request)?;
        let service = state.primary()?.clone();
        blocking(move || service.batch(name, &ids)).await
    }
    .await;
    match r {
        Ok((body, blobs, bytes)) => {
            state.metrics.request("retrieve_batch", 200);
            state
                .metrics
                .bytes_served
                .fetch_add(bytes, Ordering::Relaxed);
            tracing::debug!(replicable = %replicable, blobs, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "retrieve_batch");
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Err(e) => {
            state.metrics.request("retrieve_batch", e.status.as_u16());
            e.into_response()
        }
    }
}

impl PrimaryService {
    /// The body of a `retrieve_batch` answer for `ids`, the number of blobs whose bytes it
    /// carries, and those bytes' total. Every path goes through the same checks as `retrieve`
    /// ([`BlobPath`], the store's link checks); anything refused, unreadable, larger than
    /// [`api::MAX_BATCH_BLOB`] or past [`api::MAX_BATCH_BYTES`] is left to `retrieve`.
    fn batch(&self, name: &'static str, ids: &[i64]) -> Result<(Bytes, usize, u64), ApiError> {
        use api::batch::{BatchEntry, Encoder};
        let paths = self.blob_paths(name, ids)?;
        let sums = match self.source.primary_checksums(name, ids) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replicable = name, error = %e, "no checksums for a retrieve_batch answer");
                BTreeMap::new()
            }
        };
        let mut enc = Encoder::new();
        let (mut blobs, mut budget) = (0usize, api::MAX_BATCH_BYTES);
        for &id in ids {
            let Some(path) = paths.get(&id) else {
                enc.push(&BatchEntry::RecordNotFound { id });
                continue;
            };
            let individual = || BatchEntry::Individual {
                id,
                path: path.clone(),
            };
            let entry = match BlobPath::new(path) {
                _ if path.len() > usize::from(u16::MAX) || budget == 0 => individual(),
                Err(_) => individual(),
                Ok(p) => match self.open(name, id, &p) {
                    Err(SourceError::MissingOnPrimary { .. }) => BatchEntry::FileNotFound {
                        id,
                        path: path.clone(),
                    },
                    Err(SourceError::RecordNotFound { .. }) => BatchEntry::RecordNotFound { id },
                    Err(_) => individual(),
                    Ok(b) if b.size.is_some_and(|n| n > api::MAX_BATCH_BLOB.min(budget)) => {
                        individual()
                    }
                    Ok(b) => {
                        let limit = api::MAX_BATCH_BLOB.min(budget);
                        let mut data = Vec::with_capacity(b.size.unwrap_or(0) as usize);
                        match b.reader.take(limit + 1).read_to_end(&mut data) {
                            Ok(n)
                                if (n as u64) <= limit && b.size.is_none_or(|s| s == n as u64) =>
                            {
                                let checksum = sums
                                    .get(&id)
                                    .and_then(|c| c.verified_checksum().copied())
                                    .unwrap_or_else(|| checksum_bytes(&data));
                                budget -= n as u64;
                                blobs += 1;
                                BatchEntry::Blob {
                                    id,
                                    path: path.clone(),
                                    checksum,
                                    data: Bytes::from(data),
                                }
                            }
                            // Grew, shrank or failed while being read: `retrieve` decides.
                            _ => individual(),
                        }
                    }
                },
            };
            enc.push(&entry);
        }
        Ok((enc.finish(), blobs, api::MAX_BATCH_BYTES - budget))
    }
}

async fn status(State(state): State<Arc<NodeState>>, uri: Uri, headers: HeaderMap) -> Response {
    let r = async {
        state.authorize(&headers, &request_data(&uri))?;
        let st = Arc::clone(&state);
        blocking(move || Ok(Value::Object(collect_status(&st)))).await
    }
    .await;
    json_response("status", &state, r)
}

/// The site's status object: GitLab's per-type fields for each role the site plays, plus the
/// event log position, open gaps and health.
pub fn collect_status(state: &NodeState) -> Map<String, Value> {
    let mut out = Map::new();
    let mut problems: Vec<String> = Vec::new();
    out.insert("name".into(), json!(state.name));
    out.insert("status_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    out.insert(
        "uptime_seconds".into(),
        json!(state.started.elapsed().as_secs()),
    );
    let role = match (&state.primary, &state.secondary) {
        (Some(_), None) => "primary",
        (None, Some(_)) => "secondary",
        (Some(_), Some(_)) => "primary+secondary",
        (None, None) => "none",
    };
    out.insert("role".into(), json!(role));
    out.insert(
        "replicables".into(),
        json!(replicables().iter().map(|d| d.name).collect::<Vec<_>>()),
    );
    if let Some(p) = &state.primary {
        let mut fields = Map::new();
        match p.source.max_event_id() {
            Ok(last) => {
                fields.insert("last_event_id".into(), json!(last));
            }
            Err(e) => problems.push(format!("primary event log: {e}")),
        }
        if let Some(v) = &p.verifier {
            match v.status() {
                Ok(rows) => rows.iter().for_each(|(_, s)| s.write_json(&mut fields)),
                Err(e) => problems.push(format!("primary status: {e}")),
            }
        }
        out.insert("primary".into(), Value::Object(fields));
    }
    if let Some(s) = &state.secondary {
        let mut fields = Map::new();
        match s.secondary.status() {
            Ok(rows) => rows.iter().for_each(|(_, st)| st.write_json(&mut fields)),
            Err(e) => problems.push(format!("tracking database: {e}")),
        }
        match s
            .secondary
            .tracking()
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| geo_diesel::cursor::load_state(&mut c).map_err(|e| e.to_string()))
        {
            Ok(cursor) => {
                fields.insert("cursor_last_event_id".into(), json!(cursor.safe_position()));
                fields.insert("cursor_position".into(), json!(cursor.last_event_id));
                fields.insert("open_gaps_count".into(), json!(cursor.gaps.len()));
                fields.insert(
                    "open_gaps".into(),
                    json!(cursor.gaps.iter().take(100).collect::<Vec<_>>()),
                );
            }
            Err(e) => problems.push(format!("event log cursor: {e}")),
        }
        match s.source.max_event_id() {
            Ok(last) => {
                fields.insert("last_event_id".into(), json!(last));
            }
            Err(e) => {
                fields.insert("last_event_id".into(), Value::Null);
                problems.push(format!("primary unreachable: {e}"));
            }
        }
        let c = s.secondary.cursor();
        fields.insert(
            "cursor_skipped_events_count".into(),
            json!(c.counters.skipped()),
        );
        if let Some(link) = &s.link {
            fields.insert("primary_link".into(), link.to_json());
        }
        out.insert("secondary".into(), Value::Object(fields));
    }
    out.insert(
        "health_status".into(),
        json!(if problems.is_empty() {
            "Healthy"
        } else {
            "Unhealthy"
        }),
    );
    out.insert(
        "health".into(),
        json!(if problems.is_empty() {
            "Healthy".to_string()
        } else {
            problems.join("; ")
        }),
    );
    out
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let st = Arc::clone(&state);
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&st))
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"));
    state.metrics.request("metrics", 200);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Accessors used by [`crate::metrics::render`].
impl NodeState {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn primary_service(&self) -> Option<&PrimaryService> {
        self.primary.as_ref()
    }
    pub(crate) fn secondary_service(&self) -> Option<&SecondaryService> {
        self.secondary.as_ref()
    }
}

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
