//! What the handlers share: the site's [`NodeState`] (keys, clock, metrics) and the two halves
//! it may serve, [`PrimaryService`] and [`SecondaryService`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
use geo_diesel::geo_core::clock::{Clock, SystemClock};
use geo_diesel::geo_core::find_replicable;
use geo_diesel::geo_core::source::{BlobStream, PrimarySource, SourceError};
use geo_diesel::notify::EventWatch;
use geo_diesel::secondary::Secondary;
use geo_diesel::verifier::PrimaryVerifier;

use super::ApiError;
use super::middleware::KeyLimits;
use super::status::StatusCache;
use crate::auth::{
    AccessKey, AdminTokens, AuthError, DEFAULT_LEEWAY, FailureLog, KeyRing, RequestData, Sessions,
};
use crate::client::LinkStats;
use crate::metrics::Metrics;

/// Default limit on requests in flight per access key (beyond it: `429` with `Retry-After`).
pub const DEFAULT_MAX_REQUESTS_PER_KEY: usize = 16;

/// Default age after which the cached status (behind `GET /api/geo/status` and the gauges of
/// `/metrics`) is read again from the databases.
pub const DEFAULT_STATUS_TTL: Duration = Duration::from_secs(10);

/// The primary half of a site's server.
#[derive(Clone)]
#[non_exhaustive]
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
    /// The watch of the primary database's events, when local: a waiting event feed awaits it
    /// without holding a thread (otherwise the wait is `source.event_feed_wait`'s).
    pub events: Option<EventWatch>,
}

impl PrimaryService {
    /// Serves a primary's own database and blob store (through geo-diesel's `DirectSource`).
    pub fn direct(
        db: DbPool,
        store: Arc<dyn BlobStore>,
        verifier: Option<Arc<PrimaryVerifier>>,
    ) -> Self {
        let source = DirectSource::new(db.clone(), Arc::clone(&store));
        PrimaryService {
            events: Some(source.event_watch().clone()),
            source: Arc::new(source),
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
            events: None,
        }
    }

    /// Opens the blob of `name` `id` at `path`: from the local store when there is one.
    pub(super) fn open(
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

    /// The blob paths of those of `ids` that exist: one set-based query when the database is
    /// local.
    pub(super) fn blob_paths(
        &self,
        name: &'static str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, String>, ApiError> {
        if let (Some(db), Some(d)) = (&self.db, find_replicable(name)) {
            let mut conn = db
                .get()
                .map_err(|e| ApiError::transient("primary database pool", e))?;
            return geo_diesel::primary::blob_paths(&mut conn, d, ids)
                .map(|v| v.into_iter().collect())
                .map_err(|e| ApiError::transient("reading blob paths", e));
        }
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(p) = self.source.blob_path(name, *id)? {
                out.insert(*id, p);
            }
        }
        Ok(out)
    }
}

/// The secondary half of a site's server (status and metrics only).
#[derive(Clone)]
#[non_exhaustive]
pub struct SecondaryService {
    /// The secondary runtime.
    pub secondary: Arc<Secondary>,
    /// Its link to the primary (to report the primary's last event id and the link's health).
    pub source: Arc<dyn PrimarySource>,
    /// Request counters of the link, when it is an HTTP link.
    pub link: Option<Arc<LinkStats>>,
}

impl SecondaryService {
    /// Reports `secondary`, which replicates through `source`.
    pub fn new(secondary: Arc<Secondary>, source: Arc<dyn PrimarySource>) -> Self {
        SecondaryService {
            secondary,
            source,
            link: None,
        }
    }

