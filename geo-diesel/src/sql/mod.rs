//! The one way the runtime builds SQL for the per-replicable tables: a statement assembled from
//! typed pieces ([`Sql`]) that Diesel renders per backend — identifiers through
//! `push_identifier`, values through `push_bind_param`, the lock clause per backend — so nothing
//! is found-and-replaced after it is built. [`Table`] turns geo-core's rules
//! ([`Change`](geo_core::Change), [`Claim`](geo_core::Claim)) into conditional statements.
//!
//! Identifiers come only from [`geo_core::ReplicableDescriptor`]s (validated by the macro at
//! compile time) and [`Column`](geo_core::schema::Column) names. Integer id lists and state values (from the state enums)
//! are rendered as literals: an `i64` cannot inject anything, and a literal state lets the
//! planners use the partial indexes.

use chrono::{DateTime, Utc};
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, Bool, HasSqlType, SmallInt, Text, Untyped};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};
use geo_core::transitions::Datum;

use crate::db::AsDbConn;
use crate::types::UtcDateTime;
use crate::types::sql_types::GeoTimestamp;

/// A backend Geo renders SQL for.
pub trait GeoBackend:
    Backend
    + HasSqlType<BigInt>
    + HasSqlType<SmallInt>
    + HasSqlType<Bool>
    + HasSqlType<Text>
    + HasSqlType<Binary>
    + HasSqlType<GeoTimestamp>
    + HasSqlType<crate::json::GeoJson>
{
    /// Which backend this is.
    const KIND: geo_core::Backend;

    /// Renders a set of ids as a one-column `SELECT` with one bound parameter.
    fn walk_id_set<'b>(set: &'b IdSet, out: &mut AstPass<'_, 'b, Self>) -> QueryResult<()>;
}

/// Ids bound as one parameter: a JSON array on SQLite, a `bigint[]` on PostgreSQL.
#[derive(Debug, Clone)]
pub struct IdSet {
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    ids: Vec<i64>,
    json: String,
}

impl GeoBackend for diesel::sqlite::Sqlite {
    const KIND: geo_core::Backend = geo_core::Backend::Sqlite;

    fn walk_id_set<'b>(set: &'b IdSet, out: &mut AstPass<'_, 'b, Self>) -> QueryResult<()> {
        out.push_sql("SELECT value FROM json_each(");
        out.push_bind_param::<Text, _>(&set.json)?;
        out.push_sql(")");
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl GeoBackend for diesel::pg::Pg {
    const KIND: geo_core::Backend = geo_core::Backend::Postgres;

    fn walk_id_set<'b>(set: &'b IdSet, out: &mut AstPass<'_, 'b, Self>) -> QueryResult<()> {
        // About twice as fast as a VALUES list here.
        out.push_sql("SELECT unnest(");
        out.push_bind_param::<diesel::sql_types::Array<BigInt>, _>(&set.ids)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The row-locking clause of a claim's subselect: `FOR UPDATE SKIP LOCKED` on PostgreSQL (so
/// concurrent workers claim disjoint rows without waiting), nothing on SQLite (one writer).
pub fn lock_clause(backend: geo_core::Backend, lock: Lock) -> &'static str {
    match (backend, lock) {
        (geo_core::Backend::Postgres, Lock::SkipLocked) => " FOR UPDATE SKIP LOCKED",
        (geo_core::Backend::Postgres, Lock::Wait) => " FOR UPDATE",
        (geo_core::Backend::Sqlite, _) => "",
    }
}

/// How a `SELECT` locks the rows it reads (PostgreSQL; SQLite has one writer at a time and a
/// transaction that wrote first already holds the lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `FOR UPDATE SKIP LOCKED`: a claim takes rows nobody else holds, without waiting.
    SkipLocked,
    /// `FOR UPDATE`: wait for whoever holds the row (a compare-and-set on one row).
    Wait,
}

/// A bound value.
#[derive(Debug, Clone)]
enum Bound {
    BigInt(i64),
    SmallInt(i16),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Time(UtcDateTime),
    Json(crate::json::JsonValue),
}

