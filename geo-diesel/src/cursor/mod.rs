//! The secondary's log cursor: reads the primary's events in batches and applies each batch and
//! the cursor position in one tracking-database transaction, with durable gap tracking.
//!
//! Beyond GitLab: gaps live in `geo_event_log_gaps` (not Redis) and are written in the same
//! transaction as the cursor, so a crash never forgets one; a gap is re-checked on every pass
//! (no 10-minute grace); gaps that never fill are dropped after `gap_timeout` and counted; an
//! unknown replicable name or a malformed payload is counted, logged and skipped — the cursor
//! never stalls on a bad event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use geo_core::blob_store::{BlobPath, BlobStore};
use geo_core::event::{Event, EventName, ParsedEvent, parse_event};
use geo_core::safety::SafetyHalt;
use geo_core::source::{PrimarySource, SourceError};
use geo_core::{ReplicableDescriptor, find_replicable};

use crate::db::DbPool;
use crate::db::with_conn;
use crate::secondary::files::{FileRemoval, remove_unshared_files};
use crate::sql::IdRow;
use crate::types::UtcDateTime;

/// Counters of what the cursor did since it was created.
#[derive(Debug, Default)]
pub struct CursorCounters {
    /// Events applied.
    pub applied: AtomicU64,
    /// Events skipped because their replicable name is not registered here.
    pub skipped_unknown_replicable: AtomicU64,
    /// Events skipped because their name or payload is malformed.
    pub skipped_malformed: AtomicU64,
    /// Events skipped because the type's replication feature flag is off.
    pub skipped_disabled: AtomicU64,
    /// Events skipped because their record is outside this secondary's selective sync
    /// ([`LogCursor::selection`]).
    pub skipped_unselected: AtomicU64,
    /// Gaps detected.
    pub gaps_detected: AtomicU64,
    /// Gaps whose event arrived late and was applied.
    pub gaps_filled: AtomicU64,
    /// Gaps dropped after `gap_timeout` without their event appearing (a rolled-back
    /// transaction, usually).
    pub gaps_expired: AtomicU64,
}

impl CursorCounters {
    /// Total skipped events.
    pub fn skipped(&self) -> u64 {
        self.skipped_unknown_replicable.load(Ordering::Relaxed)
            + self.skipped_malformed.load(Ordering::Relaxed)
            + self.skipped_disabled.load(Ordering::Relaxed)
            + self.skipped_unselected.load(Ordering::Relaxed)
    }
}

/// What one pass of the cursor did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorPass {
    /// Events read (new and late).
    pub read: usize,
    /// Events applied.
    pub applied: usize,
    /// Events skipped (unknown replicable, malformed, flag off, outside the selective sync).
    pub skipped: usize,
    /// Of which: unknown replicable name.
    pub skipped_unknown_replicable: u64,
    /// Of which: malformed name or payload.
    pub skipped_malformed: u64,
    /// Of which: the type's replication flag is off.
    pub skipped_disabled: u64,
    /// Of which: the record is outside the selective sync.
    pub skipped_unselected: u64,
    /// Late events applied from gaps.
    pub gaps_filled: usize,
    /// New gaps recorded.
    pub gaps_detected: usize,
    /// Gaps dropped after the timeout.
    pub gaps_expired: usize,
    /// The cursor after the pass.
    pub cursor: i64,
    /// Another log cursor on the same tracking database advanced first; this pass applied
    /// nothing (its reads are redone by the next pass).
    pub raced: bool,
    /// The secondary is halted ([`identity`]): this pass applied nothing.
    pub halted: Option<SafetyHalt>,
    /// The primary had pruned events this secondary still needed: instead of applying events
    /// the pass recovered ([`crate::secondary::Secondary::recover_from_pruning`]).
    pub pruned: Option<crate::secondary::PrunedRecovery>,
}

/// Largest number of ids one jump may add as gaps; a larger jump (a sequence reset, a restore)
/// records only the newest ids of the jump and logs a warning.
pub const MAX_GAP_PER_JUMP: i64 = 10_000;