    /// Also reports the counters of its HTTP link to the primary.
    pub fn with_link(mut self, link: Arc<LinkStats>) -> Self {
        self.link = Some(link);
        self
    }
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
    sessions: Sessions,
    graphql: Option<async_graphql::dynamic::Schema>,
    key_limits: Arc<KeyLimits>,
    status_cache: StatusCache,
    auth_log: FailureLog,
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
        let name = name.into();
        NodeState {
            metrics: Metrics::new(&name),
            name,
            keys,
            leeway: DEFAULT_LEEWAY,
            clock: Arc::new(SystemClock),
            primary: None,
            secondary: None,
            started: Instant::now(),
            sessions: Sessions::default(),
            graphql: crate::graphql::schema()
                .inspect_err(|e| tracing::error!(error = %e, "cannot build the GraphQL schema"))
                .ok(),
            key_limits: Arc::new(KeyLimits::new(DEFAULT_MAX_REQUESTS_PER_KEY)),
            status_cache: StatusCache::new(DEFAULT_STATUS_TTL),
            auth_log: FailureLog::default(),
        }
    }

    /// At most `n` requests in flight per access key (default
    /// [`DEFAULT_MAX_REQUESTS_PER_KEY`]); one more is answered `429` with `Retry-After`. A
    /// request is in flight until its response body is sent.
    pub fn with_max_requests_per_key(mut self, n: usize) -> Self {
        self.key_limits = Arc::new(KeyLimits::new(n));
        self
    }

    /// How long the status read for `GET /api/geo/status` and the gauges of `/metrics` is
    /// reused (default [`DEFAULT_STATUS_TTL`]): whatever the scrape rate, the databases are
    /// read at most once per `ttl`. Zero reads them for every request.
    pub fn with_status_ttl(mut self, ttl: Duration) -> Self {
        self.status_cache = StatusCache::new(ttl);
        self
    }

    /// Refused tokens are logged at most once per source per `window` (default 10 s).
    pub fn with_auth_log_window(mut self, window: Duration) -> Self {
        self.auth_log = FailureLog::new(window);
        self
    }

    /// Serves primary data from `service`.
    pub fn with_primary(mut self, service: PrimaryService) -> Self {
        self.primary = Some(service);
        self
    }

    /// Reports this secondary's status and metrics; its downloads are timed into
    /// `geo_sync_duration_seconds` (unless another observer was set on it first).
    pub fn with_secondary(mut self, service: SecondaryService) -> Self {
        if !service
            .secondary
            .set_sync_observer(self.metrics.sync_observer())
        {
            tracing::debug!("the secondary reports its downloads elsewhere already");
        }
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

    /// Checks an `Authorization` header against what the request asks for, with this site's
    /// keys, clock and leeway; the caller's access key when it holds.
    pub(super) fn verify_token(
        &self,
        header: Option<&str>,
        data: &RequestData,
    ) -> Result<AccessKey, AuthError> {
        self.keys
            .verify(header, data, self.clock.now().timestamp(), self.leeway)
            .cloned()
    }

    /// The keys this site accepts.
    pub(super) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The per-access-key limit on requests in flight.
    pub(super) fn key_limits(&self) -> &Arc<KeyLimits> {
        &self.key_limits
    }

    /// The cached status.
    pub(super) fn status_cache(&self) -> &StatusCache {
        &self.status_cache
    }

    /// Which refused tokens get a log line.
    pub(super) fn auth_log(&self) -> &FailureLog {
        &self.auth_log
    }

    /// The admin tokens this site accepts (from its keys file).
    pub fn admin_tokens(&self) -> &AdminTokens {
        self.keys.admin_tokens()
    }

    /// The GraphQL schema of this build's replicables (built once, at start).
    pub(crate) fn graphql(&self) -> Option<&async_graphql::dynamic::Schema> {
        self.graphql.as_ref()
    }

    /// The admin page's sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Whether the site is a primary.
    pub fn is_primary(&self) -> bool {
        self.primary.is_some()
    }

    /// The site's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The primary half, when the site is a primary.
    pub(crate) fn primary_service(&self) -> Option<&PrimaryService> {
        self.primary.as_ref()
    }

    /// The secondary half, when the site is a secondary.
    pub(crate) fn secondary_service(&self) -> Option<&SecondaryService> {
        self.secondary.as_ref()
    }

    /// How long the server has run.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}
