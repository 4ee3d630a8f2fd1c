//! The database layer of the operator's face (GraphQL, the admin page, the CLI): filtered,
//! sorted, keyset-paginated registry lists ([`list`]), the primary's records and their checksum
//! state ([`records`]), durable batched bulk updates ([`bulk`]), and the replication feature
//! flags and a database's role ([`mod@flags`]).
//!
//! Pagination follows Relay: `first`/`after` page forward, `last`/`before` backward (`after` and
//! `before` may bound one request together). Every sort is a keyset on its sort key plus the
//! row's id, so a deep page costs what the first one does. Cursors are opaque, URL-safe strings
//! (hex of a small JSON document naming the sort); a cursor that does not decode, or that was
//! made for another sort, is [`AdminError::BadCursor`].
//!
//! `has_previous_page` on a forward page (and `has_next_page` on a backward one) is `true`
//! exactly when the request had a cursor on that side, as the Relay spec allows when the answer
//! is not cheap to compute.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use geo_core::schema::Column;
use geo_core::{ReplicationState, VerificationState};

use crate::db::AsDbConn;
use crate::sql::Sql;

pub mod bulk;
pub mod flags;
pub mod list;
pub mod records;

pub use bulk::{
    BULK_BATCH, BulkAction, BulkFilter, BulkUpdate, BulkWorker, BulkWorkerHandle, enqueue, job,
    jobs, run_job_to_end, run_to_end, step,
};
pub use flags::{FlagState, detect_role, flags, set_flag};
pub use list::RegistryRecord;
pub use records::{
    RecordFilter, RecordRow, count_records_matching, get_record, list_records, reverify_record,
};

/// Page size cap: `first`/`last` above it are clamped to it.
pub const MAX_PAGE: usize = 100;
/// Page size when neither `first` nor `last` is given.
pub const DEFAULT_PAGE: usize = 20;

/// Why an operator's query or action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A pagination cursor that does not decode, or was made for another sort.
    #[error("invalid cursor")]
    BadCursor,
    /// An argument that does not apply: a verification filter on a type without verification,
    /// a resync on a primary, both `first` and `last`, an unknown flag.
    #[error("{0}")]
    BadArgument(String),
    /// A registry statement failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The connection pool gave no connection.
    #[error("database pool: {0}")]
    Pool(String),
    /// Another statement failed.
    #[error("{what}: {source}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// The database error.
        #[source]
        source: diesel::result::Error,
    },
}

impl From<crate::primary::PrimaryError> for AdminError {
    fn from(e: crate::primary::PrimaryError) -> Self {
        use crate::primary::PrimaryError;
        match e {
            PrimaryError::Transaction(source) => AdminError::Database {
                what: "a transaction",
                source,
            },
            PrimaryError::Query { what, source, .. } => AdminError::Database { what, source },
        }
    }
}

impl From<diesel::result::Error> for AdminError {
    fn from(source: diesel::result::Error) -> Self {
        AdminError::Database {
            what: "a transaction",
            source,
        }
    }
}

pub(crate) fn db(what: &'static str) -> impl FnOnce(diesel::result::Error) -> AdminError {
    move |source| AdminError::Database { what, source }
}

/// Which page of a list: Relay's `first`/`after` (forward) or `last`/`before` (backward).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// At most this many rows after `after` (clamped to [`MAX_PAGE`]).
    pub first: Option<usize>,
    /// The cursor of the row the page starts after.
    pub after: Option<String>,
    /// At most this many rows before `before` (clamped to [`MAX_PAGE`]).
    pub last: Option<usize>,
    /// The cursor of the row the page ends before.
    pub before: Option<String>,
}

impl PageRequest {
    /// The first `n` rows.
    pub fn first(n: usize) -> Self {
        PageRequest {
            first: Some(n),
            ..Self::default()
        }
    }

    /// The last `n` rows.
    pub fn last(n: usize) -> Self {
        PageRequest {
            last: Some(n),
            ..Self::default()
        }
    }

    /// Sets `after`.
    #[must_use]
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// Sets `before`.
    #[must_use]
    pub fn before(mut self, cursor: impl Into<String>) -> Self {
        self.before = Some(cursor.into());
        self
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// `(opaque cursor, row)` in display order.
    pub rows: Vec<(String, T)>,
    /// More rows follow the last one.
    pub has_next_page: bool,
    /// More rows precede the first one.
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    /// The cursor of the first row.
    pub fn start_cursor(&self) -> Option<&str> {
        self.rows.first().map(|(c, _)| c.as_str())
    }

    /// The cursor of the last row.
    pub fn end_cursor(&self) -> Option<&str> {
        self.rows.last().map(|(c, _)| c.as_str())
    }
}

/// The order of a registry list (GitLab's `RegistrySortEnum`). Every order ends with the row's
/// `id` in the same direction. In the timestamp orders `NULL` sorts after every time when
/// ascending and before every time when descending, on both backends (PostgreSQL's default,
/// spelt out as `NULLS LAST`/`NULLS FIRST` for SQLite).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RegistrySort {
    /// `id` ascending.
    #[default]
    IdAsc,
    /// `id` descending.
    IdDesc,
    /// `verified_at` ascending, never verified last.
    VerifiedAtAsc,
    /// `verified_at` descending, never verified first.
    VerifiedAtDesc,
    /// `last_synced_at` ascending, never synced last.
    LastSyncedAtAsc,
    /// `last_synced_at` descending, never synced first.
    LastSyncedAtDesc,
}