/// Everything an event batch does to the registries, grouped per replicable so each effect is
/// one set-based statement.
#[derive(Default)]
struct Effects {
    /// `created`: a row is inserted as pending only if none exists (a replayed or
    /// backfill-covered create does not reset a row that is syncing or synced).
    created: BTreeMap<&'static str, BTreeSet<i64>>,
    /// `updated`: the row is (re)set to pending, so the next sync starts after the change.
    pending: BTreeMap<&'static str, BTreeSet<i64>>,
    deleted: BTreeMap<&'static str, BTreeMap<i64, Option<BlobPath>>>,
    /// `checksum_succeeded`: the checksum and when the primary wrote the event.
    checksum: BTreeMap<&'static str, BTreeMap<i64, ChecksumEvent>>,
}

/// A `checksum_succeeded` to apply: the primary's checksum, and when it wrote the event.
type ChecksumEvent = (Option<Vec<u8>>, DateTime<Utc>);

/// The log cursor of one secondary.
pub struct LogCursor {
    /// Events read per pass (GitLab: 50; we batch more since a batch is one transaction).
    pub batch_size: usize,
    /// How long a gap is awaited before it is dropped (GitLab: 1 h).
    pub gap_timeout: Duration,
    /// Counters since creation.
    pub counters: CursorCounters,
    /// The secondary's selective sync: events of records outside it are skipped and counted
    /// ([`geo_core::Selection::admits_event`]; default: everything).
    pub selection: geo_core::Selection,
}

impl Default for LogCursor {
    fn default() -> Self {
        LogCursor {
            batch_size: 1000,
            gap_timeout: Duration::hours(1),
            counters: CursorCounters::default(),
            selection: geo_core::Selection::all(),
        }
    }
}

