//! The primary site: publishing events in the caller's transaction (a transactional outbox),
//! the replication feature flags, and the verification state the verifier works through
//! ([`verification`]); [`records`] reads the model tables; [`triggers`] is the DDL of the
//! triggers that publish for `events = "triggers"` types (the default).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use geo_core::{BlobReplicator, Replicable, ReplicableDescriptor, Replicator};

use crate::db::{AsDbConn, with_conn};
use crate::schema::geo_feature_flags;
use crate::sql::{IdRow, Sql};
use crate::types::UtcDateTime;

pub mod partition;
pub mod prune;
pub mod records;
pub mod sites;
pub mod triggers;
pub mod verification;

pub use partition::model_ids_in_partitions;
pub use records::{
    PrimaryChecksum, all_ids, blob_path_in_use, blob_paths, count_records, max_model_id, model_ids,
    primary_checksums,
};
pub use verification::{
    Claimed, backfill_verification_states, claim_verification_batch, fail_verification_timeouts,
    mark_verification_pending, record_verification_failure, record_verification_success,
    reverify_due, verification_groups,
};

/// Errors from the primary's database work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

pub(crate) fn q(
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
    let flag = d.feature_flag();
    let found: Option<bool> = with_conn!(conn, c => geo_feature_flags::table
        .find(&flag)
        .select(geo_feature_flags::enabled)
        .first(c)
        .optional()?);
    Ok(found.unwrap_or(d.enabled_by_default))
}

/// Sets the feature flag `geo_<name>_replication` in this database.
pub fn set_replication_enabled(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    enabled: bool,
    now: DateTime<Utc>,
) -> Result<(), diesel::result::Error> {
    use geo_feature_flags::dsl;
    let flag = d.feature_flag();
    let row = (
        dsl::name.eq(&flag),
        dsl::enabled.eq(enabled),
        dsl::updated_at.eq(UtcDateTime(now)),
    );
    with_conn!(conn, c => diesel::insert_into(dsl::geo_feature_flags)
        .values(row)
        .on_conflict(dsl::name)
        .do_update()
        .set((dsl::enabled.eq(enabled), dsl::updated_at.eq(UtcDateTime(now))))
        .execute(c)?);
    Ok(())
}

/// Inserts an event unless the type's feature flag is off, in one statement: the first thing a
/// caller's transaction does is a write, so on SQLite it waits for the write lock instead of
/// failing with `SQLITE_BUSY_SNAPSHOT`. Returns the event id, or `None` when the flag is off.
///
/// Built with [`Sql`] rather than Diesel's DSL: `INSERT … SELECT <constants> WHERE
/// COALESCE((SELECT enabled …), <default>)` has no `FROM`, which the DSL cannot express.
pub fn insert_event_if_enabled(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    kind: EventKind,
    model_record_id: i64,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Option<i64>, PrimaryError> {
    use geo_core::transitions::Datum;
    let mut sql = Sql::new();
    sql.push("INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) SELECT ")
        .bind(Datum::Text(d.name.to_string()))
        .push(", ")
        .bind(Datum::Text(kind.as_str().to_string()))
        .push(", ")
        .bind_i64(model_record_id)
        .push(", ")
        .bind_json(payload.clone())
        .push(", ")
        .bind_time(now)
        .push(" WHERE COALESCE((SELECT enabled FROM geo_feature_flags WHERE name = ")
        .bind(Datum::Text(d.feature_flag()))
        .push("), ")
        .bind(Datum::Bool(d.enabled_by_default))
        .push(") RETURNING id");
    let rows: Vec<IdRow> = sql.load(conn).map_err(q("inserting an event", d))?;
    Ok(rows.first().map(|r| r.id))
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
    if d.captured_by_triggers() && matches!(kind, EventKind::Created | EventKind::Deleted) {
        tracing::debug!(
            replicable = d.name,
            id,
            event = kind.as_str(),
            "events = \"triggers\": the model table's trigger published it; nothing to insert"
        );
        return Ok(None);
    }
    let mut payload = match kind {
        EventKind::Deleted => {
            serde_json::json!({"model_record_id": id, "blob_path": replicator.blob_path()})
        }
        _ => serde_json::json!({"model_record_id": id}),
    };
    // The partition key (`null` when the field is `None`), so selective sync can skip the
    // event: the same key the triggers write.
    if d.tables.partition.is_some() {
        payload["partition"] = serde_json::json!(replicator.partition());
    }
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

/// Publishes `created` for `record` in the caller's transaction and marks its verification
/// pending. Call it inside the transaction that inserts the record: a rollback publishes nothing,
/// a commit never loses the event. Returns the event id, or `None` when the type's feature flag
/// is off.
///
/// For an `events = "triggers"` type (the default) it inserts nothing and returns `Ok(None)`:
/// the model table's `INSERT` trigger already published `created` in the same transaction.
///
/// Waiting event feeds see the commit by themselves ([`crate::notify`]); calling
/// [`crate::notify::events_committed`] after the commit wakes them a few milliseconds sooner.
pub fn publish_created<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Created, Utc::now())
}

/// Publishes `updated` (the blob changed) in the caller's transaction and marks the record's
/// verification pending. Unlike GitLab, every blob type has a first-class update event.
///
/// For an `events = "triggers"` type too: the triggers see a change of the file column, not a
/// file rewritten in place under the same path, so call this after such a rewrite.
pub fn publish_updated<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Updated, Utc::now())
}

/// Publishes `deleted` with the blob path in the caller's transaction. Call it in the transaction
/// that deletes the record.
///
/// For an `events = "triggers"` type (the default) it inserts nothing and returns `Ok(None)`:
/// the model table's `DELETE` trigger already published `deleted` with the old path.
pub fn publish_deleted<R>(conn: &mut impl AsDbConn, record: &R) -> Result<Option<i64>, PrimaryError>
where
    R: Replicable,
    for<'a> R::Replicator<'a>: BlobReplicator,
{
    publish_with(conn, record, EventKind::Deleted, Utc::now())
}
