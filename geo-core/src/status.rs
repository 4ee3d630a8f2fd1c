//! Per-type replication status with GitLab's field names (`GeoNodeStatus`).
//!
//! [`ReplicableStatus`] holds the ten counts of one replicable type; [`ReplicableStatus::to_json`]
//! renders them as the flat object GitLab's status API uses (`widgets_synced_count`, …) with the
//! two derived percentages, and [`ReplicableStatus::gauges`] gives the Prometheus gauge names
//! (`geo_` + field name without a trailing `_count`). A count is `None` where it does not apply
//! (registry counts on a primary, checksum counts on a secondary, verification counts for a type
//! without verification) and renders as `null`.
//!
//! [`ReplicableStatuses`] is the same for every type of a site, as serde sees it: flattened
//! (`#[serde(flatten)]`) into a status object, it writes each type's twelve fields and reads them
//! back, so a server and a client share one typed status.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::state::{ReplicationState, VerificationState};

/// Suffix of the synced percentage field (`<plural>_synced_in_percentage`).
const SYNCED_PERCENTAGE: &str = "synced_in_percentage";
/// Suffix of the verified percentage field (`<plural>_verified_in_percentage`), also how a
/// reader finds the types in a status object.
const VERIFIED_PERCENTAGE: &str = "verified_in_percentage";

/// The status of one replicable type on one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicableStatus {
    /// The replicable's plural, the prefix of every field (e.g. `widgets`).
    pub plural: String,
    /// `<p>_count`: records on the primary; registry rows on a secondary (as GitLab reports).
    pub count: Option<u64>,
    /// `<p>_checksum_total_count`: records that can be checksummed (primary).
    pub checksum_total_count: Option<u64>,
    /// `<p>_checksummed_count`: records whose verification succeeded (primary).
    pub checksummed_count: Option<u64>,
    /// `<p>_checksum_failed_count`: records whose verification failed (primary).
    pub checksum_failed_count: Option<u64>,
    /// `<p>_registry_count`: registry rows (secondary).
    pub registry_count: Option<u64>,
    /// `<p>_synced_count`: registry rows in `synced` (secondary).
    pub synced_count: Option<u64>,
    /// `<p>_failed_count`: registry rows in `failed` (secondary).
    pub failed_count: Option<u64>,
    /// `<p>_verification_total_count`: registry rows whose verification is not `disabled`.
    pub verification_total_count: Option<u64>,
    /// `<p>_verified_count`: registry rows whose verification succeeded.
    pub verified_count: Option<u64>,
    /// `<p>_verification_failed_count`: registry rows whose verification failed.
    pub verification_failed_count: Option<u64>,
}

/// `part / whole × 100`, rounded to two decimals; `0.0` when `whole` is 0. Not clamped: a value
/// above 100 means the counts are being recomputed (GitLab issue #32226) and is shown as is.
pub fn percentage(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    let raw = part as f64 / whole as f64 * 100.0;
    (raw * 100.0).round() / 100.0
}

/// The Prometheus gauge name of a status field: `geo_` + the field without a trailing `_count` or
/// `_total` (`widgets_synced_count` → `geo_widgets_synced`).
pub fn gauge_name(field: &str) -> String {
    let base = field
        .strip_suffix("_count")
        .or_else(|| field.strip_suffix("_total"))
        .unwrap_or(field);
    format!("geo_{base}")
}

impl ReplicableStatus {
    /// An empty status (every count `None`) for the type whose plural is `plural`.
    pub fn new(plural: impl Into<String>) -> Self {
        ReplicableStatus {
            plural: plural.into(),
            ..ReplicableStatus::default()
        }
    }

