//! The migration SQL of one replicable, as plain strings (docs/SCHEMA.md is the contract).
//!
//! Plain functions of names, so tests compare them with golden strings directly. The primary's
//! migration creates the verification state (a `<name>_states` table, or columns and partial
//! indexes on the model table); the secondary's creates the registry table and its indexes.
//! Every identifier is double-quoted; `up` is idempotent where the backend allows it.

use proc_macro2::TokenStream;
use quote::quote;

use crate::attr::VerificationArg;
use crate::names::index_name;
use crate::valid::{IdType, Model};

/// A database backend the SQL is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite 3.35 or newer.
    Sqlite,
    /// PostgreSQL 13 or newer.
    Postgres,
}

/// One migration's SQL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Sql {
    /// Statements that apply it.
    pub up: String,
    /// Statements that revert it.
    pub down: String,
}

/// Column kinds of docs/SCHEMA.md "Column types".
#[derive(Clone, Copy)]
enum Kind {
    BigInt,
    Int,
    SmallInt,
    Timestamp,
    Binary,
    Text255,
    Text,
    Bool,
}

impl Kind {
    fn ddl(self, backend: Backend) -> &'static str {
        match (self, backend) {
            (Kind::BigInt, _) => "BIGINT",
            (Kind::Int, _) => "INTEGER",
            (Kind::SmallInt, _) => "SMALLINT",
            (Kind::Timestamp, Backend::Sqlite) => "TEXT",
            (Kind::Timestamp, Backend::Postgres) => "TIMESTAMPTZ",
            (Kind::Binary, Backend::Sqlite) => "BLOB",
            (Kind::Binary, Backend::Postgres) => "BYTEA",
            (Kind::Text255, _) => "VARCHAR(255)",
            (Kind::Text, _) => "TEXT",
            (Kind::Bool, _) => "BOOLEAN",
        }
    }
}

