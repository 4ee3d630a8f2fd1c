//! The secondary's registry queries: one set of set-based statements for every registered
//! replicable, run against its `<name>_registry` table in the tracking database.
//!
//! State changes are compare-and-set on the `state` column, so a sync that finishes after a newer
//! event moved the row back to `pending` changes nothing and the row is synced again.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_core::ReplicableDescriptor;

use crate::db::AsDbConn;
use crate::primary::c_backend;
use crate::sql::{IdRow, id_list, ident, placeholders};
use crate::types::UtcDateTime;
use crate::types::sql_types::GeoTimestamp;
use crate::with_conn;

/// A registry query failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} in {registry}: {source}")]
pub struct RegistryError {
    /// What was being done.
    pub what: &'static str,
    /// The registry table.
    pub registry: &'static str,
    /// The database error.
    #[source]
    pub source: diesel::result::Error,
}

impl From<RegistryError> for diesel::result::Error {
    fn from(e: RegistryError) -> Self {
        e.source
    }
}

fn q(
    what: &'static str,
    d: &ReplicableDescriptor,
) -> impl FnOnce(diesel::result::Error) -> RegistryError {
    let registry = d.tables.registry;
    move |source| RegistryError {
        what,
        registry,
        source,
    }
}

fn names(d: &ReplicableDescriptor) -> (String, String) {
    (ident(d.tables.registry), ident(d.tables.registry_model_id))
}

/// `retry_count + 1`, saturating at the SMALLINT maximum.
const INC_RETRY: &str = "CASE WHEN retry_count < 32767 THEN retry_count + 1 ELSE retry_count END";

const PENDING_SET: &str = "state = 0, retry_count = 0, retry_at = NULL, last_synced_at = NULL, \
    last_sync_failure = NULL, missing_on_primary = FALSE, verification_state = 0, \
    verification_started_at = NULL, verification_retry_count = 0, verification_retry_at = NULL, \
    verification_failure = NULL, checksum_mismatch = FALSE, verification_checksum_mismatched = NULL";

