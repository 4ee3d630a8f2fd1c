//! The primary site: publishing events in the caller's transaction (a transactional outbox) and
//! the verification workers that checksum every record's blob.

use chrono::{DateTime, Duration, Utc};
#[cfg(feature = "postgres")]
use diesel::PgConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Nullable, SmallInt, Text};
use geo_core::{
    BlobReplicator, Replicable, ReplicableDescriptor, Replicator, VerificationMode,
    VerificationState,
};

use crate::db::AsDbConn;
use crate::sql::{IdRow, id_list, ident, placeholders};
use crate::types::UtcDateTime;
use crate::types::sql_types::GeoTimestamp;
use crate::with_conn;

/// Errors from the primary's database work.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// A transaction could not begin or commit.
    #[error("database transaction failed: {0}")]
    Transaction(#[from] diesel::result::Error),
    /// A query failed.
    #[error("{what} for {replicable}: {source}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The replicable name.
        replicable: &'static str,
        /// The database error.
        source: diesel::result::Error,
    },
}

fn q(
    what: &'static str,
    d: &ReplicableDescriptor,
) -> impl FnOnce(diesel::result::Error) -> PrimaryError {
    let replicable = d.name;
    move |source| PrimaryError::Query {
        what,
        replicable,
        source,
    }
}

/// The events a replicator publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A record (and its blob) was created.
    Created,
    /// A record's blob changed.
    Updated,
    /// A record was deleted; its blob must go.
    Deleted,
    /// The primary computed a record's checksum.
    ChecksumSucceeded,
}

impl EventKind {
    /// The stored event name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
            EventKind::ChecksumSucceeded => "checksum_succeeded",
        }
    }
}

