//! A portable JSON column: `jsonb` on PostgreSQL, `TEXT` on SQLite, read and written as
//! [`serde_json::Value`] through the [`JsonValue`] newtype.
//!
//! The newtype exists for the same reason as [`UtcDateTime`](crate::UtcDateTime): diesel's
//! `AsExpression` cannot be implemented for a foreign type such as `serde_json::Value` outside
//! diesel. `JsonValue` converts to and from `serde_json::Value` with `From`/`Into` and derefs to it.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sqlite::Sqlite;

/// A JSON document: `jsonb` on PostgreSQL, `TEXT` holding JSON on SQLite. Read and written as
/// [`JsonValue`].
#[derive(
    Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId,
)]
#[diesel(sqlite_type(name = "Text"))]
#[cfg_attr(feature = "postgres", diesel(postgres_type(name = "jsonb")))]
pub struct GeoJson;

/// A JSON value stored in a [`GeoJson`] column (for example `geo_events.payload`).
#[derive(Debug, Clone, PartialEq, Eq, Default, AsExpression, FromSqlRow)]
#[diesel(sql_type = GeoJson)]
pub struct JsonValue(pub serde_json::Value);

impl JsonValue {
    /// The wrapped value.
    pub fn into_inner(self) -> serde_json::Value {
        self.0
    }
}

impl From<serde_json::Value> for JsonValue {
    fn from(v: serde_json::Value) -> Self {
        JsonValue(v)
    }
}

impl From<JsonValue> for serde_json::Value {
    fn from(v: JsonValue) -> Self {
        v.0
    }
}

impl std::ops::Deref for JsonValue {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        &self.0
    }
}

impl ToSql<GeoJson, Sqlite> for JsonValue {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl FromSql<GeoJson, Sqlite> for JsonValue {
    fn from_sql(
        bytes: <Sqlite as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        let text = <String as FromSql<diesel::sql_types::Text, Sqlite>>::from_sql(bytes)?;
        serde_json::from_str(&text)
            .map(JsonValue)
            .map_err(|e| format!("invalid JSON in SQLite column: {e}").into())
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    use diesel::pg::{Pg, PgValue};
    use std::io::Write;

    /// The only `jsonb` binary format version PostgreSQL has defined.
    const JSONB_VERSION: u8 = 1;

    impl ToSql<GeoJson, Pg> for JsonValue {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            out.write_all(&[JSONB_VERSION])?;
            serde_json::to_writer(out, &self.0)?;
            Ok(IsNull::No)
        }
    }

    impl FromSql<GeoJson, Pg> for JsonValue {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            match value.as_bytes().split_first() {
                Some((&JSONB_VERSION, json)) => serde_json::from_slice(json)
                    .map(JsonValue)
                    .map_err(|e| format!("invalid jsonb from PostgreSQL: {e}").into()),
                Some((v, _)) => Err(format!("unsupported jsonb format version {v}").into()),
                None => Err("empty jsonb value from PostgreSQL".into()),
            }
        }
    }
}
