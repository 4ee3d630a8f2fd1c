//! [`PrimarySource`]: everything a secondary needs to read from its primary.
//!
//! Two implementations are planned: a direct one in geo-diesel (a Diesel connection to the
//! primary database or a read replica, plus the primary's blob store: the embedded
//! single-machine mode) and an HTTP one in geo-node. The trait is synchronous because geo-diesel
//! is; the HTTP implementation blocks on its runtime. Calls that matter for throughput take many
//! ids at once ([`events_by_ids`](PrimarySource::events_by_ids),
//! [`primary_checksums`](PrimarySource::primary_checksums)).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};

use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::event::Event;
pub use crate::safety::PrimaryIdentity;
use crate::state::VerificationState;

/// Boxed error carried by [`SourceError::Transient`] and [`SourceError::Other`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed call to a primary. The variants decide what the secondary does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The primary does not know this replicable name (a newer or older build).
    #[error("the primary does not replicate {replicable:?}")]
    UnknownReplicable {
        /// The replicable name asked for.
        replicable: String,
    },
    /// The model record does not exist on the primary (deleted since the event); the registry
    /// row is an orphan that the backfill removes.
    #[error("{replicable} {id} does not exist on the primary")]
    RecordNotFound {
        /// The replicable name.
        replicable: String,
        /// The model record id.
        id: i64,
    },
    /// The record exists but its file is gone on the primary (GitLab's `FILE_NOT_FOUND`): mark
    /// the registry failed with `missing_on_primary` (4 h backoff cap).
    #[error("the file of {replicable} {id} is missing on the primary")]
    MissingOnPrimary {
        /// The replicable name.
        replicable: String,
        /// The model record id.
        id: i64,
    },
    /// The primary refused our credentials.
    #[error("the primary refused the request: {message}")]
    Unauthorized {
        /// What the primary said.
        message: String,
    },
    /// A failure that may go away by itself (network, timeout, database busy): retry later.
    #[error("{what}: {source}")]
    Transient {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The primary has pruned events this secondary still needs: every event up to
    /// `pruned_through` is gone, and the secondary had consumed only up to `consumed` (its
    /// cursor, or the lowest open gap minus one). Nothing after the point asked for can be
    /// trusted to be complete: the secondary recovers with a full backfill and reverification
    /// and continues from the primary's current point (`Secondary`'s cursor pass does).
    #[error(
        "the primary pruned its events through id {pruned_through}; this secondary had consumed only up to {consumed}"
    )]
    EventsPruned {
        /// The highest event id the primary has pruned.
        pruned_through: i64,
        /// The point below which the secondary needed nothing, as it told the primary.
        consumed: i64,
    },
    /// Any other failure (bad data from the primary, a bug).
    #[error("{what}: {source}")]
    Other {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl SourceError {
    /// A [`SourceError::Transient`].
    pub fn transient(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        SourceError::Transient {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A [`SourceError::Other`].
    pub fn other(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        SourceError::Other {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Whether the file is missing on the primary (sets the registry's `missing_on_primary`).
    pub fn is_missing_on_primary(&self) -> bool {
        matches!(self, SourceError::MissingOnPrimary { .. })
    }

    /// Whether retrying soon may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient { .. })
    }

    /// Whether the primary pruned events the secondary still needs
    /// ([`SourceError::EventsPruned`]).
    pub fn is_events_pruned(&self) -> bool {
        matches!(self, SourceError::EventsPruned { .. })
    }
}

/// The primary's verification state of one record, with its checksum and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryChecksum {
    /// The primary's verification state of the record.
    pub state: VerificationState,
    /// The algorithm the checksum was made with.
    pub algorithm: ChecksumAlgorithm,
    /// The checksum, present when `state` is `succeeded`.
    pub checksum: Option<Checksum>,
    /// When the primary verified it.
    pub verified_at: Option<DateTime<Utc>>,
}

impl PrimaryChecksum {
    /// The checksum when the primary has verified the record, `None` otherwise (the secondary
    /// then sets its verification to `disabled`).
    pub fn verified_checksum(&self) -> Option<&Checksum> {
        match self.state {
            VerificationState::Succeeded => self.checksum.as_ref(),
            _ => None,
        }
    }
}

/// One read of the primary's event feed: the events and, read in the same snapshot, what the
/// primary publishes about its database, so a secondary checks the identity and high-water
/// mark of exactly the primary these events came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFeed {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// The primary's identity and event-id high-water mark; `None` when the source publishes
    /// none.
    pub primary: Option<PrimaryIdentity>,
}

/// A blob being read from the primary.
pub struct BlobStream {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// The size, when the primary announced it.
    pub size: Option<u64>,
    /// The checksum, when the primary sent it along (compare it before renaming into place).
    pub checksum: Option<Checksum>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .field("checksum", &self.checksum)
            .finish_non_exhaustive()
    }
}

/// A blob being read from an offset ([`PrimarySource::open_blob_from`]).
#[derive(Debug)]
pub struct RangedBlobStream {
    /// The bytes from [`start`](RangedBlobStream::start) on; its `size` counts those bytes and
    /// its `checksum` is the whole blob's.
    pub stream: BlobStream,
    /// The blob's offset of the first byte the reader yields: the offset asked for, or 0 when
    /// the source sends the whole blob instead (it cannot resume, or the blob is shorter).
    pub start: u64,
}

/// What a secondary reads from its primary. Blocking; implementations must be shareable
/// between worker threads.
pub trait PrimarySource: Send + Sync {
    /// Up to `limit` events with `id > after_id`, in id order.
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError>;

    /// Tells the source how far this secondary has consumed the event log: it needs no event
    /// with an id up to `consumed` (its cursor, or the lowest open gap minus one:
    /// geo-diesel's `CursorState::safe_position`). The log cursor calls it before each feed read; a source
    /// that talks to a primary passes it on with the next event-feed request (the primary
    /// prunes only what every secondary it knows consumed) and answers
    /// [`SourceError::EventsPruned`] when the primary already pruned past it. The default
    /// ignores it.
    fn note_consumed(&self, consumed: i64) {
        let _ = consumed;
    }

    /// The primary's database identity and event-id high-water mark; `None` when this source
    /// does not publish them (the default).
    fn primary_identity(&self) -> Result<Option<PrimaryIdentity>, SourceError> {
        Ok(None)
    }

    /// Up to `limit` events with `id > after_id` together with
    /// [`primary_identity`](PrimarySource::primary_identity), read so that the high-water mark
    /// is at least every id returned. The default reads the events first, then the identity.
    fn event_feed(&self, after_id: i64, limit: usize) -> Result<EventFeed, SourceError> {
        let events = self.events_after(after_id, limit)?;
        let primary = self.primary_identity()?;
        Ok(EventFeed { events, primary })
    }

    /// [`event_feed`](PrimarySource::event_feed), but when no event is after `after_id` the
    /// call waits up to `wait` for one to be committed and answers as soon as it is (a long
    /// poll); at the deadline it answers with no events. A source that cannot wait answers at
    /// once: the default calls [`event_feed`](PrimarySource::event_feed), and a caller that
    /// gets an empty answer much sooner than `wait` should sleep before asking again.
    fn event_feed_wait(
        &self,
        after_id: i64,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<EventFeed, SourceError> {
        let _ = wait;
        self.event_feed(after_id, limit)
    }

    /// The events among `ids` that exist now, in id order (gap filling). Ids that do not exist
    /// are simply absent.
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError>;

    /// The highest event id, or `None` when the log is empty (a new cursor starts there).
    fn max_event_id(&self) -> Result<Option<i64>, SourceError>;

    /// The ids of `replicable`'s records within `range`, ascending (backfill).
    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError>;

    /// The ids of `replicable`'s records within `range` whose partition key
    /// (`#[replicable(partition)]`) is one of `partitions`, ascending: the backfill of a
    /// secondary with selective sync ([`crate::selective`]). A record whose partition is `NULL`
    /// is never listed; a type without a partition field lists every id of the range.
    ///
    /// The default cannot filter and fails, so that a source that does not know selective sync
    /// never makes a secondary replicate (or keep) what it did not select; the direct and HTTP
    /// sources override it.
    fn model_ids_in_partitions(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
        partitions: &std::collections::BTreeSet<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        let _ = (range, partitions);
        Err(SourceError::other(
            format!("listing the {replicable} ids of selected partitions"),
            "this primary source cannot filter by partition (selective sync)",
        ))
    }

    /// The highest record id of `replicable`, or `None` when it has no records.
    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError>;

    /// The primary's verification state and checksum of one record; `None` when the record
    /// has no verification state (not yet created, or the type does not verify).
    fn primary_checksum(
        &self,
        replicable: &str,
        id: i64,
    ) -> Result<Option<PrimaryChecksum>, SourceError> {
        Ok(self.primary_checksums(replicable, &[id])?.remove(&id))
    }

    /// The primary's verification state of many records at once, keyed by id; ids without a
    /// state are absent.
    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError>;

    /// The record's blob path relative to the primary's blob store root; `None` when the record
    /// does not exist.
    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError>;

    /// Opens the record's blob. Fails with [`SourceError::RecordNotFound`] when the record is
    /// gone and [`SourceError::MissingOnPrimary`] when the record exists but its file does not.
    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError>;

    /// The size of the record's blob when the source already holds it (a blob that came with
    /// a [`blob_paths`](PrimarySource::blob_paths) answer), without asking the primary; `None`
    /// otherwise (the default). A download of a blob known to be small skips the look for a
    /// resumable temporary file, which only large downloads leave.
    fn held_size(&self, replicable: &str, id: i64) -> Option<u64> {
        let _ = (replicable, id);
        None
    }

    /// The blob paths of many records at once, keyed by id; records that do not exist are
    /// absent. The default asks [`blob_path`](PrimarySource::blob_path) once per id.
    fn blob_paths(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, String>, SourceError> {
        let mut out = BTreeMap::new();
        for &id in ids {
            if let Some(path) = self.blob_path(replicable, id)? {
                out.insert(id, path);
            }
        }
        Ok(out)
    }

    /// Opens the blob of a record whose path the caller just read with
    /// [`blob_paths`](PrimarySource::blob_paths), sparing a second lookup where the source can.
    /// The default calls [`open_blob`](PrimarySource::open_blob).
    fn open_blob_at(
        &self,
        replicable: &str,
        id: i64,
        path: &crate::blob_store::BlobPath,
    ) -> Result<BlobStream, SourceError> {
        let _ = path;
        self.open_blob(replicable, id)
    }

    /// Opens the blob of a record at `path` (as for [`open_blob_at`](PrimarySource::open_blob_at))
    /// from byte `offset`, to resume an interrupted download. The answer says where its bytes
    /// start: `offset`, or 0 when the source sends the whole blob (the caller then starts over).
    /// The default opens the blob and reads and discards the first `offset` bytes; a source
    /// that can seek or ask for a `Range` overrides it.
    fn open_blob_from(
        &self,
        replicable: &str,
        id: i64,
        path: &crate::blob_store::BlobPath,
        offset: u64,
    ) -> Result<RangedBlobStream, SourceError> {
        let mut stream = self.open_blob_at(replicable, id, path)?;
        if offset == 0 || stream.size.is_some_and(|n| n < offset) {
            return Ok(RangedBlobStream { stream, start: 0 });
        }
        let skipped = std::io::copy(&mut (&mut stream.reader).take(offset), &mut std::io::sink())
            .map_err(|e| {
            SourceError::transient(format!("reading the file of {replicable} {id}"), e)
        })?;
        if skipped < offset {
            // Shorter than the offset: the blob changed; send it whole.
            let stream = self.open_blob_at(replicable, id, path)?;
            return Ok(RangedBlobStream { stream, start: 0 });
        }
        stream.size = stream.size.map(|n| n - offset);
        Ok(RangedBlobStream {
            stream,
            start: offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::checksum_bytes;

    #[test]
    fn verified_checksum_only_when_succeeded() {
        let sum = checksum_bytes(b"x");
        let mut p = PrimaryChecksum {
            state: VerificationState::Succeeded,
            algorithm: ChecksumAlgorithm::Blake3,
            checksum: Some(sum),
            verified_at: None,
        };
        assert_eq!(p.verified_checksum(), Some(&sum));
        p.state = VerificationState::Failed;
        assert_eq!(p.verified_checksum(), None);
    }

    #[test]
    fn error_classification() {
        let missing = SourceError::MissingOnPrimary {
            replicable: "widget".into(),
            id: 3,
        };
        assert!(missing.is_missing_on_primary() && !missing.is_transient());
        assert_eq!(
            missing.to_string(),
            "the file of widget 3 is missing on the primary"
        );
        let t = SourceError::transient("GET /events", std::io::Error::other("reset"));
        assert!(t.is_transient() && !t.is_missing_on_primary());
        assert_eq!(t.to_string(), "GET /events: reset");
    }

    /// A source whose only real method is `primary_checksums`, to check the default
    /// single-record method delegates to it.
    struct Checksums;

    impl PrimarySource for Checksums {
        fn events_after(&self, _: i64, _: usize) -> Result<Vec<Event>, SourceError> {
            Ok(vec![])
        }
        fn events_by_ids(&self, _: &[i64]) -> Result<Vec<Event>, SourceError> {
            Ok(vec![])
        }
        fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
            Ok(None)
        }
        fn model_ids(&self, _: &str, _: RangeInclusive<i64>) -> Result<Vec<i64>, SourceError> {
            Ok(vec![])
        }
        fn max_model_id(&self, _: &str) -> Result<Option<i64>, SourceError> {
            Ok(None)
        }
        fn primary_checksums(
            &self,
            _: &str,
            ids: &[i64],
        ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
            Ok(ids
                .iter()
                .filter(|id| **id % 2 == 0)
                .map(|id| {
                    (
                        *id,
                        PrimaryChecksum {
                            state: VerificationState::Succeeded,
                            algorithm: ChecksumAlgorithm::Blake3,
                            checksum: Some(checksum_bytes(&id.to_le_bytes())),
                            verified_at: None,
                        },
                    )
                })
                .collect())
        }
        fn blob_path(&self, _: &str, _: i64) -> Result<Option<String>, SourceError> {
            Ok(None)
        }
        fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
            Err(SourceError::RecordNotFound {
                replicable: replicable.into(),
                id,
            })
        }
    }

    #[test]
    fn single_checksum_delegates_to_batch() {
        let s: &dyn PrimarySource = &Checksums;
        let two = s.primary_checksum("w", 2).unwrap().unwrap();
        assert_eq!(two.checksum, Some(checksum_bytes(&2i64.to_le_bytes())));
        assert_eq!(s.primary_checksum("w", 3).unwrap(), None);
    }
}
