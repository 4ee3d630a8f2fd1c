//! The shared fixture of the workspace test suites: every end-to-end scenario is written once
//! and runs on SQLite (always) and on PostgreSQL (feature `pg-suite`).
//!
//! The runtime suites' primary-and-secondary fixture (`Sites`) is built on this crate in
//! `tests/tests/sites/`: it links the widgets example, whose replicables must not be registered
//! in the migration tests' binary.
//!
//! - [`database`]: a fresh, empty database of either backend for one test ([`TestDatabase`]),
//!   a direct connection to it ([`TestConnection`]) and the PostgreSQL server helpers.
//! - [`source`]: test doubles around a [`PrimarySource`](geo_diesel::geo_core::source::PrimarySource)
//!   that change one method and delegate the rest.
//! - [`worker`]: the command line and the shared log of the `geo-test-worker` binary, used by
//!   the binary and by the test that starts it.
//! - [`backend_tests!`] turns a list of scenarios `fn(Backend)` into one `#[test]` per backend:
//!   `<scenario>::sqlite` always, `<scenario>::postgres` with the `pg-suite` feature.
//!
//! PostgreSQL: the tests behind the `pg-suite` feature connect to the server named by
//! `GEO_TEST_DATABASE_URL` (an admin URL, e.g. `postgres://postgres@127.0.0.1:54329/postgres`)
//! and each test works in fresh databases of its own ([`fresh_pg_database`]). `.ci/run` starts
//! a private server with `scripts/pg-test-server` and sets the variable; by hand:
//!
//! ```text
//! eval "export $(scripts/pg-test-server start)"
//! cargo test --workspace --features geo-tests/pg-suite --test migrations --test runtime --test pg_runtime
//! scripts/pg-test-server stop
//! ```
//!
//! A test that needs PostgreSQL fails loudly when the variable is unset; it never skips.

pub mod database;
pub mod source;
pub mod worker;

mod files;

pub use database::{
    DATABASE_URL_VAR, PgTestDb, TestConnection, TestDatabase, database_url, fresh_pg_database,
    pg_admin_url,
};
pub use files::{all_files, checksum, data, read_opt, sum, temp_dir, wait_until};
pub use geo_diesel::geo_core::Backend;

/// Runs `$body` with `$c` bound to the concrete connection (`&mut SqliteConnection` or
/// `&mut PgConnection`) behind `$conn` (a [`TestConnection`] or a pooled connection), so a
/// Diesel query written once type-checks against each backend.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $crate::database::ConnRef::of($conn) {
            $crate::database::ConnRef::Sqlite($c) => $body,
            $crate::database::ConnRef::Postgres($c) => $body,
        }
    };
}

/// One `#[test]` per backend for each scenario `fn(Backend)` named: a module named after the
/// scenario with the test `sqlite` and, with the `pg-suite` feature, the test `postgres`.
///
/// ```text
/// fn sync_stuck_in_started_times_out(backend: Backend) { … }
///
/// geo_tests::backend_tests! {
///     sync_stuck_in_started_times_out,
/// }
/// // sync_stuck_in_started_times_out::sqlite, sync_stuck_in_started_times_out::postgres
/// ```
///
/// A scenario left out of the list is never called, and the `dead_code` lint says so.
#[macro_export]
macro_rules! backend_tests {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn sqlite() {
                    super::$scenario($crate::Backend::Sqlite)
                }

                #[cfg(feature = "pg-suite")]
                #[test]
                fn postgres() {
                    super::$scenario($crate::Backend::Postgres)
                }
            }
        )+
    };
}
