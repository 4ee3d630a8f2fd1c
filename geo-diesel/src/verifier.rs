//! The primary site's workers: verification (claim a batch atomically, checksum in parallel,
//! record with compare-and-set, publish `checksum_succeeded`), reverification, timeouts and the
//! verification-state backfill.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use chrono::Duration;
use geo_core::backoff::BackoffCap;
use geo_core::blob_store::{BlobPath, BlobStore};
use geo_core::clock::Env;
use geo_core::status::ReplicableStatus;
use geo_core::{ReplicableDescriptor, replicables};

use crate::db::DbPool;
use crate::parallel::parallel_map;
use crate::primary::{self, Claimed, PrimaryError};
use crate::secondary::{Stop, WorkerHandle, worker_loop};

/// Tunables of the primary's workers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrimaryConfig {
    /// Records claimed per verification pass and type.
    pub verification_batch: i64,
    /// Threads computing checksums.
    pub verification_threads: usize,
    /// Succeeded records are re-checksummed after this long (GitLab: 7 days).
    pub reverification_interval: Duration,
    /// A verification `started` longer than this fails (GitLab: 8 h).
    pub verification_timeout: Duration,
    /// Sleep between passes when there is nothing to do.
    pub idle_sleep: std::time::Duration,
}

crate::config_setters!(PrimaryConfig {
    verification_batch: i64,
    verification_threads: usize,
    reverification_interval: Duration,
    verification_timeout: Duration,
    idle_sleep: std::time::Duration,
});

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            verification_batch: 100,
            verification_threads: thread::available_parallelism().map_or(2, |n| n.get()),
            reverification_interval: Duration::days(7),
            verification_timeout: Duration::hours(8),
            idle_sleep: std::time::Duration::from_millis(200),
        }
    }
}

