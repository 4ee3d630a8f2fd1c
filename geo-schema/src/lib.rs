//! # geo-schema
//!
//! The one column list of the tables Geo keeps per replicable: the registry on a secondary
//! (`<registry>`, default `<name>_registry`) and the verification state on the primary
//! (`<name>_states`, or the same columns inline on the model table). Everything else reads it:
//! `#[replicable]` renders the DDL for both backends and the generated `table!`s from it,
//! geo-diesel's queries name columns through it, and the column tables of `docs/SCHEMA.md` are
//! rendered from it ([`doc`]).
//!
//! The two structural columns, the registry's `id` and the foreign key `<fk>` = `<name>_id`,
//! are not here: their names and types depend on the replicable, so `#[replicable]` owns them.
//!
//! No dependencies; every item but [`index::name`] is `const`.

pub mod doc;
pub mod index;

/// The SQL type of a column, one per kind of value (`docs/SCHEMA.md`, "Column types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SqlType {
    /// A 64-bit integer: `BIGINT` on both backends.
    BigInt,
    /// A state or a counter: `SMALLINT` on both backends.
    SmallInt,
    /// A point in time: `TEXT` (RFC 3339, milliseconds, `Z`) on SQLite, `TIMESTAMPTZ` on
    /// PostgreSQL.
    Timestamp,
    /// A checksum: `BLOB` on SQLite, `BYTEA` on PostgreSQL.
    Binary,
    /// A failure message cut to 255 characters: `VARCHAR(255)` on both backends.
    Failure,
    /// A flag: `BOOLEAN` on both backends.
    Bool,
    /// Unbounded text (a path): `TEXT` on both backends.
    Text,
}

impl SqlType {
    /// Every type, in declaration order.
    pub const ALL: [SqlType; 7] = [
        SqlType::BigInt,
        SqlType::SmallInt,
        SqlType::Timestamp,
        SqlType::Binary,
        SqlType::Failure,
        SqlType::Bool,
        SqlType::Text,
    ];

    /// The type in SQLite DDL.
    pub const fn sqlite(self) -> &'static str {
        match self {
            SqlType::BigInt => "BIGINT",
            SqlType::SmallInt => "SMALLINT",
            SqlType::Timestamp => "TEXT",
            SqlType::Binary => "BLOB",
            SqlType::Failure => "VARCHAR(255)",
            SqlType::Bool => "BOOLEAN",
            SqlType::Text => "TEXT",
        }
    }

    /// The type in PostgreSQL DDL.
    pub const fn postgres(self) -> &'static str {
        match self {
            SqlType::Timestamp => "TIMESTAMPTZ",
            SqlType::Binary => "BYTEA",
            // The others are spelt the same on both backends.
            other => other.sqlite(),
        }
    }

    /// How `docs/SCHEMA.md`'s column tables name the type.
    pub const fn label(self) -> &'static str {
        match self {
            SqlType::BigInt => "BigInt",
            SqlType::SmallInt => "SmallInt",
            SqlType::Timestamp => "timestamp",
            SqlType::Binary => "Binary",
            SqlType::Failure => "VARCHAR(255)",
            SqlType::Bool => "Bool",
            SqlType::Text => "TEXT",
        }
    }
}

/// The default of a column. Every column with a default is `NOT NULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultValue {
    /// No default.
    None,
    /// `0`.
    Zero,
    /// `FALSE`.
    False,
    /// The current time (`created_at`).
    Now,
}

