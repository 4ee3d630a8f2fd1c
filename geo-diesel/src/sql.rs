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

/// Which columns a "stuck in `started`" sweep reads and writes: the sync columns of a registry,
/// or the verification columns of a registry, states table or model table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartedColumns {
    pub state: &'static str,
    pub started_at: &'static str,
    pub failure: &'static str,
    pub retry_count: &'static str,
    pub retry_at: &'static str,
    /// Extra assignments (e.g. clearing the checksum).
    pub extra: &'static str,
}

/// The sync columns of a registry.
pub(crate) const SYNC_COLUMNS: StartedColumns = StartedColumns {
    state: "state",
    started_at: "last_synced_at",
    failure: "last_sync_failure",
    retry_count: "retry_count",
    retry_at: "retry_at",
    extra: "",
};

/// The verification columns (on a registry, a states table or a model table).
pub(crate) const VERIFICATION_COLUMNS: StartedColumns = StartedColumns {
    state: "verification_state",
    started_at: "verification_started_at",
    failure: "verification_failure",
    retry_count: "verification_retry_count",
    retry_at: "verification_retry_at",
    extra: "",
};

/// Rows of `table` whose `state` has been `started` (1) since before `cutoff` become `failed` (3)
/// with `message`, `retry_count = 1` and `retry_at` (GitLab's sync and verification timeouts).
pub(crate) fn fail_started_before(
    conn: &mut impl crate::db::AsDbConn,
    table: &str,
    cols: StartedColumns,
    message: &str,
    retry_at: chrono::DateTime<chrono::Utc>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<usize, diesel::result::Error> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::Text;
    let StartedColumns {
        state,
        started_at,
        failure,
        retry_count,
        retry_at: retry_col,
        extra,
    } = cols;
    let sql = format!(
        "UPDATE {t} SET {state} = 3, {failure} = ?, {retry_count} = 1, {retry_col} = ?{extra} \
         WHERE {state} = 1 AND {started_at} < ?",
        t = ident(table)
    );
    crate::with_conn!(conn, c => diesel::sql_query(placeholders(&sql, crate::primary::c_backend(c)).as_ref())
        .bind::<Text, _>(message)
        .bind::<crate::types::sql_types::GeoTimestamp, _>(crate::types::UtcDateTime(retry_at))
        .bind::<crate::types::sql_types::GeoTimestamp, _>(crate::types::UtcDateTime(cutoff))
        .execute(c))
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