/// Errors from the primary's workers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// A query failed.
    #[error(transparent)]
    Primary(#[from] PrimaryError),
    /// The pool failed.
    #[error("primary database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// A query outside the helpers failed.
    #[error("primary database: {0}")]
    Db(#[from] diesel::result::Error),
}

/// A checksum and the bytes hashed, or why hashing failed.
type Hashed = Result<(Vec<u8>, u64), String>;

/// The primary's verification workers.
pub struct PrimaryVerifier {
    db: DbPool,
    store: Arc<dyn BlobStore>,
    env: Env,
    config: PrimaryConfig,
    /// Records checksummed successfully since start.
    pub checksummed: AtomicU64,
    /// Verification failures since start.
    pub failed: AtomicU64,
    /// Bytes hashed since start.
    pub bytes: AtomicU64,
}

impl std::fmt::Debug for PrimaryVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryVerifier")
            .field("db", &self.db)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PrimaryVerifier {
    /// Workers for the primary database `db` (migrated with `Role::Primary`) and its blob store.
    pub fn new(db: DbPool, store: Arc<dyn BlobStore>, env: Env, config: PrimaryConfig) -> Self {
        PrimaryVerifier {
            db,
            store,
            env,
            config,
            checksummed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The primary database pool.
    pub fn db(&self) -> &DbPool {
        &self.db
    }

    /// The workers' tunables.
    pub fn config(&self) -> &PrimaryConfig {
        &self.config
    }

    /// One verification pass over every verifying type: claims up to `verification_batch`
    /// records per type (pending first, then failed with a due retry), checksums them on
    /// `verification_threads` threads, and records each result. Returns how many it processed.
    pub fn verification_pass(&self) -> Result<usize, VerifierError> {
        let mut processed = 0;
        for d in replicables().into_iter().filter(|d| d.verifies()) {
            let now = self.env.now();
            let mut conn = self.db.get()?;
            let claims = primary::claim_verification_batch(
                &mut conn,
                d,
                self.config.verification_batch,
                now,
            )?;
            if claims.is_empty() {
                continue;
            }
            let ids: Vec<i64> = claims.iter().map(|c| c.id).collect();
            let paths: std::collections::BTreeMap<i64, String> =
                primary::blob_paths(&mut conn, d, &ids)?
                    .into_iter()
                    .collect();
            drop(conn);
            let results = self.checksum_all(d, &claims, &paths);
            let mut conn = self.db.get()?;
            let now = self.env.now();
            for (claim, result) in claims.iter().zip(results) {
                match result {
                    Ok((sum, bytes)) => {
                        self.bytes.fetch_add(bytes, Ordering::Relaxed);
                        if primary::record_verification_success(&mut conn, d, claim, &sum, now)? {
                            self.checksummed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tracing::debug!(
                                replicable = d.name,
                                id = claim.id,
                                "record changed during verification; left pending"
                            );
                        }
                    }
                    Err(message) => {
                        self.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(replicable = d.name, id = claim.id, reason = %message, "verification failed");
                        let retry = |n: i16| self.env.retry_time(now, n, BackoffCap::Default);
                        primary::record_verification_failure(
                            &mut conn, d, claim, &message, retry, now,
                        )?;
                    }
                }
            }
            processed += claims.len();
        }
        Ok(processed)
    }

    fn checksum_all(
        &self,
        d: &'static ReplicableDescriptor,
        claims: &[Claimed],
        paths: &std::collections::BTreeMap<i64, String>,
    ) -> Vec<Hashed> {
        parallel_map(
            claims,
            self.config.verification_threads,
            |claim| match paths.get(&claim.id) {
                None => Err(format!(
                    "Error during verification: {} {} no longer exists",
                    d.name, claim.id
                )),
                Some(p) => BlobPath::new(p)
                    .map_err(|e| e.to_string())
                    .and_then(|p| self.store.checksum(&p).map_err(|e| e.to_string()))
                    .map(|(c, n)| (c.to_vec(), n))
                    .map_err(|e| format!("Error during verification: {e}")),
            },
        )
    }

    /// Housekeeping: creates missing verification-state rows, schedules reverification of
    /// records verified longer than `reverification_interval` ago, and fails verifications
    /// stuck in `started`. Returns how many rows changed.
    pub fn maintenance_pass(&self) -> Result<usize, VerifierError> {
        let now = self.env.now();
        let retry = self.env.retry_time(now, 1, BackoffCap::Default);
        let mut conn = self.db.get()?;
        let mut n = 0;
        for d in replicables().into_iter().filter(|d| d.verifies()) {
            n += primary::backfill_verification_states(&mut conn, d, 1000)?;
            n += primary::reverify_due(
                &mut conn,
                d,
                self.config.reverification_interval,
                1000,
                now,
            )?;
            n += primary::fail_verification_timeouts(
                &mut conn,
                d,
                self.config.verification_timeout,
                retry,
                now,
            )?;
        }
        Ok(n)
    }

    /// Runs verification and maintenance until a round does nothing. Returns the rounds run.
    pub fn run_until_idle(&self, max_rounds: usize) -> Result<usize, VerifierError> {
        for round in 1..=max_rounds {
            let mut work = self.maintenance_pass()?;
            work += crate::secondary::drain(|| self.verification_pass())?;
            if work == 0 {
                return Ok(round);
            }
        }
        Ok(max_rounds)
    }

    /// Per-type status of the primary (`<plural>_count`, `_checksummed_count`, …), set-based.
    pub fn status(
        &self,
    ) -> Result<Vec<(&'static ReplicableDescriptor, ReplicableStatus)>, VerifierError> {
        let mut conn = self.db.get()?;
        let mut out = Vec::new();
        for d in replicables() {
            let records = primary::count_records(&mut conn, d)?;
            let groups = if d.verifies() {
                Some(primary::verification_groups(&mut conn, d)?)
            } else {
                None
            };
            out.push((
                d,
                ReplicableStatus::primary(d.plural, records, groups.as_deref()),
            ));
        }
        Ok(out)
    }

    /// Starts the verification and maintenance loops on background threads.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<WorkerHandle> {
        let stop = Arc::new(Stop::default());
        let mut threads = Vec::new();
        let me = Arc::clone(self);
        let s = Arc::clone(&stop);
        let idle = self.config.idle_sleep;
        threads.push(
            thread::Builder::new()
                .name("geo-primary-verify".into())
                .spawn(move || {
                    worker_loop("geo-primary-verify", &s, idle, || me.verification_pass())
                })?,
        );
        let me = Arc::clone(self);
        let s = Arc::clone(&stop);
        threads.push(
            thread::Builder::new()
                .name("geo-primary-maintenance".into())
                .spawn(move || {
                    worker_loop("geo-primary-maintenance", &s, idle * 10, || {
                        me.maintenance_pass()
                    })
                })?,
        );
        Ok(WorkerHandle::new(stop, threads))
    }
}
