//! The one way the runtime builds SQL for the per-replicable tables: a statement assembled from
//! typed pieces ([`Sql`]) that Diesel renders per backend — identifiers through
//! `push_identifier`, values through `push_bind_param`, the lock clause per backend — so nothing
//! is found-and-replaced after it is built. [`Table`] turns geo-core's rules
//! ([`Change`], [`Claim`]) into conditional statements.
//!
//! Identifiers come only from [`geo_core::ReplicableDescriptor`]s (validated by the macro at
//! compile time) and [`Column`] names. Integer id lists and state values (from the state enums)
//! are rendered as literals: an `i64` cannot inject anything, and a literal state lets the
//! planners use the partial indexes.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, Bool, HasSqlType, SmallInt, Text, Untyped};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};
use geo_core::schema::Column;
use geo_core::transitions::{Change, Claim, Condition, Datum, Order, States, Then, Value};

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
pub fn lock_clause(backend: geo_core::Backend) -> &'static str {
    match backend {
        geo_core::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        geo_core::Backend::Sqlite => "",
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Sql(&'static str),
    Int(i64),
    Ident(&'static str),
    Bind(Datum),
    BindI64(i64),
    BindTime(UtcDateTime),
    BindJson(crate::json::JsonValue),
    IdSet(IdSet),
    LockClause,
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
        match value {
            Datum::Null => self.push("NULL"),
            Datum::Time(t) => {
                self.pieces.push(Piece::BindTime(UtcDateTime(t)));
                self
            }
            v => {
                self.pieces.push(Piece::Bind(v));
                self
            }
        }
    }

    /// Appends a bound `BIGINT`.
    pub fn bind_i64(&mut self, n: i64) -> &mut Self {
        self.pieces.push(Piece::BindI64(n));
        self
    }

    /// Appends a bound timestamp.
    pub fn bind_time(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.bind(Datum::Time(t))
    }

    /// Appends a bound JSON document (`jsonb` on PostgreSQL, text on SQLite).
    pub fn bind_json(&mut self, v: serde_json::Value) -> &mut Self {
        self.pieces.push(Piece::BindJson(crate::json::JsonValue(v)));
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
    pub fn lock(&mut self) -> &mut Self {
        self.pieces.push(Piece::LockClause);
        self
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
                Piece::BindI64(n) => out.push_bind_param::<BigInt, _>(n)?,
                Piece::BindTime(t) => out.push_bind_param::<GeoTimestamp, _>(t)?,
                Piece::BindJson(j) => out.push_bind_param::<crate::json::GeoJson, _>(j)?,
                Piece::LockClause => out.push_sql(lock_clause(DB::KIND)),
                Piece::IdSet(set) => DB::walk_id_set(set, &mut out)?,
                Piece::Bind(d) => match d {
                    Datum::Null => out.push_sql("NULL"),
                    Datum::SmallInt(n) => out.push_bind_param::<SmallInt, _>(n)?,
                    Datum::Bool(b) => out.push_bind_param::<Bool, _>(b)?,
                    Datum::Text(s) => out.push_bind_param::<Text, _>(s)?,
                    Datum::Bytes(b) => out.push_bind_param::<Binary, _>(b)?,
                    Datum::Time(_) => unreachable!("timestamps are stored as BindTime"),
                },
            }
        }
        Ok(())
    }
}

/// A table the rules run against: its name, the key the caller's ids refer to (the model id),
/// and the row key claims order by (the registry's own `id`, else the same key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table.
    pub name: &'static str,
    /// The column the ids given to [`Table::apply`] refer to.
    pub key: &'static str,
    /// The column claims order by and select on.
    pub row_key: &'static str,
}

/// A row of `RETURNING key AS id`.
#[derive(Debug, QueryableByName)]
pub struct IdRow {
    /// The key.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

#[derive(Debug, QueryableByName)]
struct IdCountRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = SmallInt)]
    n: i16,
}

/// Rows per statement for id lists and batches.
pub const CHUNK: usize = 1000;
/// Rows per `UPDATE … FROM (VALUES …)` statement.
pub const BATCH_CHUNK: usize = 200;

impl Table {
    fn col(&self, sql: &mut Sql, c: Column) {
        sql.qualified(self.name, c.name());
    }

    fn value(&self, sql: &mut Sql, column: Column, v: &Value) {
        match v {
            Value::Set(d) => {
                sql.bind(d.clone());
            }
            Value::IncrementOf(c) => {
                sql.push("CASE WHEN ");
                self.col(sql, *c);
                sql.push(" < 32767 THEN ");
                self.col(sql, *c);
                sql.push(" + 1 ELSE ");
                self.col(sql, *c);
                sql.push(" END");
            }
            Value::Token(t) => {
                sql.push("CASE WHEN ");
                self.col(sql, column);
                sql.push(" = ").bind_time(*t).push(" THEN ");
                sql.bind_time(*t - TimeDelta::milliseconds(1))
                    .push(" ELSE ")
                    .bind_time(*t)
                    .push(" END");
            }
            Value::PerRow(n) => {
                sql.push("v.").push(PER_ROW[*n]);
            }
            Value::Keep => self.col(sql, column),
            Value::When {
                states,
                then,
                otherwise,
            } => {
                sql.push("CASE WHEN ");
                self.states(sql, *states);
                sql.push(" THEN ");
                self.value(sql, column, then);
                sql.push(" ELSE ");
                self.value(sql, column, otherwise);
                sql.push(" END");
            }
        }
    }