/// Creates registry rows for `ids` as `pending`, or moves existing rows back to `pending`
/// (an `updated` event: the next sync starts after the change). Set-based, in chunks. Uses the
/// system clock; see [`upsert_pending_at`].
pub fn upsert_pending(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<usize, RegistryError> {
    upsert_pending_at(conn, d, ids, Utc::now())
}

/// [`upsert_pending`] at time `now`. A row whose download is in flight (`started`) stays
/// `started` — so no second worker claims it and two downloads of one record never race — but
/// its claim token (`last_synced_at`) moves to `now`: the running download's compare-and-set then
/// fails and [`record_sync_claimed`] sends the row back to `pending`, so it syncs again after the
/// change.
pub fn upsert_pending_at(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<usize, RegistryError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let (t, k) = names(d);
    let mut n = 0;
    for chunk in ids.chunks(1000) {
        let values = chunk
            .iter()
            .map(|id| format!("({id})"))
            .collect::<Vec<_>>()
            .join(",");
        n += with_conn!(conn, c => {
            // The new token must differ from the running claim's, even when both were taken at
            // the same instant (a manual clock): one millisecond earlier in that case.
            let ts = crate::sql::timestamp_literal(c_backend(c), now);
            let before = crate::sql::timestamp_literal(c_backend(c), now - Duration::milliseconds(1));
            let set = PENDING_SET
                .replace("state = 0,", &format!("state = CASE WHEN {t}.state = 1 THEN 1 ELSE 0 END,"))
                .replace(
                    "last_synced_at = NULL,",
                    &format!(
                        "last_synced_at = CASE WHEN {t}.state <> 1 THEN NULL \
                         WHEN {t}.last_synced_at = {ts} THEN {before} ELSE {ts} END,"
                    ),
                );
            let sql = format!("INSERT INTO {t} ({k}) VALUES {values} ON CONFLICT ({k}) DO UPDATE SET {set}");
            sql_query(&sql).execute(c).map_err(q("marking rows pending", d))?
        });
    }
    Ok(n)
}

/// Inserts registry rows for `ids` that have none (the backfill); existing rows are untouched.
pub fn insert_missing(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<usize, RegistryError> {
    let (t, k) = names(d);
    let mut n = 0;
    // One bound parameter per chunk: a JSON array expanded by json_each on SQLite, a bigint[]
    // expanded by unnest on PostgreSQL (about twice as fast as a VALUES list there).
    for chunk in ids.chunks(50_000) {
        n += match conn.db() {
            crate::db::DbConn::Sqlite(c) => {
                let json = format!("[{}]", id_list(chunk));
                sql_query(format!(
                    "INSERT INTO {t} ({k}) SELECT value FROM json_each(?) WHERE true ON CONFLICT ({k}) DO NOTHING"
                ))
                .bind::<Text, _>(json)
                .execute(c)
            }
            #[cfg(feature = "postgres")]
            crate::db::DbConn::Pg(c) => sql_query(format!(
                "INSERT INTO {t} ({k}) SELECT unnest($1::bigint[]) ON CONFLICT ({k}) DO NOTHING"
            ))
            .bind::<diesel::sql_types::Array<BigInt>, _>(chunk)
            .execute(c),
        }
        .map_err(q("inserting missing rows", d))?;
    }
    Ok(n)
}

/// Deletes the registry rows of `ids`.
pub fn delete_rows(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<usize, RegistryError> {
    let (t, k) = names(d);
    let mut n = 0;
    for chunk in ids.chunks(1000) {
        let sql = format!("DELETE FROM {t} WHERE {k} IN ({})", id_list(chunk));
        n += with_conn!(conn, c => sql_query(&sql).execute(c).map_err(q("deleting rows", d))?);
    }
    Ok(n)
}

/// The model ids tracked in `[from, to]`, ascending.
pub fn tracked_ids(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    from: i64,
    to: i64,
) -> Result<Vec<i64>, RegistryError> {
    let (t, k) = names(d);
    let sql = format!("SELECT {k} AS id FROM {t} WHERE {k} BETWEEN ? AND ? ORDER BY {k}");
    let rows: Vec<IdRow> = with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(to)
        .load(c)
        .map_err(q("reading tracked ids", d))?);
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The largest tracked model id.
pub fn max_tracked_id(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Option<i64>, RegistryError> {
    let (t, k) = names(d);
    let sql = format!("SELECT MAX({k}) AS n FROM {t}");
    let rows: Vec<crate::sql::MaybeCount> =
        with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("reading the max id", d))?);
    Ok(rows.first().and_then(|r| r.n))
}

/// After a primary `checksum_succeeded`: a synced row whose checksum was computed while
/// downloading and never compared yet (verification `pending` or `disabled`) becomes `succeeded`
/// at once when it equals the primary's — no second read of the file. Every other synced row
/// (including already `succeeded` ones: the primary re-verified, so the secondary re-hashes its
/// copy and catches bit rot) becomes verification `pending`. Returns (verified, pending).
pub fn on_checksum_succeeded(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    checksum: Option<&[u8]>,
    now: DateTime<Utc>,
) -> Result<(usize, usize), RegistryError> {
    on_checksum_succeeded_batch(conn, d, &[(id, checksum.map(<[u8]>::to_vec))], now)
}

/// [`on_checksum_succeeded`] for many records at once: one `UPDATE … FROM (VALUES …)` per 200
/// rows for the ones whose stored checksum matches, one `UPDATE … IN (…)` for the rest.
pub fn on_checksum_succeeded_batch(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    rows: &[(i64, Option<Vec<u8>>)],
    now: DateTime<Utc>,
) -> Result<(usize, usize), RegistryError> {
    let (t, k) = names(d);
    let mut verified_ids: BTreeSet<i64> = BTreeSet::new();
    let with_sum: Vec<(i64, &Vec<u8>)> = rows
        .iter()
        .filter_map(|(id, s)| s.as_ref().map(|s| (*id, s)))
        .collect();
    for chunk in with_sum.chunks(200) {
        let values = vec!["(?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "UPDATE {t} SET verification_state = 2, verified_at = ?, verification_failure = NULL, \
             verification_retry_count = 0, verification_retry_at = NULL, checksum_mismatch = FALSE, \
             verification_checksum_mismatched = NULL \
             FROM (SELECT column1 AS id, column2 AS sum FROM (VALUES {values}) AS x) AS v \
             WHERE {t}.{k} = v.id AND {t}.state = 2 AND {t}.verification_checksum = v.sum \
             AND {t}.verification_state IN (0, 4) RETURNING {t}.{k} AS id"
        );
        let done: Vec<IdRow> = with_conn!(conn, c => {
            let mut query = sql_query(placeholders(&sql, c_backend(c)).into_owned())
                .into_boxed()
                .bind::<GeoTimestamp, _>(UtcDateTime(now));
            for (id, sum) in chunk {
                query = query.bind::<BigInt, _>(*id).bind::<Binary, _>((*sum).clone());
            }
            query.load(c).map_err(q("verifying from the event", d))?
        });
        verified_ids.extend(done.into_iter().map(|r| r.id));
    }
    let rest: Vec<i64> = rows
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !verified_ids.contains(id))
        .collect();
    let mut pending = 0;
    for chunk in rest.chunks(1000) {
        let sql = format!(
            "UPDATE {t} SET verification_state = 0 WHERE {k} IN ({}) AND state = 2",
            id_list(chunk)
        );
        pending += with_conn!(conn, c => sql_query(&sql).execute(c).map_err(q("marking verification pending", d))?);
    }
    Ok((verified_ids.len(), pending))
}

/// Claims up to `limit` rows to sync: never-synced `pending` rows first, then `failed` rows whose
/// retry is due (oldest retry first). They become `started` with `last_synced_at = now`.
/// PostgreSQL uses `FOR UPDATE SKIP LOCKED`, so concurrent schedulers claim disjoint rows.
pub fn claim_sync(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, RegistryError> {
    let (t, k) = names(d);
    let mut out: Vec<i64> = Vec::new();
    for (filter, order, binds_now) in [
        ("state = 0", "id", false),
        (
            "state = 3 AND (retry_at IS NULL OR retry_at <= ?)",
            "retry_at IS NOT NULL, retry_at, id",
            true,
        ),
    ] {
        let remaining = limit - out.len() as i64;
        if remaining <= 0 {
            break;
        }
        let rows: Vec<IdRow> = with_conn!(conn, c => {
            let lock = match c_backend(c) {
                geo_core::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
                geo_core::Backend::Sqlite => "",
            };
            let sql = format!(
                "UPDATE {t} SET state = 1, last_synced_at = ? WHERE id IN \
                 (SELECT id FROM {t} WHERE {filter} ORDER BY {order} LIMIT ?{lock}) RETURNING {k} AS id"
            );
            let query = sql_query(placeholders(&sql, c_backend(c)).as_ref()).bind::<GeoTimestamp, _>(UtcDateTime(now));
            if binds_now {
                query.bind::<GeoTimestamp, _>(UtcDateTime(now)).bind::<BigInt, _>(remaining).load(c)
            } else {
                query.bind::<BigInt, _>(remaining).load(c)
            }
            .map_err(q("claiming rows to sync", d))?
        });
        out.extend(rows.into_iter().map(|r| r.id));
    }
    Ok(out)
}

/// Moves specific rows to `started` if they are `pending` or `failed` (a manual resync, or a sync
/// requested for one record). Returns the ids claimed.
pub fn claim_ids(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, RegistryError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (t, k) = names(d);
    let sql = format!(
        "UPDATE {t} SET state = 1, last_synced_at = ? WHERE {k} IN ({}) AND state IN (0, 3) RETURNING {k} AS id",
        id_list(ids)
    );
    let rows: Vec<IdRow> = with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<GeoTimestamp, _>(UtcDateTime(now))
        .load(c)
        .map_err(q("claiming rows", d))?);
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The outcome of one download, to be recorded on its registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The file is in place. `local` is the checksum computed while writing it; `primary` the
    /// primary's checksum if the primary has verified the record (then they matched).
    Synced {
        /// Checksum of the file written.
        local: Vec<u8>,
        /// The primary's checksum, when known.
        primary: Option<Vec<u8>>,
    },
    /// The sync failed.
    Failed {
        /// `last_sync_failure` (cut to 255 characters).
        message: String,
        /// The file is missing on the primary (backoff cap 4 h).
        missing_on_primary: bool,
    },
}

/// Records the outcome of a sync — only if the row is still `started` (compare-and-set); a row a
/// newer event moved back to `pending` stays pending. `retry_at(n)` gives the next retry time for
/// the n-th failure. Returns whether the row changed. Prefer [`record_sync_claimed`], which also
/// checks the claim token.
pub fn record_sync(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    outcome: &SyncOutcome,
    retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, RegistryError> {
    record_sync_inner(conn, d, id, None, outcome, retry_at, now)
}

/// Records the outcome of a sync claimed at `claimed_at` (the `now` given to [`claim_sync`]): a
/// compare-and-set on `state = started` **and** the claim token `last_synced_at = claimed_at`.
/// When an `updated` event arrived during the download (the token moved), nothing is recorded and
/// the row goes back to `pending`, so the record syncs again with its new content. Returns
/// whether the outcome was recorded.
pub fn record_sync_claimed(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    claimed_at: DateTime<Utc>,
    outcome: &SyncOutcome,
    retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, RegistryError> {
    if record_sync_inner(conn, d, id, Some(claimed_at), outcome, retry_at, now)? {
        return Ok(true);
    }
    let (t, k) = names(d);
    let sql = format!(
        "UPDATE {t} SET state = 0, last_synced_at = NULL WHERE {k} = ? AND state = 1 AND last_synced_at <> ?"
    );
    with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<BigInt, _>(id)
        .bind::<GeoTimestamp, _>(UtcDateTime(claimed_at))
        .execute(c)
        .map_err(q("re-queueing a row changed during its download", d))?);
    Ok(false)
}

fn record_sync_inner(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    claimed_at: Option<DateTime<Utc>>,
    outcome: &SyncOutcome,
    retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, RegistryError> {
    let (t, k) = names(d);
    let token = claimed_at.map(UtcDateTime);
    let guard = if token.is_some() {
        "AND last_synced_at = ?"
    } else {
        ""
    };
    match outcome {
        SyncOutcome::Synced { local, primary } => {
            let matched = primary.as_deref() == Some(local.as_slice());
            // Verified while downloading: the streamed hash equals the primary's checksum.
            // Otherwise verification is `pending`: the verification pass asks the primary again
            // (it may have verified meanwhile, its `checksum_succeeded` event finding this row
            // still `started`) and sets `disabled` only if the primary still has no checksum.
            let (vstate, verified_at) = if matched {
                (2i16, Some(UtcDateTime(now)))
            } else if d.verifies() {
                (0i16, None)
            } else {
                (4i16, None)
            };
            // A repaired mismatch clears its mismatch columns; otherwise they stay for the
            // verification pass to judge.
            let mismatch = if vstate == 2 {
                "checksum_mismatch = FALSE, verification_checksum_mismatched = NULL, verification_retry_count = 0"
            } else {
                "checksum_mismatch = checksum_mismatch"
            };
            let sql = format!(
                "UPDATE {t} SET state = 2, retry_count = 0, retry_at = NULL, last_sync_failure = NULL, \
                 missing_on_primary = FALSE, verification_state = {vstate}, verification_checksum = ?, verified_at = ?, \
                 verification_started_at = NULL, verification_failure = NULL, verification_retry_at = NULL, {mismatch} \
                 WHERE {k} = ? AND state = 1 {guard}"
            );
            let n = with_conn!(conn, c => {
                let q1 = sql_query(placeholders(&sql, c_backend(c)).as_ref())
                    .bind::<Binary, _>(local.as_slice())
                    .bind::<Nullable<GeoTimestamp>, _>(verified_at)
                    .bind::<BigInt, _>(id);
                match token {
                    Some(tok) => q1.bind::<GeoTimestamp, _>(tok).execute(c),
                    None => q1.execute(c),
                }
            }
                .map_err(q("marking a row synced", d))?);
            Ok(n == 1)
        }
        SyncOutcome::Failed {
            message,
            missing_on_primary,
        } => {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = SmallInt)]
                retry_count: i16,
            }
            let message = crate::truncate_failure(message);
            // Write first (see `primary::record_verification_failure`): bump the count, then set
            // the retry time from it.
            with_conn!(conn, c => c.transaction::<bool, diesel::result::Error, _>(|c| {
                let sql = format!(
                    "UPDATE {t} SET state = 3, retry_count = {INC_RETRY}, last_sync_failure = ?, missing_on_primary = ? \
                     WHERE {k} = ? AND state = 1 {guard} RETURNING retry_count"
                );
                let q1 = sql_query(placeholders(&sql, c_backend(c)).as_ref())
                    .bind::<Text, _>(&message)
                    .bind::<Bool, _>(*missing_on_primary)
                    .bind::<BigInt, _>(id);
                let rows: Vec<Row> = match token {
                    Some(tok) => q1.bind::<GeoTimestamp, _>(tok).load(c)?,
                    None => q1.load(c)?,
                };
                let Some(row) = rows.first() else { return Ok(false) };
                sql_query(placeholders(&format!("UPDATE {t} SET retry_at = ? WHERE {k} = ?"), c_backend(c)).as_ref())
                    .bind::<GeoTimestamp, _>(UtcDateTime(retry_at(row.retry_count, *missing_on_primary)))
                    .bind::<BigInt, _>(id)
                    .execute(c)?;
                Ok(true)
            }).map_err(q("marking a row failed", d)))
        }
    }
}

