//! What lets several secondary processes share one tracking database (PostgreSQL; a SQLite
//! file works the same with its one process): the registry of live processes with their
//! heartbeats (`geo_secondary_workers`), named leases taken by compare-and-set (`geo_leases`:
//! one active log cursor, one backfill) and the backfill's position (`geo_backfill_positions`).
//!
//! Every function here is one statement on a framework table through Diesel's DSL. The rules
//! about the registry rows a process claimed (`claimed_by`) are geo-core's
//! ([`geo_core::transitions::registry::release_owned_syncs`], …); which process runs what and
//! when is [`crate::secondary`]'s.
//!
//! Times come from the caller's clock ([`geo_core::clock::Env`]): the processes' clocks must
//! agree to well within a lease period (NTP does).

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;

use crate::db::AsDbConn;
use crate::types::UtcDateTime;

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary role: every running secondary process (one row per [`crate::secondary::Secondary::spawn`]),
    /// written on start and at every heartbeat, deleted on a clean stop or once its claims were
    /// released after its heartbeat stopped.
    geo_secondary_workers (id) {
        /// A random id (32 hex digits), recorded in the registry's `claimed_by`.
        id -> Text,
        /// The host (and on Linux its pid namespace), to recognise a dead process of this host.
        host -> Text,
        /// The process id.
        pid -> BigInt,
        /// When the process registered.
        started_at -> GeoTimestamp,
        /// The last heartbeat: older than the lease period means the process is gone.
        heartbeat_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary role: named leases (`log_cursor`, `backfill`): the work only one process may
    /// do at a time, held until `expires_at` and renewed by its holder.
    geo_leases (name) {
        /// The lease's name.
        name -> Text,
        /// The holder's `geo_secondary_workers.id`.
        owner -> Text,
        /// When the lease lapses unless renewed.
        expires_at -> GeoTimestamp,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::sql_types::GeoTimestamp;

    /// Secondary role: the first id of the backfill's next range, per replicable, so a process
    /// that takes the backfill over continues where the last one stopped.
    geo_backfill_positions (replicable_name) {
        /// The replicable name.
        replicable_name -> Text,
        /// The first id of the next range (`1`: a new sweep).
        next_id -> BigInt,
        /// When the position last moved.
        updated_at -> GeoTimestamp,
    }
}

/// The name of the lease of the log cursor: one process applies events at a time.
pub const LOG_CURSOR_LEASE: &str = "log_cursor";

/// The name of the lease of the backfill: one process sweeps at a time.
pub const BACKFILL_LEASE: &str = "backfill";

/// One running secondary process as registered in `geo_secondary_workers`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = geo_secondary_workers)]
pub struct WorkerRow {
    /// Its id (what `claimed_by` holds).
    pub id: String,
    /// Its host (and pid namespace).
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// When it registered.
    pub started_at: UtcDateTime,
    /// Its last heartbeat.
    pub heartbeat_at: UtcDateTime,
}

/// Registers the process `id` or records its heartbeat at `now` (an upsert: a process whose row
/// was removed while it stalled registers again).
pub fn heartbeat(
    conn: &mut impl AsDbConn,
    id: &str,
    host: &str,
    pid: u32,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    use geo_secondary_workers::dsl as w;
    let now = UtcDateTime(now);
    let row = (
        w::id.eq(id),
        w::host.eq(host),
        w::pid.eq(i64::from(pid)),
        w::started_at.eq(now),
        w::heartbeat_at.eq(now),
    );
    crate::db::with_conn!(conn, c => diesel::insert_into(w::geo_secondary_workers)
        .values(row)
        .on_conflict(w::id)
        .do_update()
        .set(w::heartbeat_at.eq(now))
        .execute(c))?;
    Ok(())
}

/// Removes the process `id` from the registry of live processes.
pub fn deregister(conn: &mut impl AsDbConn, id: &str) -> QueryResult<usize> {
    use geo_secondary_workers::dsl as w;
    crate::db::with_conn!(conn, c => diesel::delete(w::geo_secondary_workers.filter(w::id.eq(id))).execute(c))
}

/// Removes the process `id` only if its last heartbeat is still before `cutoff` (it did not
/// come back meanwhile). Returns whether it did.
pub fn deregister_if_silent(
    conn: &mut impl AsDbConn,
    id: &str,
    cutoff: DateTime<Utc>,
) -> QueryResult<bool> {
    use geo_secondary_workers::dsl as w;
    crate::db::with_conn!(conn, c => diesel::delete(
        w::geo_secondary_workers
            .filter(w::id.eq(id))
            .filter(w::heartbeat_at.lt(UtcDateTime(cutoff))),
    )
    .execute(c))
    .map(|n| n == 1)
}

/// Every registered process, oldest registration first.
pub fn workers(conn: &mut impl AsDbConn) -> QueryResult<Vec<WorkerRow>> {
    use geo_secondary_workers::dsl as w;
    crate::db::with_conn!(conn, c => w::geo_secondary_workers
        .select(WorkerRow::as_select())
        .order((w::started_at, w::id))
        .load(c))
}

/// Registered processes whose last heartbeat is before `cutoff`.
pub fn silent_workers(
    conn: &mut impl AsDbConn,
    cutoff: DateTime<Utc>,
) -> QueryResult<Vec<WorkerRow>> {
    use geo_secondary_workers::dsl as w;
    crate::db::with_conn!(conn, c => w::geo_secondary_workers
        .filter(w::heartbeat_at.lt(UtcDateTime(cutoff)))
        .select(WorkerRow::as_select())
        .order(w::id)
        .load(c))
}

/// Takes or renews the lease `name` for `owner` until `now + period`, by compare-and-set: it
/// succeeds when the lease is free, lapsed (`expires_at < now`) or already `owner`'s. Returns
/// whether `owner` holds it now.
pub fn try_hold(
    conn: &mut impl AsDbConn,
    name: &str,
    owner: &str,
    now: DateTime<Utc>,
    period: Duration,
) -> QueryResult<bool> {
    use geo_leases::dsl as l;
    let until = UtcDateTime(now.checked_add_signed(period).unwrap_or(now));
    let now = UtcDateTime(now);
    crate::db::with_conn!(conn, c => {
        let taken = diesel::update(
            l::geo_leases
                .filter(l::name.eq(name))
                .filter(l::owner.eq(owner).or(l::expires_at.lt(now))),
        )
        .set((l::owner.eq(owner), l::expires_at.eq(until)))
        .execute(c)?;
        if taken == 1 {
            Ok(true)
        } else {
            let inserted = diesel::insert_into(l::geo_leases)
                .values((l::name.eq(name), l::owner.eq(owner), l::expires_at.eq(until)))
                .on_conflict(l::name)
                .do_nothing()
                .execute(c)?;
            Ok(inserted == 1)
        }
    })
}

/// Gives the lease `name` up if `owner` holds it. Returns whether it did.
pub fn release(conn: &mut impl AsDbConn, name: &str, owner: &str) -> QueryResult<bool> {
    use geo_leases::dsl as l;
    crate::db::with_conn!(conn, c => diesel::delete(
        l::geo_leases.filter(l::name.eq(name)).filter(l::owner.eq(owner)),
    )
    .execute(c))
    .map(|n| n == 1)
}

/// Gives up every lease `owner` holds (a stopped process). Returns how many.
pub fn release_all(conn: &mut impl AsDbConn, owner: &str) -> QueryResult<usize> {
    use geo_leases::dsl as l;
    crate::db::with_conn!(conn, c => diesel::delete(l::geo_leases.filter(l::owner.eq(owner))).execute(c))
}

/// The holder of the lease `name` and when it lapses, if anyone took it.
pub fn holder(
    conn: &mut impl AsDbConn,
    name: &str,
) -> QueryResult<Option<(String, DateTime<Utc>)>> {
    use geo_leases::dsl as l;
    let row: Option<(String, UtcDateTime)> = crate::db::with_conn!(conn, c => l::geo_leases
        .filter(l::name.eq(name))
        .select((l::owner, l::expires_at))
        .first(c)
        .optional())?;
    Ok(row.map(|(o, t)| (o, t.get())))
}

/// Where the backfill of `replicable` continues: the first id of its next range (`1` when no
/// process recorded one yet).
pub fn backfill_position(conn: &mut impl AsDbConn, replicable: &str) -> QueryResult<i64> {
    use geo_backfill_positions::dsl as b;
    let next: Option<i64> = crate::db::with_conn!(conn, c => b::geo_backfill_positions
        .filter(b::replicable_name.eq(replicable))
        .select(b::next_id)
        .first(c)
        .optional())?;
    Ok(next.unwrap_or(1))
}

/// Records that the backfill of `replicable` continues at `next_id` (`1`: a new sweep).
pub fn set_backfill_position(
    conn: &mut impl AsDbConn,
    replicable: &str,
    next_id: i64,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    use geo_backfill_positions::dsl as b;
    let now = UtcDateTime(now);
    crate::db::with_conn!(conn, c => diesel::insert_into(b::geo_backfill_positions)
        .values((
            b::replicable_name.eq(replicable),
            b::next_id.eq(next_id),
            b::updated_at.eq(now),
        ))
        .on_conflict(b::replicable_name)
        .do_update()
        .set((b::next_id.eq(next_id), b::updated_at.eq(now)))
        .execute(c))?;
    Ok(())
}