/// Nullability and default of a column.
#[derive(Clone, Copy)]
enum Null {
    /// `NULL` allowed, no default.
    Yes,
    /// `NOT NULL`, no default.
    No,
    /// `NOT NULL DEFAULT <literal>`.
    Default(&'static str),
    /// `NOT NULL DEFAULT <the current time>`.
    Now,
}

fn quoted(ident: &str) -> String {
    format!("\"{ident}\"")
}

fn column_def(backend: Backend, name: &str, kind: Kind, null: Null) -> String {
    let ty = kind.ddl(backend);
    let name = quoted(name);
    match null {
        Null::Yes => format!("{name} {ty}"),
        Null::No => format!("{name} {ty} NOT NULL"),
        Null::Default(d) => format!("{name} {ty} NOT NULL DEFAULT {d}"),
        Null::Now => {
            let now = match backend {
                Backend::Sqlite => "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                Backend::Postgres => "now()",
            };
            format!("{name} {ty} NOT NULL DEFAULT {now}")
        }
    }
}

/// The seven verification columns the primary keeps, in the order of docs/SCHEMA.md.
const VERIFICATION_COLUMNS: [(&str, Kind, Null); 7] = [
    ("verification_state", Kind::SmallInt, Null::Default("0")),
    ("verification_started_at", Kind::Timestamp, Null::Yes),
    ("verification_retry_at", Kind::Timestamp, Null::Yes),
    ("verified_at", Kind::Timestamp, Null::Yes),
    (
        "verification_retry_count",
        Kind::SmallInt,
        Null::Default("0"),
    ),
    ("verification_checksum", Kind::Binary, Null::Yes),
    ("verification_failure", Kind::Text255, Null::Yes),
];

/// The registry columns after `id` and the foreign key, in the order of docs/SCHEMA.md.
const REGISTRY_COLUMNS: [(&str, Kind, Null); 17] = [
    ("state", Kind::SmallInt, Null::Default("0")),
    ("retry_count", Kind::SmallInt, Null::Default("0")),
    ("retry_at", Kind::Timestamp, Null::Yes),
    ("last_synced_at", Kind::Timestamp, Null::Yes),
    ("created_at", Kind::Timestamp, Null::Now),
    ("last_sync_failure", Kind::Text255, Null::Yes),
    ("verification_state", Kind::SmallInt, Null::Default("0")),
    ("verification_started_at", Kind::Timestamp, Null::Yes),
    ("verified_at", Kind::Timestamp, Null::Yes),
    ("verification_retry_at", Kind::Timestamp, Null::Yes),
    (
        "verification_retry_count",
        Kind::SmallInt,
        Null::Default("0"),
    ),
    ("verification_checksum", Kind::Binary, Null::Yes),
    ("verification_checksum_mismatched", Kind::Binary, Null::Yes),
    ("checksum_mismatch", Kind::Bool, Null::Default("FALSE")),
    ("verification_failure", Kind::Text255, Null::Yes),
    ("missing_on_primary", Kind::Bool, Null::Default("FALSE")),
    ("blob_path", Kind::Text, Null::Yes),
];

/// One index: name suffix, unique, column, `NULLS FIRST` on PostgreSQL, partial condition.
struct Index {
    suffix: String,
    unique: bool,
    column: String,
    nulls_first: bool,
    condition: Option<&'static str>,
}

fn create_index(backend: Backend, table: &str, index: &Index) -> String {
    let unique = if index.unique { "UNIQUE " } else { "" };
    let nulls = if index.nulls_first && backend == Backend::Postgres {
        " NULLS FIRST"
    } else {
        ""
    };
    let condition = index
        .condition
        .map(|c| format!(" WHERE {c}"))
        .unwrap_or_default();
    format!(
        "CREATE {unique}INDEX IF NOT EXISTS {} ON {} ({}{nulls}){condition};\n",
        quoted(&index_name(table, &index.suffix)),
        quoted(table),
        quoted(&index.column),
    )
}

/// The three partial indexes on the primary's verification columns.
fn verification_indexes() -> [Index; 3] {
    [
        Index {
            suffix: "pending_verification".into(),
            unique: false,
            column: "verified_at".into(),
            nulls_first: true,
            condition: Some("\"verification_state\" = 0"),
        },
        Index {
            suffix: "failed_verification".into(),
            unique: false,
            column: "verification_retry_at".into(),
            nulls_first: true,
            condition: Some("\"verification_state\" = 3"),
        },
        Index {
            suffix: "started_verification".into(),
            unique: false,
            column: "verification_started_at".into(),
            nulls_first: false,
            condition: Some("\"verification_state\" = 1"),
        },
    ]
}

fn create_table(table: &str, columns: &[String]) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n);\n",
        quoted(table),
        columns.join(",\n    ")
    )
}

/// The secondary's migration: the registry table `registry` with foreign-key column `fk`.
pub(crate) fn registry_migration(backend: Backend, registry: &str, fk: &str) -> Sql {
    let id = match backend {
        Backend::Sqlite => "\"id\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        Backend::Postgres => "\"id\" BIGSERIAL PRIMARY KEY",
    };
    let mut columns = vec![
        id.to_owned(),
        column_def(backend, fk, Kind::BigInt, Null::No),
    ];
    columns.extend(
        REGISTRY_COLUMNS
            .iter()
            .map(|(name, kind, null)| column_def(backend, name, *kind, *null)),
    );
    let mut up = create_table(registry, &columns);
    let indexes = [
        Index {
            suffix: format!("on_{fk}"),
            unique: true,
            column: fk.to_owned(),
            nulls_first: false,
            condition: None,
        },
        Index {
            suffix: "on_retry_at".into(),
            unique: false,
            column: "retry_at".into(),
            nulls_first: false,
            condition: None,
        },
        Index {
            suffix: "on_state".into(),
            unique: false,
            column: "state".into(),
            nulls_first: false,
            condition: None,
        },
        Index {
            suffix: "failed_verification".into(),
            unique: false,
            column: "verification_retry_at".into(),
            nulls_first: true,
            condition: Some("\"state\" = 2 AND \"verification_state\" = 3"),
        },
        Index {
            suffix: "needs_verification".into(),
            unique: false,
            column: "verification_state".into(),
            nulls_first: false,
            condition: Some("\"state\" = 2 AND \"verification_state\" IN (0, 3)"),
        },
        Index {
            suffix: "pending_verification".into(),
            unique: false,
            column: "verified_at".into(),
            nulls_first: true,
            condition: Some("\"state\" = 2 AND \"verification_state\" = 0"),
        },
    ];
    for index in &indexes {
        up.push_str(&create_index(backend, registry, index));
    }
    Sql {
        up,
        down: format!("DROP TABLE IF EXISTS {};\n", quoted(registry)),
    }
}

