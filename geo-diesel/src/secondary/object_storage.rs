//! GitLab's `sync_object_storage` switch: a secondary whose blob store is object storage, with
//! the switch off, leaves the copying to the storage provider's own replication. Its sync
//! downloads nothing; it tracks the record and verifies the object already in its store:
//!
//! - the object is there and hashes to the primary's checksum (or the primary has none yet:
//!   the verification pass compares later) → synced;
//! - no object at the path → a failure, retried with the usual backoff (the provider may not
//!   have copied it yet);
//! - an object with another checksum → a failure recording the mismatch, retried likewise.
//!
//! GitLab leaves such blobs out of the secondary's scope altogether (`object_storage_scope`);
//! here they stay tracked, so status and verification cover what the provider replicated.

use std::sync::atomic::Ordering;

use geo_core::ReplicableDescriptor;
use geo_core::blob_store::BlobPath;
use geo_core::checksum::Checksum;

use super::Secondary;
use super::sync::Done;
use crate::registry::SyncOutcome;

impl Secondary {
    /// Whether syncs only track and verify: the store is object storage and
    /// `sync_object_storage` is off.
    pub(super) fn tracks_only(&self) -> bool {
        !self.config.sync_object_storage && self.store.is_object_storage()
    }

    /// The store removals delete files from: none when [`tracks_only`](Self::tracks_only)
    /// (the objects are the storage provider's, and it may share them with the primary).
    pub(crate) fn file_store(&self) -> Option<&dyn geo_core::blob_store::BlobStore> {
        (!self.tracks_only()).then_some(self.store.as_ref())
    }

    /// The sync of `d` `id` when [`tracks_only`](Self::tracks_only): hashes the object at
    /// `path` in this site's store and compares it with `primary`.
    pub(super) fn verify_in_place(
        &self,
        d: &'static ReplicableDescriptor,
        id: i64,
        path: BlobPath,
        primary: Option<Checksum>,
    ) -> Done {
        let failed = |message: String| {
            Done::Outcome(
                SyncOutcome::Failed {
                    message,
                    missing_on_primary: false,
                },
                None,
            )
        };
        let local = match self.store.checksum(&path) {
            Ok((sum, _)) => sum,
            Err(e) if e.is_not_found() => {
                tracing::debug!(replicable = d.name, id, path = %path, "not in object storage yet");
                return failed(format!(
                    "The file is not in this site's object storage yet ({path}; sync_object_storage is off, so the storage provider replicates it)"
                ));
            }
            Err(e) => return failed(format!("Error verifying the file in object storage: {e}")),
        };
        if let Some(expected) = primary
            && expected != local
        {
            self.counters.mismatches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(replicable = d.name, id, path = %path, %expected, actual = %local, "the object in storage does not match the primary");
            return failed(format!(
                "Object storage checksum mismatch: expected {expected}, got {local}"
            ));
        }
        Done::Outcome(
            SyncOutcome::Synced {
                local: local.to_vec(),
                primary: primary.map(|c| c.to_vec()),
            },
            Some(path),
        )
    }
}