    fn states(&self, sql: &mut Sql, s: States) {
        self.col(sql, s.column());
        let values = s.values();
        if let [one] = values.as_slice() {
            sql.push(" = ").int(i64::from(*one));
        } else {
            sql.push(" IN (")
                .ints(values.iter().map(|v| i64::from(*v)))
                .push(")");
        }
    }

    fn condition(&self, sql: &mut Sql, c: &Condition) {
        match c {
            Condition::Equals(col, v) => {
                self.col(sql, *col);
                sql.push(" = ");
                self.value(sql, *col, v);
            }
            Condition::Differs(col, d) => {
                self.col(sql, *col);
                sql.push(" <> ").bind(d.clone());
            }
            Condition::NullOrBefore(col, t) | Condition::NullOrNotAfter(col, t) => {
                sql.push("(");
                self.col(sql, *col);
                sql.push(" IS NULL OR ");
                self.col(sql, *col);
                sql.push(if matches!(c, Condition::NullOrBefore(..)) {
                    " < "
                } else {
                    " <= "
                });
                sql.bind_time(*t).push(")");
            }
            Condition::Before(col, t) => {
                self.col(sql, *col);
                sql.push(" < ").bind_time(*t);
            }
        }
    }

    /// Appends ` AND <guard>` for every guard term.
    fn guard(&self, sql: &mut Sql, change: &Change) {
        for s in &change.guard.states {
            sql.push(" AND ");
            self.states(sql, *s);
        }
        for c in &change.guard.conditions {
            sql.push(" AND ");
            self.condition(sql, c);
        }
    }

