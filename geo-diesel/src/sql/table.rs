//! [`Table`]: geo-core's rules ([`Change`], [`Claim`]) rendered as conditional statements on
//! one per-replicable table: `UPDATE … WHERE key IN (…) AND <guard>`, claims with their ordered,
//! locked subselect, `UPDATE … FROM (VALUES …)` batches and upserts.

use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryResult;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, SmallInt};
use geo_core::schema::Column;
use geo_core::transitions::{Change, Claim, Condition, Datum, Order, States, Then, Value};

use super::{RowRef, Sql};
use crate::db::AsDbConn;

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

/// A row of `… key AS id, <path column> AS path`.
#[derive(Debug, QueryableByName)]
pub struct IdPathRow {
    /// The key.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The path.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub path: String,
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

    /// `UPDATE t SET … WHERE key = NEW."col" AND guard`, the change applied to the row a
    /// trigger names (no `RETURNING`: a trigger body cannot return rows). Render it with
    /// [`Sql::to_literal_sql`].
    pub fn update_row_sql(&self, change: &Change, row: RowRef) -> Sql {
        let mut sql = Sql::new();
        sql.push("UPDATE ").ident(self.name);
        self.set(&mut sql, change);
        sql.push(" WHERE ")
            .qualified(self.name, self.key)
            .push(" = ")
            .row_ref(row);
        self.guard(&mut sql, change);
        sql
    }

    /// `INSERT INTO t (key) VALUES (NEW."col") ON CONFLICT (key) DO UPDATE SET <change>
    /// WHERE guard`: [`Table::upsert`] for the row a trigger names (no `RETURNING`).
    pub fn upsert_row_sql(&self, change: &Change, row: RowRef) -> Sql {
        let mut sql = Sql::new();
        sql.push("INSERT INTO ")
            .ident(self.name)
            .push(" (")
            .ident(self.key)
            .push(") VALUES (")
            .row_ref(row)
            .push(")");
        self.on_conflict_update(&mut sql, change);
        sql
    }

    /// ` ON CONFLICT (key) DO UPDATE SET <change> WHERE 1 = 1 <guard>`.
    fn on_conflict_update(&self, sql: &mut Sql, change: &Change) {
        sql.push(" ON CONFLICT (")
            .ident(self.key)
            .push(") DO UPDATE");
        self.set(sql, change);
        sql.push(" WHERE 1 = 1");
        self.guard(sql, change);
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
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(Vec::new());
        }
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
        // Bump the count, then set the retry times from it.
        crate::db::with_conn!(conn, c => crate::db::WriteTransaction::write_transaction(c, |c| {
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
            .ident(self.name);
        if let Some(suffix) = claim.index {
            sql.sqlite_indexed_by(geo_core::schema::index::name(self.name, suffix));
        }
        sql.push(" WHERE 1 = 1");
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
        sql.push(" LIMIT ")
            .bind_i64(limit)
            .lock(super::Lock::SkipLocked)
            .push(")");
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
        // One write transaction for all the claim's statements (on SQLite it also queues at
        // the process's write gate rather than in the busy handler).
        crate::db::with_conn!(conn, c => crate::db::WriteTransaction::write_transaction(c, |c| {
            let mut out: Vec<i64> = Vec::new();
            for claim in claims {
                let remaining = limit - out.len() as i64;
                if remaining <= 0 {
                    break;
                }
                let rows: Vec<IdRow> = self.claim_sql(claim, remaining).load(c)?;
                out.extend(rows.into_iter().map(|r| r.id));
            }
            Ok(out)
        }))
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
            self.on_conflict_update(&mut sql, change);
            n += sql.execute(conn)?;
        }
        Ok(n)
    }
}

/// Names of the per-row columns of a batch (`v.c0`, `v.c1`, …).
const PER_ROW: [&str; 4] = ["c0", "c1", "c2", "c3"];
/// The names a `VALUES` list gives its columns on both backends.
const VALUES_COLUMN: [&str; 5] = ["column1", "column2", "column3", "column4", "column5"];