#[derive(Debug, Clone)]
enum Piece {
    Sql(&'static str),
    Int(i64),
    Ident(&'static str),
    /// An identifier computed at run time (a trigger or function name derived from a
    /// descriptor's validated names).
    OwnedIdent(String),
    /// `NEW."column"` / `OLD."column"` in a trigger body.
    RowRef(RowRef),
    Bind(Bound),
    IdSet(IdSet),
    Lock(Lock),
    /// ` INDEXED BY "<index>"` on SQLite, nothing on PostgreSQL.
    SqliteIndexedBy(String),
}

/// A statement built from typed pieces; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Sql {
    pieces: Vec<Piece>,
}

impl Sql {
    /// An empty statement.
    pub fn new() -> Self {
        Sql::default()
    }

    /// Appends SQL text (only `'static` text written in this crate).
    pub fn push(&mut self, sql: &'static str) -> &mut Self {
        self.pieces.push(Piece::Sql(sql));
        self
    }

    /// Appends a quoted identifier.
    pub fn ident(&mut self, name: &'static str) -> &mut Self {
        self.pieces.push(Piece::Ident(name));
        self
    }

    /// Appends a quoted identifier computed at run time from validated names (e.g. a trigger
    /// name built from a descriptor's names).
    pub fn ident_owned(&mut self, name: String) -> &mut Self {
        self.pieces.push(Piece::OwnedIdent(name));
        self
    }

    /// Appends a trigger's row reference: `NEW."column"` or `OLD."column"`.
    pub fn row_ref(&mut self, row: RowRef) -> &mut Self {
        self.pieces.push(Piece::RowRef(row));
        self
    }

    /// Appends another statement's pieces.
    pub fn append(&mut self, other: &Sql) -> &mut Self {
        self.pieces.extend(other.pieces.iter().cloned());
        self
    }

    /// Appends `"table"."column"`.
    pub fn qualified(&mut self, table: &'static str, column: &'static str) -> &mut Self {
        self.ident(table).push(".").ident(column)
    }

    /// Appends an integer literal.
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.pieces.push(Piece::Int(n));
        self
    }

    /// Appends `a,b,c` as integer literals.
    pub fn ints(&mut self, ns: impl IntoIterator<Item = i64>) -> &mut Self {
        for (i, n) in ns.into_iter().enumerate() {
            if i > 0 {
                self.push(",");
            }
            self.int(n);
        }
        self
    }

    /// Appends a bound value (`NULL` is written as the keyword).
    pub fn bind(&mut self, value: Datum) -> &mut Self {
        let bound = match value {
            Datum::Null => return self.push("NULL"),
            Datum::SmallInt(n) => Bound::SmallInt(n),
            Datum::Bool(b) => Bound::Bool(b),
            Datum::Text(s) => Bound::Text(s),
            Datum::Bytes(b) => Bound::Bytes(b),
            Datum::Time(t) => Bound::Time(UtcDateTime(t)),
        };
        self.pieces.push(Piece::Bind(bound));
        self
    }

    /// Appends a bound `BIGINT`.
    pub fn bind_i64(&mut self, n: i64) -> &mut Self {
        self.pieces.push(Piece::Bind(Bound::BigInt(n)));
        self
    }

    /// Appends a bound timestamp.
    pub fn bind_time(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.bind(Datum::Time(t))
    }

    /// Appends a bound JSON document (`jsonb` on PostgreSQL, text on SQLite).
    pub fn bind_json(&mut self, v: serde_json::Value) -> &mut Self {
        self.pieces
            .push(Piece::Bind(Bound::Json(crate::json::JsonValue(v))));
        self
    }

