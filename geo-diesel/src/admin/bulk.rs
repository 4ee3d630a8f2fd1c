//! GitLab's `geoRegistriesBulkUpdate` ("Resync all", "Reverify all", and their "…failed"
//! variants), durable and batched: [`enqueue`] records a job in `geo_bulk_updates`; [`step`]
//! runs one bounded batch of the oldest unfinished job in one short transaction and commits
//! its cursor with it, so a job survives a restart and never holds the workers' tables for
//! long. A node's [`BulkWorker`](super::BulkWorker) steps jobs in the background; the CLI steps them in the
//! foreground ([`run_job_to_end`]). Both may step the same job at once: each step first takes
//! the job row's write lock (an `UPDATE`; a row lock on PostgreSQL, the database write lock on
//! SQLite), so batches of one job never overlap.
//!
//! On a secondary a batch is the next registry rows by `id` that match the filter, and the rule
//! is the one of [`Registry::act`](crate::registry::Registry::act): [`BulkAction::ResyncAll`]
//! is [`rules::resync`](geo_core::transitions::registry::resync) (rows not `started` become
//! `pending`), [`BulkAction::ReverifyAll`] is
//! [`rules::reverify`](geo_core::transitions::registry::reverify). On the primary only
//! `ReverifyAll` applies: the verification table's rows in key order become verification
//! `pending`, as [`crate::primary::mark_verification_pending`] does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use geo_core::transitions::verification as primary_rules;
use geo_core::{ReplicableDescriptor, ReplicationState, Role, VerificationState, find_replicable};

use geo_core::schema::Column;

use super::{AdminError, db, in_ids, state_is};
use crate::db::{AsDbConn, with_conn};
use crate::registry::{Action, Registry};
use crate::schema::geo_bulk_updates;
use crate::sql::{IdRow, Sql, Table};
use crate::types::UtcDateTime;

/// Rows per batch on SQLite: one short transaction each. 1,000 keeps a batch's hold on
/// SQLite's single writer lock in the low milliseconds (the id list of one
/// `UPDATE … WHERE id IN (…)`).
pub const BULK_BATCH: usize = 1000;

/// Rows per batch on PostgreSQL, where a batch locks only its own rows (the sync workers claim
/// with `SKIP LOCKED` around them), so fewer, larger transactions cost less per row.
pub const BULK_BATCH_POSTGRES: usize = 5000;

/// The batch size for `backend`: [`BULK_BATCH`] or [`BULK_BATCH_POSTGRES`].
pub const fn batch_for(backend: geo_core::Backend) -> usize {
    match backend {
        geo_core::Backend::Sqlite => BULK_BATCH,
        geo_core::Backend::Postgres => BULK_BATCH_POSTGRES,
    }
}

/// What a bulk job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BulkAction {
    /// Download again (secondaries only).
    ResyncAll,
    /// Verify again (a secondary's registry, or the primary's checksums).
    ReverifyAll,
}

impl BulkAction {
    /// The stored name: `resync_all` or `reverify_all`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BulkAction::ResyncAll => "resync_all",
            BulkAction::ReverifyAll => "reverify_all",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "resync_all" => Some(BulkAction::ResyncAll),
            "reverify_all" => Some(BulkAction::ReverifyAll),
            _ => None,
        }
    }

    fn action(self) -> Action {
        match self {
            BulkAction::ResyncAll => Action::Resync,
            BulkAction::ReverifyAll => Action::Reverify,
        }
    }
}

/// Which rows a bulk job touches (GitLab's mutation arguments). On a secondary `ids` are
/// registry row ids; on the primary, model ids.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BulkFilter {
    /// Only these rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<i64>>,
    /// Only rows in this replication state (secondaries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<ReplicationState>,
    /// Only rows in this verification state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<VerificationState>,
}

