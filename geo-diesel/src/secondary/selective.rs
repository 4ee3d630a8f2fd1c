//! Selective sync on the secondary ([`geo_core::selective`]): what the backfill lists.
//!
//! The selection is [`SecondaryConfig::selective_sync`](super::SecondaryConfig). Three passes
//! honour it and the rest follow from the registries they keep:
//!
//! - the log cursor skips, and counts (`skipped_unselected`), events of records outside it
//!   ([`crate::cursor::LogCursor::selection`]);
//! - the backfill lists only selected ids of a type with a partition field
//!   ([`PrimarySource::model_ids_in_partitions`](geo_core::source::PrimarySource)): newly
//!   selected records are missing rows it creates, deselected ones are orphans it removes with
//!   their files when the sweep ends — under the mass-removal guard, like every orphan;
//! - sync, verification, status, metrics and GraphQL read the registries, which then hold only
//!   selected records.
//!
//! A selection change that would remove more than `max_removal_share` of a type's rows is
//! refused like any mass removal (status exits 1 and says so; nothing is removed until the
//! operator runs `backfill --allow-mass-removal` with the new selection). GitLab removes
//! deselected data without asking; a mistyped `--selective-sync` must not wipe a tenant.

use std::ops::RangeInclusive;

use geo_core::ReplicableDescriptor;
use geo_core::selective::Selection;
use geo_core::source::SourceError;

use super::Secondary;

impl Secondary {
    /// This secondary's selective sync.
    pub fn selection(&self) -> &Selection {
        &self.config.selective_sync
    }

    /// The primary's ids of `d` in `range` that this secondary replicates: every id, or only
    /// those of selected partitions for a type with a partition field.
    pub(super) fn listed_ids(
        &self,
        d: &'static ReplicableDescriptor,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        match self.selection().partitions_of(d) {
            None => self.source.model_ids(d.name, range),
            Some(keys) => self.source.model_ids_in_partitions(d.name, range, keys),
        }
    }
}
