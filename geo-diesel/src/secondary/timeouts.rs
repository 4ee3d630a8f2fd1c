//! Timeouts: syncs that made no progress and verifications `started` too long fail; on start,
//! rows an earlier run left `started` are reclaimed.
//!
//! A sync has no total time limit (a large blob over a slow link may take a day); it fails when
//! it received no bytes for [`SecondaryConfig::sync_timeout`](super::SecondaryConfig::sync_timeout)
//! (the no-progress timeout, 5 min by default); a row its pass claimed and has not started
//! yet, queued behind the pass's other downloads, by the last bytes any of them received. A
//! process knows the progress of its own
//! downloads only: each one judges the rows it claimed (and rows nobody claims), and leaves the
//! rows of other live processes to them (a process that stops heartbeating loses its claims
//! after the lease period, see `membership.rs`).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use geo_core::backoff::BackoffCap;
use geo_core::replicables;
use geo_core::schema::Column;
use geo_core::state::ReplicationState;
use geo_core::transitions::Datum;

use super::{Secondary, SecondaryError};
use crate::registry::{Registry, RegistryError, Work};
use crate::sql::Sql;

/// A `started` row: its model id and the process that claimed it.
#[derive(Debug, QueryableByName)]
struct StartedRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    claimed_by: Option<String>,
}

impl Secondary {
    /// Moves rows left `started` by an earlier run back to `pending` (see
    /// [`SecondaryConfig::reclaim_on_start`](super::SecondaryConfig::reclaim_on_start)). Returns how many.
    pub fn reclaim_interrupted(&self) -> Result<usize, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let mut n = 0;
        for d in replicables() {
            n += Registry::of(d).reclaim_started(&mut conn)?;
        }
        if n > 0 {
            tracing::info!(
                rows = n,
                "reclaimed syncs and verifications interrupted by the last stop"
            );
        }
        Ok(n)
    }

    /// Fails syncs that received no bytes for the no-progress timeout (claimed longer ago than
    /// it and, when downloading in this process, silent for as long; rows another live process
    /// claimed are its own to judge) and verifications `started` longer than theirs.
    pub fn timeouts_pass(&self) -> Result<usize, SecondaryError> {
        let now = self.now();
        let retry = self.env.retry_time(now, 1, BackoffCap::Default);
        let timeout = self.config.sync_timeout;
        let cutoff =
            geo_core::transitions::timeout_cutoff(now, timeout.to_std().unwrap_or_default());
        let mut conn = self.tracking.get()?;
        let others = self.live_others(&mut conn)?;
        let mut n = 0;
        for d in replicables() {
            let registry = Registry::of(d);
            let stalled: Vec<i64> = started_before(&mut conn, &registry, cutoff)?
                .into_iter()
                .filter(|r| match &r.claimed_by {
                    Some(owner) if others.contains(owner) => false,
                    _ => self
                        .in_flight
                        .last_progress(d.name, r.id)
                        .is_none_or(|at| at < cutoff),
                })
                .map(|r| r.id)
                .collect();
            if !stalled.is_empty() {
                let failed = registry.fail_timeouts(
                    &mut conn,
                    Work::Sync,
                    timeout,
                    retry,
                    now,
                    Some(&stalled),
                )?;
                if failed > 0 {
                    tracing::warn!(
                        replicable = d.name,
                        rows = failed,
                        timeout_s = timeout.num_seconds(),
                        "syncs made no progress; failed"
                    );
                }
                n += failed;
            }
            n += registry.fail_timeouts(
                &mut conn,
                Work::Verification,
                self.config.verification_timeout,
                retry,
                now,
                None,
            )?;
        }
        Ok(n)
    }
}

/// The rows of `registry` whose sync is `started` and was claimed before `cutoff` (or at an
/// unknown time).
fn started_before(
    conn: &mut impl crate::db::AsDbConn,
    registry: &Registry,
    cutoff: DateTime<Utc>,
) -> Result<Vec<StartedRow>, RegistryError> {
    let table = registry.table();
    let mut sql = Sql::new();
    sql.push("SELECT ")
        .ident(table.key)
        .push(" AS id, ")
        .ident(Column::ClaimedBy.name())
        .push(" AS claimed_by FROM ")
        .ident(table.name)
        .push(" WHERE ")
        .ident(Column::State.name())
        .push(" = ")
        .bind(Datum::SmallInt(ReplicationState::Started as i16))
        .push(" AND (")
        .ident(Column::LastSyncedAt.name())
        .push(" IS NULL OR ")
        .ident(Column::LastSyncedAt.name())
        .push(" < ")
        .bind_time(cutoff)
        .push(")");
    sql.load(conn).map_err(|source| RegistryError {
        what: "reading started syncs",
        registry: table.name,
        source,
    })
}
