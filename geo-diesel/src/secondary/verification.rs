//! Secondary verification: re-hashes synced files and compares them with the primary's
//! checksums; a mismatch or an unreadable copy is recorded and the row resynced with backoff.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use geo_core::ReplicableDescriptor;
use geo_core::backoff::BackoffCap;
use geo_core::blob_store::BlobPath;
use geo_core::checksum::Checksum;

use super::{Secondary, SecondaryError};
use crate::parallel::parallel_map;
use crate::registry::{self, VerifyOutcome};

impl Secondary {
    /// One secondary verification pass: re-hashes synced files whose verification is pending (or
    /// failed and due) and compares with the primary's checksum; a mismatch is recorded and the
    /// row resynced with backoff. Returns how many rows it processed.
    pub fn verification_pass(&self) -> Result<usize, SecondaryError> {
        if self.halt()?.is_some() {
            // Halted: the primary's checksums are not the followed primary's.
            return Ok(0);
        }
        let now = self.now();
        let mut processed = 0;
        for d in self.enabled_types()?.into_iter().filter(|d| d.verifies()) {
            let mut conn = self.tracking.get()?;
            let ids = registry::Registry::of(d).claim_as(
                &mut conn,
                registry::Work::Verification,
                self.config.verification_batch as i64,
                now,
                self.worker_id(),
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
            let retry = |n: i16| self.env.retry_time(now, n, BackoffCap::Default);
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
                        tracing::warn!(replicable = d.name, id, local = %hex::encode(local), "Checksum does not match the primary checksum; resyncing");
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
}
