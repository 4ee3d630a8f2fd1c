//! [`HttpSource`]: the [`PrimarySource`] a secondary replicates through, over [`NodeClient`],
//! with the blobs of `retrieve_batch` answers held briefly for the downloads that follow.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::prefetch::{PREFETCH_TTL, Prefetch, PrefetchEntry, Prefetched};
use super::transport::MAX_JSON;
use super::{ClientError, HttpConfig, LinkStats, NodeClient};
use crate::api;
use crate::auth::mac::{ChecksumMac, UnauthenticChecksum};
use bytes::Buf;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{
    BlobStream, EventFeed, PrimaryChecksum, PrimaryIdentity, PrimarySource, RangedBlobStream,
    SourceError,
};

/// How long a blob path learned from a checksums answer is used instead of asking again.
const PATH_CACHE_TTL: Duration = Duration::from_secs(10);

/// Largest `retrieve_batch` answer accepted.
const MAX_BATCH_ANSWER: usize = MAX_JSON + api::MAX_BATCH_BYTES as usize;

/// A [`PrimarySource`] over the primary's HTTP API.
///
/// [`blob_paths`](PrimarySource::blob_paths) (one call per type per sync pass) asks
/// `retrieve_batch` once per [`api::MAX_IDS`] ids: the answer carries the paths and the bytes
/// of the small blobs, which wait in memory (at most [`PREFETCH_LIMIT`](super::PREFETCH_LIMIT) bytes, at most
/// [`PREFETCH_TTL`]) for [`open_blob_at`](PrimarySource::open_blob_at) to hand them out once,
/// with their checksum so the blob store still verifies before renaming. A new `blob_paths`
/// call for a type drops what an earlier pass left of it. Anything else is fetched with
/// `retrieve`.
///
/// Every checksum is checked against its MAC with this secondary's secret before it is used
/// (see [`crate::auth::mac`]): a blob whose checksum is not authentic is never handed out.
pub struct HttpSource {
    pub(super) client: NodeClient,
    /// What the log cursor last noted it consumed (`i64::MIN`: nothing yet), sent as
    /// `consumed=` with every `events?after=` request.
    consumed: std::sync::atomic::AtomicI64,
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
    /// A source reading the primary described by `config`; a configuration
    /// [`NodeClient::try_new`] refuses makes every call fail with that error.
    pub fn new(config: HttpConfig) -> Self {
        Self::with_client(NodeClient::new(config))
    }

    /// A source reading the primary described by `config`, or why the configuration is
    /// refused (see [`NodeClient::try_new`]).
    pub fn try_new(config: HttpConfig) -> Result<Self, ClientError> {
        Ok(Self::with_client(NodeClient::try_new(config)?))
    }

