//! The backfill: compares id ranges of the primary's model tables with the registries, creates
//! the missing rows and removes orphans (and their files) when a whole sweep ends within the
//! mass-removal guard (`safety.rs`).

use std::sync::atomic::Ordering;

use geo_core::ReplicableDescriptor;
use geo_core::blob_store::BlobPath;
use geo_core::safety::RemovalKind;

use super::files::{FileRemoval, remove_unshared_files};
use super::{Secondary, SecondaryError};
use crate::registry;

impl Secondary {
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
        if self.halt()?.is_some() {
            // Halted: no removal, and no rows for records of a primary not followed.
            return Ok((0, 0, true));
        }
        let from = self.backfill_position(&mut self.tracking.get()?, d)?;
        if from <= 1 {
            let rows = self.registry_rows(d)?;
            // Orphan ids kept: all when removal is allowed anyway, else one more than the
            // guard could allow (enough to know it refuses).
            let keep = if self.config.allow_mass_removal {
                u64::MAX
            } else {
                geo_core::safety::allowed_removals(rows, self.config.max_removal_share) + 1
            };
            self.safety.start_sweep(d, rows, keep);
        }
        let mut conn = self.tracking.get()?;
        let max = self
            .source
            .max_model_id(d.name)?
            .max(registry::Registry::of(d).max_tracked_id(&mut conn)?);
        let Some(max) = max.filter(|m| from <= *m) else {
            self.set_backfill_position(&mut conn, d, 1)?;
            drop(conn);
            let r = self.finish_sweep(d)?;
            return Ok((0, r, true));
        };
        let to = from.saturating_add(self.config.backfill_batch.max(1) - 1);
        let source_ids = self.listed_ids(d, from..=to)?;
        let tracked = registry::Registry::of(d).tracked_ids(&mut conn, from, to)?;
        let (missing, orphans) = diff_sorted(&source_ids, &tracked);
        // Missing rows are created at once; orphans are only collected, and removed when the
        // sweep ends within the mass-removal guard (`safety.rs`).
        let c = registry::Registry::of(d).insert_missing(&mut conn, &missing)?;
        drop(conn);
        self.safety.add_orphans(d, &orphans);
        if c > 0 || !orphans.is_empty() {
            tracing::info!(
                replicable = d.name,
                from,
                to,
                created = c,
                orphans = orphans.len(),
                "backfill"
            );
        }
        self.counters
            .backfill_created
            .fetch_add(c as u64, Ordering::Relaxed);
        let next = to.saturating_add(1);
        let done = next > max;
        self.set_backfill_position(&mut self.tracking.get()?, d, if done { 1 } else { next })?;
        let r = if done { self.finish_sweep(d)? } else { 0 };
        Ok((c, r, done))
    }

    /// The end of a sweep of `d`: when it was seen from its first range, and the guard allows
    /// its orphans, removes them (rows, then files no other row uses). Returns rows removed.
    fn finish_sweep(&self, d: &'static ReplicableDescriptor) -> Result<usize, SecondaryError> {
        let Some(sweep) = self.safety.finish_sweep(d) else {
            return Ok(0);
        };
        if !self.removal_allowed(d, RemovalKind::Orphans, sweep.found, sweep.registry_rows)
            || sweep.found == 0
        {
            return Ok(0);
        }
        if !self.may_remove()? {
            tracing::warn!(
                replicable = d.name,
                orphans = sweep.found,
                "backfill removes nothing: the secondary is halted"
            );
            return Ok(0);
        }
        // List the orphans on the primary again: a record created since its range was read is
        // no orphan.
        let mut orphans = sweep.orphans;
        let mut back = Vec::new();
        for run in runs(&orphans, self.config.backfill_batch.max(1)) {
            back.extend(self.listed_ids(d, run)?);
        }
        orphans.retain(|id| back.binary_search(id).is_err());
        let mut conn = self.tracking.get()?;
        let mut files = Vec::new();
        let r = crate::db::with_conn!(&mut conn, c => crate::db::WriteTransaction::write_transaction::<usize, SecondaryError, _>(c, |c| {
            files = registry::Registry::of(d).blob_paths(c, &orphans)?;
            Ok(registry::Registry::of(d).delete_rows(c, &orphans)?)
        }))?;
        let removals: Vec<FileRemoval> = files
            .into_iter()
            .filter_map(|(id, p)| {
                BlobPath::new(&p).ok().map(|path| FileRemoval {
                    descriptor: d,
                    id,
                    path,
                })
            })
            .collect();
        remove_unshared_files(&mut conn, self.file_store(), &removals, "orphan (backfill)");
        tracing::info!(replicable = d.name, removed = r, "backfill removed orphans");
        self.counters
            .backfill_removed
            .fetch_add(r as u64, Ordering::Relaxed);
        Ok(r)
    }

    /// Runs the backfill over every range of every enabled type once, from id 1. Returns
    /// (created, removed).
    pub fn backfill_all(&self) -> Result<(usize, usize), SecondaryError> {
        let (mut created, mut removed) = (0, 0);
        for d in self.enabled_types()? {
            self.set_backfill_position(&mut self.tracking.get()?, d, 1)?;
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
}

/// Ascending `ids` grouped into inclusive ranges, a new range starting where the next id is
/// `span` or more past the range's first.
fn runs(ids: &[i64], span: i64) -> Vec<std::ops::RangeInclusive<i64>> {
    let mut out: Vec<std::ops::RangeInclusive<i64>> = Vec::new();
    for &id in ids {
        match out.last_mut() {
            Some(r) if id - *r.start() < span => *r = *r.start()..=id,
            _ => out.push(id..=id),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::{diff_sorted, runs};

    #[test]
    fn runs_group_nearby_ids() {
        assert_eq!(runs(&[1, 2, 9, 11, 30], 10), vec![1..=9, 11..=11, 30..=30]);
        assert_eq!(runs(&[], 10), vec![]);
        assert_eq!(runs(&[5], 1), vec![5..=5]);
    }

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