/// Rows `started` for longer than `timeout` become failed ("Sync timed out after …") with
/// `retry_count = 1` and `retry_at = retry_at`.
pub fn fail_sync_timeouts(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    timeout: Duration,
    retry_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, RegistryError> {
    let message = format!(
        "Sync timed out after {}",
        crate::primary::human_duration(timeout)
    );
    crate::sql::fail_started_before(
        conn,
        d.tables.registry,
        crate::sql::SYNC_COLUMNS,
        &message,
        retry_at,
        now - timeout,
    )
    .map_err(q("failing sync timeouts", d))
}

/// Claims up to `limit` synced rows for secondary verification: verification `pending`, then
/// verification `failed` whose retry is due. They become verification `started`.
pub fn claim_verification(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, RegistryError> {
    let (t, k) = names(d);
    let rows: Vec<IdRow> = with_conn!(conn, c => {
        let lock = match c_backend(c) {
            geo_core::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            geo_core::Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE {t} SET verification_state = 1, verification_started_at = ? WHERE id IN \
             (SELECT id FROM {t} WHERE state = 2 AND (verification_state = 0 OR (verification_state = 3 AND \
             (verification_retry_at IS NULL OR verification_retry_at <= ?))) \
             ORDER BY verification_state, verified_at IS NOT NULL, verified_at, id LIMIT ?{lock}) RETURNING {k} AS id"
        );
        sql_query(placeholders(&sql, c_backend(c)).as_ref())
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .bind::<BigInt, _>(limit)
            .load(c)
            .map_err(q("claiming rows to verify", d))?
    });
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// The result of re-hashing a synced file on a secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The local checksum equals the primary's.
    Matched(Vec<u8>),
    /// The primary has not verified the record yet: verification `disabled` until its
    /// `checksum_succeeded` event arrives.
    PrimaryNotVerified,
    /// The local file differs from the primary's: record the mismatch and resync with backoff.
    Mismatch(Vec<u8>),
    /// The file could not be read (e.g. it is gone): verification failed, and the row is resynced.
    Error(String),
}

/// Records a secondary verification result on a row that is verification `started` and synced.
/// A mismatch or an unreadable file also moves the row to replication `failed` with
/// `retry_count = verification_retry_count`, so the scheduler downloads it again with growing
/// backoff (GitLab #301244).
pub fn record_verification(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    outcome: &VerifyOutcome,
    retry_at: &dyn Fn(i16) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, RegistryError> {
    let (t, k) = names(d);
    let guard = format!("WHERE {k} = ? AND state = 2 AND verification_state = 1");
    match outcome {
        VerifyOutcome::Matched(sum) => {
            let sql = format!(
                "UPDATE {t} SET verification_state = 2, verification_checksum = ?, verified_at = ?, \
                 verification_failure = NULL, verification_retry_count = 0, verification_retry_at = NULL, \
                 checksum_mismatch = FALSE, verification_checksum_mismatched = NULL {guard}"
            );
            Ok(
                with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
                .bind::<Binary, _>(sum.as_slice())
                .bind::<GeoTimestamp, _>(UtcDateTime(now))
                .bind::<BigInt, _>(id)
                .execute(c)
                .map_err(q("recording verification", d))?)
                    == 1,
            )
        }
        VerifyOutcome::PrimaryNotVerified => {
            let sql = format!(
                "UPDATE {t} SET verification_state = 4, verification_started_at = NULL {guard}"
            );
            Ok(
                with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
                .bind::<BigInt, _>(id)
                .execute(c)
                .map_err(q("disabling verification", d))?)
                    == 1,
            )
        }
        VerifyOutcome::Mismatch(_) | VerifyOutcome::Error(_) => {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = SmallInt)]
                verification_retry_count: i16,
            }
            let (failure, local, mismatch) = match outcome {
                VerifyOutcome::Mismatch(sum) => (
                    "Checksum does not match the primary checksum".to_string(),
                    Some(sum.as_slice()),
                    true,
                ),
                VerifyOutcome::Error(e) => (
                    crate::truncate_failure(&format!("Error during verification: {e}")),
                    None,
                    false,
                ),
                _ => unreachable!("matched above"),
            };
            let sync_failure =
                crate::truncate_failure(&format!("Verification failed with: {failure}"));
            // Write first, then set the retry times from the new count; the registry's
            // retry_count follows verification_retry_count so the resync backs off too.
            with_conn!(conn, c => c.transaction::<bool, diesel::result::Error, _>(|c| {
                let sql = format!(
                    "UPDATE {t} SET verification_state = 3, \
                     verification_retry_count = CASE WHEN verification_retry_count < 32767 THEN verification_retry_count + 1 ELSE verification_retry_count END, \
                     verified_at = ?, verification_failure = ?, verification_checksum = ?, \
                     verification_checksum_mismatched = ?, checksum_mismatch = ?, \
                     state = 3, last_sync_failure = ? {guard} RETURNING verification_retry_count"
                );
                let rows: Vec<Row> = sql_query(placeholders(&sql, c_backend(c)).as_ref())
                    .bind::<GeoTimestamp, _>(UtcDateTime(now))
                    .bind::<Text, _>(&failure)
                    .bind::<Nullable<Binary>, _>(local)
                    .bind::<Nullable<Binary>, _>(if mismatch { local } else { None })
                    .bind::<Bool, _>(mismatch)
                    .bind::<Text, _>(&sync_failure)
                    .bind::<BigInt, _>(id)
                    .load(c)?;
                let Some(row) = rows.first() else { return Ok(false) };
                let count = row.verification_retry_count;
                let when = UtcDateTime(retry_at(count));
                sql_query(placeholders(
                    &format!("UPDATE {t} SET verification_retry_at = ?, retry_count = ?, retry_at = ? WHERE {k} = ?"),
                    c_backend(c),
                ).as_ref())
                .bind::<GeoTimestamp, _>(when)
                .bind::<SmallInt, _>(count)
                .bind::<GeoTimestamp, _>(when)
                .bind::<BigInt, _>(id)
                .execute(c)?;
                Ok(true)
            }).map_err(q("recording a verification failure", d)))
        }
    }
}

