//! The secondary site's runtime: log cursor, sync scheduler and downloads, backfill, secondary
//! verification and timeouts, as passes you can run one at a time (tests, the demo) or as
//! background threads ([`Secondary::spawn`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use chrono::{DateTime, Duration, Utc};
use geo_core::backoff::{BackoffCap, next_retry_time};
use geo_core::blob_store::{BlobError, BlobPath, BlobStore};
use geo_core::checksum::Checksum;
use geo_core::clock::Env;
use geo_core::source::{PrimarySource, SourceError};
use geo_core::status::ReplicableStatus;
use geo_core::{ReplicableDescriptor, replicables};

use crate::cursor::{CursorError, CursorPass, LogCursor};
use crate::db::DbPool;
use crate::parallel::parallel_map;
use crate::registry::{self, SyncOutcome, VerifyOutcome};

/// Tunables of a secondary. Defaults follow GitLab where it has a value.
#[derive(Debug, Clone)]
pub struct SecondaryConfig {
    /// Downloads in flight at once, across all types, whether the sync was triggered by an event
    /// or by the backfill (GitLab `files_max_capacity`: 10).
    pub sync_capacity: usize,
    /// Rows claimed per scheduler pass (at least `sync_capacity`).
    pub sync_batch: usize,
    /// Rows verified per verification pass.
    pub verification_batch: usize,
    /// Threads hashing files during verification.
    pub verification_threads: usize,
    /// Ids per backfill range (GitLab: 10 000).
    pub backfill_batch: i64,
    /// A sync `started` longer than this fails (GitLab: 8 h).
    pub sync_timeout: Duration,
    /// A verification `started` longer than this fails (GitLab: 8 h).
    pub verification_timeout: Duration,
    /// Events per cursor pass.
    pub cursor_batch: usize,
    /// How long an event-id gap is awaited before it is dropped (GitLab: 1 h).
    pub gap_timeout: Duration,
    /// Sleep between passes when there is nothing to do.
    pub idle_sleep: std::time::Duration,
    /// On start, move rows left `started` by a previous run of this secondary back to `pending`
    /// (right for one secondary process per tracking database; with several, rely on
    /// `sync_timeout`).
    pub reclaim_on_start: bool,
}

impl Default for SecondaryConfig {
    fn default() -> Self {
        SecondaryConfig {
            sync_capacity: 10,
            sync_batch: 200,
            verification_batch: 100,
            verification_threads: 2,
            backfill_batch: 10_000,
            sync_timeout: Duration::hours(8),
            verification_timeout: Duration::hours(8),
            cursor_batch: 1000,
            gap_timeout: Duration::hours(1),
            idle_sleep: std::time::Duration::from_millis(200),
            reclaim_on_start: true,
        }
    }
}

