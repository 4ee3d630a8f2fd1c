//! Safety before destruction on a secondary: the mass-removal guard's bookkeeping, the check of
//! the primary's identity before anything is removed, and the operator's reconcile.
//!
//! **Sweeps.** The backfill removes orphans only when a sweep ends: while it walks the id
//! ranges it creates missing rows at once but only collects orphans, so at the end it knows the
//! sweep's total and compares it with the type's registry rows counted when the sweep started
//! ([`allowed_removals`]). Over the limit, nothing is removed and the refusal is reported
//! ([`Secondary::mass_removal_refusals`]) until a sweep ends within it or the operator allows
//! it (`allow_mass_removal`). A sweep this process did not see from its first range removes
//! nothing (several processes sharing the backfill position, or a restart mid-sweep): the next
//! whole sweep does. Before removing, the orphans are listed on the primary again (a record
//! created since the range was read stays) and the primary's identity is checked.
//!
//! **`missing_on_primary`** marks are counted the same way against the rows already marked
//! (see `sync.rs`): a pass that would take the marked rows over the limit records plain
//! failures instead.

use std::collections::BTreeMap;
use std::sync::Mutex;

use geo_core::safety::{MassRemovalRefusal, RemovalKind, SafetyHalt, allowed_removals};
use geo_core::{ReplicableDescriptor, ReplicationState, Role};

use super::{Secondary, SecondaryError};
use crate::admin::{self, BulkAction, BulkFilter};
use crate::cursor::identity::{self, Followed};
use crate::registry::Registry;

/// One type's sweep in progress.
#[derive(Debug, Clone, Default)]
pub(super) struct Sweep {
    /// Registry rows when the sweep started.
    pub registry_rows: u64,
    /// Orphans found so far (kept up to the limit, or all when removal is allowed anyway).
    pub orphans: Vec<i64>,
    /// How many orphans were found.
    pub found: u64,
    /// How many orphan ids to keep: one more than the guard could allow (enough to know it
    /// refuses), or all when removal is allowed anyway.
    pub keep: u64,
}