/// Rows verification-`started` for longer than `timeout` become verification failed.
pub fn fail_verification_timeouts(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    timeout: Duration,
    retry_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, RegistryError> {
    let message = format!(
        "Verification timed out after {}",
        crate::primary::human_duration(timeout)
    );
    crate::sql::fail_started_before(
        conn,
        d.tables.registry,
        crate::sql::VERIFICATION_COLUMNS,
        &message,
        retry_at,
        now - timeout,
    )
    .map_err(q("failing verification timeouts", d))
}

/// Manual resync (GitLab's `resync`): rows become `pending` (all rows when `ids` is `None`).
pub fn resync(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: Option<&[i64]>,
) -> Result<usize, RegistryError> {
    let (t, k) = names(d);
    let filter = match ids {
        Some([]) => return Ok(0),
        Some(ids) => format!("{k} IN ({}) AND state <> 1", id_list(ids)),
        None => "state <> 1".to_string(),
    };
    let sql = format!("UPDATE {t} SET {PENDING_SET} WHERE {filter}");
    with_conn!(conn, c => sql_query(&sql).execute(c).map_err(q("resyncing", d)))
}

/// Manual reverify: synced rows become verification `pending`.
pub fn reverify(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: Option<&[i64]>,
) -> Result<usize, RegistryError> {
    let (t, k) = names(d);
    let filter = match ids {
        Some([]) => return Ok(0),
        Some(ids) => format!(
            "{k} IN ({}) AND state = 2 AND verification_state <> 1",
            id_list(ids)
        ),
        None => "state = 2 AND verification_state <> 1".to_string(),
    };
    let sql = format!("UPDATE {t} SET verification_state = 0 WHERE {filter}");
    with_conn!(conn, c => sql_query(&sql).execute(c).map_err(q("reverifying", d)))
}

/// Counts of one registry by state, from one grouped query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryCounts {
    /// All rows.
    pub registry: i64,
    /// `state = 0`.
    pub pending: i64,
    /// `state = 1`.
    pub started: i64,
    /// `state = 2`.
    pub synced: i64,
    /// `state = 3`.
    pub failed: i64,
    /// Rows with `verification_state <> 4`.
    pub verification_total: i64,
    /// Synced rows with verification `succeeded`.
    pub verified: i64,
    /// Rows with verification `failed`.
    pub verification_failed: i64,
    /// Rows with `missing_on_primary`.
    pub missing_on_primary: i64,
}

