//! `GET /api/geo/status`: the site's status, one typed value the server builds and the `status`
//! command reads back.
//!
//! The field names are GitLab's (`GeoNodeStatus`): the per-type fields
//! (`<plural>_synced_count`, …, see [`ReplicableStatuses`]) sit flat in the `primary` and
//! `secondary` objects beside the event log position, as GitLab lays them out.

use chrono::{DateTime, Utc};
use geo_diesel::geo_core::safety::{MassRemovalRefusal, PrimaryIdentity, SafetyHalt};
use geo_diesel::geo_core::status::ReplicableStatuses;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The body of `GET /api/geo/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The site's name.
    pub name: String,
    /// When the status was taken (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub status_at: DateTime<Utc>,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// The roles the site plays.
    pub role: SiteRole,
    /// The replicable names registered on the site.
    pub replicables: Vec<String>,
    /// The primary's side, when the site is a primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryStatus>,
    /// The secondary's side, when the site is a secondary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecondaryStatus>,
    /// `Healthy` when every part of the status could be read.
    pub health_status: HealthStatus,
    /// `Healthy`, or what could not be read (`; `-separated).
    pub health: String,
}

impl NodeStatus {
    /// Whether the site reported itself healthy.
    pub fn is_healthy(&self) -> bool {
        self.health_status == HealthStatus::Healthy
    }
}

/// The roles a site plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SiteRole {
    /// Serves primary data.
    #[serde(rename = "primary")]
    Primary,
    /// Replicates from a primary.
    #[serde(rename = "secondary")]
    Secondary,
    /// Both.
    #[serde(rename = "primary+secondary")]
    PrimaryAndSecondary,
    /// Neither (a server with nothing to serve).
    #[serde(rename = "none")]
    None,
}

impl SiteRole {
    /// The role of a site that is (or is not) a primary and a secondary.
    pub fn of(primary: bool, secondary: bool) -> Self {
        match (primary, secondary) {
            (true, false) => SiteRole::Primary,
            (false, true) => SiteRole::Secondary,
            (true, true) => SiteRole::PrimaryAndSecondary,
            (false, false) => SiteRole::None,
        }
    }

    /// The wire name (`primary`, `secondary`, `primary+secondary`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            SiteRole::Primary => "primary",
            SiteRole::Secondary => "secondary",
            SiteRole::PrimaryAndSecondary => "primary+secondary",
            SiteRole::None => "none",
        }
    }
}

impl std::fmt::Display for SiteRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// GitLab's `health_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthStatus {
    /// Everything could be read.
    Healthy,
    /// Something could not be read; `health` says what.
    Unhealthy,
}

/// The primary's side of a status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryStatus {
    /// The highest event id (`Some(None)` for an empty log); `None` (the field is absent) when
    /// the event log could not be read.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub last_event_id: Option<Option<i64>>,
    /// The primary database's identity and event-id high-water mark (absent when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_identity: Option<PrimaryIdentity>,
    /// Per type: record counts and the primary's checksum counts.
    #[serde(flatten)]
    pub replicables: ReplicableStatuses,
    /// Every event up to this id has been pruned (absent before the first prune, or when it
    /// could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_log_pruned_through: Option<i64>,
    /// The secondaries this primary knows, with their lag (GitLab's Sites page).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondaries: Vec<super::sites::KnownSecondaryStatus>,
}

/// The secondary's side of a status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryStatus {
    /// Per type: registry, sync and verification counts.
    #[serde(flatten)]
    pub replicables: ReplicableStatuses,
    /// The log cursor; `None` (its fields are absent) when it could not be read.
    #[serde(flatten)]
    pub cursor: Option<CursorStatus>,
    /// The primary's highest event id, `null` when the primary could not be asked.
    pub last_event_id: Option<i64>,
    /// Event ids between the cursor and the primary's newest event (`0` when caught up),
    /// `null` when either is unknown.
    #[serde(default)]
    pub events_behind: Option<i64>,
    /// Age in seconds of the oldest event the cursor has not processed (`0` when caught up),
    /// `null` when unknown.
    #[serde(default)]
    pub seconds_behind: Option<i64>,
    /// Events the log cursor skipped since start (unknown type, malformed, disabled).
    pub cursor_skipped_events_count: u64,
    /// The link to the primary, when it is an HTTP link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_link: Option<LinkStatus>,
    /// Why the secondary stopped applying events and removing anything (another primary
    /// identity, event ids gone backwards); absent while it runs. Cleared by
    /// `secondary --reconcile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<SafetyHalt>,
    /// Sweeps the mass-removal guard refused (nothing was removed); cleared by a sweep within
    /// the limit or `backfill --allow-mass-removal`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mass_removal_refused: Vec<MassRemovalRefusal>,
    /// Recoveries from a pruned event log since start (the primary pruned events this
    /// secondary had not consumed; it ran a full backfill and reverification).
    #[serde(default)]
    pub events_pruned_recoveries: u64,
    /// The last of them; absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_events_pruned: Option<super::sites::PrunedRecoveryStatus>,
}

