//! The primary's "data management" (GitLab's `admin/data_management`): a replicable's model
//! records with their checksum state, in model id order, keyset-paginated. The state comes
//! from the `<name>_states` table (`LEFT JOIN`: a record without a states row shows no state)
//! or from the model table's inline columns.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Binary, Nullable, SmallInt, Text};
use geo_core::schema::Column;
use geo_core::{ReplicableDescriptor, VerificationMode, VerificationState};

use super::{
    AdminError, Key, Keyset, Page, PageRequest, count, db, in_ids, into_page, keyword_is, plan,
    state_is,
};
use crate::db::AsDbConn;
use crate::sql::Sql;
use crate::types::UtcDateTime;
use crate::types::sql_types::GeoTimestamp;

/// One model record and its verification state on the primary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordRow {
    /// The model record's id.
    pub model_record_id: i64,
    /// Its file column.
    pub file: Option<String>,
    /// Verification state; `None` when the record has no states row yet or the type has no
    /// verification.
    pub verification_state: Option<VerificationState>,
    /// When the running checksum started.
    pub verification_started_at: Option<DateTime<Utc>>,
    /// When the record was last checksummed.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the next verification retry is due.
    pub verification_retry_at: Option<DateTime<Utc>>,
    /// Failed verifications in a row.
    pub verification_retry_count: i16,
    /// The primary's checksum.
    pub verification_checksum: Option<Vec<u8>>,
    /// Why the last verification failed.
    pub verification_failure: Option<String>,
}

/// Which records a data-management list shows.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    /// Model ids.
    pub ids: Option<Vec<i64>>,
    /// Verification state ([`AdminError::BadArgument`] on a type without verification).
    pub verification_state: Option<VerificationState>,
    /// The model id when numeric, else a substring of the file column (`LIKE`, escaped).
    pub keyword: Option<String>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    file: Option<String>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    verification_state: Option<i16>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_started_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verified_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    verification_retry_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    verification_retry_count: Option<i16>,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    verification_failure: Option<String>,
}

impl Row {
    fn into_record(self) -> RecordRow {
        RecordRow {
            model_record_id: self.id,
            file: self.file,
            verification_state: self
                .verification_state
                .and_then(|v| VerificationState::from_i16(v).ok()),
            verification_started_at: self.verification_started_at.map(UtcDateTime::get),
            verified_at: self.verified_at.map(UtcDateTime::get),
            verification_retry_at: self.verification_retry_at.map(UtcDateTime::get),
            verification_retry_count: self.verification_retry_count.unwrap_or(0),
            verification_checksum: self.verification_checksum,
            verification_failure: self.verification_failure,
        }
    }
}

/// The verification columns a record row reads, in [`Row`]'s names.
const STATE_COLUMNS: [Column; 7] = [
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerifiedAt,
    Column::VerificationRetryAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

fn check(d: &ReplicableDescriptor, filter: &RecordFilter) -> Result<(), AdminError> {
    if filter.verification_state.is_some() && !d.verifies() {
        return Err(AdminError::BadArgument(format!(
            "{} has no verification: cannot filter by verification state",
            d.name
        )));
    }
    Ok(())
}

/// The table holding the verification columns, if any.
fn state_table(d: &ReplicableDescriptor) -> Option<&'static str> {
    match d.verification {
        VerificationMode::None => None,
        _ => d.tables.verification.map(|(t, _)| t),
    }
}

/// `FROM model [LEFT JOIN states ON …] WHERE 1 = 1`.
fn from(sql: &mut Sql, d: &ReplicableDescriptor) {
    let m = d.tables.model;
    sql.push(" FROM ").ident(m);
    if let (VerificationMode::Separate, Some((st, key))) = (d.verification, d.tables.verification) {
        sql.push(" LEFT JOIN ").ident(st).push(" ON ");
        sql.qualified(st, key)
            .push(" = ")
            .qualified(m, d.tables.model_id);
    }
    sql.push(" WHERE 1 = 1");
}

