//! The secondary site's runtime: log cursor, sync scheduler and downloads, backfill, secondary
//! verification and timeouts, as passes you can run one at a time (tests, the demo) or as
//! background threads ([`Secondary::spawn`]).
//!
//! One file per pass, each adding its methods to [`Secondary`]: `sync.rs`
//! ([`Secondary::sync_pass`]), `backfill.rs` ([`Secondary::backfill_pass`]), `verification.rs`
//! ([`Secondary::verification_pass`]), `timeouts.rs` ([`Secondary::timeouts_pass`]) and
//! `worker.rs`, the loop that runs them ([`Secondary::run_until_idle`], [`Secondary::spawn`]);
//! `membership.rs` lets several processes share one tracking database (heartbeats, claims
//! owned by a process, the leases of the log cursor and the backfill). The log cursor's pass lives in [`crate::cursor`]. This file holds the secondary itself, its
//! configuration, errors, counters and status.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use geo_core::blob_store::BlobStore;
use geo_core::clock::Env;
use geo_core::source::{PrimarySource, SourceError};
use geo_core::status::ReplicableStatus;
use geo_core::{ReplicableDescriptor, replicables};

use crate::cursor::{CursorError, CursorPass, LogCursor};
use crate::db::DbPool;
use crate::registry;

mod backfill;
mod fetch;
pub mod files;
mod membership;
mod object_storage;
mod pruned;
mod record;
mod safety;
mod selective;
mod sync;
mod timeouts;
mod verification;
mod worker;

pub use backfill::diff_sorted;
pub use pruned::PrunedRecovery;
pub use safety::ReconcileReport;
pub use worker::WorkerHandle;
pub(crate) use worker::{Stop, drain, worker_loop};

/// Tunables of a secondary. Defaults follow GitLab where it has a value.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SecondaryConfig {
    /// Downloads in flight at once, across all types and scheduler passes, whether the sync was
    /// triggered by an event or by the backfill (GitLab `files_max_capacity`: 10).
    pub sync_capacity: usize,
    /// Scheduler passes that run at once ([`Secondary::spawn`]; at least 1, default 2): while
    /// one pass downloads, the next claims its rows and asks the primary about them, so the
    /// round trips before a pass's downloads (the identity check, the batch lookup) overlap the
    /// last pass's downloads instead of following them. Their downloads share `sync_capacity`.
    pub sync_workers: usize,
    /// Rows claimed per scheduler pass (at least `sync_capacity`). Rows waiting behind the
    /// pass's downloads are timed out by the pass's progress, not by their claim time. Larger
    /// batches cost less per small file (1000: B2 over HTTP 0.62 -> 0.50 s) but hold claims
    /// other processes sharing the tracking database could work on; the default, 200, keeps
    /// scale-out even.
    pub sync_batch: usize,
    /// Rows verified per verification pass.
    pub verification_batch: usize,
    /// Threads hashing files during verification.
    pub verification_threads: usize,
    /// Ids per backfill range (GitLab: 10 000).
    pub backfill_batch: i64,
    /// The no-progress timeout of a sync: a download that receives no bytes for this long
    /// fails (default 5 min; GitLab fails any sync `started` for 8 h, which a large enough
    /// blob never beats). No total duration is imposed.
    pub sync_timeout: Duration,
    /// A verification `started` longer than this fails (GitLab: 8 h).
    pub verification_timeout: Duration,
    /// Events per cursor pass.
    pub cursor_batch: usize,
    /// How long an event-id gap is awaited before it is dropped (GitLab: 1 h).
    pub gap_timeout: Duration,
    /// Sleep between passes when there is nothing to do. The sync and verification workers
    /// are woken sooner by new work ([`crate::notify::registry_changed`]); the log cursor
    /// long-polls instead when the primary can wait (`event_wait`).
    pub idle_sleep: std::time::Duration,
    /// How long one read of the primary's event feed may wait for an event
    /// ([`PrimarySource::event_feed_wait`]): the log cursor answers a commit within
    /// milliseconds and a quiet secondary asks once per `event_wait`. A stop waits for the
    /// read in flight, so this bounds how long a stop takes. Zero: poll every `idle_sleep`.
    pub event_wait: std::time::Duration,
    /// On start, return at once the claims of processes registered from this host (same host
    /// name and pid namespace) whose pid no longer runs — a restart after a crash takes its
    /// rows back without waiting for their lease. Rows of live processes, and of processes on
    /// other hosts, are never touched on start: those come back when their heartbeat is older
    /// than `lease_period`.
    pub reclaim_on_start: bool,
    /// How long a process may stay silent before the others take its claims and leases back.
    /// Each process heartbeats every third of it; a dead process's rows return within two
    /// lease periods, and the log cursor and backfill move to another process within about one.
    pub lease_period: Duration,
    /// The largest share of a type's registry rows one backfill sweep may remove, and that may
    /// be marked `missing_on_primary`, before the sweep is refused and reported
    /// ([`geo_core::safety::allowed_removals`]: 10 %, and always one row).
    pub max_removal_share: f64,
    /// Remove even when the share is exceeded (the operator's `backfill --allow-mass-removal`).
    pub allow_mass_removal: bool,
    /// Selective sync (`--selective-sync 3,7,12`): only records whose
    /// `#[replicable(partition)]` key is selected are replicated, for types with such a field;
    /// default everything. See [`geo_core::selective`].
    pub selective_sync: geo_core::Selection,
    /// Download into a store that is object storage (GitLab's `sync_object_storage`, default
    /// off). Off, a secondary whose store [is object storage](BlobStore::is_object_storage)
    /// leaves the copying to the storage provider: it only tracks and verifies
    /// (`object_storage.rs`). A local store always downloads.
    pub sync_object_storage: bool,
}