    /// The primary's status from the number of records and, when the type verifies, the
    /// number of verification-state rows per [`VerificationState`] value (`(state, count)` pairs
    /// as a `GROUP BY verification_state` returns them; unknown values count only in the total).
    pub fn primary(
        plural: impl Into<String>,
        records: u64,
        verification: Option<&[(i16, u64)]>,
    ) -> Self {
        let mut s = ReplicableStatus::new(plural);
        s.count = Some(records);
        if let Some(groups) = verification {
            let by = |state: VerificationState| {
                groups
                    .iter()
                    .filter(|(v, _)| *v == state.as_i16())
                    .map(|(_, n)| *n)
                    .sum::<u64>()
            };
            s.checksum_total_count = Some(groups.iter().map(|(_, n)| *n).sum());
            s.checksummed_count = Some(by(VerificationState::Succeeded));
            s.checksum_failed_count = Some(by(VerificationState::Failed));
        }
        s
    }

    /// A secondary's status from registry row counts grouped by
    /// `(state, verification_state)`, as one `GROUP BY state, verification_state` returns them.
    /// Verification counts are left `None` when `verifies` is false.
    pub fn secondary(
        plural: impl Into<String>,
        groups: &[(i16, i16, u64)],
        verifies: bool,
    ) -> Self {
        let mut s = ReplicableStatus::new(plural);
        let sum = |f: &dyn Fn(i16, i16) -> bool| {
            groups
                .iter()
                .filter(|(r, v, _)| f(*r, *v))
                .map(|(_, _, n)| *n)
                .sum::<u64>()
        };
        let total = sum(&|_, _| true);
        s.count = Some(total);
        s.registry_count = Some(total);
        s.synced_count = Some(sum(&|r, _| r == ReplicationState::Synced.as_i16()));
        s.failed_count = Some(sum(&|r, _| r == ReplicationState::Failed.as_i16()));
        if verifies {
            s.verification_total_count =
                Some(sum(&|_, v| v != VerificationState::Disabled.as_i16()));
            s.verified_count = Some(sum(&|_, v| v == VerificationState::Succeeded.as_i16()));
            s.verification_failed_count =
                Some(sum(&|_, v| v == VerificationState::Failed.as_i16()));
        }
        s
    }

    /// `<p>_synced_in_percentage`: synced ÷ registry rows × 100 (two decimals), when both are
    /// known.
    pub fn synced_in_percentage(&self) -> Option<f64> {
        Some(percentage(self.synced_count?, self.registry_count?))
    }

    /// `<p>_verified_in_percentage`: verified ÷ registry rows × 100 (two decimals), when both
    /// are known.
    pub fn verified_in_percentage(&self) -> Option<f64> {
        Some(percentage(self.verified_count?, self.registry_count?))
    }

    /// The counts as `(field suffix, value)` pairs in GitLab's order.
    pub fn counts(&self) -> [(&'static str, Option<u64>); 10] {
        let mut copy = self.clone();
        copy.counts_mut().map(|(suffix, v)| (suffix, *v))
    }

    /// The counts as `(field suffix, place)` pairs in GitLab's order: the one list of the
    /// fields, which reading and writing both go through.
    fn counts_mut(&mut self) -> [(&'static str, &mut Option<u64>); 10] {
        [
            ("count", &mut self.count),
            ("checksum_total_count", &mut self.checksum_total_count),
            ("checksummed_count", &mut self.checksummed_count),
            ("checksum_failed_count", &mut self.checksum_failed_count),
            ("registry_count", &mut self.registry_count),
            ("synced_count", &mut self.synced_count),
            ("failed_count", &mut self.failed_count),
            (
                "verification_total_count",
                &mut self.verification_total_count,
            ),
            ("verified_count", &mut self.verified_count),
            (
                "verification_failed_count",
                &mut self.verification_failed_count,
            ),
        ]
    }

    /// The flat status object: `<plural>_count`, …, `<plural>_verified_in_percentage`. Counts
    /// that do not apply are `null`.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        self.write_json(&mut map);
        map
    }

    /// Adds this type's fields to an existing status object (the site-wide one).
    pub fn write_json(&self, map: &mut Map<String, Value>) {
        map.extend(self.fields());
    }

    /// The twelve fields of the status object, in GitLab's order: the counts (`null` where they
    /// do not apply), then the two percentages.
    pub fn fields(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        let pct = |p: Option<f64>| {
            p.and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        };
        let counts = self.counts().into_iter().map(|(suffix, value)| {
            (
                format!("{}_{suffix}", self.plural),
                value.map_or(Value::Null, |v| Value::Number(v.into())),
            )
        });
        let percentages = [
            (SYNCED_PERCENTAGE, pct(self.synced_in_percentage())),
            (VERIFIED_PERCENTAGE, pct(self.verified_in_percentage())),
        ]
        .into_iter()
        .map(|(suffix, v)| (format!("{}_{suffix}", self.plural), v));
        counts.chain(percentages)
    }

    /// Reads one type's counts back from status fields (`key → value`); an error names the
    /// field that is missing or not a count.
    fn from_fields(plural: &str, fields: &[(String, Value)]) -> Result<Self, String> {
        let mut s = ReplicableStatus::new(plural);
        for (suffix, place) in s.counts_mut() {
            let key = format!("{plural}_{suffix}");
            *place = match fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v) {
                None => return Err(format!("missing field `{key}`")),
                Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| format!("`{key}` is not a count: {v}"))?,
                ),
            };
        }
        Ok(s)
    }

    /// Prometheus gauges for the counts that apply: `(name, value)`, e.g.
    /// `("geo_widgets_synced", 3)`.
    pub fn gauges(&self) -> Vec<(String, u64)> {
        self.counts()
            .into_iter()
            .filter_map(|(suffix, v)| Some((gauge_name(&format!("{}_{suffix}", self.plural)), v?)))
            .collect()
    }
}