fn select(d: &ReplicableDescriptor) -> Sql {
    let m = d.tables.model;
    let mut sql = Sql::new();
    sql.push("SELECT CAST(")
        .qualified(m, d.tables.model_id)
        .push(" AS BIGINT) AS id, ");
    sql.qualified(m, d.tables.model_file).push(" AS file");
    for c in STATE_COLUMNS {
        sql.push(", ");
        match state_table(d) {
            Some(st) => {
                sql.qualified(st, c.name());
            }
            // Typed NULLs, so PostgreSQL reads them as the columns' types.
            None if c == Column::VerificationState || c == Column::VerificationRetryCount => {
                sql.push("CAST(NULL AS SMALLINT)");
            }
            None => {
                sql.push("NULL");
            }
        }
        sql.push(" AS ").ident(c.name());
    }
    from(&mut sql, d);
    sql
}

fn filter(sql: &mut Sql, d: &ReplicableDescriptor, filter: &RecordFilter) {
    let m = d.tables.model;
    if let Some(ids) = &filter.ids {
        in_ids(sql, m, d.tables.model_id, ids);
    }
    if let (Some(s), Some(st)) = (filter.verification_state, state_table(d)) {
        state_is(sql, st, Column::VerificationState, s.as_i16());
    }
    keyword_is(
        sql,
        m,
        d.tables.model_id,
        d.tables.model_file,
        filter.keyword.as_deref(),
    );
}

const TAG: &str = "records";

/// One page of `d`'s records matching `filter`, in model id order.
pub fn list_records(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    f: &RecordFilter,
    page: &PageRequest,
) -> Result<Page<RecordRow>, AdminError> {
    check(d, f)?;
    let plan = plan(page, TAG)?;
    let mut sql = select(d);
    filter(&mut sql, d, f);
    let keyset = Keyset {
        table: d.tables.model,
        id: d.tables.model_id,
        time: None,
        ascending: true,
    };
    keyset.finish(&mut sql, &plan);
    let rows: Vec<Row> = sql.load(conn).map_err(db("listing records"))?;
    let rows = rows.into_iter().map(Row::into_record).collect();
    Ok(into_page(rows, &plan, TAG, |r: &RecordRow| Key {
        id: r.model_record_id,
        t: None,
    }))
}

/// How many of `d`'s records match `filter`.
pub fn count_records_matching(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    f: &RecordFilter,
) -> Result<i64, AdminError> {
    check(d, f)?;
    let mut sql = Sql::new();
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n");
    from(&mut sql, d);
    filter(&mut sql, d, f);
    count(conn, &sql, "counting records")
}

/// Record `model_id` of `d` with its verification state.
pub fn get_record(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_id: i64,
) -> Result<Option<RecordRow>, AdminError> {
    let mut sql = select(d);
    in_ids(&mut sql, d.tables.model, d.tables.model_id, &[model_id]);
    let rows: Vec<Row> = sql.load(conn).map_err(db("reading a record"))?;
    Ok(rows.into_iter().next().map(Row::into_record))
}

/// The primary's REVERIFY of one record: its verification becomes `pending`
/// ([`crate::primary::mark_verification_pending`], creating the states row if needed) when the
/// record exists. `Ok(false)` when it does not.
pub fn reverify_record(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_id: i64,
) -> Result<bool, AdminError> {
    if !d.verifies() {
        return Err(AdminError::BadArgument(format!(
            "{} has no verification: nothing to reverify",
            d.name
        )));
    }
    let mut sql = Sql::new();
    sql.push("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ")
        .ident(d.tables.model)
        .push(" WHERE 1 = 1");
    in_ids(&mut sql, d.tables.model, d.tables.model_id, &[model_id]);
    if count(conn, &sql, "finding a record")? == 0 {
        return Ok(false);
    }
    crate::primary::mark_verification_pending(conn, d, model_id)?;
    Ok(true)
}
