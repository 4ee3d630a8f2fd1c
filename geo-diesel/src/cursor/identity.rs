//! The primary a secondary follows (`geo_followed_primary`): its identity, and while the
//! secondary is halted, why ([`SafetyHalt`]).
//!
//! The log cursor checks every feed it reads ([`check_feed`]): the first identity seen is
//! adopted; another identity, or a high-water mark below the event id the cursor passed, is
//! recorded as a halt, and from then on the cursor applies nothing and the secondary's
//! destructive passes stop, whatever the primary says later, until [`accept_primary`] (the
//! operator's `secondary --reconcile`) clears it. The halt is in the tracking database, so
//! every process sharing it stops, and a restart does not forget it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use geo_core::safety::{PrimaryCheck, PrimaryIdentity, SafetyHalt, check_primary};

use crate::db::{AsDbConn, with_conn};
use crate::schema::geo_followed_primary as followed;
use crate::schema::{geo_event_log_gaps as gaps, geo_event_log_states as states};
use crate::types::UtcDateTime;

/// What the tracking database records about the followed primary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    /// The identity followed; `None` before the first contact.
    pub identity: Option<String>,
    /// Why the secondary is halted; `None` when it is not.
    pub halt: Option<SafetyHalt>,
}

/// Reads the followed primary.
pub fn load_followed(conn: &mut impl AsDbConn) -> QueryResult<Followed> {
    let row: Option<(Option<String>, Option<String>)> = with_conn!(conn, c => followed::table
        .find(0i16)
        .select((followed::identity, followed::halt))
        .first(c)
        .optional()?);
    let Some((identity, halt)) = row else {
        return Ok(Followed::default());
    };
    let halt = halt.map(|text| {
        serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, halt = %text, "unreadable halt record; staying halted");
            SafetyHalt::IdentityMissing {
                followed: identity.clone().unwrap_or_default(),
            }
        })
    });
    Ok(Followed { identity, halt })
}

fn store(
    conn: &mut impl AsDbConn,
    identity: Option<&str>,
    halt: Option<&SafetyHalt>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let halt = halt.map(|h| serde_json::to_string(h).unwrap_or_else(|_| "{}".to_owned()));
    let row = (
        followed::id.eq(0i16),
        followed::identity.eq(identity),
        followed::halt.eq(halt.as_deref()),
        followed::updated_at.eq(UtcDateTime(now)),
    );
    with_conn!(conn, c => diesel::insert_into(followed::table)
        .values(row)
        .on_conflict(followed::id)
        .do_update()
        .set((
            followed::identity.eq(identity),
            followed::halt.eq(halt.as_deref()),
            followed::updated_at.eq(UtcDateTime(now)),
        ))
        .execute(c))?;
    Ok(())
}

/// Records `halt` (keeping the identity followed) and logs it.
pub fn record_halt(
    conn: &mut impl AsDbConn,
    halt: &SafetyHalt,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let current = load_followed(conn)?;
    if current.halt.as_ref() == Some(halt) {
        return Ok(());
    }
    store(conn, current.identity.as_deref(), Some(halt), now)?;
    tracing::warn!(reason = %halt, "secondary halted: applying no events and removing nothing");
    Ok(())
}

/// Checks what the primary published with a feed (`seen`) against the followed identity and
/// the event id the cursor passed. Returns the halt in force, if any (recording a new one, or
/// adopting the identity on first contact).
pub fn check_feed(
    conn: &mut impl AsDbConn,
    seen: Option<&PrimaryIdentity>,
    cursor: i64,
    now: DateTime<Utc>,
) -> QueryResult<Option<SafetyHalt>> {
    let current = load_followed(conn)?;
    if let Some(halt) = current.halt {
        return Ok(Some(halt));
    }
    match check_primary(current.identity.as_deref(), cursor, seen) {
        PrimaryCheck::Same => Ok(None),
        PrimaryCheck::Adopt(identity) => {
            store(conn, Some(&identity), None, now)?;
            tracing::info!(identity, "following the primary");
            Ok(None)
        }
        PrimaryCheck::Halt(halt) => {
            record_halt(conn, &halt, now)?;
            Ok(Some(halt))
        }
    }
}

/// The operator's reconcile: follow `seen` from now on, clear the halt, and move the cursor
/// to the primary's high-water mark (dropping open gaps), in one transaction. Read `seen`
/// *before* the full backfill that follows: every event after it is then applied by the
/// cursor, and everything up to it is in the state the backfill and reverification read.
pub fn accept_primary(
    conn: &mut impl AsDbConn,
    seen: Option<&PrimaryIdentity>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    let mark = seen.map_or(0, |s| s.high_water_mark);
    let identity = seen.map(|s| s.identity.as_str());
    with_conn!(conn, c => crate::db::WriteTransaction::write_transaction::<(), diesel::result::Error, _>(c, |c| {
        store(c, identity, None, now)?;
        diesel::delete(gaps::table).execute(c)?;
        diesel::insert_into(states::table)
            .values((states::id.eq(0i16), states::event_id.eq(mark), states::updated_at.eq(UtcDateTime(now))))
            .on_conflict(states::id)
            .do_update()
            .set((states::event_id.eq(mark), states::updated_at.eq(UtcDateTime(now))))
            .execute(c)?;
        Ok(())
    }))?;
    tracing::info!(
        identity = identity.unwrap_or("none"),
        cursor = mark,
        "reconciled: following the primary from its high-water mark"
    );
    Ok(())
}
