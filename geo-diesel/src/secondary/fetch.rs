//! One download: [`Secondary::fetch`] streams a blob from the primary into the store, resuming
//! what an earlier attempt left, and the bookkeeping every download shares — the downloads in
//! flight and their last progress ([`InFlight`], read by the no-progress timeout), the reader
//! that records it ([`Tracker`]) and the download slots every scheduler pass shares ([`Slots`]).

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use geo_core::ReplicableDescriptor;
use geo_core::blob_store::{BlobError, BlobPath, ResumeKey, Written};
use geo_core::checksum::Checksum;
use geo_core::clock::Clock;
use geo_core::source::SourceError;

use super::Secondary;
use super::sync::RESUMABLE_FROM;

impl Secondary {
    /// Fetches the blob of `d` `id` into `path`, resuming what an earlier attempt left when the
    /// checksum to reach is known: the resumable temporary file of (record, checksum) is
    /// re-hashed, the source is asked for the rest from its length, and the whole is renamed
    /// into place only when it has that checksum. A source that starts over (no range support)
    /// restarts the file from 0; a resumed download whose result mismatches is tried once more
    /// from 0 at once (the prefix may have been of other content). Blobs of at least
    /// [`RESUMABLE_FROM`] bytes are written resumably from their first attempt; smaller ones
    /// with the store's plain atomic write. `wrap` wraps every reader (progress, bytes).
    /// Returns what was stored and the checksum it was compared with.
    pub(super) fn fetch(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        path: &BlobPath,
        primary: Option<Checksum>,
        tracker: &Tracker<'_>,
    ) -> Result<(Written, Option<Checksum>), Fetch> {
        let resume = |sum: &Checksum, create: bool| match self.store.resume(
            path,
            &ResumeKey::new(d.name, id, sum),
            create,
        ) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(replicable = d.name, id, path = %path, error = %e, "cannot write resumably; downloading whole");
                None
            }
        };
        // Only a download of at least RESUMABLE_FROM bytes leaves a resumable file to look for.
        let small = self
            .source
            .held_size(d.name, id)
            .is_some_and(|n| n < RESUMABLE_FROM);
        let mut partial = primary
            .as_ref()
            .filter(|_| !small)
            .and_then(|sum| resume(sum, false));
        if let (Some(p), Some(sum)) = (&partial, &primary)
            && p.offset() > 0
            && p.held_checksum() == *sum
        {
            // An earlier attempt received everything and stopped before the rename.
            let p = partial.take().expect("checked above");
            let held = p.offset();
            return Ok((p.finish(&mut std::io::empty(), held, sum)?, primary));
        }
        let offset = partial.as_ref().map_or(0, |p| p.offset());
        let mut blob = self
            .source
            .open_blob_from(d.name, id, path, offset)
            .inspect_err(|e| {
                if matches!(e, SourceError::RecordNotFound { .. })
                    && let Some(p) = partial.take()
                {
                    p.discard();
                }
            })?;
        let mut expected = blob.stream.checksum.or(primary);
        if let (Some(header), Some(sum)) = (blob.stream.checksum, primary)
            && header != sum
        {
            // The primary's content changed since the pass read its checksum: what we hold is
            // of the old content.
            tracing::info!(
                replicable = d.name,
                id,
                "the primary's checksum changed; starting over"
            );
            if let Some(p) = partial.take() {
                p.discard();
            }
            if blob.start != 0 {
                blob = self.source.open_blob_from(d.name, id, path, 0)?;
                expected = blob.stream.checksum.or(Some(header));
            }
        }
        if blob.start > 0 {
            tracing::info!(
                replicable = d.name,
                id,
                offset = blob.start,
                "resuming a download"
            );
        }
        let large = blob
            .stream
            .size
            .is_none_or(|n| n.saturating_add(blob.start) >= RESUMABLE_FROM);
        if partial.is_none()
            && large
            && let Some(sum) = &expected
        {
            partial = resume(sum, true);
            if blob.start != 0 && partial.as_ref().is_none_or(|p| p.offset() != blob.start) {
                // Not the prefix asked for: fetch it whole.
                blob = self.source.open_blob_from(d.name, id, path, 0)?;
            }
        }
        let resumed_from = blob.start;
        let written = match (partial, &expected) {
            (Some(p), Some(sum)) => {
                p.finish(&mut tracker.wrap(&mut blob.stream.reader), blob.start, sum)
            }
            _ => self.store.write(
                path,
                &mut tracker.wrap(&mut blob.stream.reader),
                expected.as_ref(),
            ),
        };
        match written {
            Err(BlobError::ChecksumMismatch { .. }) if resumed_from > 0 => {
                tracing::info!(
                    replicable = d.name,
                    id,
                    offset = resumed_from,
                    "a resumed download did not match; starting over"
                );
                let mut blob = self.source.open_blob_from(d.name, id, path, 0)?;
                let expected = blob.stream.checksum.or(primary);
                let written = match expected.as_ref().and_then(|sum| resume(sum, true)) {
                    Some(p) => p.finish(
                        &mut tracker.wrap(&mut blob.stream.reader),
                        0,
                        expected.as_ref().expect("resumable only with a checksum"),
                    ),
                    None => self.store.write(
                        path,
                        &mut tracker.wrap(&mut blob.stream.reader),
                        expected.as_ref(),
                    ),
                };
                Ok((written?, expected))
            }
            other => Ok((other?, expected)),
        }
    }
}

