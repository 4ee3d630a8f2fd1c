//! The names a replicable type has in GraphQL and on the admin page, derived once from its
//! descriptor (GitLab's `replicable_types` JSON, which drives its whole Geo frontend).
//!
//! | descriptor | GraphQL |
//! |---|---|
//! | `type_name = "MergeRequestDiff"` | field `mergeRequestDiffRegistries`, type `MergeRequestDiffRegistry`, id field `mergeRequestDiffId` |
//! | | registry class `MERGE_REQUEST_DIFF_REGISTRY`, global ids `gid://geo/MergeRequestDiffRegistry/<id>` |
//! | on the primary | field `mergeRequestDiffRecords`, type `MergeRequestDiffRecord`, ids `gid://geo/MergeRequestDiff/<model id>` |

use geo_diesel::geo_core::ReplicableDescriptor;
use serde::{Deserialize, Serialize};

/// One replicable type as the admin page and GraphQL name it (GitLab's `replicable_types`
/// entry, with its keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplicableType {
    /// `blob`.
    pub data_type: String,
    /// `Blobs`.
    pub data_type_title: String,
    /// The replicable name, e.g. `merge_request_diff`.
    pub name: String,
    /// Its plural, e.g. `merge_request_diffs`.
    pub name_plural: String,
    /// A human title, e.g. `Merge request diff`.
    pub title: String,
    /// Its plural, e.g. `Merge request diffs`.
    pub title_plural: String,
    /// The `geoNode` connection on a secondary, e.g. `mergeRequestDiffRegistries`.
    pub graphql_field_name: String,
    /// The GraphQL object type of a registry row, e.g. `MergeRequestDiffRegistry`.
    pub graphql_registry_type: String,
    /// The `registryClass` enum value, e.g. `MERGE_REQUEST_DIFF_REGISTRY`.
    pub graphql_mutation_registry_class: String,
    /// The field holding the model record's id, e.g. `mergeRequestDiffId`.
    pub graphql_model_id_field: String,
    /// The `geoNode` connection on the primary (records and their checksums), e.g.
    /// `mergeRequestDiffRecords`.
    pub graphql_records_field_name: String,
    /// The GraphQL object type of a primary record, e.g. `MergeRequestDiffRecord`.
    pub graphql_record_type: String,
    /// The feature flag, e.g. `geo_merge_request_diff_replication`.
    pub feature_flag: String,
    /// Whether the type is replicated unless its flag says otherwise.
    pub replication_enabled: bool,
    /// Whether the type has verification.
    pub verification_enabled: bool,
}

impl ReplicableType {
    /// The names of `d`.
    pub fn of(d: &ReplicableDescriptor) -> Self {
        let pascal = d.type_name.to_owned();
        let camel = lower_first(&pascal);
        let title = humanize(d.name);
        let title_plural = humanize(d.plural);
        ReplicableType {
            data_type: d.strategy.as_str().to_owned(),
            data_type_title: format!("{}s", upper_first(d.strategy.as_str())),
            name: d.name.to_owned(),
            name_plural: d.plural.to_owned(),
            title,
            title_plural,
            graphql_field_name: format!("{camel}Registries"),
            graphql_registry_type: format!("{pascal}Registry"),
            graphql_mutation_registry_class: format!("{}_REGISTRY", screaming(&pascal)),
            graphql_model_id_field: format!("{camel}Id"),
            graphql_records_field_name: format!("{camel}Records"),
            graphql_record_type: format!("{pascal}Record"),
            feature_flag: d.feature_flag(),
            replication_enabled: d.enabled_by_default,
            verification_enabled: d.verifies(),
        }
    }

    /// Every registered replicable type, in name order.
    pub fn all() -> Vec<Self> {
        geo_diesel::geo_core::replicables()
            .into_iter()
            .map(ReplicableType::of)
            .collect()
    }

    /// The global id of registry row `id`: `gid://geo/WidgetRegistry/<id>`.
    pub fn registry_gid(&self, id: i64) -> String {
        format!("gid://geo/{}/{id}", self.graphql_registry_type)
    }

    /// The global id of the primary's record `id`: `gid://geo/Widget/<id>`.
    pub fn record_gid(&self, id: i64) -> String {
        format!("gid://geo/{}/{id}", self.pascal())
    }

    /// `Widget`.
    pub fn pascal(&self) -> &str {
        self.graphql_record_type
            .strip_suffix("Record")
            .unwrap_or(&self.graphql_record_type)
    }
}

/// A parsed global id `gid://geo/<Type>/<id>`.
pub fn parse_gid(gid: &str) -> Option<(&str, i64)> {
    let rest = gid.strip_prefix("gid://geo/")?;
    let (ty, id) = rest.split_once('/')?;
    if ty.is_empty() || !ty.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let id: i64 = id.parse().ok()?;
    (id > 0).then_some((ty, id))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `MergeRequestDiff` → `MERGE_REQUEST_DIFF`.
fn screaming(pascal: &str) -> String {
    let mut out = String::new();
    for (i, ch) in pascal.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(ch.to_uppercase());
    }
    out
}

/// `merge_request_diffs` → `Merge request diffs`.
fn humanize(snake: &str) -> String {
    upper_first(&snake.replace('_', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_conversions() {
        assert_eq!(screaming("MergeRequestDiff"), "MERGE_REQUEST_DIFF");
        assert_eq!(screaming("Widget"), "WIDGET");
        assert_eq!(lower_first("MergeRequestDiff"), "mergeRequestDiff");
        assert_eq!(humanize("merge_request_diffs"), "Merge request diffs");
    }

    #[test]
    fn global_ids() {
        assert_eq!(
            parse_gid("gid://geo/WidgetRegistry/12"),
            Some(("WidgetRegistry", 12))
        );
        for bad in [
            "gid://geo/WidgetRegistry/0",
            "gid://geo/WidgetRegistry/x",
            "gid://geo//1",
            "gid://gitlab/WidgetRegistry/1",
            "gid://geo/Widget-Registry/1",
            "12",
        ] {
            assert_eq!(parse_gid(bad), None, "{bad}");
        }
    }
}