/// Where the secondary's log cursor is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorStatus {
    /// GitLab's `cursor_last_event_id`: every event up to it is applied (the lowest open gap
    /// minus one, or the last event read).
    pub cursor_last_event_id: i64,
    /// The last event id read.
    pub cursor_position: i64,
    /// Event-id gaps awaited.
    pub open_gaps_count: usize,
    /// The first 100 of them.
    pub open_gaps: Vec<i64>,
}

/// The counters of a secondary's link to its primary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (transport or a 5xx).
    pub errors: u64,
    /// The last successful answer.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The last failure.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// The last failure's text.
    pub last_error: Option<String>,
}

/// Deserializes a field that is present (`null` included) as `Some`; with `default`, an absent
/// one is `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Timestamps as `2030-01-01T00:00:00+00:00`, as the status always wrote them.
fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use geo_diesel::geo_core::status::ReplicableStatus;
    use serde_json::json;

    fn secondary() -> NodeStatus {
        NodeStatus {
            name: "eu".into(),
            status_at: Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap(),
            uptime_seconds: 7,
            role: SiteRole::Secondary,
            replicables: vec!["widget".into()],
            primary: None,
            secondary: Some(SecondaryStatus {
                replicables: [ReplicableStatus::secondary(
                    "widgets",
                    &[(2, 2, 3), (0, 0, 1)],
                    true,
                )]
                .into_iter()
                .collect(),
                cursor: Some(CursorStatus {
                    cursor_last_event_id: 4,
                    cursor_position: 6,
                    open_gaps_count: 1,
                    open_gaps: vec![5],
                }),
                last_event_id: Some(6),
                events_behind: Some(2),
                seconds_behind: Some(1),
                cursor_skipped_events_count: 0,
                primary_link: Some(LinkStatus {
                    requests: 3,
                    last_ok_at: Some(Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 0).unwrap()),
                    ..LinkStatus::default()
                }),
                halt: None,
                mass_removal_refused: Vec::new(),
                events_pruned_recoveries: 0,
                last_events_pruned: None,
            }),
            health_status: HealthStatus::Healthy,
            health: "Healthy".into(),
        }
    }

    #[test]
    fn gitlab_field_names_and_a_round_trip() {
        let st = secondary();
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["status_at"], "2030-01-02T03:04:05+00:00");
        assert_eq!(json["role"], "secondary");
        assert_eq!(json["health_status"], "Healthy");
        assert!(json.get("primary").is_none());
        let s = &json["secondary"];
        assert_eq!(s["widgets_synced_count"], 3);
        assert_eq!(s["widgets_registry_count"], 4);
        assert_eq!(s["widgets_synced_in_percentage"], 75.0);
        assert_eq!(s["widgets_checksummed_count"], json!(null));
        assert_eq!(s["cursor_last_event_id"], 4);
        assert_eq!(s["open_gaps"], json!([5]));
        assert_eq!(s["primary_link"]["last_ok_at"], "2030-01-02T03:04:00+00:00");
        assert_eq!(s["primary_link"]["last_error"], json!(null));
        let back: NodeStatus = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn halt_and_refusals_round_trip() {
        let mut st = secondary();
        let sec = st.secondary.as_mut().unwrap();
        sec.halt = Some(SafetyHalt::IdentityChanged {
            followed: "aa".into(),
            seen: "bb".into(),
        });
        sec.mass_removal_refused = vec![MassRemovalRefusal {
            replicable: "widget".into(),
            kind: geo_diesel::geo_core::safety::RemovalKind::Orphans,
            would_remove: 11,
            registry_rows: 100,
            allowed: 10,
        }];
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["secondary"]["halt"]["reason"], "identity_changed");
        assert_eq!(json["secondary"]["halt"]["seen"], "bb");
        assert_eq!(
            json["secondary"]["mass_removal_refused"][0]["kind"],
            "orphans"
        );
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        // Absent while the secondary runs.
        let json = serde_json::to_value(secondary()).unwrap();
        assert!(json["secondary"].get("halt").is_none());
        assert!(json["secondary"].get("mass_removal_refused").is_none());
    }

    #[test]
    fn absent_parts_stay_absent() {
        let mut st = secondary();
        let sec = st.secondary.as_mut().unwrap();
        sec.cursor = None;
        sec.last_event_id = None;
        sec.primary_link = None;
        st.primary = Some(PrimaryStatus::default());
        st.role = SiteRole::PrimaryAndSecondary;
        let json = serde_json::to_value(&st).unwrap();
        let s = json["secondary"].as_object().unwrap();
        assert!(!s.contains_key("cursor_last_event_id") && !s.contains_key("open_gaps"));
        assert!(!s.contains_key("primary_link"));
        assert_eq!(s["last_event_id"], json!(null));
        // The primary's log could not be read: no `last_event_id` at all; an empty log: null.
        assert_eq!(json["primary"], json!({}));
        assert_eq!(json["role"], "primary+secondary");
        let back: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, st);
        let p: PrimaryStatus = serde_json::from_value(json!({"last_event_id": null})).unwrap();
        assert_eq!(p.last_event_id, Some(None));
    }
}
