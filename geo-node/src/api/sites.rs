//! The pruning parts of a status: the secondaries a primary knows with their lag (GitLab's
//! Sites page on the primary), and a secondary's last recovery from a pruned event log.

use chrono::{DateTime, Utc};
use geo_diesel::primary::sites::KnownSecondary;
use geo_diesel::secondary::PrunedRecovery;
use serde::{Deserialize, Serialize};

/// One secondary the primary knows, in the primary's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownSecondaryStatus {
    /// Its name: the access key it signs with over HTTP, the direct source's name otherwise.
    pub name: String,
    /// The event id up to which it needs nothing (`null`: it never said).
    pub consumed_event_id: Option<i64>,
    /// Events between that point and the primary's newest event (`0` when caught up).
    pub events_behind: i64,
    /// Seconds since it last read the event feed.
    pub seconds_since_seen: i64,
    /// When it last read the event feed (RFC 3339).
    pub last_seen_at: DateTime<Utc>,
    /// It has not read the feed for an hour (GitLab's unhealthy secondary). It still holds
    /// pruning back, up to the retention bound.
    pub stale: bool,
    /// The primary pruned events it had not consumed (the retention bound): its next read is
    /// told so and it recovers with a full backfill.
    pub pruned_past: bool,
}

impl KnownSecondaryStatus {
    /// The status of `s` when the newest event is `head`, the log is pruned through
    /// `pruned_through`, at `now`.
    pub fn of(
        s: &KnownSecondary,
        head: Option<i64>,
        pruned_through: i64,
        now: DateTime<Utc>,
    ) -> Self {
        KnownSecondaryStatus {
            name: s.name.clone(),
            consumed_event_id: s.consumed_event_id,
            events_behind: s.events_behind(head),
            seconds_since_seen: s.seconds_since_seen(now),
            last_seen_at: s.last_seen_at,
            stale: s.is_stale(now),
            pruned_past: s.consumed_event_id.unwrap_or(0) < pruned_through,
        }
    }
}

/// A secondary's last recovery from a pruned event log, in its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedRecoveryStatus {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The primary had pruned every event up to this id.
    pub pruned_through: i64,
    /// The secondary had consumed the log only up to this id.
    pub consumed: i64,
    /// Where the cursor continued.
    pub cursor: i64,
    /// Synced rows marked for reverification.
    pub reverify: i64,
    /// Synced rows marked for resync (types without verification).
    pub resync: i64,
    /// Rows the full backfill created.
    pub created: usize,
    /// Rows the full backfill removed.
    pub removed: usize,
}

impl From<&PrunedRecovery> for PrunedRecoveryStatus {
    fn from(r: &PrunedRecovery) -> Self {
        PrunedRecoveryStatus {
            at: r.at,
            pruned_through: r.pruned_through,
            consumed: r.consumed,
            cursor: r.cursor,
            reverify: r.reverify,
            resync: r.resync,
            created: r.created,
            removed: r.removed,
        }
    }
}