    /// Appends a one-column `SELECT` of `ids` bound as one parameter (`json_each` on SQLite,
    /// `unnest` on PostgreSQL).
    pub fn id_set(&mut self, ids: &[i64]) -> &mut Self {
        let json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_string());
        self.pieces.push(Piece::IdSet(IdSet {
            ids: ids.to_vec(),
            json,
        }));
        self
    }

    /// Appends the backend's row-locking clause ([`lock_clause`]).
    pub fn lock(&mut self, lock: Lock) -> &mut Self {
        self.pieces.push(Piece::Lock(lock));
        self
    }

    /// Appends ` INDEXED BY "<index>"` on SQLite (after a table name in `FROM`), nothing on
    /// PostgreSQL, whose planner reads statistics. For a partial index that holds exactly a
    /// statement's candidates, which SQLite's planner without statistics passes over for a plain
    /// index on one guard column. The index must exist: SQLite refuses the statement otherwise.
    pub fn sqlite_indexed_by(&mut self, index: String) -> &mut Self {
        self.pieces.push(Piece::SqliteIndexedBy(index));
        self
    }

    /// The backend's plan of this statement, one line per row: `EXPLAIN QUERY PLAN`'s `detail`
    /// on SQLite, `EXPLAIN`'s text on PostgreSQL (for tests and benchmarks that check an index
    /// is used).
    pub fn explain(&self, conn: &mut impl AsDbConn) -> QueryResult<Vec<String>> {
        #[derive(QueryableByName)]
        struct SqliteLine {
            #[diesel(sql_type = Text)]
            detail: String,
        }
        #[cfg(feature = "postgres")]
        #[derive(QueryableByName)]
        struct PgLine {
            #[diesel(sql_type = Text)]
            #[diesel(column_name = "QUERY PLAN")]
            line: String,
        }
        let mut db = conn.db();
        let prefix = match db.backend() {
            geo_core::Backend::Sqlite => "EXPLAIN QUERY PLAN ",
            geo_core::Backend::Postgres => "EXPLAIN ",
        };
        let mut sql = Sql::new();
        sql.push(prefix);
        sql.pieces.extend(self.pieces.iter().cloned());
        match &mut db {
            crate::db::DbConn::Sqlite(c) => Ok(RunQueryDsl::load::<SqliteLine>(SqlRef(&sql), *c)?
                .into_iter()
                .map(|l| l.detail)
                .collect()),
            #[cfg(feature = "postgres")]
            crate::db::DbConn::Pg(c) => Ok(RunQueryDsl::load::<PgLine>(SqlRef(&sql), *c)?
                .into_iter()
                .map(|l| l.line)
                .collect()),
        }
    }

    /// Runs the statement; returns the number of rows changed.
    pub fn execute(&self, conn: &mut impl AsDbConn) -> QueryResult<usize> {
        crate::db::with_conn!(conn, c => RunQueryDsl::execute(SqlRef(self), c))
    }

    /// Runs the statement and reads its rows.
    pub fn load<R>(&self, conn: &mut impl AsDbConn) -> QueryResult<Vec<R>>
    where
        R: QueryableByName<diesel::sqlite::Sqlite> + 'static,
        R: LoadPg,
    {
        crate::db::with_conn!(conn, c => RunQueryDsl::load(SqlRef(self), c))
    }
}

/// Row types loadable on every enabled backend (PostgreSQL too with the `postgres` feature).
#[cfg(feature = "postgres")]
pub trait LoadPg: QueryableByName<diesel::pg::Pg> {}
#[cfg(feature = "postgres")]
impl<T: QueryableByName<diesel::pg::Pg>> LoadPg for T {}
/// Row types loadable on every enabled backend.
#[cfg(not(feature = "postgres"))]
pub trait LoadPg {}
#[cfg(not(feature = "postgres"))]
impl<T> LoadPg for T {}

/// A borrowed [`Sql`] as Diesel runs it (so running a statement never clones its binds).
#[derive(Debug, Clone, Copy)]
struct SqlRef<'a>(&'a Sql);

impl QueryId for SqlRef<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for SqlRef<'_> {
    type SqlType = Untyped;
}

impl<C> RunQueryDsl<C> for SqlRef<'_> {}

