//! Recovery from a pruned event log: the primary answered that it pruned events this secondary
//! still needed ([`SourceError::EventsPruned`]), so the events between what the secondary
//! consumed and the primary's mark are gone and nothing says what they did.
//!
//! The secondary never skips them silently. It recovers as the operator's reconcile does
//! (`safety.rs`), but keeps following the same primary and only when that primary is still the
//! one followed:
//!
//! 1. it reads the primary's identity and event-id high-water mark, and checks them as every
//!    feed is checked — another identity, or ids gone backwards, halt instead (a new or
//!    restored primary database is the identity check's case, not pruning's);
//! 2. it marks every synced row for **reverification** against the primary's checksums (types
//!    without verification: for resync). Reverification re-reads each local file and compares
//!    it with the primary's MAC'd checksum, and a mismatch resyncs, so a lost `updated` is
//!    caught without downloading every file again (a resync of everything would be as safe and
//!    cost the whole data set); a record the primary is still re-checksumming gets its
//!    `checksum_succeeded` event after the mark, which the cursor applies;
//! 3. it moves the cursor to the mark read in step 1 (dropping open gaps), so every event
//!    after it is applied by the cursor;
//! 4. it runs a full backfill: records created meanwhile get their rows, records deleted
//!    meanwhile are removed (under the mass-removal guard).
//!
//! Each recovery is logged, counted ([`crate::secondary::SecondaryCounters::pruned_recoveries`])
//! and kept for the status ([`Secondary::last_pruned_recovery`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use geo_core::source::SourceError;

use super::{Secondary, SecondaryError};
use crate::cursor::identity;
use crate::cursor::{CursorError, CursorPass, CursorState, load_state};
use crate::db::with_conn;
use crate::schema::{geo_event_log_gaps as gaps, geo_event_log_states as states};
use crate::types::UtcDateTime;

/// What one recovery from a pruned event log did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrunedRecovery {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The primary had pruned every event up to this id.
    pub pruned_through: i64,
    /// The secondary had consumed the log only up to this id.
    pub consumed: i64,
    /// Where the cursor continues: the primary's high-water mark read before the backfill.
    pub cursor: i64,
    /// Synced rows marked for reverification.
    pub reverify: i64,
    /// Synced rows of types without verification marked for resync.
    pub resync: i64,
    /// Rows the full backfill created.
    pub created: usize,
    /// Rows the full backfill removed.
    pub removed: usize,
}

impl Secondary {
    /// The last recovery from a pruned event log this process ran, if any.
    pub fn last_pruned_recovery(&self) -> Option<PrunedRecovery> {
        self.pruned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A cursor pass's result, with a pruned log turned into a recovery.
    pub(super) fn after_cursor(
        &self,
        result: Result<CursorPass, CursorError>,
    ) -> Result<CursorPass, SecondaryError> {
        match result {
            Err(CursorError::Source(SourceError::EventsPruned {
                pruned_through,
                consumed,
            })) => {
                if consumed == 0 {
                    // A new secondary: nothing to lose, the backfill is its first sync.
                    tracing::info!(
                        pruned_through,
                        "the primary's event log starts after id 0; starting from its current point with a full backfill"
                    );
                } else {
                    tracing::warn!(
                        pruned_through,
                        consumed,
                        "the primary pruned events this secondary had not consumed; recovering with a full backfill and reverification"
                    );
                }
                Ok(match self.recover_from_pruning(pruned_through, consumed)? {
                    Ok(r) => CursorPass {
                        cursor: r.cursor,
                        pruned: Some(r),
                        ..CursorPass::default()
                    },
                    Err(halt) => CursorPass {
                        halted: Some(halt),
                        ..CursorPass::default()
                    },
                })
            }
            other => Ok(other?),
        }
    }

    /// Recovers from a pruned event log (see the module): checks the primary's identity and
    /// high-water mark, marks every synced row for reverification (or resync), moves the
    /// cursor to the mark and runs a full backfill. A halt in force, or found now, stops it
    /// before anything changes (`Ok(Err(halt))`).
    pub fn recover_from_pruning(
        &self,
        pruned_through: i64,
        consumed: i64,
    ) -> Result<Result<PrunedRecovery, geo_core::safety::SafetyHalt>, SecondaryError> {
        // The position before the primary's answer (see `check_primary_now`): a cursor that
        // moves on meanwhile never puts it past the answer's mark.
        let state = load_state(&mut self.tracking.get()?)?;
        let seen = self.source.primary_identity()?;
        let at = self.now();
        let mut conn = self.tracking.get()?;
        if let Some(halt) = identity::check_feed(&mut conn, seen.as_ref(), state.last_event_id, at)?
        {
            return Ok(Err(halt));
        }
        let mark = match &seen {
            Some(s) => s.high_water_mark,
            None => self.source.max_event_id()?.unwrap_or(0),
        }
        .max(pruned_through)
        .max(state.last_event_id);
        let (reverify, resync) = self.mark_synced_for_recheck(&mut conn)?;
        restart_cursor(&mut conn, &state, mark, at)?;
        drop(conn);
        let (created, removed) = self.backfill_all()?;
        crate::notify::registry_changed();
        let recovery = PrunedRecovery {
            at,
            pruned_through,
            consumed,
            cursor: mark,
            reverify,
            resync,
            created,
            removed,
        };
        self.counters
            .pruned_recoveries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.pruned.lock().unwrap_or_else(|p| p.into_inner()) = Some(recovery.clone());
        tracing::warn!(
            pruned_through,
            consumed,
            cursor = mark,
            reverify,
            resync,
            created,
            removed,
            "recovered from a pruned event log: continuing from the primary's current point"
        );
        Ok(Ok(recovery))
    }
}

/// Moves the cursor to `mark` and drops the open gaps, if the cursor is still at `state` (a
/// cursor that moved meanwhile is left alone: it read the primary after the pruning).
fn restart_cursor(
    conn: &mut crate::db::PooledConn,
    state: &CursorState,
    mark: i64,
    now: DateTime<Utc>,
) -> Result<(), SecondaryError> {
    with_conn!(conn, c => crate::db::WriteTransaction::write_transaction::<(), diesel::result::Error, _>(c, |c| {
        diesel::insert_into(states::table)
            .values((states::id.eq(0i16), states::event_id.eq(0i64), states::updated_at.eq(UtcDateTime(now))))
            .on_conflict(states::id)
            .do_nothing()
            .execute(c)?;
        if load_state(c)? != *state {
            tracing::info!("another log cursor moved first; leaving the cursor where it is");
            return Ok(());
        }
        diesel::delete(gaps::table).execute(c)?;
        diesel::update(states::table.find(0i16))
            .set((states::event_id.eq(mark), states::updated_at.eq(UtcDateTime(now))))
            .execute(c)?;
        Ok(())
    }))?;
    Ok(())
}
