//! Hooks through which a runtime reports what it did to whoever measures it (geo-node's
//! Prometheus metrics), without the runtime knowing about any metrics library.

use std::time::Duration;

/// How one download ended, as reported to a [`SyncObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncResult {
    /// The file is in place and its checksum matched.
    Synced,
    /// The download failed (it is retried with backoff).
    Failed,
    /// The record no longer exists on the primary.
    Orphan,
}

/// Receives one call per finished download of a secondary.
pub trait SyncObserver: Send + Sync {
    /// `replicable` finished a download of `bytes` bytes in `elapsed` with `result`.
    fn sync_finished(
        &self,
        replicable: &'static str,
        elapsed: Duration,
        bytes: u64,
        result: SyncResult,
    );
}