/// The primary's migration for `verification = "separate"`: the table `states` keyed by `fk`
/// (of the model id's type), referencing `model_table(model_id)`.
pub(crate) fn states_migration(
    backend: Backend,
    states: &str,
    fk: &str,
    key: IdType,
    model_table: &str,
    model_id: &str,
) -> Sql {
    let key_type = match key {
        IdType::I64 => Kind::BigInt,
        IdType::I32 => Kind::Int,
    };
    let mut columns = vec![format!(
        "{} {} NOT NULL PRIMARY KEY REFERENCES {} ({}) ON DELETE CASCADE",
        quoted(fk),
        key_type.ddl(backend),
        quoted(model_table),
        quoted(model_id)
    )];
    columns.extend(
        VERIFICATION_COLUMNS
            .iter()
            .map(|(name, kind, null)| column_def(backend, name, *kind, *null)),
    );
    let mut up = create_table(states, &columns);
    for index in &verification_indexes() {
        up.push_str(&create_index(backend, states, index));
    }
    Sql {
        up,
        down: format!("DROP TABLE IF EXISTS {};\n", quoted(states)),
    }
}

/// The primary's migration for `verification = "inline"`: the verification columns and their
/// partial indexes on the model table. SQLite has no `ADD COLUMN IF NOT EXISTS`; the migration
/// runner's ledger keeps it from running twice.
pub(crate) fn inline_migration(backend: Backend, model_table: &str) -> Sql {
    let if_not_exists = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "IF NOT EXISTS ",
    };
    let if_exists = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "IF EXISTS ",
    };
    let table = quoted(model_table);
    let mut up = String::new();
    for (name, kind, null) in VERIFICATION_COLUMNS {
        up.push_str(&format!(
            "ALTER TABLE {table} ADD COLUMN {if_not_exists}{};\n",
            column_def(backend, name, kind, null)
        ));
    }
    let indexes = verification_indexes();
    for index in &indexes {
        up.push_str(&create_index(backend, model_table, index));
    }
    let mut down = String::new();
    for index in &indexes {
        down.push_str(&format!(
            "DROP INDEX IF EXISTS {};\n",
            quoted(&index_name(model_table, &index.suffix))
        ));
    }
    for (name, _, _) in VERIFICATION_COLUMNS.iter().rev() {
        down.push_str(&format!(
            "ALTER TABLE {table} DROP COLUMN {if_exists}{};\n",
            quoted(name)
        ));
    }
    Sql { up, down }
}

/// The primary's migration of `model` (empty strings without verification).
pub(crate) fn primary_migration(model: &Model, backend: Backend) -> Sql {
    match model.verification {
        VerificationArg::Separate => states_migration(
            backend,
            &model.states_table,
            &model.fk,
            model.id_type,
            &model.model_table,
            &model.id_column,
        ),
        VerificationArg::Inline => inline_migration(backend, &model.model_table),
        VerificationArg::None => Sql::default(),
    }
}

/// The secondary's migration of `model`.
pub(crate) fn secondary_migration(model: &Model, backend: Backend) -> Sql {
    registry_migration(backend, &model.registry, &model.fk)
}

/// The `MigrationSet` expression for `model`.
pub(crate) fn migration_set(model: &Model) -> TokenStream {
    let core = quote!(::geo_diesel::__private::geo_core);
    let one = |sql: Sql| {
        let (up, down) = (sql.up, sql.down);
        quote!(#core::Migration { up: #up, down: #down })
    };
    let sqlite_primary = one(primary_migration(model, Backend::Sqlite));
    let sqlite_secondary = one(secondary_migration(model, Backend::Sqlite));
    let postgres_primary = one(primary_migration(model, Backend::Postgres));
    let postgres_secondary = one(secondary_migration(model, Backend::Postgres));
    quote! {
        #core::MigrationSet {
            sqlite_primary: #sqlite_primary,
            sqlite_secondary: #sqlite_secondary,
            postgres_primary: #postgres_primary,
            postgres_secondary: #postgres_secondary,
        }
    }
}
