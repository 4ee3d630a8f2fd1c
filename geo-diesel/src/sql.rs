//! Small helpers for the dynamic SQL the runtime runs against every registered replicable.
//!
//! Identifiers come from [`geo_core::ReplicableDescriptor`]s, which the macro validated as plain
//! lower-case SQL identifiers at compile time; they are still quoted here. Values are always bound,
//! except integer id lists, which are rendered as literals (an `i64` cannot inject anything).

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable};

/// Quotes an identifier with double quotes (doubling any embedded quote).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Renders `ids` as a comma-separated list of integer literals for `IN (…)`.
pub fn id_list(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// A row with one `BIGINT` column named `id`.
#[derive(Debug, QueryableByName)]
pub struct IdRow {
    /// The value.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

/// A row with one nullable `BIGINT` column named `n`.
#[derive(Debug, QueryableByName)]
pub struct MaybeCount {
    /// The value.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub n: Option<i64>,
}

/// A row with one `BIGINT` column named `n`.
#[derive(Debug, QueryableByName)]
pub struct Count {
    /// The value.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL. The runtime's SQL never contains a
/// literal `?`.
pub fn placeholders(sql: &str, backend: geo_core::Backend) -> std::borrow::Cow<'_, str> {
    match backend {
        geo_core::Backend::Sqlite => std::borrow::Cow::Borrowed(sql),
        geo_core::Backend::Postgres => {
            let mut out = String::with_capacity(sql.len() + 8);
            let mut n = 0;
            for ch in sql.chars() {
                if ch == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(ch);
                }
            }
            std::borrow::Cow::Owned(out)
        }
    }
}

/// A timestamp as an SQL literal for `backend` (our own formatting of a UTC time, so it is safe to
/// inline): `'2026-11-27T22:27:26.123Z'` on SQLite, the same cast to `timestamptz` on PostgreSQL.
pub fn timestamp_literal(backend: geo_core::Backend, t: chrono::DateTime<chrono::Utc>) -> String {
    let text = crate::types::UtcDateTime(t).to_sqlite_text();
    match backend {
        geo_core::Backend::Sqlite => format!("'{text}'"),
        geo_core::Backend::Postgres => format!("CAST('{text}' AS TIMESTAMPTZ)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "UPDATE t SET a = ? WHERE b = ? AND c IN (1,2)";
        assert_eq!(placeholders(sql, geo_core::Backend::Sqlite), sql);
        assert_eq!(
            placeholders(sql, geo_core::Backend::Postgres),
            "UPDATE t SET a = $1 WHERE b = $2 AND c IN (1,2)"
        );
    }

    #[test]
    fn identifiers_are_quoted_and_ids_listed() {
        assert_eq!(ident("widget_registry"), "\"widget_registry\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(id_list(&[3, -1, 42]), "3,-1,42");
        assert_eq!(id_list(&[]), "");
    }
}
