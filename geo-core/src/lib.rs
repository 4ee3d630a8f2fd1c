//! # geo-core
//!
//! The vocabulary and pure logic of Geo for Rust: replicable descriptors and their discovery,
//! the replicator traits, the replication and verification state machines, backoff, streaming
//! checksums, the blob store, and the [`PrimarySource`](source::PrimarySource) trait. No database
//! and no network: those live in `geo-diesel` and `geo-node`.

pub mod replicable;
pub mod replicator;
pub mod state;
pub mod verification;

pub use replicable::{
    Backend, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode, check_replicables, find_replicable, replicables,
};
pub use replicator::{BlobReplicator, Replicable, Replicator};
pub use state::{ReplicationState, VerificationState};
pub use verification::{VerificationFields, VerificationRecord};

/// Re-exports used by code that `#[replicable]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::replicable::Registration;
    pub use ::inventory;
}
