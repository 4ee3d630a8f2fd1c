//! The migration SQL of one replicable, as plain strings (docs/SCHEMA.md is the contract),
//! rendered from geo-schema's column list: only the structural `id` and `<fk>` columns and the
//! indexes are defined here.
//!
//! Plain functions of names, so tests compare them with golden strings directly. The primary's
//! migration creates the verification state (a `<name>_states` table, or columns and partial
//! indexes on the model table); the secondary's creates the registry table and its indexes.
//! Every identifier is double-quoted; `up` is idempotent where the backend allows it.

use geo_schema::{Column, DefaultValue, REGISTRY_COLUMNS, SqlType, VERIFICATION_COLUMNS};
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

impl Backend {
    /// `ty` in this backend's DDL.
    fn ty(self, ty: SqlType) -> &'static str {
        match self {
            Backend::Sqlite => ty.sqlite(),
            Backend::Postgres => ty.postgres(),
        }
    }

    /// The DDL type of the model's primary key (and so of the states table's key).
    fn key_type(self, key: IdType) -> &'static str {
        match key {
            IdType::I64 => self.ty(SqlType::BigInt),
            // i32 keys exist only on the model side; no column of the list is an INTEGER.
            IdType::I32 => "INTEGER",
        }
    }

    /// `default` in this backend's DDL.
    fn default(self, default: DefaultValue) -> Option<&'static str> {
        match self {
            Backend::Sqlite => default.sqlite(),
            Backend::Postgres => default.postgres(),
        }
    }
}

fn quoted(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// `"name" TYPE [NOT NULL] [DEFAULT …]`.
fn column_sql(
    backend: Backend,
    name: &str,
    ty: &str,
    nullable: bool,
    default: DefaultValue,
) -> String {
    let name = quoted(name);
    match (nullable, backend.default(default)) {
        (true, None) => format!("{name} {ty}"),
        (true, Some(d)) => format!("{name} {ty} DEFAULT {d}"),
        (false, None) => format!("{name} {ty} NOT NULL"),
        (false, Some(d)) => format!("{name} {ty} NOT NULL DEFAULT {d}"),
    }
}

/// The DDL of a column of the list.
fn column_def(backend: Backend, column: Column) -> String {
    let def = column.def();
    column_sql(
        backend,
        column.name(),
        backend.ty(def.ty),
        def.nullable,
        def.default,
    )
}

// The state values the partial indexes select, from geo-schema (where geo-core's state enums
// take them too).
use geo_schema::state::replication::SYNCED;
use geo_schema::state::verification::{
    FAILED as VERIFICATION_FAILED, PENDING as VERIFICATION_PENDING, STARTED as VERIFICATION_STARTED,
};

/// One index of a per-replicable table.
struct Index<'a> {
    /// The name is `index_<table>_<suffix>`.
    suffix: String,
    unique: bool,
    /// The indexed columns, in order.
    columns: Vec<&'a str>,
    /// `NULLS FIRST` on PostgreSQL (the order the workers scan in).
    nulls_first: bool,
    /// A partial index's `WHERE`: each column equals one of its values, all of them hold.
    condition: &'static [(Column, &'static [i16])],
}

impl<'a> Index<'a> {
    /// A plain index `index_<table>_on_<column>`.
    fn on(column: &'a str, unique: bool) -> Self {
        Index {
            suffix: format!("on_{column}"),
            unique,
            columns: vec![column],
            nulls_first: false,
            condition: &[],
        }
    }

    /// A plain index `index_<table>_on_<a>_and_<b>` on two columns: serves a filter on `a`
    /// that reads rows in `b` order (the admin lists filter by state and page by id).
    fn on_pair(a: &'a str, b: &'a str) -> Self {
        Index {
            suffix: format!("on_{a}_and_{b}"),
            unique: false,
            columns: vec![a, b],
            nulls_first: false,
            condition: &[],
        }
    }

    /// A partial index `index_<table>_<suffix>` on `column`.
    fn partial(
        suffix: &str,
        column: Column,
        nulls_first: bool,
        condition: &'static [(Column, &'static [i16])],
    ) -> Self {
        Index {
            suffix: suffix.to_owned(),
            unique: false,
            columns: vec![column.name()],
            nulls_first,
            condition,
        }
    }
}

