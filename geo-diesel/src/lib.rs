//! # geo-diesel
//!
//! Everything of Geo for Rust that touches a database. Add this crate beside the `diesel` your
//! models already use; it re-exports the [`replicable`] attribute and [`geo_core`].
//!
//! - Connections: a [`DbPool`] (SQLite file or `postgres://…`) lends them; every function here
//!   takes an [`AsDbConn`] — your own `SqliteConnection` or `PgConnection`, a pooled one, or a
//!   borrowed [`DbConn`]. [`run_migrations`] (or [`DbPool::migrate`]) creates the tables of a
//!   role.
//! - Primary: events written by triggers on the model table (`events = "triggers"`, the
//!   default; [`primary::triggers`]) or by [`publish_created`]/[`publish_updated`]/
//!   [`publish_deleted`] in the caller's transaction (`events = "manual"`; `publish_updated`
//!   also for a file rewritten in place), [`primary`]'s verification state, and the
//!   [`verifier`] workers.
//! - Secondary: [`registry::Registry`] (one handle per replicable), the [`cursor`] and the
//!   [`secondary`] workers (one module per pass), reading the primary through a
//!   [`geo_core::source::PrimarySource`] such as [`direct::DirectSource`].
//! - Every state change is one of geo-core's rules ([`geo_core::transitions`]), rendered as one
//!   conditional statement by [`sql::Table`]; per-replicable SQL is built from typed pieces
//!   ([`sql::Sql`]), framework tables go through their `table!`s ([`schema`]).

pub mod admin;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod connection;
pub mod cursor;
pub mod db;
pub mod direct;
pub mod json;
pub mod lease;
pub mod migrations;
pub mod notify;
pub mod parallel;
pub mod primary;
pub mod registry;
pub mod schema;
pub mod secondary;
pub mod sql;
pub mod types;
pub mod verifier;

pub use db::{AsDbConn, DbConn, DbPool, PooledConn, WriteTransaction};
pub use geo_core;
pub use geo_macros::replicable;
pub use json::{GeoJson, JsonValue};
pub use migrations::{
    MigrationError, MigrationReport, NamedMigration, RevertReport, migration_plan,
    revert_migrations, run_migrations, write_diesel_cli_migrations,
};
pub use primary::{publish_created, publish_deleted, publish_updated};
pub use types::{UtcDateTime, sql_types};

pub use geo_core::truncate_failure;

/// Re-exports used by code that `#[replicable]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::types::{UtcDateTime, sql_types::GeoTimestamp};
    pub use ::diesel;
    pub use ::geo_core;
    pub use ::geo_core::__private::{Registration, inventory};
}

/// Builder-style setters for a `#[non_exhaustive]` config struct: `Config::default().field(v)`
/// sets one public field and returns the config, so code outside the crate can configure every
/// field without a struct literal.
macro_rules! config_setters {
    ($ty:ty { $($field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                #[must_use]
                pub fn $field(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}
pub(crate) use config_setters;
