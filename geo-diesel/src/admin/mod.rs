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

use geo_core::schema::Column;
use geo_core::{ReplicationState, VerificationState};

pub mod bulk;
pub mod flags;
mod keyset;
pub mod list;
pub mod records;
mod worker;

pub(crate) use keyset::*;

pub use bulk::{
    BULK_BATCH, BULK_BATCH_POSTGRES, BulkAction, BulkFilter, BulkUpdate, batch_for, enqueue, job,
    jobs, run_job_to_end, run_to_end, step,
};
pub use flags::{FlagState, detect_role, flags, set_flag};
pub use list::RegistryRecord;
pub use records::{
    RecordFilter, RecordRow, count_records_matching, get_record, list_records, reverify_record,
};
pub use worker::{BulkWorker, BulkWorkerHandle};

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