/// The in-memory half of the guards (the halt itself is in the tracking database).
#[derive(Debug, Default)]
pub(super) struct SafetyState {
    sweeps: Mutex<BTreeMap<&'static str, Sweep>>,
    refusals: Mutex<BTreeMap<(&'static str, RemovalKind), MassRemovalRefusal>>,
}

impl SafetyState {
    fn sweeps(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Sweep>> {
        self.sweeps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refusals(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(&'static str, RemovalKind), MassRemovalRefusal>> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sweep of `d` starts at its first range, over `registry_rows` rows, keeping up to
    /// `keep` orphan ids.
    pub(super) fn start_sweep(
        &self,
        d: &'static ReplicableDescriptor,
        registry_rows: u64,
        keep: u64,
    ) {
        self.sweeps().insert(
            d.name,
            Sweep {
                registry_rows,
                keep,
                ..Sweep::default()
            },
        );
    }

    /// Orphans found in one range of `d`'s sweep; ids beyond the sweep's `keep` are only
    /// counted.
    pub(super) fn add_orphans(&self, d: &'static ReplicableDescriptor, ids: &[i64]) {
        if let Some(s) = self.sweeps().get_mut(d.name) {
            s.found += ids.len() as u64;
            let room = s.keep.saturating_sub(s.orphans.len() as u64) as usize;
            s.orphans.extend(ids.iter().take(room));
        }
    }

    /// The sweep of `d` ends: what it found, when it was seen from its first range.
    pub(super) fn finish_sweep(&self, d: &'static ReplicableDescriptor) -> Option<Sweep> {
        self.sweeps().remove(d.name)
    }
}

/// What [`Secondary::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// What the tracking database recorded before (the identity followed, the halt).
    pub before: Followed,
    /// The identity followed from now on.
    pub identity: Option<String>,
    /// Where the cursor now starts: the primary's high-water mark read before the backfill.
    pub cursor: i64,
    /// Synced rows marked for reverification against the primary's checksums.
    pub reverify: i64,
    /// Synced rows of types without verification marked for resync.
    pub resync: i64,
    /// Rows the full backfill created.
    pub created: usize,
    /// Rows the full backfill removed.
    pub removed: usize,
    /// Sweeps the mass-removal guard refused.
    pub refused: Vec<MassRemovalRefusal>,
}

impl Secondary {
    /// Why the secondary is halted, as the tracking database records it; `None` when it runs.
    pub fn halt(&self) -> Result<Option<SafetyHalt>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        Ok(identity::load_followed(&mut conn)?.halt)
    }

    /// Asks the primary for its identity now and checks it (recording a halt, or adopting the
    /// identity on first contact). Destructive steps call it right before they act.
    ///
    /// The cursor position is read *before* the primary is asked: every event the cursor passed
    /// by then was committed before the primary's answer, so an honest high-water mark is never
    /// below it. Read after, a log cursor (this process's or another's) that applied newer
    /// events meanwhile put the position past the answer's mark, and the check halted a healthy
    /// secondary with "event ids went backwards" until an operator reconciled.
    pub(super) fn check_primary_now(&self) -> Result<Option<SafetyHalt>, SecondaryError> {
        let cursor = crate::cursor::load_state(&mut self.tracking.get()?)?.last_event_id;
        let seen = self.source.primary_identity()?;
        let mut conn = self.tracking.get()?;
        Ok(identity::check_feed(
            &mut conn,
            seen.as_ref(),
            cursor,
            self.now(),
        )?)
    }

    /// The sweeps the mass-removal guard refused and that no later sweep resolved.
    pub fn mass_removal_refusals(&self) -> Vec<MassRemovalRefusal> {
        self.safety.refusals().values().cloned().collect()
    }

    /// The guard: may a sweep of `d` remove (or mark) `would_remove` of `registry_rows` rows?
    /// A refusal is recorded and logged; an allowed sweep clears an earlier refusal.
    pub(super) fn removal_allowed(
        &self,
        d: &'static ReplicableDescriptor,
        kind: RemovalKind,
        would_remove: u64,
        registry_rows: u64,
    ) -> bool {
        let allowed = allowed_removals(registry_rows, self.config.max_removal_share);
        let key = (d.name, kind);
        if would_remove <= allowed || self.config.allow_mass_removal {
            if self.safety.refusals().remove(&key).is_some() {
                tracing::info!(
                    replicable = d.name,
                    kind = kind.as_str(),
                    would_remove,
                    allowed,
                    "mass-removal refusal resolved"
                );
            }
            return true;
        }
        let refusal = MassRemovalRefusal {
            replicable: d.name.to_owned(),
            kind,
            would_remove,
            registry_rows,
            allowed,
        };
        tracing::warn!(
            replicable = d.name,
            kind = kind.as_str(),
            would_remove,
            registry_rows,
            allowed,
            "{refusal}"
        );
        self.safety.refusals().insert(key, refusal);
        false
    }

    /// Forgets a refusal of `d`'s `kind` (what it refused is no longer there).
    pub(super) fn clear_refusal(&self, d: &'static ReplicableDescriptor, kind: RemovalKind) {
        if self.safety.refusals().remove(&(d.name, kind)).is_some() {
            tracing::info!(
                replicable = d.name,
                kind = kind.as_str(),
                "mass-removal refusal resolved"
            );
        }
    }

    /// Whether removals may go ahead: not halted, and the primary (asked now) is still the one
    /// followed.
    pub(super) fn may_remove(&self) -> Result<bool, SecondaryError> {
        Ok(self.halt()?.is_none() && self.check_primary_now()?.is_none())
    }

    /// The operator's recovery (`secondary --reconcile`): reads the primary's identity and
    /// high-water mark first, marks every synced row for reverification against the primary's
    /// checksums (types without verification: for resync), follows the primary from that mark
    /// on (clearing the halt and the open gaps), then runs a full backfill — under the
    /// mass-removal guard unless `allow_mass_removal` is set.
    pub fn reconcile(&self) -> Result<ReconcileReport, SecondaryError> {
        let seen = self.source.primary_identity()?;
        let mut conn = self.tracking.get()?;
        let before = identity::load_followed(&mut conn)?;
        let (reverify, resync) = self.mark_synced_for_recheck(&mut conn)?;
        identity::accept_primary(&mut conn, seen.as_ref(), self.now())?;
        drop(conn);
        let (created, removed) = self.backfill_all()?;
        let report = ReconcileReport {
            before,
            identity: seen.as_ref().map(|s| s.identity.clone()),
            cursor: seen.as_ref().map_or(0, |s| s.high_water_mark),
            reverify,
            resync,
            created,
            removed,
            refused: self.mass_removal_refusals(),
        };
        tracing::info!(
            identity = report.identity.as_deref().unwrap_or("none"),
            cursor = report.cursor,
            reverify,
            resync,
            created,
            removed,
            refused = report.refused.len(),
            "reconcile finished"
        );
        Ok(report)
    }

    /// Marks every synced row for reverification against the primary's checksums (types
    /// without verification: for resync), as bulk jobs run to their end. Returns (reverify,
    /// resync). Reconcile and the recovery from a pruned event log start with it.
    pub(super) fn mark_synced_for_recheck(
        &self,
        conn: &mut crate::db::PooledConn,
    ) -> Result<(i64, i64), SecondaryError> {
        let batch = admin::batch_for(self.tracking.backend());
        let (mut reverify, mut resync) = (0, 0);
        for d in self.enabled_types()? {
            let action = if d.verifies() {
                BulkAction::ReverifyAll
            } else {
                BulkAction::ResyncAll
            };
            let filter = BulkFilter {
                replication_state: Some(ReplicationState::Synced),
                ..BulkFilter::default()
            };
            let job = admin::enqueue(conn, Role::Secondary, d, action, filter)?;
            let done = admin::run_job_to_end(conn, Role::Secondary, batch, job, &mut |_| {})?;
            if d.verifies() {
                reverify += done.changed;
            } else {
                resync += done.changed;
            }
        }
        Ok((reverify, resync))
    }

    /// Registry rows of `d` (the base of the guard's share).
    pub(super) fn registry_rows(
        &self,
        d: &'static ReplicableDescriptor,
    ) -> Result<u64, SecondaryError> {
        let mut conn = self.tracking.get()?;
        Ok(Registry::of(d).counts(&mut conn)?.registry.max(0) as u64)
    }
}
