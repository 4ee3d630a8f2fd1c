//! Event pruning on the primary: `geo_events` keeps only what a secondary may still need.
//!
//! GitLab's `Geo::PruneEventLogWorker` runs every 5 minutes, deletes at most 50 000 rows per run
//! below the lowest cursor among the secondaries, skips the run altogether when any secondary
//! is unhealthy (so one dead secondary makes the log grow forever), and prunes everything when
//! there is no secondary. Here:
//!
//! - **What every secondary consumed.** Each feed read says how far its secondary consumed the
//!   log ([`super::sites`]): its cursor, or its lowest open gap minus one, so an event a
//!   secondary still awaits in a gap (committed late) is never pruned from under it. A pass
//!   deletes events up to the lowest of those points; with no secondary known, everything.
//! - **A retention bound** ([`PruneConfig::retention_age`], [`PruneConfig::retention_events`]):
//!   events older than the age (default 7 days), and events more than the cap (default
//!   10 000 000) ids behind the newest, go even when a secondary has not consumed them — a
//!   secondary that lags or is gone holds the log back only that far, instead of stopping
//!   pruning. Such a secondary is told on its next read ([`geo_core::source::SourceError::EventsPruned`])
//!   and recovers with a full backfill plus reverification; it never skips silently.
//! - **Bounded batches.** Each batch is one transaction deleting at most
//!   [`PruneConfig::batch`] rows (default 10 000) by id, oldest first (one `DELETE` per 1 000
//!   ids, so no statement removes more than the batch), committed with the mark
//!   `geo_event_prune_state.pruned_through`; a pass runs batches until nothing is due or
//!   [`PruneConfig::max_batches`] ran, so locks are short and a backlog still drains (GitLab's
//!   50 000 per 5 minutes can fall behind a busy primary).
//!
//! The event-id high-water mark a secondary checks ([`crate::direct::primary_identity`]) is the
//! id counter, which pruning leaves alone: pruning never looks like ids going backwards.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use geo_core::clock::Env;

use super::sites;
use crate::db::{AsDbConn, DbPool, with_conn};
use crate::schema::{geo_event_prune_state as mark, geo_events};
use crate::types::UtcDateTime;

/// Default age past which events are pruned whoever has not consumed them.
pub const DEFAULT_RETENTION_AGE: Duration = Duration::days(7);

/// Default cap, in event ids behind the newest, past which events are pruned whoever has not
/// consumed them.
pub const DEFAULT_RETENTION_EVENTS: i64 = 10_000_000;

/// Tunables of the pruning worker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneConfig {
    /// Events older than this are pruned even if a secondary has not consumed them; `None`: no
    /// age bound.
    pub retention_age: Option<Duration>,
    /// Events more than this many ids behind the newest are pruned even if a secondary has not
    /// consumed them (ids, not rows: ids of rolled-back transactions count, so fewer rows may
    /// stay); `None`: no cap.
    pub retention_events: Option<i64>,
    /// Rows one batch (one transaction) removes at most.
    pub batch: usize,
    /// Batches one pass runs at most.
    pub max_batches: usize,
    /// Time between passes of the worker (GitLab: 5 min).
    pub interval: std::time::Duration,
}

crate::config_setters!(PruneConfig {
    retention_age: Option<Duration>,
    retention_events: Option<i64>,
    batch: usize,
    max_batches: usize,
    interval: std::time::Duration,
});

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            retention_age: Some(DEFAULT_RETENTION_AGE),
            retention_events: Some(DEFAULT_RETENTION_EVENTS),
            batch: 10_000,
            max_batches: 100,
            interval: std::time::Duration::from_secs(60),
        }
    }
}

/// What one pruning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePass {
    /// Events deleted.
    pub deleted: u64,
    /// Rows each batch removed, in order (each at most [`PruneConfig::batch`]).
    pub batches: Vec<u64>,
    /// The point every known secondary consumed (the newest event id when none is known; `None`
    /// for an empty log).
    pub floor: Option<i64>,
    /// Of the deleted events, those past `floor`: pruned by the retention bound although a
    /// secondary had not consumed them.
    pub past_floor: u64,
    /// Every event up to this id is gone (after the pass).
    pub pruned_through: i64,
    /// The pass stopped at [`PruneConfig::max_batches`] with events still due.
    pub more: bool,
}

/// How far the event log has been pruned (0 before the first prune).
pub fn pruned_through(conn: &mut impl AsDbConn) -> QueryResult<i64> {
    let v: Option<i64> = with_conn!(conn, c => mark::table
        .find(0i16)
        .select(mark::pruned_through)
        .first(c)
        .optional()?);
    Ok(v.unwrap_or(0))
}

/// What one batch did.
struct Batch {
    deleted: u64,
    past_floor: u64,
    floor: Option<i64>,
    through: i64,
}