/// A bulk job and its progress (a `geo_bulk_updates` row).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BulkUpdate {
    /// Job id.
    pub id: i64,
    /// The replicable name.
    pub replicable: String,
    /// What it does.
    pub action: BulkAction,
    /// Which rows.
    pub filter: BulkFilter,
    /// The last row key processed (registry `id`, or the primary's verification key).
    pub cursor: i64,
    /// Rows looked at so far.
    pub processed: i64,
    /// Rows the rule changed so far.
    pub changed: i64,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When its last batch ran; `None` while it is unfinished.
    pub finished_at: Option<DateTime<Utc>>,
}

type JobRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    UtcDateTime,
    Option<UtcDateTime>,
);

fn columns() -> (
    geo_bulk_updates::id,
    geo_bulk_updates::replicable,
    geo_bulk_updates::action,
    geo_bulk_updates::filter,
    geo_bulk_updates::cursor,
    geo_bulk_updates::processed,
    geo_bulk_updates::changed,
    geo_bulk_updates::created_at,
    geo_bulk_updates::finished_at,
) {
    use geo_bulk_updates::*;
    (
        id,
        replicable,
        action,
        filter,
        cursor,
        processed,
        changed,
        created_at,
        finished_at,
    )
}

fn from_row(r: JobRow) -> Result<BulkUpdate, AdminError> {
    let (id, replicable, action, filter, cursor, processed, changed, created_at, finished_at) = r;
    let bad = |what: &str| AdminError::BadArgument(format!("bulk update {id}: {what}"));
    Ok(BulkUpdate {
        id,
        action: BulkAction::parse(&action).ok_or_else(|| bad("unknown action"))?,
        filter: serde_json::from_str(&filter).map_err(|_| bad("unreadable filter"))?,
        replicable,
        cursor,
        processed,
        changed,
        created_at: created_at.get(),
        finished_at: finished_at.map(UtcDateTime::get),
    })
}

fn validate(
    role: Role,
    d: &ReplicableDescriptor,
    action: BulkAction,
    filter: &BulkFilter,
) -> Result<(), AdminError> {
    let bad = |m: String| Err(AdminError::BadArgument(m));
    if role == Role::Primary && action == BulkAction::ResyncAll {
        return bad("resync is for secondaries: the primary has the files".into());
    }
    if role == Role::Primary && filter.replication_state.is_some() {
        return bad("the primary has no replication state: cannot filter by it".into());
    }
    if !d.verifies() && filter.verification_state.is_some() {
        return bad(format!(
            "{} has no verification: cannot filter by verification state",
            d.name
        ));
    }
    if !d.verifies() && action == BulkAction::ReverifyAll {
        return bad(format!(
            "{} has no verification: nothing to reverify",
            d.name
        ));
    }
    Ok(())
}

/// Records a bulk job for `d` on a database of `role` and returns its id. Validates first:
/// [`BulkAction::ResyncAll`] or a replication-state filter on a primary, and a verification
/// filter or [`BulkAction::ReverifyAll`] on a type without verification, are
/// [`AdminError::BadArgument`].
pub fn enqueue(
    conn: &mut impl AsDbConn,
    role: Role,
    d: &'static ReplicableDescriptor,
    action: BulkAction,
    filter: BulkFilter,
) -> Result<i64, AdminError> {
    validate(role, d, action, &filter)?;
    let text = serde_json::to_string(&filter).unwrap_or_else(|_| "{}".into());
    let insert = diesel::insert_into(geo_bulk_updates::table)
        .values((
            geo_bulk_updates::replicable.eq(d.name),
            geo_bulk_updates::action.eq(action.as_str()),
            geo_bulk_updates::filter.eq(&text),
            geo_bulk_updates::created_at.eq(UtcDateTime(Utc::now())),
        ))
        .returning(geo_bulk_updates::id);
    let id: i64 =
        with_conn!(conn, c => insert.get_result(c)).map_err(db("enqueuing a bulk update"))?;
    tracing::info!(
        job = id,
        replicable = d.name,
        action = action.as_str(),
        ?filter,
        "bulk update enqueued"
    );
    Ok(id)
}