/// Whether the feature flag `geo_<name>_replication` is on in this database (the
/// `geo_feature_flags` table), falling back to the attribute's `enabled_by_default`.
pub fn replication_enabled(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<bool, diesel::result::Error> {
    #[derive(QueryableByName)]
    struct Flag {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        enabled: bool,
    }
    let flag = d.feature_flag();
    let rows: Vec<Flag> = with_conn!(conn, c => {
        let sql = placeholders("SELECT enabled FROM geo_feature_flags WHERE name = ?", c_backend(c));
        sql_query(sql.as_ref()).bind::<Text, _>(&flag).load(c)?
    });
    Ok(rows.first().map_or(d.enabled_by_default, |f| f.enabled))
}

/// Sets the feature flag `geo_<name>_replication` in this database.
pub fn set_replication_enabled(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    let flag = d.feature_flag();
    with_conn!(conn, c => {
        let sql = placeholders(
            "INSERT INTO geo_feature_flags (name, enabled, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
            c_backend(c),
        );
        sql_query(sql.as_ref())
            .bind::<Text, _>(&flag)
            .bind::<diesel::sql_types::Bool, _>(enabled)
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .execute(c)?;
    });
    Ok(())
}

/// Helper: the backend of a concrete connection inside `with_conn!`.
pub(crate) trait BackendOf {
    fn backend_of(&self) -> geo_core::Backend;
}
impl BackendOf for SqliteConnection {
    fn backend_of(&self) -> geo_core::Backend {
        geo_core::Backend::Sqlite
    }
}
#[cfg(feature = "postgres")]
impl BackendOf for PgConnection {
    fn backend_of(&self) -> geo_core::Backend {
        geo_core::Backend::Postgres
    }
}
pub(crate) fn c_backend<C: BackendOf>(c: &C) -> geo_core::Backend {
    c.backend_of()
}

/// Inserts one event row. Runs inside whatever transaction the caller holds.
pub fn insert_event(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    kind: EventKind,
    model_record_id: i64,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<i64, PrimaryError> {
    let payload = payload.to_string();
    let rows: Vec<IdRow> = with_conn!(conn, c => {
        let cast = match c_backend(c) {
            geo_core::Backend::Sqlite => "?",
            geo_core::Backend::Postgres => "CAST(? AS jsonb)",
        };
        let sql = format!(
            "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) \
             VALUES (?, ?, ?, {cast}, ?) RETURNING id"
        );
        sql_query(placeholders(&sql, c_backend(c)).as_ref())
            .bind::<Text, _>(d.name)
            .bind::<Text, _>(kind.as_str())
            .bind::<BigInt, _>(model_record_id)
            .bind::<Text, _>(&payload)
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .load(c)
            .map_err(q("inserting an event", d))?
    });
    Ok(rows.first().map_or(0, |r| r.id))
}

/// Marks a record's verification `pending` (GitLab's `verification_pending!`): clears the failure,
/// keeps the retry counters when coming from `failed` so the backoff keeps growing. Creates the
/// states row when verification is kept in a separate table.
pub fn mark_verification_pending(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_record_id: i64,
) -> Result<(), PrimaryError> {
    let Some((table, key)) = d.tables.verification else {
        return Ok(());
    };
    let (t, k) = (ident(table), ident(key));
    let set = "verification_state = 0, verification_failure = NULL, verification_started_at = NULL, \
               verification_retry_count = CASE WHEN verification_state = 3 THEN verification_retry_count ELSE 0 END, \
               verification_retry_at = CASE WHEN verification_state = 3 THEN verification_retry_at ELSE NULL END";
    let sql = match d.verification {
        VerificationMode::Separate => format!(
            "INSERT INTO {t} ({k}, verification_state) VALUES (?, 0) ON CONFLICT ({k}) DO UPDATE SET {}",
            set.replace(
                "verification_state = 3",
                &format!("{t}.verification_state = 3")
            )
            .replace(
                "THEN verification_retry",
                &format!("THEN {t}.verification_retry")
            )
        ),
        VerificationMode::Inline => format!("UPDATE {t} SET {set} WHERE {k} = ?"),
        VerificationMode::None => return Ok(()),
    };
    with_conn!(conn, c => {
        sql_query(placeholders(&sql, c_backend(c)).as_ref())
            .bind::<BigInt, _>(model_record_id)
            .execute(c)
            .map_err(q("marking verification pending", d))?;
    });
    Ok(())
}

fn publish_with<R>(
    conn: &mut impl AsDbConn,
    record: &R,
    kind: EventKind,
    now: DateTime<Utc>,
) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    let d = R::DESCRIPTOR;
    let replicator = record.replicator();
    let id = replicator.model_record_id();
    let payload = match kind {
        EventKind::Deleted => {
            serde_json::json!({"model_record_id": id, "blob_path": replicator.blob_path()})
        }
        _ => serde_json::json!({"model_record_id": id}),
    };
    let Some(event_id) = insert_event_if_enabled(conn, d, kind, id, &payload, now)? else {
        tracing::debug!(
            replicable = d.name,
            "replication disabled by feature flag; no event"
        );
        return Ok(None);
    };
    if matches!(kind, EventKind::Created | EventKind::Updated) {
        mark_verification_pending(conn, d, id)?;
    }
    tracing::debug!(
        replicable = d.name,
        id,
        event = kind.as_str(),
        event_id,
        "published"
    );
    Ok(Some(event_id))
}

/// Inserts an event unless the type's feature flag is off, in one statement: the first thing a
/// caller's transaction does is a write, so on SQLite it waits for the write lock instead of
/// failing with `SQLITE_BUSY_SNAPSHOT`. Returns the event id, or `None` when the flag is off.
pub fn insert_event_if_enabled(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    kind: EventKind,
    model_record_id: i64,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Option<i64>, PrimaryError> {
    let payload = payload.to_string();
    let flag = d.feature_flag();
    let rows: Vec<IdRow> = with_conn!(conn, c => {
        let (cast, default) = match c_backend(c) {
            geo_core::Backend::Sqlite => ("?", if d.enabled_by_default { "1" } else { "0" }),
            geo_core::Backend::Postgres => ("CAST(? AS jsonb)", if d.enabled_by_default { "TRUE" } else { "FALSE" }),
        };
        let sql = format!(
            "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) \
             SELECT ?, ?, ?, {cast}, ? WHERE COALESCE((SELECT enabled FROM geo_feature_flags WHERE name = ?), {default}) \
             RETURNING id"
        );
        sql_query(placeholders(&sql, c_backend(c)).as_ref())
            .bind::<Text, _>(d.name)
            .bind::<Text, _>(kind.as_str())
            .bind::<BigInt, _>(model_record_id)
            .bind::<Text, _>(&payload)
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .bind::<Text, _>(&flag)
            .load(c)
            .map_err(q("inserting an event", d))?
    });
    Ok(rows.first().map(|r| r.id))
}

/// Publishes `created` for `record` in the caller's transaction and marks its verification
/// pending. Call it inside the transaction that inserts the record: a rollback publishes nothing,
/// a commit never loses the event. Returns the event id, or `None` when the type's feature flag
/// is off.
pub fn publish_created<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Created, Utc::now())
}