impl RegistrySort {
    /// The timestamp column sorted by, if any.
    pub(crate) fn column(self) -> Option<Column> {
        match self {
            RegistrySort::IdAsc | RegistrySort::IdDesc => None,
            RegistrySort::VerifiedAtAsc | RegistrySort::VerifiedAtDesc => Some(Column::VerifiedAt),
            RegistrySort::LastSyncedAtAsc | RegistrySort::LastSyncedAtDesc => {
                Some(Column::LastSyncedAt)
            }
        }
    }

    /// Ascending?
    pub(crate) fn ascending(self) -> bool {
        matches!(
            self,
            RegistrySort::IdAsc | RegistrySort::VerifiedAtAsc | RegistrySort::LastSyncedAtAsc
        )
    }

    /// The tag a cursor carries.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            RegistrySort::IdAsc => "id_asc",
            RegistrySort::IdDesc => "id_desc",
            RegistrySort::VerifiedAtAsc => "verified_at_asc",
            RegistrySort::VerifiedAtDesc => "verified_at_desc",
            RegistrySort::LastSyncedAtAsc => "last_synced_at_asc",
            RegistrySort::LastSyncedAtDesc => "last_synced_at_desc",
        }
    }
}

/// Which registry rows a list shows (GitLab's resolver arguments).
#[derive(Debug, Clone, Default)]
pub struct RegistryFilter {
    /// Registry row ids (the `id` column).
    pub ids: Option<Vec<i64>>,
    /// Replication state.
    pub replication_state: Option<ReplicationState>,
    /// Verification state ([`AdminError::BadArgument`] on a type without verification).
    pub verification_state: Option<VerificationState>,
    /// The model id when numeric, else a substring of `blob_path` (SQL `LIKE` with `%`, `_`
    /// and `\` escaped; case-insensitive for ASCII on SQLite, case-sensitive on PostgreSQL).
    pub keyword: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Keyset pagination, shared by the lists.
// ---------------------------------------------------------------------------------------------

/// The sort key of one row: its timestamp (microseconds since the epoch, `None` for `NULL`)
/// when the sort has one, and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Key {
    #[serde(rename = "i")]
    pub id: i64,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub t: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CursorDoc {
    s: String,
    #[serde(flatten)]
    key: Key,
}

pub(crate) fn encode_cursor(tag: &str, key: Key) -> String {
    let doc = CursorDoc {
        s: tag.to_owned(),
        key,
    };
    hex::encode(serde_json::to_vec(&doc).unwrap_or_default())
}

pub(crate) fn decode_cursor(tag: &str, cursor: &str) -> Result<Key, AdminError> {
    let bytes = hex::decode(cursor).map_err(|_| AdminError::BadCursor)?;
    let doc: CursorDoc = serde_json::from_slice(&bytes).map_err(|_| AdminError::BadCursor)?;
    if doc.s != tag {
        return Err(AdminError::BadCursor);
    }
    Ok(doc.key)
}

pub(crate) fn micros(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_micros())
}

/// A page request resolved against one sort.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Reading forward in display order (`first`), else backward (`last`).
    pub forward: bool,
    pub limit: usize,
    pub after: Option<Key>,
    pub before: Option<Key>,
}

pub(crate) fn plan(page: &PageRequest, tag: &str) -> Result<Plan, AdminError> {
    if page.first.is_some() && page.last.is_some() {
        return Err(AdminError::BadArgument(
            "give either first or last, not both".into(),
        ));
    }
    let decode = |c: &Option<String>| c.as_deref().map(|c| decode_cursor(tag, c)).transpose();
    let (forward, n) = match page.last {
        Some(n) => (false, n),
        None => (true, page.first.unwrap_or(DEFAULT_PAGE)),
    };
    Ok(Plan {
        forward,
        limit: n.min(MAX_PAGE),
        after: decode(&page.after)?,
        before: decode(&page.before)?,
    })
}

/// The order and keyset bounds of one list query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyset {
    pub table: &'static str,
    pub id: &'static str,
    /// A timestamp column sorted first, if any.
    pub time: Option<&'static str>,
    pub ascending: bool,
}

impl Keyset {
    fn col(&self, sql: &mut Sql, c: &'static str) {
        sql.qualified(self.table, c);
    }