/// Every job, oldest first (only the unfinished ones with `unfinished_only`).
pub fn jobs(
    conn: &mut impl AsDbConn,
    unfinished_only: bool,
) -> Result<Vec<BulkUpdate>, AdminError> {
    let rows: Vec<JobRow> = with_conn!(conn, c => {
        let q = geo_bulk_updates::table
            .select(columns())
            .order(geo_bulk_updates::id)
            .into_boxed();
        let q = if unfinished_only {
            q.filter(geo_bulk_updates::finished_at.is_null())
        } else {
            q
        };
        q.load(c)
    })
    .map_err(db("reading bulk updates"))?;
    rows.into_iter().map(from_row).collect()
}

/// Job `id`, if it exists.
pub fn job(conn: &mut impl AsDbConn, id: i64) -> Result<Option<BulkUpdate>, AdminError> {
    let query = geo_bulk_updates::table.find(id).select(columns());
    let row: Option<JobRow> =
        with_conn!(conn, c => query.first(c).optional()).map_err(db("reading a bulk update"))?;
    row.map(from_row).transpose()
}

/// Takes the write lock on the oldest unfinished job (a no-op `UPDATE` of its row) and returns
/// its id. Writing first also keeps SQLite's deferred transaction from failing with
/// `SQLITE_BUSY_SNAPSHOT` when it writes after reading.
fn lock_oldest(conn: &mut impl AsDbConn) -> Result<Option<i64>, AdminError> {
    let t = "geo_bulk_updates";
    let mut sql = Sql::new();
    sql.push("UPDATE ").ident(t).push(" SET ").ident("cursor");
    sql.push(" = ")
        .ident("cursor")
        .push(" WHERE ")
        .ident("finished_at");
    sql.push(" IS NULL AND ")
        .ident("id")
        .push(" = (SELECT MIN(")
        .ident("id");
    sql.push(") FROM ")
        .ident(t)
        .push(" WHERE ")
        .ident("finished_at");
    sql.push(" IS NULL) RETURNING ").ident("id").push(" AS id");
    let rows: Vec<IdRow> = sql.load(conn).map_err(db("locking a bulk update"))?;
    Ok(rows.first().map(|r| r.id))
}

/// The next batch's row keys and the keys the rule changed.
fn run_batch(
    conn: &mut impl AsDbConn,
    role: Role,
    d: &'static ReplicableDescriptor,
    job: &BulkUpdate,
    batch: usize,
) -> Result<(Vec<i64>, usize), AdminError> {
    let f = &job.filter;
    let (table, key) = match role {
        Role::Secondary => (d.tables.registry, "id"),
        Role::Primary => match d.tables.verification {
            Some(v) => v,
            None => return Ok((Vec::new(), 0)),
        },
    };
    let mut sql = Sql::new();
    sql.push("SELECT ")
        .qualified(table, key)
        .push(" AS id FROM ");
    sql.ident(table).push(" WHERE ").qualified(table, key);
    sql.push(" > ").bind_i64(job.cursor);
    if let Some(ids) = &f.ids {
        in_ids(&mut sql, table, key, ids);
    }
    if let (Some(s), Role::Secondary) = (f.replication_state, role) {
        state_is(&mut sql, table, Column::State, s.as_i16());
    }
    if let Some(s) = f.verification_state {
        state_is(&mut sql, table, Column::VerificationState, s.as_i16());
    }
    sql.push(" ORDER BY ").qualified(table, key);
    sql.push(" LIMIT ").int(batch as i64);
    let rows: Vec<IdRow> = sql.load(conn).map_err(db("reading a bulk update batch"))?;
    let keys: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
    let changed = match role {
        Role::Secondary => Registry::of(d)
            .act_on_rows(conn, job.action.action(), &keys)?
            .len(),
        Role::Primary => {
            let change = primary_rules::pending();
            Table {
                name: table,
                key,
                row_key: key,
            }
            .apply(conn, &change, Some(&keys), &|_, _| Utc::now())
            .map_err(db(change.name))?
            .len()
        }
    };
    Ok((keys, changed))
}