impl DefaultValue {
    /// The default expression in SQLite DDL (`None` without a default). The time is stored as
    /// the text `SqlType::Timestamp` reads: `2026-11-27T22:27:26.123Z`.
    pub const fn sqlite(self) -> Option<&'static str> {
        match self {
            DefaultValue::None => None,
            DefaultValue::Zero => Some("0"),
            DefaultValue::False => Some("FALSE"),
            DefaultValue::Now => Some("(strftime('%Y-%m-%dT%H:%M:%fZ','now'))"),
        }
    }

    /// The default expression in PostgreSQL DDL (`None` without a default).
    pub const fn postgres(self) -> Option<&'static str> {
        match self {
            DefaultValue::Now => Some("now()"),
            // The others are spelt the same on both backends.
            other => other.sqlite(),
        }
    }

    /// How `docs/SCHEMA.md`'s column tables write the default (empty without one).
    pub const fn label(self) -> &'static str {
        match self {
            DefaultValue::None => "",
            DefaultValue::Zero => "0",
            DefaultValue::False => "false",
            DefaultValue::Now => "now",
        }
    }
}

/// A column of the per-replicable tables, in the registry's DDL order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// `state`.
    State,
    /// `retry_count`.
    RetryCount,
    /// `retry_at`.
    RetryAt,
    /// `last_synced_at`.
    LastSyncedAt,
    /// `created_at`.
    CreatedAt,
    /// `last_sync_failure`.
    LastSyncFailure,
    /// `verification_state`.
    VerificationState,
    /// `verification_started_at`.
    VerificationStartedAt,
    /// `verified_at`.
    VerifiedAt,
    /// `verification_retry_at`.
    VerificationRetryAt,
    /// `verification_retry_count`.
    VerificationRetryCount,
    /// `verification_checksum`.
    VerificationChecksum,
    /// `verification_checksum_mismatched`.
    VerificationChecksumMismatched,
    /// `checksum_mismatch`.
    ChecksumMismatch,
    /// `verification_failure`.
    VerificationFailure,
    /// `missing_on_primary`.
    MissingOnPrimary,
    /// `blob_path` (ours; GitLab's registries have none).
    BlobPath,
    /// `claimed_by` (ours): the secondary process holding the row's sync or verification claim.
    ClaimedBy,
}

/// The definition of one column: its SQL type, nullability, default and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Which column.
    pub column: Column,
    /// Its SQL type.
    pub ty: SqlType,
    /// Whether it may be `NULL` (then it has no default).
    pub nullable: bool,
    /// Its default (`NOT NULL DEFAULT …` when not [`DefaultValue::None`]).
    pub default: DefaultValue,
    /// What it holds, as the doc comment of the generated `table!` column and row field (on a
    /// secondary's registry; [`Column::primary_doc`] for the primary's verification state).
    pub doc: &'static str,
}

const fn def(
    column: Column,
    ty: SqlType,
    nullable: bool,
    default: DefaultValue,
    doc: &'static str,
) -> ColumnDef {
    ColumnDef {
        column,
        ty,
        nullable,
        default,
        doc,
    }
}

/// A `NOT NULL DEFAULT 0` small integer.
const fn small(column: Column, doc: &'static str) -> ColumnDef {
    def(column, SqlType::SmallInt, false, DefaultValue::Zero, doc)
}

/// A nullable column without a default.
const fn nullable(column: Column, ty: SqlType, doc: &'static str) -> ColumnDef {
    def(column, ty, true, DefaultValue::None, doc)
}

/// A `NOT NULL DEFAULT FALSE` flag.
const fn flag(column: Column, doc: &'static str) -> ColumnDef {
    def(column, SqlType::Bool, false, DefaultValue::False, doc)
}

const VERIFICATION_STATE_DOC: &str = "Verification state: pending 0, started 1, succeeded 2, \
     failed 3, disabled 4 (`geo_core::VerificationState`).";

impl Column {
    /// Every column, in the registry's DDL order (the same as [`REGISTRY_COLUMNS`]).
    pub const ALL: [Column; 18] = [
        Column::State,
        Column::RetryCount,
        Column::RetryAt,
        Column::LastSyncedAt,
        Column::CreatedAt,
        Column::LastSyncFailure,
        Column::VerificationState,
        Column::VerificationStartedAt,
        Column::VerifiedAt,
        Column::VerificationRetryAt,
        Column::VerificationRetryCount,
        Column::VerificationChecksum,
        Column::VerificationChecksumMismatched,
        Column::ChecksumMismatch,
        Column::VerificationFailure,
        Column::MissingOnPrimary,
        Column::BlobPath,
        Column::ClaimedBy,
    ];

