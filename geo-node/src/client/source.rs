//! [`HttpSource`]: the [`PrimarySource`] a secondary replicates through, over [`NodeClient`],
//! with the blobs of `retrieve_batch` answers held briefly for the downloads that follow.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{
    BlobStream, EventFeed, PrimaryChecksum, PrimaryIdentity, PrimarySource, SourceError,
};
use hyper::header;

use super::transport::{BodyReader, MAX_JSON};
use super::{HttpConfig, LinkStats, NodeClient};
use crate::api;
use crate::auth::RequestData;

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
        Ok(self.event_feed(after_id, limit)?.events)
    }

    /// One `events?after=` request: the answer carries the primary's identity and high-water
    /// mark, read by the primary with the events.
    fn event_feed(&self, after_id: i64, limit: usize) -> Result<EventFeed, SourceError> {
        self.event_feed_wait(after_id, limit, Duration::ZERO)
    }

    /// One `events?after=…&wait=MS` request: the primary holds an empty answer until an event
    /// is committed or `wait` passes. `wait` is cut to [`api::MAX_EVENT_WAIT`] and to a second
    /// below the read timeout, so a waiting primary is never taken for a dead one.
    fn event_feed_wait(
        &self,
        after_id: i64,
        limit: usize,
        wait: Duration,
    ) -> Result<EventFeed, SourceError> {
        let limit = limit.min(api::MAX_EVENTS);
        let read_timeout = self.client.config().read_timeout;
        let wait = wait
            .min(api::MAX_EVENT_WAIT)
            .min(read_timeout.saturating_sub(Duration::from_secs(1)));
        let path = match wait.as_millis() {
            0 => format!("/api/geo/events?after={after_id}&limit={limit}"),
            ms => format!("/api/geo/events?after={after_id}&limit={limit}&wait={ms}"),
        };
        let r: api::EventsResponse = self.client.get_json(&path)?;
        Ok(EventFeed {
            events: r.events,
            primary: r.primary,
        })
    }

    fn primary_identity(&self) -> Result<Option<PrimaryIdentity>, SourceError> {
        let r: api::IdentityResponse = self.client.get_json("/api/geo/identity")?;
        Ok(r.primary)
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
            reader: Box::new(BodyReader::new(
                resp.into_body(),
                self.client.config().read_timeout,
                size,
            )),
            size,
            checksum,
        })
    }
}