crate::config_setters!(SecondaryConfig {
    sync_capacity: usize,
    sync_workers: usize,
    sync_batch: usize,
    verification_batch: usize,
    verification_threads: usize,
    backfill_batch: i64,
    sync_timeout: Duration,
    verification_timeout: Duration,
    cursor_batch: usize,
    gap_timeout: Duration,
    idle_sleep: std::time::Duration,
    event_wait: std::time::Duration,
    reclaim_on_start: bool,
    lease_period: Duration,
    max_removal_share: f64,
    allow_mass_removal: bool,
    selective_sync: geo_core::Selection,
    sync_object_storage: bool,
});

impl Default for SecondaryConfig {
    fn default() -> Self {
        SecondaryConfig {
            sync_capacity: 10,
            sync_workers: 2,
            sync_batch: 200,
            verification_batch: 100,
            verification_threads: 2,
            backfill_batch: 10_000,
            sync_timeout: Duration::minutes(5),
            verification_timeout: Duration::hours(8),
            cursor_batch: 1000,
            gap_timeout: Duration::hours(1),
            idle_sleep: std::time::Duration::from_millis(200),
            event_wait: std::time::Duration::from_secs(1),
            reclaim_on_start: true,
            lease_period: membership::default_lease_period(),
            max_removal_share: geo_core::safety::DEFAULT_MAX_REMOVAL_SHARE,
            allow_mass_removal: false,
            selective_sync: geo_core::Selection::all(),
            sync_object_storage: false,
        }
    }
}

/// Errors from a secondary pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// An operator's bulk action (reconcile's reverification) failed.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
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
    /// Recoveries from a pruned event log ([`Secondary::recover_from_pruning`]).
    pub pruned_recoveries: AtomicU64,
}

/// One secondary site.
pub struct Secondary {
    tracking: DbPool,
    source: Arc<dyn PrimarySource>,
    store: Arc<dyn BlobStore>,
    env: Env,
    config: SecondaryConfig,
    cursor: LogCursor,
    member: membership::Membership,
    /// Claims whose outcome could not be recorded nor released (the database failed twice),
    /// released at the start of the next sync pass.
    unreleased: Mutex<Vec<record::Unreleased>>,
    safety: safety::SafetyState,
    counters: SecondaryCounters,
    observer: std::sync::OnceLock<Arc<dyn geo_core::observe::SyncObserver>>,
    /// Downloads in flight here and when each last received bytes (the no-progress timeout).
    in_flight: fetch::InFlight,
    /// The `sync_capacity` download slots every scheduler pass takes its downloads from.
    download_slots: fetch::Slots,
    /// The last recovery from a pruned event log.
    pruned: Mutex<Option<PrunedRecovery>>,
}

impl std::fmt::Debug for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondary")
            .field("tracking", &self.tracking)
            .field("config", &self.config)
            .field("worker_id", &self.member.id)
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
            selection: config.selective_sync.clone(),
            ..LogCursor::default()
        };
        let download_slots = fetch::Slots::new(config.sync_capacity);
        Secondary {
            tracking,
            source,
            store,
            env,
            config,
            cursor,
            member: membership::Membership::new(),
            unreleased: Mutex::new(Vec::new()),
            safety: safety::SafetyState::default(),
            counters: SecondaryCounters::default(),
            observer: std::sync::OnceLock::new(),
            in_flight: fetch::InFlight::default(),
            download_slots,
            pruned: Mutex::new(None),
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

    /// One log-cursor pass. When the primary answers that it pruned events this secondary
    /// still needed, the pass recovers instead ([`Secondary::recover_from_pruning`]; the
    /// pass's `pruned` says what it did).
    pub fn cursor_pass(&self) -> Result<CursorPass, SecondaryError> {
        let flags: BTreeSet<&'static str> =
            self.enabled_types()?.into_iter().map(|d| d.name).collect();
        let result = self.cursor.pass(
            &self.tracking,
            self.source.as_ref(),
            self.file_store(),
            &|d| flags.contains(d.name),
            self.now(),
        );
        self.after_cursor(result)
    }

    /// Per-type status with GitLab's field names, from one grouped query per registry.
    pub fn status(
        &self,
    ) -> Result<Vec<(&'static ReplicableDescriptor, ReplicableStatus)>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        secondary_status(&mut conn)
    }
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