/// Why [`Secondary::fetch`] failed: the source or the store.
#[derive(Debug)]
pub(super) enum Fetch {
    Source(SourceError),
    Store(BlobError),
}

impl From<SourceError> for Fetch {
    fn from(e: SourceError) -> Self {
        Fetch::Source(e)
    }
}

impl From<BlobError> for Fetch {
    fn from(e: BlobError) -> Self {
        Fetch::Store(e)
    }
}

/// The downloads in flight in this process, each with the time (milliseconds since the epoch,
/// on the secondary's clock) it last received bytes: what the no-progress timeout reads
/// ([`Secondary::timeouts_pass`]). The rows a sync pass claimed and has not started yet are
/// here too ([`InFlight::queue`]), with one mark for the pass: when any of its downloads last
/// received bytes. A row queued behind long downloads is not stalled while they progress.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashMap<(&'static str, i64), Arc<AtomicI64>>>);

/// A download registered in [`InFlight`]; dropping it removes the entry.
pub(super) struct InFlightEntry<'a> {
    of: &'a InFlight,
    key: (&'static str, i64),
    /// When it last received bytes.
    pub(super) mark: Arc<AtomicI64>,
    /// The mark of the pass that queued it, if one did.
    pub(super) pass: Option<Arc<AtomicI64>>,
}

/// The rows of one sync pass registered in [`InFlight`] as queued; dropping it removes those
/// not started.
pub(super) struct Queued<'a> {
    of: &'a InFlight,
    keys: Vec<(&'static str, i64)>,
    mark: Arc<AtomicI64>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut map = self.of.lock();
        for key in &self.keys {
            if map.get(key).is_some_and(|m| Arc::ptr_eq(m, &self.mark)) {
                map.remove(key);
            }
        }
    }
}