/// The status of every replicable type of a site, as the flat fields of a status object.
///
/// Serialized (flattened into the object that holds it) as each type's
/// [`fields`](ReplicableStatus::fields), in order; deserialized by finding each type's
/// `<plural>_verified_in_percentage` field and reading its counts. Other fields of the object are
/// left to their own struct fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicableStatuses(pub Vec<ReplicableStatus>);

impl ReplicableStatuses {
    /// The status of the type whose plural is `plural`.
    pub fn get(&self, plural: &str) -> Option<&ReplicableStatus> {
        self.0.iter().find(|s| s.plural == plural)
    }

    /// Every field of every type, in order.
    pub fn fields(&self) -> impl Iterator<Item = (String, Value)> + '_ {
        self.0.iter().flat_map(ReplicableStatus::fields)
    }
}

impl FromIterator<ReplicableStatus> for ReplicableStatuses {
    fn from_iter<I: IntoIterator<Item = ReplicableStatus>>(iter: I) -> Self {
        ReplicableStatuses(iter.into_iter().collect())
    }
}

impl Serialize for ReplicableStatuses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.fields() {
            map.serialize_entry(&k, &v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ReplicableStatuses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = ReplicableStatuses;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("status fields (`<plural>_synced_count`, …)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(String, Value)> = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                let suffix = format!("_{VERIFIED_PERCENTAGE}");
                fields
                    .iter()
                    .filter_map(|(k, _)| k.strip_suffix(&suffix))
                    .map(|plural| ReplicableStatus::from_fields(plural, &fields))
                    .collect::<Result<_, _>>()
                    .map_err(serde::de::Error::custom)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentages_are_safe_and_rounded() {
        assert_eq!(percentage(0, 0), 0.0);
        assert_eq!(percentage(5, 0), 0.0);
        assert_eq!(percentage(1, 3), 33.33);
        assert_eq!(percentage(2, 3), 66.67);
        assert_eq!(percentage(3, 3), 100.0);
        assert_eq!(percentage(u64::MAX, u64::MAX), 100.0);
    }

    #[test]
    fn secondary_from_groups() {
        // (state, verification_state, rows)
        let groups = [(0, 4, 2), (2, 2, 5), (2, 0, 1), (3, 3, 1), (2, 3, 1)];
        let s = ReplicableStatus::secondary("widgets", &groups, true);
        assert_eq!(s.registry_count, Some(10));
        assert_eq!(s.count, Some(10));
        assert_eq!(s.synced_count, Some(7));
        assert_eq!(s.failed_count, Some(1));
        assert_eq!(s.verification_total_count, Some(8));
        assert_eq!(s.verified_count, Some(5));
        assert_eq!(s.verification_failed_count, Some(2));
        assert_eq!(s.checksum_total_count, None);
        assert_eq!(s.synced_in_percentage(), Some(70.0));
        assert_eq!(s.verified_in_percentage(), Some(50.0));

        let json = Value::Object(s.to_json());
        assert_eq!(
            json,
            json!({
                "widgets_count": 10,
                "widgets_checksum_total_count": null,
                "widgets_checksummed_count": null,
                "widgets_checksum_failed_count": null,
                "widgets_registry_count": 10,
                "widgets_synced_count": 7,
                "widgets_failed_count": 1,
                "widgets_verification_total_count": 8,
                "widgets_verified_count": 5,
                "widgets_verification_failed_count": 2,
                "widgets_synced_in_percentage": 70.0,
                "widgets_verified_in_percentage": 50.0,
            })
        );
    }

    #[test]
    fn empty_secondary_and_no_verification() {
        let s = ReplicableStatus::secondary("gadgets", &[], false);
        let json = s.to_json();
        assert_eq!(json["gadgets_registry_count"], json!(0));
        assert_eq!(json["gadgets_synced_in_percentage"], json!(0.0));
        assert_eq!(json["gadgets_verified_count"], Value::Null);
        assert_eq!(json["gadgets_verified_in_percentage"], Value::Null);
        assert_eq!(json.len(), 12);
    }

    #[test]
    fn primary_from_groups_and_gauges() {
        let s = ReplicableStatus::primary("widgets", 12, Some(&[(0, 3), (2, 8), (3, 1)]));
        assert_eq!(s.count, Some(12));
        assert_eq!(s.checksum_total_count, Some(12));
        assert_eq!(s.checksummed_count, Some(8));
        assert_eq!(s.checksum_failed_count, Some(1));
        assert_eq!(s.registry_count, None);
        assert_eq!(s.synced_in_percentage(), None);
        assert_eq!(
            s.gauges(),
            vec![
                ("geo_widgets".to_owned(), 12),
                ("geo_widgets_checksum_total".to_owned(), 12),
                ("geo_widgets_checksummed".to_owned(), 8),
                ("geo_widgets_checksum_failed".to_owned(), 1),
            ]
        );
        assert_eq!(gauge_name("event_log_max_id"), "geo_event_log_max_id");
    }

    #[test]
    fn statuses_round_trip_through_serde_flattened_in_an_object() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Site {
            name: String,
            #[serde(flatten)]
            types: ReplicableStatuses,
            last_event_id: Option<i64>,
        }
        let site = Site {
            name: "eu".into(),
            types: [
                ReplicableStatus::secondary("widgets", &[(2, 2, 3), (3, 0, 1)], true),
                ReplicableStatus::secondary("gadget_files", &[], false),
            ]
            .into_iter()
            .collect(),
            last_event_id: Some(9),
        };
        let json = serde_json::to_value(&site).unwrap();
        // The same fields as `to_json`, beside the object's own.
        let mut expected = site.types.0[0].to_json();
        site.types.0[1].write_json(&mut expected);
        expected.insert("name".into(), json!("eu"));
        expected.insert("last_event_id".into(), json!(9));
        assert_eq!(json, Value::Object(expected));
        let text = serde_json::to_string(&site).unwrap();
        let back: Site = serde_json::from_str(&text).unwrap();
        assert_eq!(back, site);
        assert_eq!(back.types.get("widgets").unwrap().synced_count, Some(3));
        assert_eq!(back.types.get("gadget_files").unwrap().verified_count, None);
        // A type missing a field, or a count that is not one, is an error, not a zero.
        let mut broken = json.clone();
        broken
            .as_object_mut()
            .unwrap()
            .remove("widgets_failed_count");
        let err = serde_json::from_value::<Site>(broken).unwrap_err();
        assert!(err.to_string().contains("widgets_failed_count"), "{err}");
        let mut broken = json;
        broken["widgets_synced_count"] = json!("three");
        assert!(serde_json::from_value::<Site>(broken).is_err());
    }
}