/// One batch, in one transaction: takes the write lock (on SQLite) by touching the mark,
/// reads the oldest `batch` events, deletes those due by id (at most `batch`) and raises the
/// mark.
fn batch(conn: &mut impl AsDbConn, config: &PruneConfig, now: DateTime<Utc>) -> QueryResult<Batch> {
    with_conn!(conn, c => crate::db::WriteTransaction::write_transaction::<Batch, diesel::result::Error, _>(c, |c| {
        diesel::insert_into(mark::table)
            .values((mark::id.eq(0i16), mark::pruned_through.eq(0i64), mark::pruned_at.eq(UtcDateTime(now))))
            .on_conflict(mark::id)
            .do_nothing()
            .execute(c)?;
        let marked: i64 = mark::table.find(0i16).select(mark::pruned_through).first(c)?;
        let head: Option<i64> = geo_events::table
            .select(diesel::dsl::max(geo_events::id))
            .first(c)?;
        let Some(head) = head else {
            return Ok(Batch { deleted: 0, past_floor: 0, floor: None, through: marked });
        };
        let floor = sites::consumed_floor(c)?.unwrap_or(head).min(head);
        let window: Vec<(i64, UtcDateTime)> = geo_events::table
            .select((geo_events::id, geo_events::created_at))
            .order(geo_events::id)
            .limit(config.batch.max(1) as i64)
            .load(c)?;
        let mut target = floor;
        if let Some(cap) = config.retention_events {
            target = target.max(head - cap.max(0));
        }
        if let Some(age) = config.retention_age {
            let cutoff = now - age;
            if let Some(old) = window.iter().take_while(|(_, at)| at.get() < cutoff).last() {
                target = target.max(old.0);
            }
        }
        let due: Vec<i64> = window.iter().map(|(id, _)| *id).take_while(|id| *id <= target).collect();
        let Some(&last) = due.last() else {
            return Ok(Batch { deleted: 0, past_floor: 0, floor: Some(floor), through: marked });
        };
        // By id, the ids read above: a row committed since (a late id below `last`) stays
        // for the next batch, so no statement removes more than the batch.
        let mut deleted = 0u64;
        for chunk in due.chunks(crate::sql::CHUNK) {
            deleted += diesel::delete(geo_events::table.filter(geo_events::id.eq_any(chunk)))
                .execute(c)? as u64;
        }
        let through = marked.max(last);
        diesel::update(mark::table.find(0i16))
            .set((mark::pruned_through.eq(through), mark::pruned_at.eq(UtcDateTime(now))))
            .execute(c)?;
        let past_floor = due.iter().filter(|id| **id > floor).count() as u64;
        Ok(Batch { deleted, past_floor, floor: Some(floor), through })
    }))
}

/// One pruning pass at `now`: batches until nothing is due or `config.max_batches` ran.
pub fn prune_pass(
    conn: &mut impl AsDbConn,
    config: &PruneConfig,
    now: DateTime<Utc>,
) -> QueryResult<PrunePass> {
    let mut pass = PrunePass::default();
    for i in 0..config.max_batches.max(1) {
        let b = batch(conn, config, now)?;
        pass.floor = b.floor;
        pass.pruned_through = b.through;
        if b.deleted == 0 {
            break;
        }
        pass.deleted += b.deleted;
        pass.past_floor += b.past_floor;
        pass.batches.push(b.deleted);
        if i + 1 == config.max_batches.max(1) {
            pass.more = true;
        }
    }
    if pass.past_floor > 0 {
        let behind: Vec<String> = sites::known_secondaries(conn)?
            .into_iter()
            .filter(|s| s.consumed_event_id.unwrap_or(0) < pass.pruned_through)
            .map(|s| s.name)
            .collect();
        tracing::warn!(
            events = pass.past_floor,
            pruned_through = pass.pruned_through,
            secondaries = ?behind,
            "pruned events a secondary had not consumed (retention bound); it will recover with a full backfill"
        );
    }
    if pass.deleted > 0 {
        tracing::info!(
            deleted = pass.deleted,
            batches = pass.batches.len(),
            pruned_through = pass.pruned_through,
            "pruned the event log"
        );
    }
    Ok(pass)
}

/// Counters of a [`PruneWorker`] since it started.
#[derive(Debug, Default)]
pub struct PruneStats {
    /// Events deleted.
    pub deleted: std::sync::atomic::AtomicU64,
    /// Events deleted past what every secondary consumed (the retention bound).
    pub past_floor: std::sync::atomic::AtomicU64,
    /// Passes run.
    pub passes: std::sync::atomic::AtomicU64,
    /// Passes that failed.
    pub failures: std::sync::atomic::AtomicU64,
    last: Mutex<Option<PrunePass>>,
}

impl PruneStats {
    /// The last pass that succeeded.
    pub fn last_pass(&self) -> Option<PrunePass> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The primary's pruning worker: a thread `geo-prune-events` running [`prune_pass`] every
/// [`PruneConfig::interval`] (at once when a pass stopped with events still due).
#[derive(Debug)]
pub struct PruneWorker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PruneStats>,
}

impl PruneWorker {
    /// Starts the worker on `db` (a primary database), reading the time from `env`.
    pub fn spawn(db: DbPool, env: Env, config: PruneConfig) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<()>();
        let stats = Arc::new(PruneStats::default());
        let s = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("geo-prune-events".into())
            .spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                loop {
                    let result = db.get().map_err(|e| e.to_string()).and_then(|mut c| {
                        prune_pass(&mut c, &config, env.now()).map_err(|e| e.to_string())
                    });
                    s.passes.fetch_add(1, Relaxed);
                    let again = match result {
                        Ok(pass) => {
                            s.deleted.fetch_add(pass.deleted, Relaxed);
                            s.past_floor.fetch_add(pass.past_floor, Relaxed);
                            let more = pass.more;
                            *s.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(pass);
                            more
                        }
                        Err(error) => {
                            s.failures.fetch_add(1, Relaxed);
                            tracing::warn!(%error, "pruning the event log failed; retrying");
                            false
                        }
                    };
                    let pause = if again {
                        std::time::Duration::ZERO
                    } else {
                        config.interval
                    };
                    if !matches!(rx.recv_timeout(pause), Err(mpsc::RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            })?;
        Ok(PruneWorker {
            stop: Some(tx),
            thread: Some(thread),
            stats,
        })
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<PruneStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the worker after its current pass and joins its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the event pruning worker panicked");
        }
    }
}

impl Drop for PruneWorker {
    fn drop(&mut self) {
        self.shutdown();
    }
}