/// `"a" = 1 AND "b" IN (0, 3)`.
fn condition_sql(condition: &[(Column, &[i16])]) -> String {
    let terms: Vec<String> = condition
        .iter()
        .map(|(column, values)| match values {
            [one] => format!("{} = {one}", quoted(column.name())),
            many => {
                let list: Vec<String> = many.iter().map(i16::to_string).collect();
                format!("{} IN ({})", quoted(column.name()), list.join(", "))
            }
        })
        .collect();
    terms.join(" AND ")
}

fn create_index(backend: Backend, table: &str, index: &Index<'_>) -> String {
    let unique = if index.unique { "UNIQUE " } else { "" };
    let nulls = if index.nulls_first && backend == Backend::Postgres {
        " NULLS FIRST"
    } else {
        ""
    };
    let condition = if index.condition.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", condition_sql(index.condition))
    };
    let columns: Vec<String> = index.columns.iter().map(|c| quoted(c)).collect();
    format!(
        "CREATE {unique}INDEX IF NOT EXISTS {} ON {} ({}{nulls}){condition};\n",
        quoted(&index_name(table, &index.suffix)),
        quoted(table),
        columns.join(", "),
    )
}

/// The three partial indexes on the primary's verification columns.
fn verification_indexes() -> [Index<'static>; 3] {
    use Column::*;
    [
        Index::partial(
            geo_schema::index::PENDING_VERIFICATION,
            VerifiedAt,
            true,
            &[(VerificationState, &[VERIFICATION_PENDING])],
        ),
        Index::partial(
            geo_schema::index::FAILED_VERIFICATION,
            VerificationRetryAt,
            true,
            &[(VerificationState, &[VERIFICATION_FAILED])],
        ),
        Index::partial(
            "started_verification",
            VerificationStartedAt,
            false,
            &[(VerificationState, &[VERIFICATION_STARTED])],
        ),
    ]
}

/// The registry's indexes: unique on `fk`, the scheduler's, the shared-path check's (before a
/// file is removed, is another row on it?), the admin lists' (a state filter read in id order)
/// and the verifier's.
fn registry_indexes(fk: &str) -> [Index<'_>; 8] {
    use Column::*;
    [
        Index::on(fk, true),
        Index::on(RetryAt.name(), false),
        Index::on(BlobPath.name(), false),
        Index::on_pair(State.name(), "id"),
        Index::on_pair(VerificationState.name(), "id"),
        Index::partial(
            geo_schema::index::FAILED_VERIFICATION,
            VerificationRetryAt,
            true,
            &[
                (State, &[SYNCED]),
                (VerificationState, &[VERIFICATION_FAILED]),
            ],
        ),
        Index::partial(
            geo_schema::index::NEEDS_VERIFICATION,
            VerificationState,
            false,
            &[
                (State, &[SYNCED]),
                (
                    VerificationState,
                    &[VERIFICATION_PENDING, VERIFICATION_FAILED],
                ),
            ],
        ),
        Index::partial(
            geo_schema::index::PENDING_VERIFICATION,
            VerifiedAt,
            true,
            &[
                (State, &[SYNCED]),
                (VerificationState, &[VERIFICATION_PENDING]),
            ],
        ),
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
    let fk_type = backend.ty(SqlType::BigInt);
    let mut columns = vec![
        id.to_owned(),
        column_sql(backend, fk, fk_type, false, DefaultValue::None),
    ];
    columns.extend(REGISTRY_COLUMNS.iter().map(|c| column_def(backend, *c)));
    let mut up = create_table(registry, &columns);
    for index in &registry_indexes(fk) {
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
    let mut columns = vec![format!(
        "{} {} NOT NULL PRIMARY KEY REFERENCES {} ({}) ON DELETE CASCADE",
        quoted(fk),
        backend.key_type(key),
        quoted(model_table),
        quoted(model_id)
    )];
    columns.extend(VERIFICATION_COLUMNS.iter().map(|c| column_def(backend, *c)));
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
    for column in VERIFICATION_COLUMNS {
        up.push_str(&format!(
            "ALTER TABLE {table} ADD COLUMN {if_not_exists}{};\n",
            column_def(backend, *column)
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
    for column in VERIFICATION_COLUMNS.iter().rev() {
        down.push_str(&format!(
            "ALTER TABLE {table} DROP COLUMN {if_exists}{};\n",
            quoted(column.name())
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
