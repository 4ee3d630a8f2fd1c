//! SQL types shared by every generated and framework table, portable across SQLite and PostgreSQL.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sqlite::Sqlite;

/// Diesel SQL types declared by Geo.
pub mod sql_types {
    /// A point in time in UTC: `timestamptz` on PostgreSQL, text (RFC 3339, millisecond precision,
    /// `Z` suffix, so text order is time order) on SQLite. Read and written as [`super::UtcDateTime`].
    #[derive(
        Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId,
    )]
    #[diesel(sqlite_type(name = "Text"))]
    #[cfg_attr(feature = "postgres", diesel(postgres_type(name = "timestamptz")))]
    pub struct GeoTimestamp;
}

/// A UTC timestamp as stored in Geo's tables ([`sql_types::GeoTimestamp`]).
///
/// A newtype because diesel's `AsExpression` cannot be implemented for `chrono::DateTime<Utc>`
/// outside diesel. Converts to and from `DateTime<Utc>` with `From`/`Into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql_types::GeoTimestamp)]
pub struct UtcDateTime(pub DateTime<Utc>);

impl UtcDateTime {
    /// The wrapped time.
    pub fn get(self) -> DateTime<Utc> {
        self.0
    }

    /// The text form stored on SQLite: `2026-11-27T22:27:26.123Z`. Fixed width, so SQL text
    /// comparison orders by time.
    pub fn to_sqlite_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses the SQLite text form; also accepts SQLite's `YYYY-MM-DD HH:MM:SS[.fff]` and any
    /// RFC 3339 offset.
    pub fn parse_sqlite_text(s: &str) -> Result<Self, chrono::ParseError> {
        match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Ok(UtcDateTime(t.with_timezone(&Utc))),
            Err(e) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .map(|n| UtcDateTime(n.and_utc()))
                .map_err(|_| e),
        }
    }
}

impl From<DateTime<Utc>> for UtcDateTime {
    fn from(t: DateTime<Utc>) -> Self {
        UtcDateTime(t)
    }
}

impl From<UtcDateTime> for DateTime<Utc> {
    fn from(t: UtcDateTime) -> Self {
        t.0
    }
}

impl std::ops::Deref for UtcDateTime {
    type Target = DateTime<Utc>;
    fn deref(&self) -> &DateTime<Utc> {
        &self.0
    }
}

impl ToSql<sql_types::GeoTimestamp, Sqlite> for UtcDateTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.to_sqlite_text());
        Ok(IsNull::No)
    }
}

impl FromSql<sql_types::GeoTimestamp, Sqlite> for UtcDateTime {
    fn from_sql(
        bytes: <Sqlite as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        let text = <String as FromSql<diesel::sql_types::Text, Sqlite>>::from_sql(bytes)?;
        UtcDateTime::parse_sqlite_text(&text)
            .map_err(|e| format!("invalid timestamp {text:?} in SQLite: {e}").into())
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::pg::Pg;

    impl ToSql<sql_types::GeoTimestamp, Pg> for UtcDateTime {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            <DateTime<Utc> as ToSql<diesel::sql_types::Timestamptz, Pg>>::to_sql(&self.0, out)
        }
    }

    impl FromSql<sql_types::GeoTimestamp, Pg> for UtcDateTime {
        fn from_sql(
            bytes: <Pg as diesel::backend::Backend>::RawValue<'_>,
        ) -> deserialize::Result<Self> {
            <DateTime<Utc> as FromSql<diesel::sql_types::Timestamptz, Pg>>::from_sql(bytes)
                .map(UtcDateTime)
        }
    }
}