/// Counts one registry's rows by state (set-based: one grouped query).
pub fn counts(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<RegistryCounts, RegistryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = SmallInt)]
        verification_state: i16,
        #[diesel(sql_type = BigInt)]
        missing: i64,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (t, _) = names(d);
    let sql = format!(
        "SELECT state, verification_state, CAST(SUM(CASE WHEN missing_on_primary THEN 1 ELSE 0 END) AS BIGINT) AS missing, \
         CAST(COUNT(*) AS BIGINT) AS n FROM {t} GROUP BY state, verification_state"
    );
    let rows: Vec<Row> = with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("counting", d))?);
    let mut out = RegistryCounts::default();
    for r in rows {
        out.registry += r.n;
        out.missing_on_primary += r.missing;
        match r.state {
            0 => out.pending += r.n,
            1 => out.started += r.n,
            2 => out.synced += r.n,
            3 => out.failed += r.n,
            _ => {}
        }
        if r.verification_state != 4 {
            out.verification_total += r.n;
        }
        if r.state == 2 && r.verification_state == 2 {
            out.verified += r.n;
        }
        if r.verification_state == 3 {
            out.verification_failed += r.n;
        }
    }
    Ok(out)
}

/// Row counts grouped by `(state, verification_state)`, as [`geo_core::status::ReplicableStatus::secondary`]
/// takes them.
pub fn state_groups(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Vec<(i16, i16, u64)>, RegistryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = SmallInt)]
        verification_state: i16,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (t, _) = names(d);
    let sql = format!(
        "SELECT state, verification_state, CAST(COUNT(*) AS BIGINT) AS n FROM {t} GROUP BY state, verification_state"
    );
    let rows: Vec<Row> = with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("counting", d))?);
    Ok(rows
        .into_iter()
        .map(|r| (r.state, r.verification_state, r.n.max(0) as u64))
        .collect())
}

