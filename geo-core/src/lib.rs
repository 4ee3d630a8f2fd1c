//! # geo-core
//!
//! The vocabulary and pure logic of Geo for Rust: replicable descriptors and their discovery,
//! the replicator traits, the replication and verification state machines, backoff, streaming
//! checksums, the blob store, and the [`PrimarySource`](source::PrimarySource) trait. No database
//! and no network: those live in `geo-diesel` and `geo-node`.

pub mod replicable;
pub mod replicator;
pub mod safety;
pub mod state;
pub mod verification;

pub mod backoff;
pub mod blob_store;
pub mod buffer;
pub mod checksum;
pub mod clock;
pub mod event;
pub mod observe;
pub mod selective;
pub mod source;
pub mod status;
pub mod transitions;
pub use geo_schema as schema;

pub use replicable::{
    Backend, EventCapture, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode, check_replicables, find_replicable, replicables,
};
pub use replicator::{BlobReplicator, Replicable, Replicator};
pub use state::{ReplicationState, VerificationState};
pub use verification::{VerificationFields, VerificationRecord};

pub use backoff::{BackoffCap, next_retry_time};
pub use blob_store::{BlobError, BlobPath, BlobStore, LocalBlobStore};
pub use checksum::{
    Checksum, ChecksumAlgorithm, ChecksumWriter, checksum_bytes, checksum_file, checksum_reader,
};
pub use clock::{Clock, Env, ManualClock, RandomSource, SystemClock};
pub use event::{BadEvent, Event, EventName, EventPayload, ParsedEvent, parse_event};
pub use selective::Selection;
pub use source::{BlobStream, PrimaryChecksum, SourceError};
pub use status::ReplicableStatus;
pub use transitions::{Change, Claim, RegistryFields, SyncFailure, truncate_failure};

/// Re-exports used by code that `#[replicable]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::replicable::Registration;
    pub use ::inventory;
}