    /// Appends ` AND <row comes after (greater) / before (less) `key` in ascending key order>`.
    fn bound(&self, sql: &mut Sql, key: Key, greater: bool) {
        let op = if greater { " > " } else { " < " };
        sql.push(" AND (");
        match (self.time, key.t) {
            (None, _) => {
                self.col(sql, self.id);
                sql.push(op).bind_i64(key.id);
            }
            (Some(t), Some(v)) => {
                let v = DateTime::from_timestamp_micros(v).unwrap_or_default();
                self.col(sql, t);
                sql.push(op).bind_time(v).push(" OR (");
                self.col(sql, t);
                sql.push(" = ").bind_time(v).push(" AND ");
                self.col(sql, self.id);
                sql.push(op).bind_i64(key.id).push(")");
                if greater {
                    // NULL sorts after every time in ascending order.
                    sql.push(" OR ");
                    self.col(sql, t);
                    sql.push(" IS NULL");
                }
            }
            (Some(t), None) => {
                self.col(sql, t);
                if greater {
                    sql.push(" IS NULL AND ");
                } else {
                    sql.push(" IS NOT NULL OR ");
                }
                self.col(sql, self.id);
                sql.push(op).bind_i64(key.id);
            }
        }
        sql.push(")");
    }

    /// Appends the keyset bounds of `plan` and `ORDER BY … LIMIT limit + 1` in scan order.
    pub fn finish(&self, sql: &mut Sql, plan: &Plan) {
        // In ascending key order, `after` means greater; a descending sort flips it.
        if let Some(k) = plan.after {
            self.bound(sql, k, self.ascending);
        }
        if let Some(k) = plan.before {
            self.bound(sql, k, !self.ascending);
        }
        let asc = self.ascending == plan.forward;
        sql.push(" ORDER BY ");
        if let Some(t) = self.time {
            self.col(sql, t);
            sql.push(if asc {
                " ASC NULLS LAST, "
            } else {
                " DESC NULLS FIRST, "
            });
        }
        self.col(sql, self.id);
        sql.push(if asc { " ASC" } else { " DESC" });
        sql.push(" LIMIT ").int(plan.limit as i64 + 1);
    }
}

/// Turns the rows of a keyset query (in scan order, at most `limit + 1`) into a page.
pub(crate) fn into_page<T>(
    mut rows: Vec<T>,
    plan: &Plan,
    tag: &str,
    key: impl Fn(&T) -> Key,
) -> Page<T> {
    let more = rows.len() > plan.limit;
    rows.truncate(plan.limit);
    if !plan.forward {
        rows.reverse();
    }
    let rows = rows
        .into_iter()
        .map(|r| (encode_cursor(tag, key(&r)), r))
        .collect();
    if plan.forward {
        Page {
            rows,
            has_next_page: more,
            has_previous_page: plan.after.is_some(),
        }
    } else {
        Page {
            rows,
            has_next_page: plan.before.is_some(),
            has_previous_page: more,
        }
    }
}

/// `LIKE` pattern matching `s` as a substring, with `\` as the escape character.
pub(crate) fn like_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Appends ` AND "t"."c" IN (ids)` (`AND 1 = 0` for no ids).
pub(crate) fn in_ids(sql: &mut Sql, table: &'static str, column: &'static str, ids: &[i64]) {
    if ids.is_empty() {
        sql.push(" AND 1 = 0");
    } else {
        sql.push(" AND ")
            .qualified(table, column)
            .push(" IN (")
            .ints(ids.iter().copied())
            .push(")");
    }
}

#[derive(QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

pub(crate) fn count(
    conn: &mut impl AsDbConn,
    sql: &Sql,
    what: &'static str,
) -> Result<i64, AdminError> {
    let rows: Vec<Count> = sql.load(conn).map_err(db(what))?;
    Ok(rows.first().map_or(0, |r| r.n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let k = Key {
            id: 42,
            t: Some(1_700_000_000_123_000),
        };
        let c = encode_cursor("id_asc", k);
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit()), "{c}");
        assert_eq!(decode_cursor("id_asc", &c).unwrap(), k);
        assert!(matches!(
            decode_cursor("id_desc", &c),
            Err(AdminError::BadCursor)
        ));
        for bad in ["", "zz", "00", "7b7d", &c[..c.len() - 2]] {
            assert!(
                matches!(decode_cursor("id_asc", bad), Err(AdminError::BadCursor)),
                "{bad}"
            );
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern(r"a%b_c\d"), r"%a\%b\_c\\d%");
    }

    #[test]
    fn plans_clamp_and_refuse_first_with_last() {
        let p = plan(&PageRequest::first(1000), "x").unwrap();
        assert_eq!((p.forward, p.limit), (true, MAX_PAGE));
        let p = plan(&PageRequest::default(), "x").unwrap();
        assert_eq!((p.forward, p.limit), (true, DEFAULT_PAGE));
        let p = plan(&PageRequest::last(5), "x").unwrap();
        assert_eq!((p.forward, p.limit), (false, 5));
        let both = PageRequest {
            first: Some(1),
            last: Some(1),
            ..PageRequest::default()
        };
        assert!(matches!(plan(&both, "x"), Err(AdminError::BadArgument(_))));
    }
}