impl Drop for InFlightEntry<'_> {
    fn drop(&mut self) {
        let mut map = self.of.lock();
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mark))
        {
            map.remove(&self.key);
        }
    }
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, i64), Arc<AtomicI64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the download of `name` `id`, started at `now`.
    pub(super) fn start(
        &self,
        name: &'static str,
        id: i64,
        now: DateTime<Utc>,
    ) -> InFlightEntry<'_> {
        let mark = Arc::new(AtomicI64::new(now.timestamp_millis()));
        // Queued by a pass: the entry held the pass's mark, which this download moves too.
        let pass = self.lock().insert((name, id), Arc::clone(&mark));
        InFlightEntry {
            of: self,
            key: (name, id),
            mark,
            pass,
        }
    }

    /// Registers the rows a sync pass claimed at `now` as queued, under one mark that every
    /// download of the pass moves when it receives bytes.
    pub(super) fn queue(
        &self,
        rows: &[(&'static ReplicableDescriptor, i64)],
        now: DateTime<Utc>,
    ) -> Queued<'_> {
        let mark = Arc::new(AtomicI64::new(now.timestamp_millis()));
        let mut map = self.lock();
        let mut keys = Vec::with_capacity(rows.len());
        for (d, id) in rows {
            let key = (d.name, *id);
            map.entry(key).or_insert_with(|| {
                keys.push(key);
                Arc::clone(&mark)
            });
        }
        drop(map);
        Queued {
            of: self,
            keys,
            mark,
        }
    }

    /// The latest progress of any download in flight here (the newest mark).
    fn newest_mark(&self) -> Option<i64> {
        self.lock()
            .values()
            .map(|m| m.load(Ordering::Relaxed))
            .max()
    }

    /// When the download of `name` `id` in this process last received bytes (or started);
    /// `None` when it is not downloading here.
    pub(super) fn last_progress(&self, name: &str, id: i64) -> Option<DateTime<Utc>> {
        let map = self.lock();
        let mark = map.iter().find(|((n, i), _)| *n == name && *i == id)?.1;
        DateTime::from_timestamp_millis(mark.load(Ordering::Relaxed))
    }
}

impl Queued<'_> {
    /// Moves the pass's mark up to the newest progress of any download in this process: its
    /// rows wait for slots that other passes' downloads hold, and are judged by those.
    pub(super) fn behind_others(&self) {
        if let Some(newest) = self.of.newest_mark() {
            self.mark.fetch_max(newest, Ordering::Relaxed);
        }
    }
}

/// The download slots of one secondary: `sync_capacity` downloads at once across every
/// scheduler pass. A download waits for a slot before it starts.
pub(super) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A slot taken from [`Slots`]; dropping it gives it back.
pub(super) struct Slot<'a>(&'a Slots);

impl Slots {
    pub(super) fn new(capacity: usize) -> Self {
        Slots {
            free: Mutex::new(capacity.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot, waiting for one; `waiting` runs about every second while it waits.
    pub(super) fn take(&self, mut waiting: impl FnMut()) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            let (guard, _) = self
                .freed
                .wait_timeout(free, std::time::Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner());
            free = guard;
            if *free == 0 {
                waiting();
            }
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// What a download's readers report to: its [`InFlight`] mark and its byte count.
#[derive(Clone, Copy)]
pub(super) struct Tracker<'a> {
    pub(super) mark: &'a AtomicI64,
    /// The mark of the pass that queued the download, moved with `mark`.
    pub(super) pass: Option<&'a AtomicI64>,
    pub(super) clock: &'a dyn Clock,
    pub(super) received: &'a std::cell::Cell<u64>,
}

impl<'a> Tracker<'a> {
    /// `inner`, reporting here.
    fn wrap<'r>(&self, inner: &'r mut Box<dyn Read + Send>) -> ProgressReader<'r, 'a> {
        ProgressReader {
            inner: &mut **inner,
            tracker: *self,
        }
    }
}

/// A source's reader that records progress in a [`Tracker`].
pub(super) struct ProgressReader<'r, 'a> {
    inner: &'r mut dyn Read,
    tracker: Tracker<'a>,
}

impl Read for ProgressReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            let t = self.tracker;
            let now = t.clock.now().timestamp_millis();
            t.mark.store(now, Ordering::Relaxed);
            if let Some(pass) = t.pass {
                pass.store(now, Ordering::Relaxed);
            }
            t.received.set(t.received.get() + n as u64);
        }
        Ok(n)
    }
}
