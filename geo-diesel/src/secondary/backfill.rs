//! The backfill: compares id ranges of the primary's model tables with the registries, creates
//! the missing rows and removes orphans (and their files).

use std::sync::atomic::Ordering;

use geo_core::ReplicableDescriptor;
use geo_core::blob_store::{BlobError, BlobPath};

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
        let mut conn = self.tracking.get()?;
        let from = self.backfill_position(&mut conn, d)?;
        let max = self
            .source
            .max_model_id(d.name)?
            .max(registry::Registry::of(d).max_tracked_id(&mut conn)?);
        let Some(max) = max.filter(|m| from <= *m) else {
            self.set_backfill_position(&mut conn, d, 1)?;
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
        self.set_backfill_position(&mut conn, d, if done { 1 } else { next })?;
        Ok((c, r, done))
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