/// Publishes `updated` (the blob changed) in the caller's transaction and marks the record's
/// verification pending. Unlike GitLab, every blob type has a first-class update event.
pub fn publish_updated<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Updated, Utc::now())
}

/// Publishes `deleted` with the blob path in the caller's transaction. Call it in the transaction
/// that deletes the record.
pub fn publish_deleted<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Deleted, Utc::now())
}

/// A record claimed for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The model id.
    pub id: i64,
    /// `verification_started_at` written by the claim (the compare-and-set token).
    pub started_at: DateTime<Utc>,
}

/// Atomically claims up to `limit` records for verification: `pending` first (ordered by
/// `verified_at`, never-verified first), then `failed` whose retry is due. Sets them `started`.
/// On PostgreSQL the inner select uses `FOR UPDATE SKIP LOCKED`, so concurrent workers claim
/// disjoint rows.
pub fn claim_verification_batch(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, PrimaryError> {
    let Some((table, key)) = d.tables.verification else {
        return Ok(Vec::new());
    };
    let (t, k) = (ident(table), ident(key));
    let mut out = Vec::new();
    for (filter, order) in [
        (
            "verification_state = 0",
            "verified_at IS NOT NULL, verified_at, k",
        ),
        (
            "verification_state = 3 AND (verification_retry_at IS NULL OR verification_retry_at <= ?)",
            "verification_retry_at IS NOT NULL, verification_retry_at, k",
        ),
    ] {
        let remaining = limit - out.len() as i64;
        if remaining <= 0 {
            break;
        }
        let order = order.replace(", k", &format!(", {k}"));
        let ids: Vec<IdRow> = with_conn!(conn, c => {
            let lock = match c_backend(c) {
                geo_core::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
                geo_core::Backend::Sqlite => "",
            };
            let sql = format!(
                "UPDATE {t} SET verification_state = 1, verification_started_at = ? \
                 WHERE {k} IN (SELECT {k} FROM {t} WHERE {filter} ORDER BY {order} LIMIT ?{lock}) \
                 RETURNING {k} AS id"
            );
            let query = sql_query(placeholders(&sql, c_backend(c)).as_ref())
                .bind::<GeoTimestamp, _>(UtcDateTime(now));
            if filter.contains('?') {
                query
                    .bind::<GeoTimestamp, _>(UtcDateTime(now))
                    .bind::<BigInt, _>(remaining)
                    .load(c)
            } else {
                query.bind::<BigInt, _>(remaining).load(c)
            }
            .map_err(q("claiming a verification batch", d))?
        });
        out.extend(ids.into_iter().map(|r| Claimed {
            id: r.id,
            started_at: now,
        }));
    }
    Ok(out)
}

/// The blob paths of `ids`, read from the model table.
pub fn blob_paths(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<Vec<(i64, String)>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        path: String,
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT CAST({id} AS BIGINT) AS id, {file} AS path FROM {t} WHERE {id} IN ({list})",
        id = ident(d.tables.model_id),
        file = ident(d.tables.model_file),
        t = ident(d.tables.model),
        list = id_list(ids)
    );
    let rows: Vec<Row> =
        with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("reading blob paths", d))?);
    Ok(rows.into_iter().map(|r| (r.id, r.path)).collect())
}

