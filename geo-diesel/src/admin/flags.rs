//! The replication feature flags `geo_<name>_replication` of every registered replicable, and
//! which role a database was migrated for.

use chrono::Utc;
use diesel::prelude::*;
use geo_core::{ReplicableDescriptor, Role, find_replicable, replicables};

use super::{AdminError, db};
use crate::db::{AsDbConn, with_conn};
use crate::migrations::FRAMEWORK_MIGRATION_PREFIX;
use crate::schema::{geo_feature_flags, geo_schema_migrations};

/// One replication feature flag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlagState {
    /// `geo_<name>_replication`.
    pub name: String,
    /// The replicable it switches.
    pub replicable: String,
    /// Whether replication is on (the stored value, else the default).
    pub enabled: bool,
    /// The attribute's `enabled_by_default`.
    pub default: bool,
    /// Whether the database stores a value (else the default applies).
    pub stored: bool,
}

fn state(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<FlagState, AdminError> {
    let name = d.feature_flag();
    let query = geo_feature_flags::table
        .find(&name)
        .select(geo_feature_flags::enabled);
    let stored: Option<bool> =
        with_conn!(conn, c => query.first(c).optional()).map_err(db("reading a feature flag"))?;
    Ok(FlagState {
        name,
        replicable: d.name.to_owned(),
        enabled: stored.unwrap_or(d.enabled_by_default),
        default: d.enabled_by_default,
        stored: stored.is_some(),
    })
}

/// Every registered replicable's flag, in name order.
pub fn flags(conn: &mut impl AsDbConn) -> Result<Vec<FlagState>, AdminError> {
    replicables().into_iter().map(|d| state(conn, d)).collect()
}

/// The replicable a flag `name` switches: `geo_<replicable>_replication` or the bare name.
pub fn flag_replicable(name: &str) -> Result<&'static ReplicableDescriptor, AdminError> {
    let bare = name
        .strip_prefix("geo_")
        .and_then(|n| n.strip_suffix("_replication"));
    bare.and_then(find_replicable)
        .or_else(|| find_replicable(name))
        .ok_or_else(|| {
            let known: Vec<String> = replicables().iter().map(|d| d.feature_flag()).collect();
            AdminError::BadArgument(format!(
                "unknown feature flag {name:?}; known flags: {}",
                if known.is_empty() {
                    "none (no replicable is compiled in)".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// Turns flag `name` (`geo_<replicable>_replication` or the bare replicable name) on or off
/// and returns its new state. An unknown name is [`AdminError::BadArgument`] listing the known
/// flags.
pub fn set_flag(
    conn: &mut impl AsDbConn,
    name: &str,
    enabled: bool,
) -> Result<FlagState, AdminError> {
    let d = flag_replicable(name)?;
    crate::primary::set_replication_enabled(conn, d, enabled, Utc::now())
        .map_err(db("setting a feature flag"))?;
    state(conn, d)
}

/// The role a database was migrated for, from the ledger: which `geo_framework_<role>`
/// migration it records. `None` when it has no ledger or records neither; an error when it
/// records both (both roles in one database: the caller must say which it means).
pub fn detect_role(conn: &mut impl AsDbConn) -> Result<Option<Role>, AdminError> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let exists = match conn.db().backend() {
        geo_core::Backend::Sqlite => {
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM sqlite_master \
             WHERE type = 'table' AND name = 'geo_schema_migrations'"
        }
        geo_core::Backend::Postgres => {
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'geo_schema_migrations'"
        }
    };
    let found: Vec<Found> = with_conn!(conn, c => diesel::sql_query(exists).load(c))
        .map_err(db("looking for the migration ledger"))?;
    if found.first().is_none_or(|f| f.n == 0) {
        return Ok(None);
    }
    let names: Vec<String> = Role::ALL
        .iter()
        .map(|r| format!("{FRAMEWORK_MIGRATION_PREFIX}_{r}"))
        .collect();
    let query = geo_schema_migrations::table
        .select(geo_schema_migrations::name)
        .filter(geo_schema_migrations::name.eq_any(&names));
    let recorded: Vec<String> =
        with_conn!(conn, c => query.load(c)).map_err(db("reading the migration ledger"))?;
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .zip(&names)
        .filter(|(_, n)| recorded.contains(n))
        .map(|(r, _)| r)
        .collect();
    match roles.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(AdminError::BadArgument(
            "this database records the Geo migrations of both roles; cannot tell its role".into(),
        )),
    }
}
