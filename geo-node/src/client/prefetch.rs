//! The blobs of `retrieve_batch` answers that [`HttpSource`](super::HttpSource) holds for the
//! downloads that follow: bounded by [`PREFETCH_LIMIT`] bytes and [`PREFETCH_TTL`], each handed
//! out once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::auth::mac::UnauthenticChecksum;
use bytes::Bytes;
use geo_diesel::geo_core::checksum::Checksum;

/// Most bytes of prefetched blobs held in memory (a batch beyond it leaves the rest to
/// `retrieve`).
pub const PREFETCH_LIMIT: usize = 32 * 1024 * 1024;

/// How long a prefetched blob waits for the sync pass that asked for it; after that it is
/// dropped and the blob is fetched again.
pub const PREFETCH_TTL: Duration = Duration::from_secs(10);

/// What a `retrieve_batch` answer said about one record, kept until its download.
pub(super) enum Prefetched {
    /// The bytes and the checksum they must have.
    Blob { checksum: Checksum, data: Bytes },
    /// The file is missing on the primary.
    Missing,
    /// The entry's checksum came without a valid MAC: the download fails.
    Refused {
        /// The request that brought it.
        what: String,
        /// Why the checksum is refused.
        why: UnauthenticChecksum,
    },
}

pub(super) struct PrefetchEntry {
    pub(super) path: String,
    pub(super) at: Instant,
    pub(super) what: Prefetched,
}

impl PrefetchEntry {
    pub(super) fn bytes(&self) -> usize {
        match &self.what {
            Prefetched::Blob { data, .. } => data.len(),
            Prefetched::Missing | Prefetched::Refused { .. } => 0,
        }
    }
}

/// Small blobs fetched in a batch, keyed by (replicable, id), bounded by [`PREFETCH_LIMIT`].
#[derive(Default)]
pub(super) struct Prefetch {
    pub(super) entries: HashMap<(String, i64), PrefetchEntry>,
    pub(super) bytes: usize,
}

impl Prefetch {
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&(String, i64), &PrefetchEntry) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let kept = keep(k, e);
            if !kept {
                freed += e.bytes();
            }
            kept
        });
        self.bytes -= freed;
    }

    pub(super) fn insert(&mut self, name: &str, id: i64, entry: PrefetchEntry) {
        if self.bytes + entry.bytes() > PREFETCH_LIMIT {
            return;
        }
        self.bytes += entry.bytes();
        if let Some(old) = self.entries.insert((name.to_owned(), id), entry) {
            self.bytes -= old.bytes();
        }
    }

    /// Takes the entry of (name, id) when it is fresh and, if `path` is given, for that path.
    pub(super) fn take(
        &mut self,
        name: &str,
        id: i64,
        path: Option<&str>,
    ) -> Option<PrefetchEntry> {
        let e = self.entries.remove(&(name.to_owned(), id))?;
        self.bytes -= e.bytes();
        (e.at.elapsed() < PREFETCH_TTL && path.is_none_or(|p| p == e.path)).then_some(e)
    }
}