impl<DB> QueryFragment<DB> for SqlRef<'_>
where
    DB: GeoBackend,
    i64: ToSql<BigInt, DB>,
    i16: ToSql<SmallInt, DB>,
    bool: ToSql<Bool, DB>,
    String: ToSql<Text, DB>,
    Vec<u8>: ToSql<Binary, DB>,
    UtcDateTime: ToSql<GeoTimestamp, DB>,
    crate::json::JsonValue: ToSql<crate::json::GeoJson, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        for piece in &self.0.pieces {
            match piece {
                Piece::Sql(s) => out.push_sql(s),
                Piece::Int(n) => out.push_sql(&n.to_string()),
                Piece::Ident(name) => out.push_identifier(name)?,
                Piece::OwnedIdent(name) => out.push_identifier(name)?,
                Piece::RowRef(row) => {
                    out.push_sql(row.row.as_str());
                    out.push_sql(".");
                    out.push_identifier(row.column)?;
                }
                Piece::Lock(lock) => out.push_sql(lock_clause(DB::KIND, *lock)),
                Piece::SqliteIndexedBy(index) => {
                    if DB::KIND == geo_core::Backend::Sqlite {
                        out.push_sql(" INDEXED BY ");
                        out.push_identifier(index)?;
                    }
                }
                Piece::IdSet(set) => DB::walk_id_set(set, &mut out)?,
                Piece::Bind(b) => match b {
                    Bound::BigInt(n) => out.push_bind_param::<BigInt, _>(n)?,
                    Bound::SmallInt(n) => out.push_bind_param::<SmallInt, _>(n)?,
                    Bound::Bool(b) => out.push_bind_param::<Bool, _>(b)?,
                    Bound::Text(s) => out.push_bind_param::<Text, _>(s)?,
                    Bound::Bytes(b) => out.push_bind_param::<Binary, _>(b)?,
                    Bound::Time(t) => out.push_bind_param::<GeoTimestamp, _>(t)?,
                    Bound::Json(j) => out.push_bind_param::<crate::json::GeoJson, _>(j)?,
                },
            }
        }
        Ok(())
    }
}

mod literal;
mod table;

pub use literal::{Row, RowRef};
pub use table::{BATCH_CHUNK, CHUNK, IdPathRow, IdRow, Table};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Table;
    use geo_core::transitions::registry as rules;

    fn sqlite(sql: &Sql) -> String {
        diesel::debug_query::<diesel::sqlite::Sqlite, _>(&SqlRef(sql)).to_string()
    }

    #[cfg(feature = "postgres")]
    fn pg(sql: &Sql) -> String {
        diesel::debug_query::<diesel::pg::Pg, _>(&SqlRef(sql)).to_string()
    }

    const TABLE: Table = Table {
        name: "widget_registry",
        key: "widget_id",
        row_key: "id",
    };

    #[test]
    fn identifiers_are_quoted_and_values_bound() {
        let mut sql = Sql::new();
        sql.push("SELECT ")
            .ident("a\"b")
            .push(" WHERE x = ")
            .bind_i64(7)
            .push(" AND y IN (")
            .ints([1, -2])
            .push(")");
        let text = sqlite(&sql);
        assert!(
            text.starts_with(r#"SELECT `a"b` WHERE x = ? AND y IN (1,-2)"#),
            "{text}"
        );
        assert!(text.contains("binds: [7]"), "{text}");
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_gets_numbered_placeholders_and_the_lock_clause() {
        let now = Utc::now();
        let claim = &rules::claims(now)[1];
        let sql = TABLE.claim_sql(claim, 10);
        let text = pg(&sql);
        assert!(
            text.contains("$1") && text.contains("$2") && text.contains("$3"),
            "{text}"
        );
        assert!(!text.contains('?'), "{text}");
        assert!(text.contains("FOR UPDATE SKIP LOCKED"), "{text}");
        assert!(!sqlite(&sql).contains("FOR UPDATE"), "{}", sqlite(&sql));
    }

    #[test]
    fn claims_skip_locked_rows_and_a_compare_and_set_waits() {
        use geo_core::Backend::{Postgres, Sqlite};
        assert_eq!(
            lock_clause(Postgres, Lock::SkipLocked),
            " FOR UPDATE SKIP LOCKED"
        );
        assert_eq!(lock_clause(Postgres, Lock::Wait), " FOR UPDATE");
        assert_eq!(lock_clause(Sqlite, Lock::Wait), "");
    }

    #[test]
    fn a_change_renders_its_guard_and_follow_up() {
        let now = Utc::now();
        let failure = geo_core::SyncFailure::new("boom");
        let change = rules::sync_failed(Some(now), &failure);
        let text = sqlite(&TABLE.update_sql(&change, Some(&[3, 4])));
        assert!(
            text.contains(r#"WHERE `widget_registry`.`widget_id` IN (3,4) AND `widget_registry`.`state` = 1 AND `widget_registry`.`last_synced_at` = ?"#),
            "{text}"
        );
        assert!(
            text.contains(r#"RETURNING `widget_registry`.`widget_id` AS id, `widget_registry`.`retry_count` AS n"#),
            "{text}"
        );
    }
}
