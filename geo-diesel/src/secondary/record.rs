//! Recording what downloads did: each group of finished downloads in one transaction against
//! its claim token; a group whose transaction fails goes back to `pending` at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use geo_core::ReplicableDescriptor;
use geo_core::blob_store::BlobPath;

use super::files::{FileRemoval, remove_unshared_files};
use super::sync::Done;
use super::{Secondary, SecondaryError};
use crate::registry::{self, SyncOutcome};

impl Secondary {
    /// Records the outcomes of finished downloads claimed at `claimed_at` in one transaction,
    /// then removes the files of records deleted during their download.
    pub(super) fn record_group(
        &self,
        claimed_at: DateTime<Utc>,
        results: &[(&'static ReplicableDescriptor, i64, Done)],
    ) -> Result<(), SecondaryError> {
        let now = self.now();
        let retry_at = self.retry_at(now);
        let mut stale_files: Vec<FileRemoval> = Vec::new();
        let mut conn = self.tracking.get()?;
        let recorded = crate::db::with_conn!(&mut conn, c => crate::db::WriteTransaction::write_transaction::<(), SecondaryError, _>(c, |c| {
            stale_files.clear();
            // Successful downloads first, set-based per type; rows the batch did not record (a
            // newer event moved their token, or they were deleted) go through the per-row path.
            let mut batch: BTreeMap<&'static str, (&'static ReplicableDescriptor, Vec<registry::SyncedRow>)> = BTreeMap::new();
            for (d, id, done) in results {
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
            for (d, id, done) in results {
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
                                    stale_files.extend(path.clone().map(|path| FileRemoval { descriptor: d, id: *id, path }));
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
                        stale_files.extend(registry::Registry::of(d).blob_paths(c, &[*id])?.into_iter().filter_map(|(_, p)| BlobPath::new(&p).ok()).map(|path| FileRemoval { descriptor: d, id: *id, path }));
                        registry::Registry::of(d).delete_rows(c, &[*id])?;
                        tracing::info!(replicable = d.name, id, "record no longer exists on the primary; registry row removed");
                    }
                }
            }
            Ok(())
        }));
        recorded?;
        // Files no other registry row (of any type) records: two records may share one file.
        remove_unshared_files(
            &mut conn,
            self.file_store(),
            &stale_files,
            "record deleted on the primary during its download",
        );
        Ok(())
    }
}

/// Claims of one type taken at one time whose outcome was not recorded and whose release failed.
#[derive(Debug)]
pub(super) struct Unreleased {
    d: &'static ReplicableDescriptor,
    ids: Vec<i64>,
    claimed_at: DateTime<Utc>,
}

impl Secondary {
    /// The recording transaction of a pass failed (`error`): its claims go back to `pending` by
    /// [`registry::Registry::release_claimed`] (only rows still `started` with this pass's claim
    /// token). If that fails too, they are kept and released by the next pass.
    pub(super) fn release_after_failed_recording(
        &self,
        claimed: &[(&'static ReplicableDescriptor, i64)],
        claimed_at: DateTime<Utc>,
        error: &SecondaryError,
    ) {
        let mut by_type: BTreeMap<&'static str, Unreleased> = BTreeMap::new();
        for (d, id) in claimed {
            by_type
                .entry(d.name)
                .or_insert_with(|| Unreleased {
                    d,
                    ids: Vec::new(),
                    claimed_at,
                })
                .ids
                .push(*id);
        }
        tracing::warn!(rows = claimed.len(), error = %error, "recording the outcome of a sync batch failed; releasing its claims");
        let mut left = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
        left.extend(by_type.into_values());
        drop(left);
        if let Err(e) = self.release_unreleased() {
            tracing::warn!(error = %e, "could not release the claims of a failed sync batch; retrying on the next pass");
        }
    }

    /// Releases the claims kept by [`Secondary::release_after_failed_recording`]. Returns how
    /// many rows went back to `pending`.
    pub(super) fn release_unreleased(&self) -> Result<usize, SecondaryError> {
        let mut left = self.unreleased.lock().unwrap_or_else(|p| p.into_inner());
        if left.is_empty() {
            return Ok(0);
        }
        let mut conn = self.tracking.get()?;
        let mut released = 0;
        while let Some(u) = left.last() {
            released +=
                registry::Registry::of(u.d).release_claimed(&mut conn, &u.ids, u.claimed_at)?;
            left.pop();
        }
        tracing::info!(
            rows = released,
            "released the claims of a sync batch that was not recorded"
        );
        Ok(released)
    }
}