    /// The SQL (and generated Rust field) name.
    pub const fn name(self) -> &'static str {
        match self {
            Column::State => "state",
            Column::RetryCount => "retry_count",
            Column::RetryAt => "retry_at",
            Column::LastSyncedAt => "last_synced_at",
            Column::CreatedAt => "created_at",
            Column::LastSyncFailure => "last_sync_failure",
            Column::VerificationState => "verification_state",
            Column::VerificationStartedAt => "verification_started_at",
            Column::VerifiedAt => "verified_at",
            Column::VerificationRetryAt => "verification_retry_at",
            Column::VerificationRetryCount => "verification_retry_count",
            Column::VerificationChecksum => "verification_checksum",
            Column::VerificationChecksumMismatched => "verification_checksum_mismatched",
            Column::ChecksumMismatch => "checksum_mismatch",
            Column::VerificationFailure => "verification_failure",
            Column::MissingOnPrimary => "missing_on_primary",
            Column::BlobPath => "blob_path",
            Column::ClaimedBy => "claimed_by",
        }
    }

    /// The column named `name`, if any.
    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The column's definition.
    pub const fn def(self) -> ColumnDef {
        use Column::*;
        use SqlType::{Binary, Failure, Text, Timestamp};
        match self {
            State => small(
                self,
                "Replication state: pending 0, started 1, synced 2, failed 3 \
                 (`geo_core::ReplicationState`).",
            ),
            RetryCount => small(self, "Failed sync attempts since the last success."),
            RetryAt => nullable(self, Timestamp, "When a failed sync may be retried."),
            LastSyncedAt => nullable(self, Timestamp, "When the last sync finished."),
            CreatedAt => def(
                self,
                Timestamp,
                false,
                DefaultValue::Now,
                "When the row was created.",
            ),
            LastSyncFailure => nullable(
                self,
                Failure,
                "Why the last sync failed (at most 255 characters).",
            ),
            VerificationState => small(self, VERIFICATION_STATE_DOC),
            VerificationStartedAt => {
                nullable(self, Timestamp, "When the running verification started.")
            }
            VerifiedAt => nullable(self, Timestamp, "When the file was last verified."),
            VerificationRetryAt => nullable(
                self,
                Timestamp,
                "When a failed verification may be retried.",
            ),
            VerificationRetryCount => small(self, "Failed verifications since the last success."),
            VerificationChecksum => {
                nullable(self, Binary, "The checksum computed on this secondary.")
            }
            VerificationChecksumMismatched => nullable(
                self,
                Binary,
                "The local checksum when it did not match the primary's.",
            ),
            ChecksumMismatch => flag(self, "Whether the last verification found a mismatch."),
            VerificationFailure => nullable(
                self,
                Failure,
                "Why the last verification failed (at most 255 characters).",
            ),
            MissingOnPrimary => flag(
                self,
                "Whether the primary reported the file missing (longer retry backoff).",
            ),
            BlobPath => nullable(
                self,
                Text,
                "Where the last successful sync put the file, relative to the blob store root \
                 (so an orphan's file can be removed after its record is gone on the primary).",
            ),
            ClaimedBy => nullable(
                self,
                Text,
                "The secondary process (`geo_secondary_workers.id`) that claimed the running sync \
                 or verification; its claims return to `pending` when its heartbeat stops.",
            ),
        }
    }

    /// The column's definition in the primary's verification state: [`Column::def`] with
    /// [`Column::primary_doc`] as its doc.
    pub const fn primary_def(self) -> ColumnDef {
        ColumnDef {
            doc: self.primary_doc(),
            ..self.def()
        }
    }

    /// What the column holds in the primary's verification state (`<name>_states` or inline):
    /// the same as [`ColumnDef::doc`] except where the primary's meaning differs.
    pub const fn primary_doc(self) -> &'static str {
        match self {
            Column::VerifiedAt => "When the record was last checksummed.",
            Column::VerificationChecksum => "The file's checksum.",
            other => other.def().doc,
        }
    }
}