/// One batch; `None` when nothing was locked: no job is unfinished, or (PostgreSQL) another
/// stepper finished the one this aimed at, and the caller looks again.
fn step_once(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
) -> Result<Option<BulkUpdate>, AdminError> {
    let batch = batch.max(1);
    conn.db().transaction(|c| {
        let Some(id) = lock_oldest(c)? else {
            return Ok(None);
        };
        let Some(mut job) = job(c, id)? else {
            return Ok(None);
        };
        let now = Utc::now();
        let (keys, changed) = match find_replicable(&job.replicable) {
            Some(d) => run_batch(c, role, d, &job, batch)?,
            None => {
                tracing::warn!(
                    job = job.id,
                    replicable = %job.replicable,
                    "bulk update for a replicable not compiled in; finishing it"
                );
                (Vec::new(), 0)
            }
        };
        if let Some(last) = keys.last() {
            job.cursor = *last;
        }
        job.processed += keys.len() as i64;
        job.changed += changed as i64;
        if keys.len() < batch {
            job.finished_at = Some(now);
        }
        let update = diesel::update(geo_bulk_updates::table.find(job.id)).set((
            geo_bulk_updates::cursor.eq(job.cursor),
            geo_bulk_updates::processed.eq(job.processed),
            geo_bulk_updates::changed.eq(job.changed),
            geo_bulk_updates::finished_at.eq(job.finished_at.map(UtcDateTime)),
        ));
        with_conn!(c, c => update.execute(c)).map_err(db("recording bulk update progress"))?;
        Ok(Some(job))
    })
}

/// One batch of the oldest unfinished job, in one short transaction: the next `batch` rows
/// after its cursor that match its filter get the job's rule; the cursor, `processed` and
/// `changed` advance with them, and `finished_at` is set once a batch comes up short. Returns
/// the job's new state, `None` when no job is unfinished.
pub fn step(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
) -> Result<Option<BulkUpdate>, AdminError> {
    for _ in 0..5 {
        if let Some(job) = step_once(conn, role, batch)? {
            if role == Role::Secondary && job.changed > 0 {
                // Rows reset to pending: the sync and verification workers start on them now.
                crate::notify::registry_changed();
            }
            return Ok(Some(job));
        }
        if jobs(conn, true)?.is_empty() {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Steps until the oldest job in progress finishes; returns its final state (`None` when no
/// job was unfinished). `on_progress` sees the job after every batch.
pub fn run_to_end(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
    on_progress: &mut dyn FnMut(&BulkUpdate),
) -> Result<Option<BulkUpdate>, AdminError> {
    let Some(first) = jobs(conn, true)?.into_iter().next() else {
        return Ok(None);
    };
    run_job_to_end(conn, role, batch, first.id, on_progress).map(Some)
}

/// Steps (oldest job first, as [`step`] does) until job `id` has finished, and returns its
/// final state. Safe beside a [`BulkWorker`](super::BulkWorker) stepping the same jobs: whichever stepper runs a
/// batch, each batch runs once. `on_progress` sees job `id` after every batch that was its.
pub fn run_job_to_end(
    conn: &mut impl AsDbConn,
    role: Role,
    batch: usize,
    id: i64,
    on_progress: &mut dyn FnMut(&BulkUpdate),
) -> Result<BulkUpdate, AdminError> {
    loop {
        let stepped = step(conn, role, batch)?;
        if let Some(j) = stepped.as_ref().filter(|j| j.id == id) {
            on_progress(j);
            if j.finished_at.is_some() {
                return Ok(j.clone());
            }
            continue;
        }
        // Another job's batch, someone else's, or nothing left: look at ours.
        let Some(j) = job(conn, id)? else {
            return Err(AdminError::BadArgument(format!("no bulk update {id}")));
        };
        if j.finished_at.is_some() {
            on_progress(&j);
            return Ok(j);
        }
        if stepped.is_none() {
            // Unfinished yet not stepped: a concurrent stepper holds it; let it finish.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
