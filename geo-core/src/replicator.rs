//! The replicator traits that `#[replicable]` implements for each model.

use crate::replicable::ReplicableDescriptor;

/// A replicator: the object through which one model record takes part in replication.
///
/// `#[replicable]` on `struct Widget` generates `WidgetReplicator<'a>`, which borrows the record
/// and implements this trait (and [`BlobReplicator`] for the blob strategy).
pub trait Replicator {
    /// The static descriptor of the replicable type.
    fn descriptor(&self) -> &'static ReplicableDescriptor;

    /// The replicable name, e.g. `widget`.
    fn replicable_name(&self) -> &'static str {
        self.descriptor().name
    }

    /// The id of the model record this replicator stands for.
    fn model_record_id(&self) -> i64;

    /// The record's partition key (its `#[replicable(partition)]` field as an `i64`); `None`
    /// when the type has no partition field, or the field is an `Option` holding `None` (the
    /// record is then in no partition: only a secondary without a selection replicates it).
    fn partition(&self) -> Option<i64> {
        None
    }
}

/// A replicator whose data is one file in a blob store.
pub trait BlobReplicator: Replicator {
    /// The file's path relative to the blob store root, as stored on the model.
    fn blob_path(&self) -> &str;
}

/// A model type annotated with `#[replicable]`.
pub trait Replicable {
    /// The static descriptor of this type.
    const DESCRIPTOR: &'static ReplicableDescriptor;

    /// The generated replicator type, borrowing the record.
    type Replicator<'a>: Replicator
    where
        Self: 'a;

    /// The replicator for this record.
    fn replicator(&self) -> Self::Replicator<'_>;

    /// The record's id as an `i64`.
    fn model_record_id(&self) -> i64;
}