/// Errors from a secondary pass.
#[derive(Debug, thiserror::Error)]
pub enum SecondaryError {
    /// The tracking database failed.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// A query outside the registries failed.
    #[error("tracking database: {0}")]
    Db(#[from] diesel::result::Error),
    /// The pool failed.
    #[error("tracking database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// The log cursor failed.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The primary could not be read.
    #[error("primary: {0}")]
    Source(#[from] SourceError),
}

/// Counters since the secondary started.
#[derive(Debug, Default)]
pub struct SecondaryCounters {
    /// Files synced.
    pub synced: AtomicU64,
    /// Sync failures recorded.
    pub sync_failed: AtomicU64,
    /// Bytes written by syncs.
    pub bytes: AtomicU64,
    /// Registry rows created by the backfill.
    pub backfill_created: AtomicU64,
    /// Orphan registry rows removed by the backfill.
    pub backfill_removed: AtomicU64,
    /// Secondary verifications that matched.
    pub verified: AtomicU64,
    /// Checksum mismatches found on the secondary.
    pub mismatches: AtomicU64,
}

/// The result of syncing one record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Done {
    /// The outcome, and for a successful write the path it wrote.
    Outcome(SyncOutcome, Option<BlobPath>),
    /// The record is gone on the primary: drop the row (and the file, when its path is known).
    Orphan,
}

/// One secondary site.
pub struct Secondary {
    tracking: DbPool,
    source: Arc<dyn PrimarySource>,
    store: Arc<dyn BlobStore>,
    env: Env,
    config: SecondaryConfig,
    cursor: LogCursor,
    backfill_pos: Mutex<BTreeMap<&'static str, i64>>,
    counters: SecondaryCounters,
    observer: std::sync::OnceLock<Arc<dyn geo_core::observe::SyncObserver>>,
}

impl std::fmt::Debug for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondary")
            .field("tracking", &self.tracking)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Secondary {
    /// A secondary tracking its registries in `tracking` (migrated with `Role::Secondary`),
    /// reading its primary through `source` and writing files into `store`.
    pub fn new(
        tracking: DbPool,
        source: Arc<dyn PrimarySource>,
        store: Arc<dyn BlobStore>,
        env: Env,
        config: SecondaryConfig,
    ) -> Self {
        let cursor = LogCursor {
            batch_size: config.cursor_batch,
            gap_timeout: config.gap_timeout,
            ..LogCursor::default()
        };
        Secondary {
            tracking,
            source,
            store,
            env,
            config,
            cursor,
            backfill_pos: Mutex::new(BTreeMap::new()),
            counters: SecondaryCounters::default(),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Reports every finished download to `observer` (e.g. a sync-duration histogram). Only the
    /// first observer set is kept; returns `false` when one was already set.
    pub fn set_sync_observer(&self, observer: Arc<dyn geo_core::observe::SyncObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// The tracking database pool.
    pub fn tracking(&self) -> &DbPool {
        &self.tracking
    }

    /// The log cursor (its counters say how many events were skipped and why).
    pub fn cursor(&self) -> &LogCursor {
        &self.cursor
    }

    /// Counters since start.
    pub fn counters(&self) -> &SecondaryCounters {
        &self.counters
    }

    /// The configuration.
    pub fn config(&self) -> &SecondaryConfig {
        &self.config
    }

    fn now(&self) -> DateTime<Utc> {
        self.env.now()
    }

    /// Replicable types whose replication flag is on in the tracking database.
    pub fn enabled_types(&self) -> Result<Vec<&'static ReplicableDescriptor>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let mut out = Vec::new();
        for d in replicables() {
            if crate::primary::replication_enabled(&mut conn, d)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Moves rows left `started` by an earlier run back to `pending` (see
    /// [`SecondaryConfig::reclaim_on_start`]). Returns how many.
    pub fn reclaim_interrupted(&self) -> Result<usize, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let mut n = 0;
        for d in replicables() {
            n += registry::Registry::of(d).reclaim_started(&mut conn)?;
        }
        if n > 0 {
            tracing::info!(
                rows = n,
                "reclaimed syncs and verifications interrupted by the last stop"
            );
        }
        Ok(n)
    }

    /// One log-cursor pass.
    pub fn cursor_pass(&self) -> Result<CursorPass, SecondaryError> {
        let flags: BTreeSet<&'static str> =
            self.enabled_types()?.into_iter().map(|d| d.name).collect();
        let src = &self.source;
        Ok(self.cursor.pass(
            &self.tracking,
            &|after, limit| src.events_after(after, limit).map_err(|e| e.to_string()),
            &|ids| src.events_by_ids(ids).map_err(|e| e.to_string()),
            self.store.as_ref(),
            &|d| flags.contains(d.name),
            self.now(),
        )?)
    }

    /// Claims up to `sync_batch` rows fairly across the enabled types: each type gets an equal
    /// share, and shares a type cannot use go to the others.
    fn claim_fair(
        &self,
        types: &[&'static ReplicableDescriptor],
        now: DateTime<Utc>,
    ) -> Result<Vec<(&'static ReplicableDescriptor, i64)>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let total = self.config.sync_batch.max(self.config.sync_capacity) as i64;
        let mut claimed: Vec<(&'static ReplicableDescriptor, i64)> = Vec::new();
        let mut open: Vec<&'static ReplicableDescriptor> = types.to_vec();
        while !open.is_empty() {
            let left = total - claimed.len() as i64;
            if left <= 0 {
                break;
            }
            let share = (left + open.len() as i64 - 1) / open.len() as i64;
            let mut still_open = Vec::new();
            for d in open {
                let left = total - claimed.len() as i64;
                if left <= 0 {
                    break;
                }
                let want = share.min(left);
                let ids = registry::Registry::of(d).claim_sync(&mut conn, want, now)?;
                if ids.len() as i64 == want {
                    still_open.push(d);
                }
                claimed.extend(ids.into_iter().map(|id| (d, id)));
            }
            open = still_open;
        }
        // Interleave types so that downloads alternate between them.
        let mut by_type: BTreeMap<&'static str, Vec<(&'static ReplicableDescriptor, i64)>> =
            BTreeMap::new();
        for c in claimed {
            by_type.entry(c.0.name).or_default().push(c);
        }
        let mut queues: Vec<std::vec::IntoIter<_>> =
            by_type.into_values().map(|v| v.into_iter()).collect();
        let mut out = Vec::new();
        loop {
            let before = out.len();
            for q in queues.iter_mut() {
                if let Some(x) = q.next() {
                    out.push(x);
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Downloads one record. `known` is the blob path from the batch lookup: `Some(Some(p))`
    /// found, `Some(None)` the record does not exist, `None` not looked up yet.
    fn download(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        known: Option<Option<String>>,
        primary: Option<Checksum>,
    ) -> Done {
        let started = std::time::Instant::now();
        let written = std::cell::Cell::new(0);
        let done = self.download_inner(d, id, known, primary, &written);
        if let Some(observer) = self.observer.get() {
            use geo_core::observe::SyncResult;
            let result = match &done {
                Done::Outcome(SyncOutcome::Synced { .. }, _) => SyncResult::Synced,
                Done::Outcome(SyncOutcome::Failed { .. }, _) => SyncResult::Failed,
                Done::Orphan => SyncResult::Orphan,
            };
            observer.sync_finished(d.name, started.elapsed(), written.get(), result);
        }
        done
    }

    fn download_inner(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        known: Option<Option<String>>,
        primary: Option<Checksum>,
        written: &std::cell::Cell<u64>,
    ) -> Done {
        let failed = |message: String, missing_on_primary: bool| {
            Done::Outcome(
                SyncOutcome::Failed {
                    message,
                    missing_on_primary,
                },
                None,
            )
        };
        let path = match known {
            Some(Some(p)) => p,
            Some(None) => return Done::Orphan,
            None => match self.source.blob_path(d.name, id) {
                Ok(Some(p)) => p,
                Ok(None) | Err(SourceError::RecordNotFound { .. }) => return Done::Orphan,
                Err(e) => return failed(format!("Error downloading file: {e}"), false),
            },
        };
        let path = match BlobPath::new(&path) {
            Ok(p) => p,
            Err(e) => return failed(format!("Error downloading file: {e}"), false),
        };
        let started = std::time::Instant::now();
        let mut blob = match self.source.open_blob_at(d.name, id, &path) {
            Ok(b) => b,
            Err(SourceError::RecordNotFound { .. }) => return Done::Orphan,
            Err(SourceError::MissingOnPrimary { .. }) => {
                return failed(
                    "The file is missing on the Geo primary site".to_string(),
                    true,
                );
            }
            Err(e) => return failed(format!("Error downloading file: {e}"), false),
        };
        let expected = blob.checksum.or(primary);
        match self.store.write(&path, &mut blob.reader, expected.as_ref()) {
            Ok(w) => {
                self.counters.bytes.fetch_add(w.bytes, Ordering::Relaxed);
                written.set(w.bytes);
                tracing::debug!(
                    replicable = d.name,
                    id,
                    bytes = w.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "blob download"
                );
                Done::Outcome(
                    SyncOutcome::Synced {
                        local: w.checksum.to_vec(),
                        primary: expected.map(|c| c.to_vec()),
                    },
                    Some(path),
                )
            }
            Err(BlobError::ChecksumMismatch {
                expected, actual, ..
            }) => failed(
                format!("Downloaded file checksum mismatch: expected {expected}, got {actual}"),
                false,
            ),
            Err(e) => failed(format!("Error downloading file: {e}"), false),
        }
    }

    fn retry_at(&self, now: DateTime<Utc>) -> impl Fn(i16, bool) -> DateTime<Utc> + '_ {
        move |n, missing| {
            next_retry_time(
                now,
                i64::from(n),
                BackoffCap::for_missing_on_primary(missing),
                self.env.rng.as_ref(),
            )
        }
    }

    /// One scheduler pass: claims due rows (never-synced first, then failed with a due retry,
    /// fair across types), downloads them with at most `sync_capacity` in flight, and records
    /// every outcome in one transaction. Returns how many rows it processed.
    pub fn sync_pass(&self) -> Result<usize, SecondaryError> {
        let types = self.enabled_types()?;
        if types.is_empty() {
            return Ok(0);
        }
        // The claim time is the claim token: outcomes are recorded only against it.
        let claimed_at = self.now();
        let claimed = self.claim_fair(&types, claimed_at)?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // The primary's checksums, one query per type.
        let mut expected: BTreeMap<(&'static str, i64), Checksum> = BTreeMap::new();
        let mut by_type: BTreeMap<&'static str, (&'static ReplicableDescriptor, Vec<i64>)> =
            BTreeMap::new();
        for (d, id) in &claimed {
            by_type
                .entry(d.name)
                .or_insert_with(|| (d, Vec::new()))
                .1
                .push(*id);
        }
        // Blob paths, one query per type (`None`: the lookup failed; each download retries it).
        let mut paths: BTreeMap<&'static str, Option<BTreeMap<i64, String>>> = BTreeMap::new();
        for (d, ids) in by_type.values() {
            let found = self.source.blob_paths(d.name, ids);
            if let Err(e) = &found {
                tracing::warn!(replicable = d.name, error = %e, "could not read blob paths in a batch; looking them up one by one");
            }
            paths.insert(d.name, found.ok());
        }
        for (d, ids) in by_type.values() {
            if !d.verifies() {
                continue;
            }
            match self.source.primary_checksums(d.name, ids) {
                Ok(map) => {
                    for (id, pc) in map {
                        if let Some(sum) = pc.verified_checksum() {
                            expected.insert((d.name, id), *sum);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(replicable = d.name, error = %e, "could not read the primary's checksums; syncing without them")
                }
            }
        }
        let results: Vec<(&'static ReplicableDescriptor, i64, Done)> =
            parallel_map(&claimed, self.config.sync_capacity, |&(d, id)| {
                let known = paths
                    .get(d.name)
                    .and_then(Option::as_ref)
                    .map(|m| m.get(&id).cloned());
                (
                    d,
                    id,
                    self.download(d, id, known, expected.get(&(d.name, id)).copied()),
                )
            });
        let now = self.now();
        let retry_at = self.retry_at(now);
        let mut conn = self.tracking.get()?;
        let mut stale_files: Vec<BlobPath> = Vec::new();
        crate::db::with_conn!(&mut conn, c => diesel::Connection::transaction::<(), SecondaryError, _>(c, |c| {
            stale_files.clear();
            // Successful downloads first, set-based per type; rows the batch did not record (a
            // newer event moved their token, or they were deleted) go through the per-row path.
            let mut batch: BTreeMap<&'static str, (&'static ReplicableDescriptor, Vec<registry::SyncedRow>)> = BTreeMap::new();
            for (d, id, done) in &results {
                if let Done::Outcome(SyncOutcome::Synced { local, primary }, Some(path)) = done {
                    batch.entry(d.name).or_insert_with(|| (*d, Vec::new())).1.push(registry::SyncedRow {
                        id: *id,
                        local: local.clone(),
                        primary: primary.clone(),
                        path: path.as_str().to_string(),
                    });
                }
            }
            let mut recorded: BTreeSet<(&'static str, i64)> = BTreeSet::new();
            for (d, rows) in batch.values() {
                for id in registry::Registry::of(d).record_synced_batch(c, claimed_at, rows, now)? {
                    recorded.insert((d.name, id));
                }
            }
            for (d, id, done) in &results {
                match done {
                    Done::Outcome(SyncOutcome::Synced { .. }, _) if recorded.contains(&(d.name, *id)) => {
                        self.counters.synced.fetch_add(1, Ordering::Relaxed);
                    }
                    Done::Outcome(outcome, path) => {
                        let changed = registry::Registry::of(d).record_sync_claimed(c, *id, claimed_at, outcome, &retry_at, now)?;
                        if let (true, Some(path)) = (changed, path) {
                            registry::Registry::of(d).set_blob_path(c, *id, path.as_str())?;
                        }
                        match outcome {
                            SyncOutcome::Synced { .. } => {
                                self.counters.synced.fetch_add(1, Ordering::Relaxed);
                                if !changed && registry::Registry::of(d).tracked_ids(c, *id, *id)?.is_empty() {
                                    // Deleted while downloading: the cursor removed the row (and
                                    // found no file yet); the file just written must go too.
                                    stale_files.extend(path.clone());
                                } else if !changed {
                                    tracing::debug!(replicable = d.name, id, "synced, but a newer event moved the row back to pending; it will sync again");
                                }
                            }
                            SyncOutcome::Failed { message, missing_on_primary } => {
                                self.counters.sync_failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(replicable = d.name, id, missing_on_primary, reason = %message, "sync failed");
                            }
                        }
                    }
                    Done::Orphan => {
                        stale_files.extend(registry::Registry::of(d).blob_paths(c, &[*id])?.into_iter().filter_map(|(_, p)| BlobPath::new(&p).ok()));
                        registry::Registry::of(d).delete_rows(c, &[*id])?;
                        tracing::info!(replicable = d.name, id, "record no longer exists on the primary; registry row removed");
                    }
                }
            }
            Ok(())
        }))?;
        for path in stale_files {
            match self.store.delete(&path) {
                Ok(_) => {
                    tracing::info!(path = %path, "removed the file of a record deleted during its download")
                }
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "could not remove the file of a record deleted during its download")
                }
            }
        }
        Ok(results.len())
    }

    /// One backfill step per enabled type: compares one id range of the primary's model table with
    /// the registry, inserts the missing rows as `pending` and removes orphans. After the last
    /// range a type starts over from id 1. Returns (rows created, rows removed, types that
    /// finished a sweep in this pass).
    pub fn backfill_pass(&self) -> Result<(usize, usize, usize), SecondaryError> {
        let (mut created, mut removed, mut finished) = (0, 0, 0);
        for d in self.enabled_types()? {
            let (c, r, done) = self.backfill_step(d)?;
            created += c;
            removed += r;
            finished += usize::from(done);
        }
        Ok((created, removed, finished))
    }

    /// One backfill range of one type. Returns (created, removed, whether the sweep finished —
    /// then the next step starts over from id 1).
    pub fn backfill_step(
        &self,
        d: &'static ReplicableDescriptor,
    ) -> Result<(usize, usize, bool), SecondaryError> {
        let pos = |f: &dyn Fn(&mut BTreeMap<&'static str, i64>)| {
            f(&mut self.backfill_pos.lock().unwrap_or_else(|p| p.into_inner()))
        };
        let from = *self
            .backfill_pos
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d.name)
            .unwrap_or(&1);
        let mut conn = self.tracking.get()?;
        let max = self
            .source
            .max_model_id(d.name)?
            .max(registry::Registry::of(d).max_tracked_id(&mut conn)?);
        let Some(max) = max.filter(|m| from <= *m) else {
            pos(&|m| {
                m.insert(d.name, 1);
            });
            return Ok((0, 0, true));
        };
        let to = from.saturating_add(self.config.backfill_batch.max(1) - 1);
        let source_ids = self.source.model_ids(d.name, from..=to)?;
        let tracked = registry::Registry::of(d).tracked_ids(&mut conn, from, to)?;
        let (missing, orphans) = diff_sorted(&source_ids, &tracked);
        let mut orphan_files = Vec::new();
        let (c, r) = crate::db::with_conn!(&mut conn, c => diesel::Connection::transaction::<(usize, usize), SecondaryError, _>(c, |c| {
            orphan_files = registry::Registry::of(d).blob_paths(c, &orphans)?;
            Ok((registry::Registry::of(d).insert_missing(c, &missing)?, registry::Registry::of(d).delete_rows(c, &orphans)?))
        }))?;
        for (id, path) in orphan_files {
            match BlobPath::new(&path)
                .map_err(BlobError::from)
                .and_then(|p| self.store.delete(&p))
            {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(replicable = d.name, id, path, error = %e, "could not remove an orphan's file")
                }
            }
        }
        if c > 0 || r > 0 {
            tracing::info!(
                replicable = d.name,
                from,
                to,
                created = c,
                removed = r,
                "backfill"
            );
        }
        self.counters
            .backfill_created
            .fetch_add(c as u64, Ordering::Relaxed);
        self.counters
            .backfill_removed
            .fetch_add(r as u64, Ordering::Relaxed);
        let next = to.saturating_add(1);
        let done = next > max;
        pos(&|m| {
            m.insert(d.name, if done { 1 } else { next });
        });
        Ok((c, r, done))
    }

    /// Runs the backfill over every range of every enabled type once, from id 1. Returns
    /// (created, removed).
    pub fn backfill_all(&self) -> Result<(usize, usize), SecondaryError> {
        let (mut created, mut removed) = (0, 0);
        for d in self.enabled_types()? {
            self.backfill_pos
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(d.name, 1);
            loop {
                let (c, r, done) = self.backfill_step(d)?;
                created += c;
                removed += r;
                if done {
                    break;
                }
            }
        }
        Ok((created, removed))
    }

    /// One secondary verification pass: re-hashes synced files whose verification is pending (or
    /// failed and due) and compares with the primary's checksum; a mismatch is recorded and the
    /// row resynced with backoff. Returns how many rows it processed.
    pub fn verification_pass(&self) -> Result<usize, SecondaryError> {
        let now = self.now();
        let mut processed = 0;
        for d in self.enabled_types()?.into_iter().filter(|d| d.verifies()) {
            let mut conn = self.tracking.get()?;
            let ids = registry::Registry::of(d).claim_verification(
                &mut conn,
                self.config.verification_batch as i64,
                now,
            )?;
            if ids.is_empty() {
                continue;
            }
            let local_paths: BTreeMap<i64, String> = registry::Registry::of(d)
                .blob_paths(&mut conn, &ids)?
                .into_iter()
                .collect();
            drop(conn);
            let sums = match self.source.primary_checksums(d.name, &ids) {
                Ok(sums) => sums,
                Err(e) => {
                    let mut conn = self.tracking.get()?;
                    registry::Registry::of(d).release_verification(&mut conn, &ids)?;
                    return Err(e.into());
                }
            };
            let results: Vec<(i64, VerifyOutcome)> =
                parallel_map(&ids, self.config.verification_threads, |&id| {
                    let outcome = match sums.get(&id).and_then(|p| p.verified_checksum()) {
                        None => VerifyOutcome::PrimaryNotVerified,
                        Some(primary) => match self.local_checksum(d, id, local_paths.get(&id)) {
                            Ok(local) if &local == primary => {
                                VerifyOutcome::Matched(local.to_vec())
                            }
                            Ok(local) => VerifyOutcome::Mismatch(local.to_vec()),
                            Err(e) => VerifyOutcome::Error(e),
                        },
                    };
                    (id, outcome)
                });
            let retry = |n: i16| {
                next_retry_time(
                    now,
                    i64::from(n),
                    BackoffCap::Default,
                    self.env.rng.as_ref(),
                )
            };
            let mut conn = self.tracking.get()?;
            for (id, outcome) in &results {
                registry::Registry::of(d)
                    .record_verification(&mut conn, *id, outcome, &retry, now)?;
                match outcome {
                    VerifyOutcome::Matched(_) => {
                        self.counters.verified.fetch_add(1, Ordering::Relaxed);
                    }
                    VerifyOutcome::Mismatch(local) => {
                        self.counters.mismatches.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(replicable = d.name, id, local = %hex(local), "Checksum does not match the primary checksum; resyncing");
                    }
                    VerifyOutcome::Error(e) => {
                        tracing::warn!(replicable = d.name, id, error = %e, "verification failed; resyncing")
                    }
                    VerifyOutcome::PrimaryNotVerified => {}
                }
            }
            processed += results.len();
        }
        Ok(processed)
    }

    /// Hashes this site's copy: at the path the sync recorded, else where the primary keeps it.
    fn local_checksum(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        recorded: Option<&String>,
    ) -> Result<Checksum, String> {
        let path = match recorded {
            Some(p) => p.clone(),
            None => self
                .source
                .blob_path(d.name, id)
                .map_err(|e| e.to_string())?
                .ok_or("the record is gone on the primary")?,
        };
        let path = BlobPath::new(&path).map_err(|e| e.to_string())?;
        self.store
            .checksum(&path)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }

    /// Fails rows stuck in `started` (sync or verification) for longer than the timeouts.
    pub fn timeouts_pass(&self) -> Result<usize, SecondaryError> {
        let now = self.now();
        let retry = next_retry_time(now, 1, BackoffCap::Default, self.env.rng.as_ref());
        let mut conn = self.tracking.get()?;
        let mut n = 0;
        for d in replicables() {
            n += registry::Registry::of(d).fail_sync_timeouts(
                &mut conn,
                self.config.sync_timeout,
                retry,
                now,
            )?;
            n += registry::Registry::of(d).fail_verification_timeouts(
                &mut conn,
                self.config.verification_timeout,
                retry,
                now,
            )?;
        }
        Ok(n)
    }

    /// Runs cursor, backfill, sync and verification passes until one whole round finds nothing to
    /// do. Rows waiting for a retry later do not count as work. Returns the number of rounds.
    pub fn run_until_idle(&self, max_rounds: usize) -> Result<usize, SecondaryError> {
        for round in 1..=max_rounds {
            let mut work = 0;
            loop {
                let p = self.cursor_pass()?;
                work += p.read;
                if p.read < self.config.cursor_batch {
                    break;
                }
            }
            let (c, r) = self.backfill_all()?;
            work += c + r;
            loop {
                let n = self.sync_pass()?;
                work += n;
                if n == 0 {
                    break;
                }
            }
            loop {
                let n = self.verification_pass()?;
                work += n;
                if n == 0 {
                    break;
                }
            }
            if work == 0 {
                return Ok(round);
            }
        }
        Ok(max_rounds)
    }

    /// Per-type status with GitLab's field names, from one grouped query per registry.
    pub fn status(
        &self,
    ) -> Result<Vec<(&'static ReplicableDescriptor, ReplicableStatus)>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        secondary_status(&mut conn)
    }

    /// Starts the workers on background threads: the log cursor, the scheduler, verification,
    /// the backfill and the timeouts. They stop when the handle is stopped or dropped.
    pub fn spawn(self: &Arc<Self>) -> Result<WorkerHandle, SecondaryError> {
        if self.config.reclaim_on_start {
            self.reclaim_interrupted()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        type Pass = fn(&Secondary) -> Result<usize, SecondaryError>;
        let loops: [(&str, Pass, std::time::Duration); 5] = [
            (
                "geo-log-cursor",
                |s| s.cursor_pass().map(|p| p.read),
                self.config.idle_sleep,
            ),
            ("geo-sync", Secondary::sync_pass, self.config.idle_sleep),
            (
                "geo-verify",
                Secondary::verification_pass,
                self.config.idle_sleep,
            ),
            (
                "geo-backfill",
                |s| {
                    s.backfill_pass()
                        .map(|(c, r, f)| if f > 0 && c + r == 0 { 0 } else { 1 })
                },
                self.config.idle_sleep * 25,
            ),
            (
                "geo-timeouts",
                Secondary::timeouts_pass,
                // Every minute (GitLab: every 10), sooner when the timeouts are short.
                std::time::Duration::from_secs(60)
                    .min(
                        (self
                            .config
                            .sync_timeout
                            .min(self.config.verification_timeout)
                            / 4)
                        .to_std()
                        .unwrap_or_default(),
                    )
                    .max(self.config.idle_sleep),
            ),
        ];
        for (name, pass, idle) in loops {
            let me = Arc::clone(self);
            let stop = Arc::clone(&stop);
            threads.push(
                thread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || worker_loop(name, &stop, idle, || pass(&me)))
                    .map_err(|e| {
                        SecondaryError::Source(SourceError::other("starting a worker thread", e))
                    })?,
            );
        }
        Ok(WorkerHandle { stop, threads })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loops `pass` until `stop`; sleeps `idle` when it did nothing, backs off on errors.
pub(crate) fn worker_loop<E: std::fmt::Display>(
    name: &str,
    stop: &AtomicBool,
    idle: std::time::Duration,
    mut pass: impl FnMut() -> Result<usize, E>,
) {
    let mut errors = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let sleep = match pass() {
            Ok(0) => idle,
            Ok(_) => {
                errors = 0;
                std::time::Duration::ZERO
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                tracing::warn!(worker = name, error = %e, errors, "worker pass failed");
                std::time::Duration::from_millis(200u64.saturating_mul(1 << errors.min(6)))
            }
        };
        let until = std::time::Instant::now() + sleep;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            thread::sleep(std::time::Duration::from_millis(20).min(sleep));
        }
    }
}

/// Background worker threads; stops them on [`WorkerHandle::stop`] or drop.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Builds a handle from a stop flag and threads (used by the primary's workers too).
    pub(crate) fn new(stop: Arc<AtomicBool>, threads: Vec<thread::JoinHandle<()>>) -> Self {
        WorkerHandle { stop, threads }
    }

    /// Asks the workers to stop and waits for them.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Ids in `source` but not `tracked` (missing), and in `tracked` but not `source` (orphans).
/// Both inputs ascending.
pub fn diff_sorted(source: &[i64], tracked: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut orphans) = (Vec::new(), Vec::new());
    while i < source.len() || j < tracked.len() {
        match (source.get(i), tracked.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(*a);
                i += 1;
            }
            (Some(_), Some(b)) => {
                orphans.push(*b);
                j += 1;
            }
            (Some(a), None) => {
                missing.push(*a);
                i += 1;
            }
            (None, Some(b)) => {
                orphans.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, orphans)
}

/// Per-type status of a secondary's tracking database.
pub fn secondary_status(
    conn: &mut impl crate::db::AsDbConn,
) -> Result<Vec<(&'static ReplicableDescriptor, ReplicableStatus)>, SecondaryError> {
    let mut out = Vec::new();
    for d in replicables() {
        let groups = registry::Registry::of(d).state_groups(conn)?;
        out.push((
            d,
            ReplicableStatus::secondary(d.plural, &groups, d.verifies()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::diff_sorted;

    #[test]
    fn diff_finds_missing_and_orphans() {
        assert_eq!(
            diff_sorted(&[1, 2, 4, 7], &[2, 3, 7, 9]),
            (vec![1, 4], vec![3, 9])
        );
        assert_eq!(diff_sorted(&[], &[5]), (vec![], vec![5]));
        assert_eq!(diff_sorted(&[5], &[]), (vec![5], vec![]));
    }
}