/// Records a successful checksum for a claimed record — only if the row is still the claim we
/// made (`started` with our `verification_started_at`); a record changed meanwhile stays pending.
/// Publishes `checksum_succeeded` in the same transaction. Returns whether the row was updated.
pub fn record_verification_success(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    claim: &Claimed,
    checksum: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, PrimaryError> {
    let Some((table, key)) = d.tables.verification else {
        return Ok(false);
    };
    let sql = format!(
        "UPDATE {t} SET verification_state = 2, verification_checksum = ?, verified_at = ?, \
         verification_failure = NULL, verification_retry_count = 0, verification_retry_at = NULL \
         WHERE {k} = ? AND verification_state = 1 AND verification_started_at = ?",
        t = ident(table),
        k = ident(key)
    );
    let hex = checksum
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let updated = with_conn!(conn, c => {
        c.transaction::<_, PrimaryError, _>(|c| {
            let n = sql_query(placeholders(&sql, c_backend(c)).as_ref())
                .bind::<Binary, _>(checksum)
                .bind::<GeoTimestamp, _>(UtcDateTime(now))
                .bind::<BigInt, _>(claim.id)
                .bind::<GeoTimestamp, _>(UtcDateTime(claim.started_at))
                .execute(c)
                .map_err(q("recording a checksum", d))?;
            if n == 1 {
                insert_event_if_enabled(
                    c,
                    d,
                    EventKind::ChecksumSucceeded,
                    claim.id,
                    &serde_json::json!({"model_record_id": claim.id, "checksum": hex}),
                    now,
                )?;
            }
            Ok(n == 1)
        })?
    });
    Ok(updated)
}

/// Records a failed verification of a claimed record: `failed`, retry count + 1, the next retry
/// at `retry_at`, the message cut to 255 characters, checksum cleared.
pub fn record_verification_failure(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    claim: &Claimed,
    message: &str,
    retry_at: impl Fn(i16) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, PrimaryError> {
    let Some((table, key)) = d.tables.verification else {
        return Ok(false);
    };
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SmallInt)]
        verification_retry_count: i16,
    }
    let (t, k) = (ident(table), ident(key));
    let message = crate::truncate_failure(message);
    // Write first (SQLite: a deferred transaction that reads before it writes can fail with
    // SQLITE_BUSY_SNAPSHOT instead of waiting): bump the count, then set the retry time from it.
    let done = with_conn!(conn, c => {
        c.transaction::<_, PrimaryError, _>(|c| {
            let rows: Vec<Row> = sql_query(placeholders(
                &format!("UPDATE {t} SET verification_state = 3, \
                          verification_retry_count = CASE WHEN verification_retry_count < 32767 THEN verification_retry_count + 1 ELSE verification_retry_count END, \
                          verified_at = ?, verification_checksum = NULL, verification_failure = ? \
                          WHERE {k} = ? AND verification_state = 1 AND verification_started_at = ? RETURNING verification_retry_count"),
                c_backend(c),
            ).as_ref())
            .bind::<GeoTimestamp, _>(UtcDateTime(now))
            .bind::<Nullable<Text>, _>(Some(message.as_str()))
            .bind::<BigInt, _>(claim.id)
            .bind::<GeoTimestamp, _>(UtcDateTime(claim.started_at))
            .load(c)
            .map_err(q("recording a verification failure", d))?;
            let Some(row) = rows.first() else { return Ok(false) };
            sql_query(placeholders(&format!("UPDATE {t} SET verification_retry_at = ? WHERE {k} = ?"), c_backend(c)).as_ref())
                .bind::<GeoTimestamp, _>(UtcDateTime(retry_at(row.verification_retry_count)))
                .bind::<BigInt, _>(claim.id)
                .execute(c)
                .map_err(q("recording a verification retry time", d))?;
            Ok(true)
        })?
    });
    Ok(done)
}

/// Sets `succeeded` records verified before `now - interval` back to `pending` (at most `limit`
/// rows), so the primary re-checksums them. GitLab: every 7 days, 1000 rows a batch.
pub fn reverify_due(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    interval: Duration,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<usize, PrimaryError> {
    let Some((table, key)) = d.tables.verification else {
        return Ok(0);
    };
    let (t, k) = (ident(table), ident(key));
    let sql = format!(
        "UPDATE {t} SET verification_state = 0 WHERE {k} IN \
         (SELECT {k} FROM {t} WHERE verification_state = 2 AND verified_at < ? ORDER BY verified_at LIMIT ?)"
    );
    Ok(
        with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<GeoTimestamp, _>(UtcDateTime(now - interval))
        .bind::<BigInt, _>(limit)
        .execute(c)
        .map_err(q("scheduling reverification", d))?),
    )
}

