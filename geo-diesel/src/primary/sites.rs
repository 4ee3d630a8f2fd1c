//! The secondaries a primary knows (`geo_known_secondaries`): who read the event feed, how far
//! each consumed it, and when it was last seen — what [`super::prune`] prunes up to, and
//! GitLab's Sites page on the primary.
//!
//! A secondary is known from its first event-feed read: over HTTP by the access key that signed
//! it (the primary's server records it), in the embedded mode by the name given to
//! [`crate::direct::DirectSource::for_secondary`]. Each read says how far it consumed the log
//! (`consumed`: its cursor, or its lowest open gap minus one). A secondary stays known until an
//! operator forgets it ([`forget_secondary`]): one that is gone holds pruning back only up to
//! the retention bound ([`super::prune::PruneConfig`]).

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use crate::db::{AsDbConn, with_conn};
use crate::schema::geo_known_secondaries as known;
use crate::types::UtcDateTime;

/// A secondary not seen for this long is reported stale (GitLab's
/// `GeoNodeStatus::EXPIRATION_IN_MINUTES`: 60). A stale secondary still holds pruning back, up
/// to the retention bound.
pub const STALE_AFTER: Duration = Duration::hours(1);

/// One secondary the primary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSecondary {
    /// Its name: the access key over HTTP, the direct source's name in the embedded mode.
    pub name: String,
    /// The event id up to which it needs nothing; `None` when it never said (it then holds
    /// pruning at 0).
    pub consumed_event_id: Option<i64>,
    /// When it first read the feed.
    pub first_seen_at: DateTime<Utc>,
    /// When it last read the feed.
    pub last_seen_at: DateTime<Utc>,
}

impl KnownSecondary {
    /// Events it has still to consume when the newest is `head` (`0` when caught up).
    pub fn events_behind(&self, head: Option<i64>) -> i64 {
        (head.unwrap_or(0) - self.consumed_event_id.unwrap_or(0)).max(0)
    }

    /// Whole seconds since it last read the feed.
    pub fn seconds_since_seen(&self, now: DateTime<Utc>) -> i64 {
        (now - self.last_seen_at).num_seconds().max(0)
    }

    /// Whether it has not read the feed for [`STALE_AFTER`].
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now - self.last_seen_at > STALE_AFTER
    }
}

/// Records that `name` read the event feed at `now`, having consumed the log up to `consumed`
/// (`None`: it did not say; its last known position is kept). A secondary that says it
/// consumed less than before (a new tracking database behind the same key) is believed: it is
/// what it needs now.
pub fn record_secondary(
    conn: &mut impl AsDbConn,
    name: &str,
    consumed: Option<i64>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let at = UtcDateTime(now);
    let row = (
        known::name.eq(name),
        known::consumed_event_id.eq(consumed),
        known::first_seen_at.eq(at),
        known::last_seen_at.eq(at),
    );
    with_conn!(conn, c => match consumed {
        Some(consumed) => diesel::insert_into(known::table)
            .values(row)
            .on_conflict(known::name)
            .do_update()
            .set((known::consumed_event_id.eq(consumed), known::last_seen_at.eq(at)))
            .execute(c),
        None => diesel::insert_into(known::table)
            .values(row)
            .on_conflict(known::name)
            .do_update()
            .set(known::last_seen_at.eq(at))
            .execute(c),
    })?;
    Ok(())
}

/// Every secondary the primary knows, by name.
pub fn known_secondaries(conn: &mut impl AsDbConn) -> QueryResult<Vec<KnownSecondary>> {
    type Row = (String, Option<i64>, UtcDateTime, UtcDateTime);
    let rows: Vec<Row> = with_conn!(conn, c => known::table
        .select((known::name, known::consumed_event_id, known::first_seen_at, known::last_seen_at))
        .order(known::name)
        .load(c)?);
    Ok(rows
        .into_iter()
        .map(|(name, consumed, first, last)| KnownSecondary {
            name,
            consumed_event_id: consumed,
            first_seen_at: first.get(),
            last_seen_at: last.get(),
        })
        .collect())
}

/// Forgets `name` (a secondary removed for good): it no longer holds pruning back. Returns
/// whether it was known. If it reads the feed again it is known again, and told what was
/// pruned meanwhile.
pub fn forget_secondary(conn: &mut impl AsDbConn, name: &str) -> QueryResult<bool> {
    let n = with_conn!(conn, c => diesel::delete(known::table.find(name)).execute(c)?);
    Ok(n > 0)
}

/// The lowest event id every known secondary consumed (`NULL` counts as 0); `None` when no
/// secondary is known.
pub(super) fn consumed_floor(conn: &mut impl AsDbConn) -> QueryResult<Option<i64>> {
    let rows: Vec<Option<i64>> = with_conn!(conn, c => known::table
        .select(known::consumed_event_id)
        .load(c)?);
    Ok(rows.into_iter().map(|c| c.unwrap_or(0)).min())
}
