//! Test doubles around a [`PrimarySource`]: an [`Interceptor`] changes what it needs (reading
//! events, opening a blob) and [`Intercepted`] delegates everything else to the real source.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::RangeInclusive;
use std::sync::Arc;

use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};

/// What [`PrimarySource::open_blob`] returns.
pub type Opened = Result<BlobStream, SourceError>;

/// What [`PrimarySource::events_after`] returns.
pub type Events = Result<Vec<Event>, SourceError>;

/// What a test double does differently from the source it wraps; every method defaults to
/// asking `inner`.
pub trait Interceptor: Send + Sync {
    /// [`PrimarySource::events_after`].
    fn events_after(&self, inner: &dyn PrimarySource, after_id: i64, limit: usize) -> Events {
        inner.events_after(after_id, limit)
    }

    /// [`PrimarySource::primary_identity`] (also what the default `event_feed` carries).
    fn primary_identity(
        &self,
        inner: &dyn PrimarySource,
    ) -> Result<Option<geo_diesel::geo_core::source::PrimaryIdentity>, SourceError> {
        inner.primary_identity()
    }

    /// [`PrimarySource::open_blob`] (also reached through the default `open_blob_at`).
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        inner.open_blob(replicable, id)
    }
}

/// A [`PrimarySource`] that asks its [`Interceptor`] for events and blobs and `inner` for
/// everything else.
pub struct Intercepted<I> {
    inner: Arc<dyn PrimarySource>,
    interceptor: I,
}

impl<I: Interceptor + 'static> Intercepted<I> {
    /// `inner`, changed by `interceptor`.
    pub fn new(inner: Arc<dyn PrimarySource>, interceptor: I) -> Arc<Self> {
        Arc::new(Intercepted { inner, interceptor })
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }
}

impl<I: Interceptor> PrimarySource for Intercepted<I> {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.interceptor
            .events_after(self.inner.as_ref(), after_id, limit)
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids)
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        self.inner.max_event_id()
    }
    fn primary_identity(
        &self,
    ) -> Result<Option<geo_diesel::geo_core::source::PrimaryIdentity>, SourceError> {
        self.interceptor.primary_identity(self.inner.as_ref())
    }
    // `event_feed` is the trait's default: the events through the interceptor's
    // `events_after`, then the inner source's identity.
    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        self.inner.model_ids(replicable, range)
    }
    fn model_ids_in_partitions(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
        partitions: &std::collections::BTreeSet<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        self.inner
            .model_ids_in_partitions(replicable, range, partitions)
    }
    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
        self.inner.max_model_id(replicable)
    }
    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        self.inner.primary_checksums(replicable, ids)
    }
    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
        self.inner.blob_path(replicable, id)
    }
    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        self.interceptor
            .open_blob(self.inner.as_ref(), replicable, id)
    }
}

/// A one-shot action of a [`HookedReader`].
pub type Action = Box<dyn FnOnce() + Send>;

/// A blob reader that runs an action before its first read and another when it is dropped
/// (the download ends, finished or not).
pub struct HookedReader {
    inner: Box<dyn Read + Send>,
    before_first_read: Option<Action>,
    on_drop: Option<Action>,
}

impl HookedReader {
    /// `inner`, with no actions yet.
    pub fn new(inner: Box<dyn Read + Send>) -> Self {
        HookedReader {
            inner,
            before_first_read: None,
            on_drop: None,
        }
    }

    /// Runs `f` once, before the first read.
    pub fn before_first_read(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.before_first_read = Some(Box::new(f));
        self
    }

    /// Runs `f` when the reader is dropped.
    pub fn on_drop(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }

    /// `blob` with this reader's actions around its bytes.
    pub fn wrap(blob: BlobStream, f: impl FnOnce(Self) -> Self) -> BlobStream {
        BlobStream {
            reader: Box::new(f(HookedReader::new(blob.reader))),
            size: blob.size,
            checksum: blob.checksum,
        }
    }
}

impl Read for HookedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(f) = self.before_first_read.take() {
            f();
        }
        self.inner.read(buf)
    }
}

impl Drop for HookedReader {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}
