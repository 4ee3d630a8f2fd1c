//! Syncing: claims due registry rows fairly across types and downloads their files with bounded
//! concurrency; `record.rs` records every outcome against its claim token.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use geo_core::ReplicableDescriptor;
use geo_core::backoff::BackoffCap;
use geo_core::blob_store::{BlobError, BlobPath};
use geo_core::checksum::Checksum;
use geo_core::safety::RemovalKind;
use geo_core::source::SourceError;

use super::fetch::{Fetch, Tracker};
use super::{Secondary, SecondaryError};
use crate::registry::{self, SyncOutcome};

/// Blobs at least this large (or of unknown size) are downloaded resumably from their first
/// attempt: into a temporary file that a failed attempt or a restart leaves for the next one
/// ([`geo_core::blob_store::BlobStore::resume`]). Smaller ones use the plain atomic write (an
/// interrupted one costs little to fetch again).
pub const RESUMABLE_FROM: u64 = 4 * 1024 * 1024;

/// The result of syncing one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Done {
    /// The outcome, and for a successful write the path it wrote.
    Outcome(SyncOutcome, Option<BlobPath>),
    /// The record is gone on the primary: drop the row (and the file, when its path is known).
    Orphan,
}

impl Secondary {
    /// Claims up to `sync_batch` rows fairly across the enabled types: each type gets an equal
    /// share, and shares a type cannot use go to the others.
    fn claim_fair(
        &self,
        types: &[&'static ReplicableDescriptor],
        now: DateTime<Utc>,
    ) -> Result<Vec<(&'static ReplicableDescriptor, i64)>, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let total = self.config.sync_batch.max(self.config.sync_capacity) as i64;
        let mut claimed: Vec<(&'static ReplicableDescriptor, i64)> = Vec::new();
        let mut open: Vec<&'static ReplicableDescriptor> = types.to_vec();
        while !open.is_empty() {
            let left = total - claimed.len() as i64;
            if left <= 0 {
                break;
            }
            let share = (left + open.len() as i64 - 1) / open.len() as i64;
            let mut still_open = Vec::new();
            for d in open {
                let left = total - claimed.len() as i64;
                if left <= 0 {
                    break;
                }
                let want = share.min(left);
                let ids = registry::Registry::of(d).claim_as(
                    &mut conn,
                    registry::Work::Sync,
                    want,
                    now,
                    self.worker_id(),
                )?;
                if ids.len() as i64 == want {
                    still_open.push(d);
                }
                claimed.extend(ids.into_iter().map(|id| (d, id)));
            }
            open = still_open;
        }
        // Interleave types so that downloads alternate between them.
        let mut by_type: BTreeMap<&'static str, Vec<(&'static ReplicableDescriptor, i64)>> =
            BTreeMap::new();
        for c in claimed {
            by_type.entry(c.0.name).or_default().push(c);
        }
        let mut queues: Vec<std::vec::IntoIter<_>> =
            by_type.into_values().map(|v| v.into_iter()).collect();
        let mut out = Vec::new();
        loop {
            let before = out.len();
            for q in queues.iter_mut() {
                if let Some(x) = q.next() {
                    out.push(x);
                }
            }
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Downloads one record. `known` is the blob path from the batch lookup: `Some(Some(p))`
    /// found, `Some(None)` the record does not exist, `None` not looked up yet.
    fn download(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        known: Option<Option<String>>,
        primary: Option<Checksum>,
    ) -> Done {
        let started = std::time::Instant::now();
        let written = std::cell::Cell::new(0);
        tracing::debug!(replicable = d.name, id, worker = %self.worker_id(), "download started");
        let done = self.download_inner(d, id, known, primary, &written);
        tracing::debug!(
            replicable = d.name,
            id,
            worker = %self.worker_id(),
            bytes = written.get(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "download finished"
        );
        if let Some(observer) = self.observer.get() {
            use geo_core::observe::SyncResult;
            let result = match &done {
                Done::Outcome(SyncOutcome::Synced { .. }, _) => SyncResult::Synced,
                Done::Outcome(SyncOutcome::Failed { .. }, _) => SyncResult::Failed,
                Done::Orphan => SyncResult::Orphan,
            };
            observer.sync_finished(d.name, started.elapsed(), written.get(), result);
        }
        done
    }

    fn download_inner(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        known: Option<Option<String>>,
        primary: Option<Checksum>,
        written: &std::cell::Cell<u64>,
    ) -> Done {
        let failed = |message: String, missing_on_primary: bool| {
            Done::Outcome(
                SyncOutcome::Failed {
                    message,
                    missing_on_primary,
                },
                None,
            )
        };
        let path = match known {
            Some(Some(p)) => p,
            Some(None) => return Done::Orphan,
            None => match self.source.blob_path(d.name, id) {
                Ok(Some(p)) => p,
                Ok(None) | Err(SourceError::RecordNotFound { .. }) => return Done::Orphan,
                Err(e) => return failed(format!("Error downloading file: {e}"), false),
            },
        };
        let path = match BlobPath::new(&path) {
            Ok(p) => p,
            Err(e) => return failed(format!("Error downloading file: {e}"), false),
        };
        if self.tracks_only() {
            return self.verify_in_place(d, id, path, primary);
        }
        let started = std::time::Instant::now();
        let progress = self.in_flight.start(d.name, id, self.now());
        let tracker = Tracker {
            mark: &progress.mark,
            pass: progress.pass.as_deref(),
            clock: &*self.env.clock,
            received: written,
        };
        let outcome = self.fetch(d, id, &path, primary, &tracker);
        drop(progress);
        match outcome {
            Ok((w, expected)) => {
                self.counters
                    .bytes
                    .fetch_add(written.get(), Ordering::Relaxed);
                tracing::debug!(
                    replicable = d.name,
                    id,
                    bytes = w.bytes,
                    received = written.get(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "blob download"
                );
                Done::Outcome(
                    SyncOutcome::Synced {
                        local: w.checksum.to_vec(),
                        primary: expected.map(|c| c.to_vec()),
                    },
                    Some(path),
                )
            }
            Err(Fetch::Source(SourceError::RecordNotFound { .. })) => Done::Orphan,
            Err(Fetch::Source(SourceError::MissingOnPrimary { .. })) => failed(
                "The file is missing on the Geo primary site".to_string(),
                true,
            ),
            Err(Fetch::Source(e)) => failed(format!("Error downloading file: {e}"), false),
            Err(Fetch::Store(BlobError::ChecksumMismatch {
                expected, actual, ..
            })) => failed(
                format!("Downloaded file checksum mismatch: expected {expected}, got {actual}"),
                false,
            ),
            Err(Fetch::Store(e)) => failed(format!("Error downloading file: {e}"), false),
        }
    }

    pub(super) fn retry_at(&self, now: DateTime<Utc>) -> impl Fn(i16, bool) -> DateTime<Utc> + '_ {
        move |n, missing| {
            self.env
                .retry_time(now, n, BackoffCap::for_missing_on_primary(missing))
        }
    }

    /// One scheduler pass: claims due rows (never-synced first, then failed with a due retry,
    /// fair across types), downloads them with at most `sync_capacity` in flight, and records
    /// the outcomes as downloads finish (each group of finished ones in one transaction; a group
    /// whose recording fails goes back to `pending` at once). Returns how many rows it processed.
    pub fn sync_pass(&self) -> Result<usize, SecondaryError> {
        self.release_unreleased()?;
        let types = self.enabled_types()?;
        if types.is_empty() || self.halt()?.is_some() {
            return Ok(0);
        }
        // The claim time is the claim token: outcomes are recorded only against it.
        let claimed_at = self.now();
        let claimed = self.claim_fair(&types, claimed_at)?;
        if claimed.is_empty() {
            return Ok(0);
        }
        // Never download from a primary that is not the one followed: ask it before the
        // downloads, and hand the claims back as failures (with backoff) when it is not, or
        // when it cannot say (as a failed download would).
        match self.check_primary_now() {
            Ok(None) => {}
            Ok(Some(halt)) => {
                self.fail_claims(&claimed, claimed_at, &halt.to_string())?;
                return Ok(0);
            }
            Err(SecondaryError::Source(e)) => {
                tracing::warn!(error = %e, rows = claimed.len(), "could not ask the primary for its identity; syncing later");
                self.fail_claims(
                    &claimed,
                    claimed_at,
                    &format!("Error downloading file: {e}"),
                )?;
                return Ok(claimed.len());
            }
            Err(e) => return Err(e),
        }
        // The primary's checksums, one query per type.
        let mut expected: BTreeMap<(&'static str, i64), Checksum> = BTreeMap::new();
        let mut by_type: BTreeMap<&'static str, (&'static ReplicableDescriptor, Vec<i64>)> =
            BTreeMap::new();
        for (d, id) in &claimed {
            by_type
                .entry(d.name)
                .or_insert_with(|| (d, Vec::new()))
                .1
                .push(*id);
        }
        // Blob paths, one query per type (`None`: the lookup failed; each download retries it).
        let mut paths: BTreeMap<&'static str, Option<BTreeMap<i64, String>>> = BTreeMap::new();
        for (d, ids) in by_type.values() {
            if self.tracks_only() {
                // The batch lookup brings small blobs' bytes along: look paths up one by one.
                paths.insert(d.name, None);
                continue;
            }
            let found = self.source.blob_paths(d.name, ids);
            if let Err(e) = &found {
                tracing::warn!(replicable = d.name, error = %e, "could not read blob paths in a batch; looking them up one by one");
            }
            paths.insert(d.name, found.ok());
        }
        for (d, ids) in by_type.values() {
            if !d.verifies() {
                continue;
            }
            // A blob the lookup brought along carries the checksum it must have (MAC'd):
            // only the others need the primary's.
            let ids: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|&id| self.source.held_size(d.name, id).is_none())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match self.source.primary_checksums(d.name, &ids) {
                Ok(map) => {
                    for (id, pc) in map {
                        if let Some(sum) = pc.verified_checksum() {
                            expected.insert((d.name, id), *sum);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(replicable = d.name, error = %e, "could not read the primary's checksums; syncing without them")
                }
            }
        }
        // Until its download starts, a claimed row waits in the pass's queue; the no-progress
        // timeout judges it by the pass's progress.
        let queued = self.in_flight.queue(&claimed, self.now());
        let download = |&(d, id): &(&'static ReplicableDescriptor, i64)| {
            // Every pass's downloads share `sync_capacity` slots; a row waiting for one is
            // judged by the progress of the downloads holding them.
            let _slot = self.download_slots.take(|| queued.behind_others());
            let known = paths
                .get(d.name)
                .and_then(Option::as_ref)
                .map(|m| m.get(&id).cloned());
            (
                d,
                id,
                self.download(d, id, known, expected.get(&(d.name, id)).copied()),
            )
        };
        // Outcomes are recorded as downloads finish, each group of finished downloads in one
        // transaction, so a process that dies loses little more than its downloads in flight.
        let mut failed: Option<SecondaryError> = None;
        let mut refused_marks: BTreeMap<&'static str, u64> = BTreeMap::new();
        let processed = crate::parallel::parallel_stream(
            &claimed,
            self.config.sync_capacity,
            download,
            |group| {
                // The safety guards first (a halted secondary acts on no orphan; marks beyond
                // the mass-removal share become plain failures), then one transaction.
                let recorded = self
                    .guard_outcomes(group.clone(), &mut refused_marks)
                    .and_then(|group| self.record_group(claimed_at, &group));
                if let Err(e) = recorded {
                    // Nothing of the group was recorded: its rows go back to `pending` now rather
                    // than waiting, `started`, for the sync timeout.
                    let ids: Vec<_> = group.iter().map(|(d, id, _)| (*d, *id)).collect();
                    self.release_after_failed_recording(&ids, claimed_at, &e);
                    failed.get_or_insert(e);
                }
            },
        );
        match failed {
            Some(e) => Err(e),
            None => Ok(processed),
        }
    }

    /// Records every claimed row as failed with `message` (normal backoff): the secondary is
    /// halted, nothing was downloaded.
    fn fail_claims(
        &self,
        claimed: &[(&'static ReplicableDescriptor, i64)],
        claimed_at: DateTime<Utc>,
        message: &str,
    ) -> Result<(), SecondaryError> {
        let now = self.now();
        let retry_at = self.retry_at(now);
        let outcome = SyncOutcome::Failed {
            message: message.to_owned(),
            missing_on_primary: false,
        };
        let mut conn = self.tracking.get()?;
        for (d, id) in claimed {
            registry::Registry::of(d)
                .record_sync_claimed(&mut conn, *id, claimed_at, &outcome, &retry_at, now)?;
        }
        Ok(())
    }

    /// The safety guards on a pass's outcomes: when the primary is no longer the one followed,
    /// orphans are kept and nothing is marked missing; per type, `missing_on_primary` marks
    /// that would take the marked rows over the mass-removal limit become plain failures.
    ///
    /// Outcomes arrive in groups; `refused_before` counts, per type, the marks this pass already
    /// refused, so the limit is judged on what the whole pass would mark.
    fn guard_outcomes(
        &self,
        results: Vec<(&'static ReplicableDescriptor, i64, Done)>,
        refused_before: &mut BTreeMap<&'static str, u64>,
    ) -> Result<Vec<(&'static ReplicableDescriptor, i64, Done)>, SecondaryError> {
        let is_missing = |done: &Done| {
            matches!(
                done,
                Done::Outcome(
                    SyncOutcome::Failed {
                        missing_on_primary: true,
                        ..
                    },
                    _
                )
            )
        };
        let destructive = results
            .iter()
            .any(|(_, _, done)| *done == Done::Orphan || is_missing(done));
        // Types whose files the primary served again resolve an earlier refusal.
        for (d, _, _) in &results {
            if !results
                .iter()
                .any(|(e, _, done)| e.name == d.name && is_missing(done))
            {
                self.clear_refusal(d, RemovalKind::MissingOnPrimary);
            }
        }
        if !destructive {
            return Ok(results);
        }
        let halted = !self.may_remove()?;
        let mut refused: BTreeSet<&'static str> = BTreeSet::new();
        let mut new_marks: BTreeMap<&'static str, (&'static ReplicableDescriptor, Vec<i64>)> =
            BTreeMap::new();
        for (d, id, done) in &results {
            if is_missing(done) {
                new_marks
                    .entry(d.name)
                    .or_insert((d, Vec::new()))
                    .1
                    .push(*id);
            }
        }
        for (d, ids) in new_marks.into_values() {
            let mut conn = self.tracking.get()?;
            let registry = registry::Registry::of(d);
            let counts = registry.counts(&mut conn)?;
            let already = counts.missing_on_primary.max(0) as u64;
            // A row marked at an earlier attempt and missing again is in `already`: only the
            // rows not yet marked are new marks (else one missing file trips the guard on its
            // second retry).
            let mut marks = 0;
            for id in ids {
                let marked = registry
                    .get_by_model_id(&mut conn, id)?
                    .is_some_and(|r| r.missing_on_primary);
                marks += u64::from(!marked);
            }
            if halted
                || !self.removal_allowed(
                    d,
                    RemovalKind::MissingOnPrimary,
                    already + refused_before.get(d.name).copied().unwrap_or(0) + marks,
                    counts.registry.max(0) as u64,
                )
            {
                refused.insert(d.name);
                *refused_before.entry(d.name).or_default() += marks;
            }
        }
        let kept = |what: &str| {
            Done::Outcome(
                SyncOutcome::Failed {
                    message: format!(
                        "{what}; not acted on: {}",
                        if halted {
                            "the secondary is halted"
                        } else {
                            "mass-removal guard"
                        }
                    ),
                    missing_on_primary: false,
                },
                None,
            )
        };
        Ok(results
            .into_iter()
            .map(|(d, id, done)| {
                let done = match done {
                    Done::Orphan if halted => kept("The record is not on the Geo primary site"),
                    done if is_missing(&done) && refused.contains(d.name) => {
                        kept("The file is missing on the Geo primary site")
                    }
                    done => done,
                };
                (d, id, done)
            })
            .collect())
    }
}

impl super::SecondaryConfig {
    /// Sets [`sync_timeout`](super::SecondaryConfig::sync_timeout), the no-progress timeout of
    /// a download (the same setting, named for what it means).
    pub fn sync_no_progress_timeout(self, timeout: chrono::Duration) -> Self {
        self.sync_timeout(timeout)
    }
}