/// Moves rows left `started` (sync or verification) back to `pending`; for a restart of a
/// single secondary process, whose earlier run was interrupted.
pub fn reclaim_started(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<usize, RegistryError> {
    let (t, _) = names(d);
    let a = with_conn!(conn, c => sql_query(format!("UPDATE {t} SET state = 0, last_synced_at = NULL WHERE state = 1"))
        .execute(c)
        .map_err(q("reclaiming interrupted syncs", d))?);
    let b = with_conn!(conn, c => sql_query(format!("UPDATE {t} SET verification_state = 0, verification_started_at = NULL WHERE verification_state = 1"))
        .execute(c)
        .map_err(q("reclaiming interrupted verifications", d))?);
    Ok(a + b)
}

/// Releases rows this worker claimed for verification but could not process (back to `pending`).
pub fn release_verification(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<usize, RegistryError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let (t, k) = names(d);
    let sql = format!(
        "UPDATE {t} SET verification_state = 0, verification_started_at = NULL WHERE {k} IN ({}) AND verification_state = 1",
        id_list(ids)
    );
    with_conn!(conn, c => sql_query(&sql).execute(c).map_err(q("releasing verification claims", d)))
}

/// Stores where a successful sync wrote the record's file.
pub fn set_blob_path(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    id: i64,
    path: &str,
) -> Result<usize, RegistryError> {
    let (t, k) = names(d);
    let sql = format!("UPDATE {t} SET blob_path = ? WHERE {k} = ?");
    with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<Text, _>(path)
        .bind::<BigInt, _>(id)
        .execute(c)
        .map_err(q("recording a blob path", d)))
}

