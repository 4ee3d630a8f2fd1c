//! Per-type replication status with GitLab's field names (`GeoNodeStatus`).
//!
//! [`ReplicableStatus`] holds the ten counts of one replicable type; [`ReplicableStatus::to_json`]
//! renders them as the flat object GitLab's status API uses (`widgets_synced_count`, …) with the
//! two derived percentages, and [`ReplicableStatus::gauges`] gives the Prometheus gauge names
//! (`geo_` + field name without a trailing `_count`). A count is `None` where it does not apply
//! (registry counts on a primary, checksum counts on a secondary, verification counts for a type
//! without verification) and renders as `null`.

use serde_json::{Map, Number, Value};

use crate::state::{ReplicationState, VerificationState};

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
        [
            ("count", self.count),
            ("checksum_total_count", self.checksum_total_count),
            ("checksummed_count", self.checksummed_count),
            ("checksum_failed_count", self.checksum_failed_count),
            ("registry_count", self.registry_count),
            ("synced_count", self.synced_count),
            ("failed_count", self.failed_count),
            ("verification_total_count", self.verification_total_count),
            ("verified_count", self.verified_count),
            ("verification_failed_count", self.verification_failed_count),
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
        for (suffix, value) in self.counts() {
            map.insert(
                format!("{}_{suffix}", self.plural),
                value.map_or(Value::Null, |v| Value::Number(v.into())),
            );
        }
        let pct = |p: Option<f64>| {
            p.and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number)
        };
        map.insert(
            format!("{}_synced_in_percentage", self.plural),
            pct(self.synced_in_percentage()),
        );
        map.insert(
            format!("{}_verified_in_percentage", self.plural),
            pct(self.verified_in_percentage()),
        );
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
}