    fn with_client(client: NodeClient) -> Self {
        HttpSource {
            client,
            consumed: std::sync::atomic::AtomicI64::new(i64::MIN),
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
            Prefetched::Refused { what, why } => Err(SourceError::other(what, why)),
        })
    }

    /// Checks a received checksum's MAC with this secondary's secret; a refusal is logged and
    /// shows as the link's last error.
    pub(super) fn authentic(
        &self,
        what: &str,
        mac: Option<&str>,
        name: &str,
        id: i64,
        checksum: &Checksum,
    ) -> Result<(), UnauthenticChecksum> {
        let secret = &self.client.config().credentials.secret;
        ChecksumMac::check_received(mac, secret, name, id, checksum)
            .inspect_err(|e| self.refused(what, e))
    }

    pub(super) fn refused(&self, what: &str, e: &UnauthenticChecksum) {
        tracing::warn!(replicable = %e.replicable, id = e.id, request = what, error = %e, "refused a checksum from the primary");
        self.client
            .stats()
            .failed(&SourceError::other(what.to_owned(), e.clone()));
    }

    /// `GET /api/geo/ids/{name}?from=…&to=…{filter}` over `range`, in windows of
    /// [`api::MAX_ID_RANGE`].
    fn ids_in(
        &self,
        name: &str,
        range: RangeInclusive<i64>,
        filter: &str,
    ) -> Result<Vec<i64>, SourceError> {
        let mut out = Vec::new();
        let (mut from, end) = (*range.start(), *range.end());
        while from <= end {
            let to = from.saturating_add(api::MAX_ID_RANGE - 1).min(end);
            let r: api::IdsResponse = self
                .client
                .get_json(&format!("/api/geo/ids/{name}?from={from}&to={to}{filter}"))?;
            out.extend(r.ids);
            if to == i64::MAX {
                break;
            }
            from = to + 1;
        }
        Ok(out)
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
    /// Kept and sent as `consumed=` with the next `events?after=` requests; a `410
    /// EVENTS_PRUNED` answer comes back as [`SourceError::EventsPruned`].
    fn note_consumed(&self, consumed: i64) {
        self.consumed
            .store(consumed, std::sync::atomic::Ordering::Relaxed);
    }

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
        let mut path = match wait.as_millis() {
            0 => format!("/api/geo/events?after={after_id}&limit={limit}"),
            ms => format!("/api/geo/events?after={after_id}&limit={limit}&wait={ms}"),
        };
        match self.consumed.load(std::sync::atomic::Ordering::Relaxed) {
            i64::MIN => {}
            consumed => path.push_str(&format!("&consumed={consumed}")),
        }
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
        self.ids_in(Self::seg(replicable)?, range, "")
    }

    fn model_ids_in_partitions(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
        partitions: &std::collections::BTreeSet<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        let name = Self::seg(replicable)?;
        let keys: Vec<i64> = partitions.iter().copied().collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(api::MAX_IDS) {
            let filter = format!("&partitions={}", api::join_ids(chunk));
            out.extend(self.ids_in(name, range.clone(), &filter)?);
        }
        out.sort_unstable();
        out.dedup();
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
            let what = format!("GET /api/geo/checksums/{name}");
            for entry in r.checksums {
                let mac = entry.mac.clone();
                let (id, mut p) = entry.into_primary();
                if let Some(sum) = p.verified_checksum().copied()
                    && self
                        .authentic(&what, mac.as_deref(), name, id, &sum)
                        .is_err()
                {
                    // Not the primary's word: what stands in for it is a checksum no content
                    // has (the blake3 of a label and the refused value), so verification
                    // records a mismatch and resyncs, and a download never takes it as its
                    // expected checksum to match planted bytes.
                    let mut poisoned = b"geo: refused checksum\0".to_vec();
                    poisoned.extend_from_slice(&sum.0);
                    p.checksum = Some(checksum_bytes(&poisoned));
                }
                out.insert(id, p);
            }
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
        // A new lookup of these rows: what an earlier one left for them is not used. The rows of
        // other passes (`sync_workers` run at once), still to download, are kept; leftovers of
        // a pass that ended go with `PREFETCH_TTL` and the `PREFETCH_LIMIT` bound.
        {
            let asked: std::collections::HashSet<i64> = ids.iter().copied().collect();
            self.prefetch_lock().retain(|(n, id), e| {
                !(n == name && asked.contains(id)) && e.at.elapsed() < PREFETCH_TTL
            });
        }
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
                        mac,
                        data,
                        ..
                    } => {
                        let what = format!("GET /api/geo/retrieve_batch/{name}");
                        let hex = mac.to_hex();
                        match self.authentic(&what, Some(&hex), name, id, &checksum) {
                            Ok(()) => (path, Prefetched::Blob { checksum, data }),
                            Err(why) => (path, Prefetched::Refused { what, why }),
                        }
                    }
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

    fn held_size(&self, replicable: &str, id: i64) -> Option<u64> {
        match &self
            .prefetch_lock()
            .entries
            .get(&(replicable.to_owned(), id))?
            .what
        {
            Prefetched::Blob { data, .. } => Some(data.len() as u64),
            Prefetched::Missing | Prefetched::Refused { .. } => None,
        }
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

    /// `retrieve` with `Range: bytes=<offset>-`; offset 0 is [`open_blob_at`](PrimarySource::open_blob_at)
    /// (a prefetched blob is used).
    fn open_blob_from(
        &self,
        replicable: &str,
        id: i64,
        path: &BlobPath,
        offset: u64,
    ) -> Result<RangedBlobStream, SourceError> {
        if offset == 0 {
            return Ok(RangedBlobStream {
                stream: self.open_blob_at(replicable, id, path)?,
                start: 0,
            });
        }
        let name = Self::seg(replicable)?;
        // A prefetched copy is whole and small: never what a resumed download asks for.
        self.prefetch_lock().take(name, id, Some(path.as_str()));
        self.retrieve_from(name, id, offset)
    }

    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let name = Self::seg(replicable)?;
        match self.prefetched(name, id, None) {
            Some(r) => r,
            None => self.retrieve(name, id),
        }
    }
}