/// The stored blob paths of `ids` (rows without one are left out).
pub fn blob_paths(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, String)>, RegistryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        path: String,
    }
    let (t, k) = names(d);
    let mut out = Vec::new();
    for chunk in ids.chunks(1000) {
        let sql = format!(
            "SELECT {k} AS id, blob_path AS path FROM {t} WHERE {k} IN ({}) AND blob_path IS NOT NULL",
            id_list(chunk)
        );
        let rows: Vec<Row> =
            with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("reading blob paths", d))?);
        out.extend(rows.into_iter().map(|r| (r.id, r.path)));
    }
    Ok(out)
}

/// One successful download, for [`record_synced_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedRow {
    /// The model id.
    pub id: i64,
    /// Checksum of the file written.
    pub local: Vec<u8>,
    /// The primary's checksum, when known (then they matched).
    pub primary: Option<Vec<u8>>,
    /// Where the file was written.
    pub path: String,
}

/// Records many successful downloads claimed at `claimed_at` in one statement per 200 rows
/// (`UPDATE … FROM (VALUES …)`), with the same compare-and-set and effects as
/// [`record_sync_claimed`] for [`SyncOutcome::Synced`], plus the blob path. Returns the ids
/// recorded; for the others the caller falls back to [`record_sync_claimed`].
pub fn record_synced_batch(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    claimed_at: DateTime<Utc>,
    rows: &[SyncedRow],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, RegistryError> {
    let (t, k) = names(d);
    let mut done = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(200) {
        let values = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "UPDATE {t} SET state = 2, retry_count = 0, retry_at = NULL, last_sync_failure = NULL, \
             missing_on_primary = FALSE, verification_state = v.vstate, verification_checksum = v.sum, \
             verified_at = CASE WHEN v.vstate = 2 THEN ? ELSE NULL END, verification_started_at = NULL, \
             verification_failure = NULL, verification_retry_at = NULL, \
             checksum_mismatch = CASE WHEN v.vstate = 2 THEN FALSE ELSE {t}.checksum_mismatch END, \
             verification_checksum_mismatched = CASE WHEN v.vstate = 2 THEN NULL ELSE {t}.verification_checksum_mismatched END, \
             verification_retry_count = CASE WHEN v.vstate = 2 THEN 0 ELSE {t}.verification_retry_count END, \
             blob_path = v.path \
             FROM (SELECT column1 AS id, column2 AS sum, column3 AS vstate, column4 AS path FROM (VALUES {values}) AS x) AS v \
             WHERE {t}.{k} = v.id AND {t}.state = 1 AND {t}.last_synced_at = ? RETURNING {t}.{k} AS id"
        );
        let ids: Vec<IdRow> = with_conn!(conn, c => {
            let mut query = sql_query(placeholders(&sql, c_backend(c)).into_owned())
                .into_boxed()
                .bind::<GeoTimestamp, _>(UtcDateTime(now));
            for r in chunk {
                let vstate: i16 = if r.primary.as_deref() == Some(r.local.as_slice()) {
                    2
                } else if d.verifies() {
                    0
                } else {
                    4
                };
                query = query
                    .bind::<BigInt, _>(r.id)
                    .bind::<Binary, _>(r.local.clone())
                    .bind::<SmallInt, _>(vstate)
                    .bind::<Text, _>(r.path.clone());
            }
            query
                .bind::<GeoTimestamp, _>(UtcDateTime(claimed_at))
                .load(c)
                .map_err(q("marking rows synced", d))?
        });
        done.extend(ids.into_iter().map(|r| r.id));
    }
    Ok(done)
}
