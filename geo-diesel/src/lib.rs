//! # geo-diesel
//!
//! Everything of Geo for Rust that touches a database. Add this crate beside the `diesel` your
//! models already use; it re-exports the [`replicable`] attribute and [`geo_core`].

pub mod connection;
pub mod db;
pub mod json;
pub mod migrations;
pub mod schema;
pub mod types;

pub use connection::GeoConnection;
pub use geo_core;
pub use json::{GeoJson, JsonValue};
pub use migrations::{
    MigrationError, MigrationReport, NamedMigration, RevertReport, migration_plan,
    revert_migrations, run_migrations, write_diesel_cli_migrations,
};
pub use geo_macros::replicable;
pub use db::{AsDbConn, DbConn, DbPool, PooledConn};
pub use types::{UtcDateTime, sql_types};

/// Re-exports used by code that `#[replicable]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::types::{UtcDateTime, sql_types::GeoTimestamp};
    pub use ::diesel;
    pub use ::geo_core;
    pub use ::geo_core::__private::{Registration, inventory};
}