/// The registry columns after `id` and `<fk>`, in DDL order.
pub const REGISTRY_COLUMNS: &[Column] = &Column::ALL;

/// The seven verification columns of the primary (`<name>_states`, or inline on the model
/// table), in DDL order.
pub const VERIFICATION_COLUMNS: &[Column] = &[
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerificationRetryAt,
    Column::VerifiedAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_types() {
        let both: Vec<_> = SqlType::ALL
            .iter()
            .map(|t| (t.sqlite(), t.postgres()))
            .collect();
        assert_eq!(
            both,
            [
                ("BIGINT", "BIGINT"),
                ("SMALLINT", "SMALLINT"),
                ("TEXT", "TIMESTAMPTZ"),
                ("BLOB", "BYTEA"),
                ("VARCHAR(255)", "VARCHAR(255)"),
                ("BOOLEAN", "BOOLEAN"),
                ("TEXT", "TEXT"),
            ]
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(DefaultValue::None.sqlite(), None);
        assert_eq!(DefaultValue::None.postgres(), None);
        assert_eq!(DefaultValue::Zero.postgres(), Some("0"));
        assert_eq!(DefaultValue::False.sqlite(), Some("FALSE"));
        assert_eq!(DefaultValue::Now.postgres(), Some("now()"));
        assert_eq!(
            DefaultValue::Now.sqlite(),
            Some("(strftime('%Y-%m-%dT%H:%M:%fZ','now'))")
        );
    }

    #[test]
    fn every_column_is_consistent() {
        for (i, column) in Column::ALL.into_iter().enumerate() {
            let def = column.def();
            assert_eq!(def.column, column);
            assert_eq!(Column::from_name(column.name()), Some(column));
            // A nullable column has no default; the enum's order is the DDL order.
            assert!(
                !def.nullable || def.default == DefaultValue::None,
                "{column:?}"
            );
            assert_eq!(Column::ALL.iter().position(|c| *c == column), Some(i));
            assert!(!def.doc.is_empty() && !column.primary_doc().is_empty());
            assert!(
                !def.doc.contains('|'),
                "the doc renders in a markdown table"
            );
        }
        assert!(Column::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Column::from_name("id"), None);
    }

    #[test]
    fn verification_columns_are_registry_columns() {
        assert_eq!(VERIFICATION_COLUMNS.len(), 7);
        for c in VERIFICATION_COLUMNS {
            assert!(REGISTRY_COLUMNS.contains(c));
            assert!(c.name().starts_with("verification_") || *c == Column::VerifiedAt);
        }
    }
}

/// The stored values of the two state columns: the one place the numbers are written.
/// geo-core's `ReplicationState` and `VerificationState` take their discriminants from here, and
/// geo-macros writes them into the partial indexes' predicates.
pub mod state {
    /// `state`: replication of a registry row.
    pub mod replication {
        /// Waiting to be synced.
        pub const PENDING: i16 = 0;
        /// A sync is in progress.
        pub const STARTED: i16 = 1;
        /// The file is present and matches the primary.
        pub const SYNCED: i16 = 2;
        /// The last sync failed.
        pub const FAILED: i16 = 3;
    }

    /// `verification_state`: verification on the primary or on a registry row.
    pub mod verification {
        /// Waiting to be checksummed.
        pub const PENDING: i16 = 0;
        /// A checksum is being computed.
        pub const STARTED: i16 = 1;
        /// The checksum was computed or matched.
        pub const SUCCEEDED: i16 = 2;
        /// Checksumming failed or did not match.
        pub const FAILED: i16 = 3;
        /// Verification does not apply right now.
        pub const DISABLED: i16 = 4;
    }
}
