//! Feature flags: `geo_<name>_replication` turns replication of one type on or off.
//!
//! A flag's default is the descriptor's `enabled_by_default`; an override (set by an operator,
//! persisted by geo-diesel in `geo_feature_flags`) wins over the default.

use std::collections::BTreeMap;

use crate::replicable::ReplicableDescriptor;

/// The name of the replication flag of the replicable called `replicable_name`:
/// `geo_<name>_replication`.
pub fn replication_flag_name(replicable_name: &str) -> String {
    format!("geo_{replicable_name}_replication")
}

/// Flag overrides held in memory, keyed by flag name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureFlags {
    overrides: BTreeMap<String, bool>,
}

impl FeatureFlags {
    /// No overrides: every flag has its default.
    pub fn new() -> Self {
        FeatureFlags::default()
    }

    /// Overrides the flag `name`.
    pub fn set(&mut self, name: impl Into<String>, enabled: bool) {
        self.overrides.insert(name.into(), enabled);
    }

    /// Removes the override of `name`, returning it; the flag goes back to its default.
    pub fn clear(&mut self, name: &str) -> Option<bool> {
        self.overrides.remove(name)
    }

    /// The override of `name`, if any.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.overrides.get(name).copied()
    }

    /// Whether the flag `name` is on, given its `default`.
    pub fn is_on(&self, name: &str, default: bool) -> bool {
        self.get(name).unwrap_or(default)
    }

    /// Whether replication of `descriptor`'s type is on: the override of
    /// `geo_<name>_replication` if set, else `enabled_by_default`.
    pub fn is_enabled(&self, descriptor: &ReplicableDescriptor) -> bool {
        self.is_on(&descriptor.feature_flag(), descriptor.enabled_by_default)
    }

    /// Every override, sorted by name.
    pub fn overrides(&self) -> impl Iterator<Item = (&str, bool)> {
        self.overrides.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<S: Into<String>> FromIterator<(S, bool)> for FeatureFlags {
    fn from_iter<I: IntoIterator<Item = (S, bool)>>(iter: I) -> Self {
        FeatureFlags {
            overrides: iter.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        }
    }
}

impl<S: Into<String>> Extend<(S, bool)> for FeatureFlags {
    fn extend<I: IntoIterator<Item = (S, bool)>>(&mut self, iter: I) {
        self.overrides
            .extend(iter.into_iter().map(|(k, v)| (k.into(), v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicable::{Migration, MigrationSet, Strategy, Tables, VerificationMode};

    const M: Migration = Migration { up: "", down: "" };

    fn descriptor(name: &'static str, enabled_by_default: bool) -> ReplicableDescriptor {
        ReplicableDescriptor {
            name,
            plural: "things",
            type_name: "Thing",
            strategy: Strategy::Blob,
            verification: VerificationMode::Separate,
            enabled_by_default,
            tables: Tables {
                model: "things",
                model_id: "id",
                model_file: "file_path",
                registry: "thing_registry",
                registry_model_id: "thing_id",
                verification: None,
            },
            migrations: MigrationSet {
                sqlite_primary: M,
                sqlite_secondary: M,
                postgres_primary: M,
                postgres_secondary: M,
            },
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let on = descriptor("thing", true);
        let off = descriptor("other", false);
        let mut flags = FeatureFlags::new();
        assert!(flags.is_enabled(&on));
        assert!(!flags.is_enabled(&off));

        flags.set("geo_thing_replication", false);
        flags.set(replication_flag_name("other"), true);
        assert!(!flags.is_enabled(&on));
        assert!(flags.is_enabled(&off));
        assert_eq!(
            flags.overrides().collect::<Vec<_>>(),
            vec![
                ("geo_other_replication", true),
                ("geo_thing_replication", false)
            ]
        );

        assert_eq!(flags.clear("geo_thing_replication"), Some(false));
        assert!(flags.is_enabled(&on));
        assert_eq!(flags.clear("geo_thing_replication"), None);
    }

    #[test]
    fn flag_name_matches_descriptor() {
        assert_eq!(
            replication_flag_name("thing"),
            descriptor("thing", true).feature_flag()
        );
        let flags: FeatureFlags = [("geo_thing_replication", false)].into_iter().collect();
        assert!(!flags.is_enabled(&descriptor("thing", true)));
        assert!(flags.is_on("unrelated", true));
    }
}