/// Errors from a cursor pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The tracking database failed.
    #[error("tracking database: {0}")]
    Db(#[from] diesel::result::Error),
    /// The connection pool failed.
    #[error("tracking database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// Reading events from the primary failed; [`SourceError::is_transient`] says whether the
    /// next pass may succeed.
    #[error("reading events from the primary: {0}")]
    Source(#[from] SourceError),
}

impl LogCursor {
    /// Runs one pass: reads up to `batch_size` new events with the primary's identity
    /// ([`PrimarySource::event_feed`]; a halt — another identity, ids gone backwards, or one
    /// recorded before — applies nothing, see [`identity`]), re-checks open gaps against
    /// `source` ([`PrimarySource::events_by_ids`]), applies the events and advances the cursor
    /// in one transaction. `flag` says whether a type's replication is on. The files of deleted
    /// records are removed from `store` (`None`: this site leaves its files to the storage
    /// provider, and removes none).
    pub fn pass(
        &self,
        tracking: &DbPool,
        source: &dyn PrimarySource,
        store: Option<&dyn BlobStore>,
        flag: &dyn Fn(&'static ReplicableDescriptor) -> bool,
        now: DateTime<Utc>,
    ) -> Result<CursorPass, CursorError> {
        self.pass_waiting(
            tracking,
            source,
            store,
            flag,
            &|| now,
            std::time::Duration::ZERO,
        )
    }

    /// [`pass`](LogCursor::pass) with a long poll: when no event is after the cursor, the
    /// primary is asked to wait up to `wait` for one ([`PrimarySource::event_feed_wait`]), so
    /// the pass returns as soon as an event is committed. No tracking-database connection is
    /// held while it waits; `now` is read after the feed answered. A zero `wait` reads the feed
    /// once ([`PrimarySource::event_feed`]).
    pub fn pass_waiting(
        &self,
        tracking: &DbPool,
        source: &dyn PrimarySource,
        store: Option<&dyn BlobStore>,
        flag: &dyn Fn(&'static ReplicableDescriptor) -> bool,
        now: &dyn Fn() -> DateTime<Utc>,
        wait: std::time::Duration,
    ) -> Result<CursorPass, CursorError> {
        let (state, followed) = {
            let mut conn = tracking.get()?;
            (load_state(&mut conn)?, identity::load_followed(&mut conn)?)
        };
        let halted = |halt: SafetyHalt| CursorPass {
            cursor: state.last_event_id,
            halted: Some(halt),
            ..CursorPass::default()
        };
        if let Some(halt) = followed.halt {
            return Ok(halted(halt));
        }
        // Tell the primary how far this secondary consumed the log (it prunes nothing above
        // it, and answers `EventsPruned` if it already did).
        source.note_consumed(state.safe_position());
        // The feed carries the primary's identity and high-water mark, read with the events:
        // a primary that is not the one followed, or whose ids went backwards, applies nothing.
        let feed = if wait.is_zero() {
            source.event_feed(state.last_event_id, self.batch_size)?
        } else {
            source.event_feed_wait(state.last_event_id, self.batch_size, wait)?
        };
        let now = now();
        let mut conn = tracking.get()?;
        if let Some(halt) =
            identity::check_feed(&mut conn, feed.primary.as_ref(), state.last_event_id, now)?
        {
            return Ok(halted(halt));
        }
        let fresh = feed.events;
        let late = if state.gaps.is_empty() {
            Vec::new()
        } else {
            source.events_by_ids(&state.gaps)?
        };

        // New gaps: ids skipped between the cursor and each new event.
        let mut new_gaps = Vec::new();
        let mut prev = state.last_event_id;
        for e in &fresh {
            if e.id > prev + 1 {
                let from = (prev + 1).max(e.id - MAX_GAP_PER_JUMP);
                if from > prev + 1 {
                    tracing::warn!(
                        from = prev + 1,
                        to = e.id - 1,
                        "event id jump larger than {MAX_GAP_PER_JUMP}; tracking only the newest ids as gaps"
                    );
                }
                new_gaps.extend(from..e.id);
            }
            prev = prev.max(e.id);
        }
        let cursor = prev;
        let filled: Vec<i64> = late.iter().map(|e| e.id).collect();

        let mut pass = CursorPass {
            read: late.len() + fresh.len(),
            cursor,
            ..CursorPass::default()
        };
        let effects = self.plan(late.iter().chain(fresh.iter()), flag, &mut pass);

        // Files of deleted records go first, outside the transaction; re-applying a delete after a
        // crash is harmless. A file another registry row still records stays.
        let mut removals = Vec::new();
        for (name, rows) in &effects.deleted {
            // A `deleted` event normally carries the path; otherwise use the one the sync stored.
            let d = find_replicable(name).expect("planned only for registered replicables");
            let unknown: Vec<i64> = rows
                .iter()
                .filter(|(_, p)| p.is_none())
                .map(|(id, _)| *id)
                .collect();
            let stored: BTreeMap<i64, BlobPath> = crate::registry::Registry::of(d)
                .blob_paths(&mut conn, &unknown)
                .map_err(diesel::result::Error::from)?
                .into_iter()
                .filter_map(|(id, p)| BlobPath::new(&p).ok().map(|p| (id, p)))
                .collect();
            for (id, path) in rows {
                if let Some(path) = path.as_ref().or_else(|| stored.get(id)) {
                    removals.push(FileRemoval {
                        descriptor: d,
                        id: *id,
                        path: path.clone(),
                    });
                }
            }
        }
        remove_unshared_files(&mut conn, store, &removals, "record deleted on the primary");

        let expire_before = now - self.gap_timeout;
        let raced = std::cell::Cell::new(false);
        let result = with_conn!(&mut conn, c => crate::db::WriteTransaction::write_transaction::<usize, diesel::result::Error, _>(c, |c| {
            // Compare-and-set on the cursor: lock its row (a write first, so SQLite takes the
            // write lock; FOR UPDATE on PostgreSQL), re-read position and gaps, and give up if
            // another cursor moved them since this pass read its events.
            use crate::schema::{geo_event_log_gaps as gaps, geo_event_log_states as states};
            diesel::insert_into(states::table)
                .values((states::id.eq(0i16), states::event_id.eq(0i64), states::updated_at.eq(UtcDateTime(now))))
                .on_conflict(states::id)
                .do_nothing()
                .execute(c)?;
            // PostgreSQL: lock the cursor row, waiting for a racing cursor to commit (SQLite holds
            // the write lock since the insert).
            let mut lock = crate::sql::Sql::new();
            lock.push("SELECT event_id AS id FROM geo_event_log_states WHERE id = 0")
                .lock(crate::sql::Lock::Wait);
            lock.load::<IdRow>(c)?;
            if load_state(c)? != state {
                raced.set(true);
                return Err(diesel::result::Error::RollbackTransaction);
            }
            for (name, ids) in &effects.created {
                let d = find_replicable(name).expect("planned only for registered replicables");
                crate::registry::Registry::of(d).insert_missing(c, &ids.iter().copied().collect::<Vec<_>>())?;
            }
            for (name, ids) in &effects.pending {
                let d = find_replicable(name).expect("planned only for registered replicables");
                crate::registry::Registry::of(d).upsert_pending_at(c, &ids.iter().copied().collect::<Vec<_>>(), now)?;
            }
            for (name, rows) in &effects.deleted {
                let d = find_replicable(name).expect("planned only for registered replicables");
                crate::registry::Registry::of(d).delete_rows(c, &rows.keys().copied().collect::<Vec<_>>())?;
            }
            for (name, rows) in &effects.checksum {
                let d = find_replicable(name).expect("planned only for registered replicables");
                let latest = rows.values().map(|(_, at)| *at).max().unwrap_or(now);
                let rows: Vec<(i64, Option<Vec<u8>>)> = rows.iter().map(|(id, (s, _))| (*id, s.clone())).collect();
                crate::registry::Registry::of(d).on_checksum_succeeded_batch(c, &rows, latest, now)?;
            }
            for chunk in filled.chunks(crate::sql::CHUNK) {
                diesel::delete(gaps::table.filter(gaps::event_id.eq_any(chunk))).execute(c)?;
            }
            for chunk in new_gaps.chunks(crate::sql::CHUNK) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|id| (gaps::event_id.eq(*id), gaps::detected_at.eq(UtcDateTime(now))))
                    .collect();
                diesel::insert_into(gaps::table)
                    .values(rows)
                    .on_conflict(gaps::event_id)
                    .do_nothing()
                    .execute(c)?;
            }
            let expired = diesel::delete(gaps::table.filter(gaps::detected_at.lt(UtcDateTime(expire_before))))
                .execute(c)?;
            diesel::insert_into(states::table)
                .values((states::id.eq(0i16), states::event_id.eq(cursor), states::updated_at.eq(UtcDateTime(now))))
                .on_conflict(states::id)
                .do_update()
                .set((states::event_id.eq(cursor), states::updated_at.eq(UtcDateTime(now))))
                .execute(c)?;
            Ok(expired)
        }));
        let expired = match result {
            Ok(expired) => expired,
            Err(diesel::result::Error::RollbackTransaction) if raced.get() => {
                tracing::debug!("another log cursor advanced first; this pass applied nothing");
                return Ok(CursorPass {
                    cursor: state.last_event_id,
                    raced: true,
                    ..CursorPass::default()
                });
            }
            Err(e) => return Err(e.into()),
        };

        pass.gaps_filled = filled.len();
        pass.gaps_detected = new_gaps.len();
        pass.gaps_expired = expired;
        if expired > 0 {
            tracing::warn!(
                expired,
                "dropped event-log gaps that never filled; the backfill covers their records"
            );
        }
        let c = &self.counters;
        c.applied.fetch_add(pass.applied as u64, Ordering::Relaxed);
        c.skipped_unknown_replicable
            .fetch_add(pass.skipped_unknown_replicable, Ordering::Relaxed);
        c.skipped_malformed
            .fetch_add(pass.skipped_malformed, Ordering::Relaxed);
        c.skipped_disabled
            .fetch_add(pass.skipped_disabled, Ordering::Relaxed);
        c.skipped_unselected
            .fetch_add(pass.skipped_unselected, Ordering::Relaxed);
        c.gaps_detected
            .fetch_add(pass.gaps_detected as u64, Ordering::Relaxed);
        c.gaps_filled
            .fetch_add(pass.gaps_filled as u64, Ordering::Relaxed);
        c.gaps_expired.fetch_add(expired as u64, Ordering::Relaxed);
        Ok(pass)
    }

    /// Validates events and folds them into per-type effects: the last structural event of a
    /// record wins; `checksum_succeeded` counts only when no structural event follows it.
    fn plan<'e>(
        &self,
        events: impl Iterator<Item = &'e Event>,
        flag: &dyn Fn(&'static ReplicableDescriptor) -> bool,
        pass: &mut CursorPass,
    ) -> Effects {
        let mut ordered: Vec<(&'static ReplicableDescriptor, ParsedEvent)> = Vec::new();
        for e in events {
            let Some(d) = find_replicable(&e.replicable_name) else {
                pass.skipped_unknown_replicable += 1;
                pass.skipped += 1;
                tracing::warn!(event_id = e.id, replicable = %e.replicable_name, "skipping an event for an unknown replicable");
                continue;
            };
            let parsed = match parse_event(e) {
                Ok(p) => p,
                Err(err) => {
                    pass.skipped_malformed += 1;
                    pass.skipped += 1;
                    tracing::warn!(event_id = e.id, replicable = d.name, error = %err, "skipping a malformed event");
                    continue;
                }
            };
            if !flag(d) {
                pass.skipped_disabled += 1;
                pass.skipped += 1;
                tracing::debug!(
                    event_id = e.id,
                    replicable = d.name,
                    "skipping an event: replication disabled by feature flag"
                );
                continue;
            }
            if !self
                .selection
                .admits_event(d, parsed.name, parsed.partition)
            {
                pass.skipped_unselected += 1;
                pass.skipped += 1;
                tracing::debug!(
                    event_id = e.id,
                    replicable = d.name,
                    id = parsed.model_record_id,
                    "skipping an event: the record is outside the selective sync"
                );
                continue;
            }
            ordered.push((d, parsed));
        }
        ordered.sort_by_key(|(_, p)| p.id);
        let mut fx = Effects::default();
        for (d, p) in ordered {
            pass.applied += 1;
            let id = p.model_record_id;
            match p.name {
                EventName::Created => {
                    fx.deleted.entry(d.name).or_default().remove(&id);
                    fx.checksum.entry(d.name).or_default().remove(&id);
                    if !fx.pending.get(d.name).is_some_and(|s| s.contains(&id)) {
                        fx.created.entry(d.name).or_default().insert(id);
                    }
                }
                EventName::Updated => {
                    fx.deleted.entry(d.name).or_default().remove(&id);
                    fx.checksum.entry(d.name).or_default().remove(&id);
                    fx.created.entry(d.name).or_default().remove(&id);
                    fx.pending.entry(d.name).or_default().insert(id);
                }
                EventName::Deleted => {
                    fx.created.entry(d.name).or_default().remove(&id);
                    fx.pending.entry(d.name).or_default().remove(&id);
                    fx.checksum.entry(d.name).or_default().remove(&id);
                    fx.deleted
                        .entry(d.name)
                        .or_default()
                        .insert(id, p.blob_path);
                }
                EventName::ChecksumSucceeded => {
                    let structural = fx.pending.get(d.name).is_some_and(|s| s.contains(&id))
                        || fx.created.get(d.name).is_some_and(|s| s.contains(&id))
                        || fx.deleted.get(d.name).is_some_and(|s| s.contains_key(&id));
                    if !structural {
                        fx.checksum
                            .entry(d.name)
                            .or_default()
                            .insert(id, (p.checksum.map(|c| c.to_vec()), p.created_at));
                    }
                }
            }
        }
        fx
    }
}

pub mod identity;
mod state;
pub use state::{CursorState, load_state};

#[cfg(test)]
mod tests;
