//! Keyset pagination and the small SQL pieces the lists share: cursors, the page plan, the
//! keyset condition, `LIKE` patterns, id lists and counts.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;

use super::{AdminError, DEFAULT_PAGE, MAX_PAGE, Page, PageRequest, db};
use geo_core::schema::Column;

use crate::db::AsDbConn;
use crate::sql::Sql;

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

/// Appends ` AND "t"."c" = <state>` for a state column.
pub(crate) fn state_is(sql: &mut Sql, table: &'static str, column: Column, value: i16) {
    sql.push(" AND ")
        .qualified(table, column.name())
        .push(" = ")
        .int(i64::from(value));
}

/// Appends the keyword filter: ` AND "t"."<id>" = k` when `keyword` is a number, else
/// ` AND "t"."<path>" LIKE %k% ESCAPE '\'` (the pattern escaped). Nothing for a blank keyword.
pub(crate) fn keyword_is(
    sql: &mut Sql,
    table: &'static str,
    id: &'static str,
    path: &'static str,
    keyword: Option<&str>,
) {
    let Some(k) = keyword.map(str::trim).filter(|k| !k.is_empty()) else {
        return;
    };
    sql.push(" AND ");
    match k.parse::<i64>() {
        Ok(n) => {
            sql.qualified(table, id).push(" = ").bind_i64(n);
        }
        Err(_) => {
            sql.qualified(table, path)
                .push(" LIKE ")
                .bind(geo_core::transitions::Datum::Text(like_pattern(k)))
                .push(" ESCAPE '\\'");
        }
    }
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