/// Marks rows `started` for longer than `timeout` as failed ("Verification timed out after …").
pub fn fail_verification_timeouts(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    timeout: Duration,
    retry_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, PrimaryError> {
    let Some((table, _)) = d.tables.verification else {
        return Ok(0);
    };
    let message = format!("Verification timed out after {}", human_duration(timeout));
    let cols = crate::sql::StartedColumns {
        extra: ", verification_checksum = NULL",
        ..crate::sql::VERIFICATION_COLUMNS
    };
    crate::sql::fail_started_before(conn, table, cols, &message, retry_at, now - timeout)
        .map_err(q("failing verification timeouts", d))
}

/// Creates missing `<name>_states` rows (verification pending) for model records that have
/// none, at most `limit` at a time — records inserted without `publish_created` still get
/// verified. Returns how many were created.
pub fn backfill_verification_states(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
) -> Result<usize, PrimaryError> {
    if d.verification != VerificationMode::Separate {
        return Ok(0);
    }
    let Some((table, key)) = d.tables.verification else {
        return Ok(0);
    };
    let sql = format!(
        "INSERT INTO {st} ({k}, verification_state) SELECT m.{id}, 0 FROM {m} m \
         WHERE NOT EXISTS (SELECT 1 FROM {st} s WHERE s.{k} = m.{id}) ORDER BY m.{id} LIMIT ?",
        st = ident(table),
        k = ident(key),
        id = ident(d.tables.model_id),
        m = ident(d.tables.model)
    );
    Ok(
        with_conn!(conn, c => sql_query(placeholders(&sql, c_backend(c)).as_ref())
        .bind::<BigInt, _>(limit)
        .execute(c)
        .map_err(q("backfilling verification states", d))?),
    )
}

/// The verification state and checksum of records, read from the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryChecksum {
    /// The model id.
    pub id: i64,
    /// The verification state.
    pub state: VerificationState,
    /// The checksum, present when `state` is `Succeeded`.
    pub checksum: Option<Vec<u8>>,
}

/// Reads the verification state and checksum of `ids` on the primary (set-based).
pub fn primary_checksums(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    ids: &[i64],
) -> Result<Vec<PrimaryChecksum>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = Nullable<Binary>)]
        checksum: Option<Vec<u8>>,
    }
    let Some((table, key)) = d.tables.verification else {
        return Ok(Vec::new());
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT CAST({k} AS BIGINT) AS id, verification_state AS state, verification_checksum AS checksum \
         FROM {t} WHERE {k} IN ({list})",
        k = ident(key),
        t = ident(table),
        list = id_list(ids)
    );
    let rows: Vec<Row> =
        with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("reading primary checksums", d))?);
    Ok(rows
        .into_iter()
        .map(|r| {
            let state = VerificationState::from_i16(r.state).unwrap_or(VerificationState::Pending);
            PrimaryChecksum {
                id: r.id,
                checksum: if state == VerificationState::Succeeded {
                    r.checksum
                } else {
                    None
                },
                state,
            }
        })
        .collect())
}

/// "8 hours", "10 minutes", "45 seconds": GitLab's wording for timeouts.
pub fn human_duration(d: Duration) -> String {
    let s = d.num_seconds();
    let (n, unit) = if s % 3600 == 0 && s >= 3600 {
        (s / 3600, "hour")
    } else if s % 60 == 0 && s >= 60 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Number of model records.
pub fn count_records(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<u64, PrimaryError> {
    let sql = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {}",
        ident(d.tables.model)
    );
    let rows: Vec<crate::sql::Count> =
        with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("counting records", d))?);
    Ok(rows.first().map_or(0, |r| r.n.max(0) as u64))
}

/// Verification-state rows grouped by state: `(state, count)`.
pub fn verification_groups(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Vec<(i16, u64)>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Some((table, _)) = d.tables.verification else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT verification_state AS state, CAST(COUNT(*) AS BIGINT) AS n FROM {} GROUP BY verification_state",
        ident(table)
    );
    let rows: Vec<Row> = with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("counting verification states", d))?);
    Ok(rows
        .into_iter()
        .map(|r| (r.state, r.n.max(0) as u64))
        .collect())
}

/// Every model id, ascending.
pub fn all_ids(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Vec<i64>, PrimaryError> {
    let sql = format!(
        "SELECT CAST({id} AS BIGINT) AS id FROM {t} ORDER BY {id}",
        id = ident(d.tables.model_id),
        t = ident(d.tables.model)
    );
    let rows: Vec<IdRow> =
        with_conn!(conn, c => sql_query(&sql).load(c).map_err(q("reading ids", d))?);
    Ok(rows.into_iter().map(|r| r.id).collect())
}
