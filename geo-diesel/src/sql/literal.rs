//! A [`Sql`] statement rendered as literal SQL text for DDL: a trigger body cannot carry bound
//! parameters, so the same typed pieces are written out — identifiers double-quoted (both
//! backends accept `"…"`), values as literals of the backend, a trigger's row as `NEW."col"` /
//! `OLD."col"`. The rule a statement comes from (a [`Change`](geo_core::Change)) is rendered by
//! the same [`Table`](super::Table) code as at run time; only the values' spelling differs.

use super::{Bound, Piece, Sql, lock_clause};

/// Which row of a row-level trigger a [`RowRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The row after the change (`INSERT`, `UPDATE`).
    New,
    /// The row before the change (`UPDATE`, `DELETE`).
    Old,
}

impl Row {
    /// `NEW` or `OLD`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Row::New => "NEW",
            Row::Old => "OLD",
        }
    }
}

/// A column of a trigger's row: `NEW."id"`. Used as the key of a statement a trigger runs
/// ([`Table::update_row_sql`](super::Table::update_row_sql)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    /// `NEW` or `OLD`.
    pub row: Row,
    /// The column.
    pub column: &'static str,
}

impl RowRef {
    /// `NEW."column"`.
    pub const fn new_row(column: &'static str) -> Self {
        RowRef {
            row: Row::New,
            column,
        }
    }

    /// `OLD."column"`.
    pub const fn old_row(column: &'static str) -> Self {
        RowRef {
            row: Row::Old,
            column,
        }
    }
}

/// `ident` double-quoted, with `"` doubled (identifiers come from validated descriptors, so
/// this never happens in practice).
fn quote_ident(out: &mut String, ident: &str) {
    out.push('"');
    out.push_str(&ident.replace('"', "\"\""));
    out.push('"');
}

/// `s` as a string literal, with `'` doubled (standard SQL; PostgreSQL's default
/// `standard_conforming_strings = on`).
fn quote_text(out: &mut String, s: &str) {
    out.push('\'');
    out.push_str(&s.replace('\'', "''"));
    out.push('\'');
}

impl Sql {
    /// The statement as literal SQL text for `backend` (for DDL such as trigger bodies): every
    /// identifier double-quoted, every bound value written as a literal of the backend (a JSON
    /// document as a string literal, `::jsonb` on PostgreSQL; an id set as a literal array).
    pub fn to_literal_sql(&self, backend: geo_core::Backend) -> String {
        use geo_core::Backend::{Postgres, Sqlite};
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Sql(s) => out.push_str(s),
                Piece::Int(n) => out.push_str(&n.to_string()),
                Piece::Ident(name) => quote_ident(&mut out, name),
                Piece::OwnedIdent(name) => quote_ident(&mut out, name),
                Piece::RowRef(r) => {
                    out.push_str(r.row.as_str());
                    out.push('.');
                    quote_ident(&mut out, r.column);
                }
                Piece::Lock(lock) => out.push_str(lock_clause(backend, *lock)),
                Piece::SqliteIndexedBy(index) => {
                    if backend == Sqlite {
                        out.push_str(" INDEXED BY ");
                        quote_ident(&mut out, index);
                    }
                }
                Piece::IdSet(set) => match backend {
                    Sqlite => {
                        out.push_str("SELECT value FROM json_each(");
                        quote_text(&mut out, &set.json);
                        out.push(')');
                    }
                    Postgres => {
                        out.push_str("SELECT unnest(ARRAY[");
                        out.push_str(&set.json[1..set.json.len() - 1]);
                        out.push_str("]::bigint[])");
                    }
                },
                Piece::Bind(b) => match b {
                    Bound::BigInt(n) => out.push_str(&n.to_string()),
                    Bound::SmallInt(n) => out.push_str(&n.to_string()),
                    Bound::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
                    Bound::Text(s) => quote_text(&mut out, s),
                    Bound::Bytes(bytes) => match backend {
                        Sqlite => {
                            out.push_str("X'");
                            out.push_str(&hex::encode(bytes));
                            out.push('\'');
                        }
                        Postgres => {
                            out.push_str("'\\x");
                            out.push_str(&hex::encode(bytes));
                            out.push_str("'::bytea");
                        }
                    },
                    Bound::Time(t) => {
                        quote_text(&mut out, &t.to_sqlite_text());
                        if backend == Postgres {
                            out.push_str("::timestamptz");
                        }
                    }
                    Bound::Json(j) => {
                        quote_text(&mut out, &j.0.to_string());
                        if backend == Postgres {
                            out.push_str("::jsonb");
                        }
                    }
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo_core::Backend;
    use geo_core::transitions::Datum;

    #[test]
    fn values_become_literals_and_rows_refer_to_the_trigger_row() {
        let mut sql = Sql::new();
        sql.push("SELECT ")
            .bind(Datum::Text("it's".into()))
            .push(", ")
            .bind(Datum::Bool(true))
            .push(", ")
            .bind(Datum::SmallInt(3))
            .push(", ")
            .bind(Datum::Bytes(vec![0xab, 0x01]))
            .push(", ")
            .row_ref(RowRef::old_row("file_path"))
            .push(" FROM ")
            .ident("a\"b");
        assert_eq!(
            sql.to_literal_sql(Backend::Sqlite),
            r#"SELECT 'it''s', TRUE, 3, X'ab01', OLD."file_path" FROM "a""b""#
        );
        assert_eq!(
            sql.to_literal_sql(Backend::Postgres),
            r#"SELECT 'it''s', TRUE, 3, '\xab01'::bytea, OLD."file_path" FROM "a""b""#
        );
    }

    #[test]
    fn json_and_id_sets_are_literals_too() {
        let mut sql = Sql::new();
        sql.bind_json(serde_json::json!({"a": "b'c"}))
            .push(" IN (")
            .id_set(&[1, 2])
            .push(")");
        assert_eq!(
            sql.to_literal_sql(Backend::Sqlite),
            r#"'{"a":"b''c"}' IN (SELECT value FROM json_each('[1,2]'))"#
        );
        assert_eq!(
            sql.to_literal_sql(Backend::Postgres),
            r#"'{"a":"b''c"}'::jsonb IN (SELECT unnest(ARRAY[1,2]::bigint[]))"#
        );
    }
}