    fn set(&self, sql: &mut Sql, change: &Change) {
        sql.push(" SET ");
        for (i, (c, v)) in change.set.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.ident(c.name()).push(" = ");
            self.value(sql, *c, v);
        }
    }

    fn returning(&self, sql: &mut Sql, change: &Change) {
        sql.push(" RETURNING ")
            .qualified(self.name, self.key)
            .push(" AS id");
        if let Some(Then::ScheduleRetry { count, .. }) = &change.then {
            sql.push(", ");
            self.col(sql, *count);
            sql.push(" AS n");
        }
    }

    /// `UPDATE t SET … WHERE key IN (ids) AND guard RETURNING key`, for rows `ids` (`None`:
    /// every row).
    pub fn update_sql(&self, change: &Change, ids: Option<&[i64]>) -> Sql {
        let mut sql = Sql::new();
        sql.push("UPDATE ").ident(self.name);
        self.set(&mut sql, change);
        sql.push(" WHERE ");
        match ids {
            Some(ids) => {
                sql.qualified(self.name, self.key)
                    .push(" IN (")
                    .ints(ids.iter().copied())
                    .push(")");
            }
            None => {
                sql.push("1 = 1");
            }
        }
        self.guard(&mut sql, change);
        self.returning(&mut sql, change);
        sql
    }

    /// Applies `change` to rows `ids` (`None`: every row), then its [`Then`]; `retry_at`
    /// gives the retry time for a new retry count and cap. Returns the keys changed.
    pub fn apply(
        &self,
        conn: &mut impl AsDbConn,
        change: &Change,
        ids: Option<&[i64]>,
        retry_at: &dyn Fn(i16, geo_core::BackoffCap) -> DateTime<Utc>,
    ) -> QueryResult<Vec<i64>> {
        let Some(Then::ScheduleRetry { at, cap, .. }) = &change.then else {
            let mut out = Vec::new();
            match ids {
                Some(ids) => {
                    for chunk in ids.chunks(CHUNK) {
                        let rows: Vec<IdRow> = self.update_sql(change, Some(chunk)).load(conn)?;
                        out.extend(rows.into_iter().map(|r| r.id));
                    }
                }
                None => {
                    let rows: Vec<IdRow> = self.update_sql(change, None).load(conn)?;
                    out.extend(rows.into_iter().map(|r| r.id));
                }
            }
            return Ok(out);
        };
        // Write first (SQLite: a deferred transaction that reads before it writes can fail with
        // SQLITE_BUSY_SNAPSHOT instead of waiting): bump the count, then set the retry times
        // from it.
        crate::db::with_conn!(conn, c => diesel::Connection::transaction(c, |c| {
            let rows: Vec<IdCountRow> = self.update_sql(change, ids).load(c)?;
            for row in &rows {
                let when = retry_at(row.n, *cap);
                let mut sql = Sql::new();
                sql.push("UPDATE ").ident(self.name).push(" SET ");
                for (i, col) in at.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.ident(col.name()).push(" = ").bind_time(when);
                }
                sql.push(" WHERE ").ident(self.key).push(" = ").bind_i64(row.id);
                sql.execute(c)?;
            }
            Ok(rows.into_iter().map(|r| r.id).collect())
        }))
    }

    /// The claim statement: the change applied to the first `limit` rows matching its guard in
    /// the claim's order, with the backend's lock clause on the subselect.
    pub fn claim_sql(&self, claim: &Claim, limit: i64) -> Sql {
        let change = &claim.change;
        let mut sql = Sql::new();
        sql.push("UPDATE ").ident(self.name);
        self.set(&mut sql, change);
        sql.push(" WHERE ")
            .qualified(self.name, self.row_key)
            .push(" IN (SELECT ")
            .qualified(self.name, self.row_key)
            .push(" FROM ")
            .ident(self.name)
            .push(" WHERE 1 = 1");
        self.guard(&mut sql, change);
        sql.push(" ORDER BY ");
        for (i, o) in claim.order.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            match o {
                Order::Asc(c) => self.col(&mut sql, *c),
                Order::NullsFirst(c) => {
                    self.col(&mut sql, *c);
                    sql.push(" IS NOT NULL, ");
                    self.col(&mut sql, *c);
                }
                Order::Key => {
                    sql.qualified(self.name, self.row_key);
                }
            }
        }
        sql.push(" LIMIT ").bind_i64(limit).lock().push(")");
        self.returning(&mut sql, change);
        sql
    }

    /// Runs the claims in order until `limit` rows are claimed; returns their keys.
    pub fn claim(
        &self,
        conn: &mut impl AsDbConn,
        claims: &[Claim],
        limit: i64,
    ) -> QueryResult<Vec<i64>> {
        let mut out: Vec<i64> = Vec::new();
        for claim in claims {
            let remaining = limit - out.len() as i64;
            if remaining <= 0 {
                break;
            }
            let rows: Vec<IdRow> = self.claim_sql(claim, remaining).load(conn)?;
            out.extend(rows.into_iter().map(|r| r.id));
        }
        Ok(out)
    }

    /// Applies `change` to many rows with per-row values ([`Value::PerRow`]): one
    /// `UPDATE … FROM (VALUES …)` per [`BATCH_CHUNK`] rows. Returns the keys changed.
    pub fn apply_batch(
        &self,
        conn: &mut impl AsDbConn,
        change: &Change,
        rows: &[(i64, Vec<Datum>)],
    ) -> QueryResult<Vec<i64>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(BATCH_CHUNK) {
            let width = chunk.first().map_or(0, |(_, v)| v.len());
            let mut sql = Sql::new();
            sql.push("UPDATE ").ident(self.name);
            self.set(&mut sql, change);
            sql.push(" FROM (SELECT column1 AS id");
            for (n, name) in PER_ROW.iter().enumerate().take(width) {
                sql.push(", ")
                    .push(VALUES_COLUMN[n + 1])
                    .push(" AS ")
                    .push(name);
            }
            sql.push(" FROM (VALUES ");
            for (i, (id, values)) in chunk.iter().enumerate() {
                sql.push(if i > 0 { ", (" } else { "(" }).bind_i64(*id);
                for v in values {
                    sql.push(", ").bind(v.clone());
                }
                sql.push(")");
            }
            sql.push(") AS x) AS v WHERE ")
                .qualified(self.name, self.key)
                .push(" = v.id");
            self.guard(&mut sql, change);
            self.returning(&mut sql, change);
            let done: Vec<IdRow> = sql.load(conn)?;
            out.extend(done.into_iter().map(|r| r.id));
        }
        Ok(out)
    }

    /// `INSERT INTO t (key) VALUES … ON CONFLICT (key) DO UPDATE SET <change> [WHERE guard]`:
    /// creates the rows of `ids` that are missing and applies `change` to the others.
    pub fn upsert(
        &self,
        conn: &mut impl AsDbConn,
        change: &Change,
        ids: &[i64],
    ) -> QueryResult<usize> {
        let mut n = 0;
        for chunk in ids.chunks(CHUNK) {
            let mut sql = Sql::new();
            sql.push("INSERT INTO ")
                .ident(self.name)
                .push(" (")
                .ident(self.key)
                .push(") VALUES ");
            for (i, id) in chunk.iter().enumerate() {
                sql.push(if i > 0 { ", (" } else { "(" }).int(*id).push(")");
            }
            sql.push(" ON CONFLICT (")
                .ident(self.key)
                .push(") DO UPDATE");
            self.set(&mut sql, change);
            sql.push(" WHERE 1 = 1");
            self.guard(&mut sql, change);
            n += sql.execute(conn)?;
        }
        Ok(n)
    }
}

/// Names of the per-row columns of a batch (`v.c0`, `v.c1`, …).
const PER_ROW: [&str; 4] = ["c0", "c1", "c2", "c3"];
/// The names a `VALUES` list gives its columns on both backends.
const VALUES_COLUMN: [&str; 5] = ["column1", "column2", "column3", "column4", "column5"];
