//! Selective sync: which records a secondary replicates.
//!
//! A type whose model has a `#[replicable(partition)]` field (a tenant, a namespace: an integer
//! column, [`Tables::partition`](crate::Tables::partition)) can be replicated in part: a
//! secondary started with `--selective-sync 3,7,12` holds only the records whose partition key
//! is 3, 7 or 12. Types without a partition field are replicated whole, whatever the selection.
//! A record whose partition is `NULL` (an `Option` field holding `None`) is in no partition: only
//! a secondary without a selection replicates it.
//!
//! [`Selection`] is the one place that decides: the log cursor asks
//! [`Selection::admits_event`], the backfill lists the primary's ids through
//! [`Selection::partitions_of`] (so records leaving the selection become orphans it removes,
//! under the mass-removal guard), and status and verification read the registries the two keep.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::event::EventName;
use crate::replicable::ReplicableDescriptor;

/// The partitions a secondary replicates: everything (the default), or a set of partition keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `None`: everything; `Some`: only these keys (never empty).
    partitions: Option<BTreeSet<i64>>,
}

impl Selection {
    /// Every record of every type (no selective sync).
    pub fn all() -> Self {
        Selection::default()
    }

    /// Only the records whose partition key is one of `keys`, for types with a partition field.
    /// No keys at all means everything, as an empty `--selective-sync` does.
    pub fn only(keys: impl IntoIterator<Item = i64>) -> Self {
        let set: BTreeSet<i64> = keys.into_iter().collect();
        Selection {
            partitions: (!set.is_empty()).then_some(set),
        }
    }

    /// Whether this selects everything.
    pub fn is_all(&self) -> bool {
        self.partitions.is_none()
    }

    /// The selected keys, or `None` for everything.
    pub fn keys(&self) -> Option<&BTreeSet<i64>> {
        self.partitions.as_ref()
    }

    /// The keys that filter `d`'s records: `None` when every record of `d` is replicated (no
    /// selection, or `d` has no partition field).
    pub fn partitions_of(&self, d: &ReplicableDescriptor) -> Option<&BTreeSet<i64>> {
        d.tables.partition.and(self.partitions.as_ref())
    }

    /// Whether a record of `d` with partition key `partition` (`None`: `NULL`) is selected.
    pub fn admits(&self, d: &ReplicableDescriptor, partition: Option<i64>) -> bool {
        match self.partitions_of(d) {
            None => true,
            Some(keys) => partition.is_some_and(|k| keys.contains(&k)),
        }
    }

    /// Whether the log cursor applies an event `name` of `d` whose payload said `partition`
    /// (`None`: the payload did not say, as events written before the type had a partition
    /// field; `Some(None)`: the record's partition is `NULL`).
    ///
    /// `deleted` is always applied (GitLab's rule: every node handles deletes; for a record
    /// never replicated here it changes nothing). An event that does not say its partition is
    /// applied too: skipping it could lose an update, while a record replicated needlessly is
    /// removed by the next backfill sweep, which lists only selected ids.
    pub fn admits_event(
        &self,
        d: &ReplicableDescriptor,
        name: EventName,
        partition: Option<Option<i64>>,
    ) -> bool {
        match (name, partition) {
            (EventName::Deleted, _) | (_, None) => true,
            (_, Some(p)) => self.admits(d, p),
        }
    }
}

impl fmt::Display for Selection {
    /// `3,7,12`, or the empty string for everything (the form `--selective-sync` takes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(keys) = &self.partitions {
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}")?;
            }
        }
        Ok(())
    }
}

/// A `--selective-sync` value that is not a comma-separated list of integers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "selective sync: `{item}` is not a partition key; expected integers separated by commas, e.g. `3,7,12` (empty: everything)"
)]
pub struct BadSelection {
    /// The item that did not parse.
    pub item: String,
}

impl FromStr for Selection {
    type Err = BadSelection;

    /// Parses `3,7,12` (spaces around items allowed; an empty string selects everything).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Selection::all());
        }
        s.split(',')
            .map(|item| {
                item.trim().parse::<i64>().map_err(|_| BadSelection {
                    item: item.trim().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Selection::only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicable::{EventCapture, Migration, MigrationSet, Strategy, Tables};
    use crate::replicable::{ReplicableDescriptor, VerificationMode};

    const NO_SQL: Migration = Migration { up: "", down: "" };

    const fn descriptor(partition: Option<&'static str>) -> ReplicableDescriptor {
        ReplicableDescriptor {
            name: "widget",
            plural: "widgets",
            type_name: "Widget",
            strategy: Strategy::Blob,
            verification: VerificationMode::None,
            enabled_by_default: true,
            events: EventCapture::Triggers,
            tables: Tables {
                model: "widgets",
                model_id: "id",
                model_file: "file_path",
                registry: "widget_registry",
                registry_model_id: "widget_id",
                verification: None,
                partition,
            },
            migrations: MigrationSet {
                sqlite_primary: NO_SQL,
                sqlite_secondary: NO_SQL,
                postgres_primary: NO_SQL,
                postgres_secondary: NO_SQL,
            },
        }
    }

    static PARTITIONED: ReplicableDescriptor = descriptor(Some("tenant_id"));
    static WHOLE: ReplicableDescriptor = descriptor(None);

    #[test]
    fn parses_and_prints_the_flag_form() {
        let s: Selection = " 12, 3,7 ,3".parse().unwrap();
        assert_eq!(s.to_string(), "3,7,12");
        assert_eq!(s.keys().map(|k| k.len()), Some(3));
        assert!("".parse::<Selection>().unwrap().is_all());
        assert_eq!(Selection::only([]), Selection::all());
        let e = "3,x,7".parse::<Selection>().unwrap_err();
        assert_eq!(e.item, "x");
        assert!(e.to_string().contains("`x` is not a partition key"), "{e}");
        assert!("3,,7".parse::<Selection>().is_err());
    }

    #[test]
    fn filters_only_types_with_a_partition() {
        let s = Selection::only([3, 7]);
        assert_eq!(s.partitions_of(&WHOLE), None);
        assert!(s.partitions_of(&PARTITIONED).is_some());
        assert!(s.admits(&PARTITIONED, Some(3)));
        assert!(!s.admits(&PARTITIONED, Some(4)));
        assert!(!s.admits(&PARTITIONED, None), "NULL is in no partition");
        assert!(s.admits(&WHOLE, Some(4)) && s.admits(&WHOLE, None));
        let all = Selection::all();
        assert!(all.admits(&PARTITIONED, Some(4)) && all.admits(&PARTITIONED, None));
    }

    #[test]
    fn events_outside_are_refused_but_deletes_and_unknowns_pass() {
        let s = Selection::only([3]);
        let d = &PARTITIONED;
        assert!(s.admits_event(d, EventName::Created, Some(Some(3))));
        assert!(!s.admits_event(d, EventName::Created, Some(Some(4))));
        assert!(!s.admits_event(d, EventName::Updated, Some(None)));
        assert!(!s.admits_event(d, EventName::ChecksumSucceeded, Some(Some(4))));
        assert!(s.admits_event(d, EventName::Deleted, Some(Some(4))));
        assert!(s.admits_event(d, EventName::Updated, None));
    }
}
