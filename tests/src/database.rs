//! Fresh databases of either backend, one per test, and direct connections to them.
//!
//! SQLite: a file in a temporary folder of its own. PostgreSQL: a database created for the
//! test on the server of `GEO_TEST_DATABASE_URL` and dropped afterwards ([`fresh_pg_database`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::{PgConnection, SqliteConnection};
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::geo_core::{Backend, Role};
use geo_diesel::{MigrationError, MigrationReport, RevertReport};

/// The environment variable naming the PostgreSQL admin URL.
pub const DATABASE_URL_VAR: &str = "GEO_TEST_DATABASE_URL";

/// An empty database of one backend, made for one test and removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    url: String,
    holder: Holder,
}

/// What keeps the database alive: the folder of the SQLite file, or the PostgreSQL database.
#[derive(Debug)]
enum Holder {
    Sqlite { _dir: tempfile::TempDir },
    Postgres(PgTestDb),
}

impl TestDatabase {
    /// A new, empty database of `backend`; `prefix` names it (the SQLite file, the PostgreSQL
    /// database) to make stray leftovers recognisable.
    ///
    /// # Panics
    ///
    /// When the database cannot be created; on PostgreSQL also when `GEO_TEST_DATABASE_URL` is
    /// unset (a PostgreSQL test fails, it never skips).
    pub fn fresh(backend: Backend, prefix: &str) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = crate::temp_dir();
                let url = dir
                    .path()
                    .join(format!("{prefix}.sqlite3"))
                    .display()
                    .to_string();
                TestDatabase {
                    backend,
                    url,
                    holder: Holder::Sqlite { _dir: dir },
                }
            }
            Backend::Postgres => {
                let db = fresh_pg_database(prefix);
                TestDatabase {
                    backend,
                    url: db.url().to_string(),
                    holder: Holder::Postgres(db),
                }
            }
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// What [`DbPool::connect`] and the worker binary take: the SQLite file's path or the
    /// PostgreSQL URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool of at most `max_size` connections to the database.
    ///
    /// # Panics
    ///
    /// When the pool cannot be built.
    pub fn pool(&self, max_size: u32) -> DbPool {
        DbPool::connect(&self.url, max_size)
            .unwrap_or_else(|e| panic!("pool for the test database {}: {e}", self.name()))
    }

    /// A direct connection: [`geo_diesel::connection::sqlite::establish`] (the worker pragmas)
    /// on SQLite, [`PgConnection::establish`] on PostgreSQL.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    pub fn connect(&self) -> TestConnection {
        match &self.holder {
            Holder::Sqlite { .. } => TestConnection::Sqlite(
                geo_diesel::connection::sqlite::establish(&self.url)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.url)),
            ),
            Holder::Postgres(db) => TestConnection::Postgres(db.connect()),
        }
    }

    fn name(&self) -> &str {
        match &self.holder {
            Holder::Sqlite { .. } => &self.url,
            Holder::Postgres(db) => db.name(),
        }
    }
}

/// A direct (unpooled) connection of either backend.
pub enum TestConnection {
    /// SQLite.
    Sqlite(SqliteConnection),
    /// PostgreSQL.
    Postgres(PgConnection),
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
}

impl TestConnection {
    /// The backend.
    pub fn backend(&self) -> Backend {
        match self {
            TestConnection::Sqlite(_) => Backend::Sqlite,
            TestConnection::Postgres(_) => Backend::Postgres,
        }
    }

    /// [`geo_diesel::run_migrations`] on the concrete connection.
    pub fn run_migrations(&mut self, role: Role) -> Result<MigrationReport, MigrationError> {
        crate::on_conn!(self, c => geo_diesel::run_migrations(c, role))
    }

    /// [`geo_diesel::revert_migrations`] on the concrete connection.
    pub fn revert_migrations(&mut self, role: Role) -> Result<RevertReport, MigrationError> {
        crate::on_conn!(self, c => geo_diesel::revert_migrations(c, role))
    }

    /// Runs SQL statements.
    pub fn batch_execute(&mut self, sql: &str) -> QueryResult<()> {
        crate::on_conn!(self, c => c.batch_execute(sql))
    }

    /// Loads a query whose single column is text named `name`.
    fn names(&mut self, sql: &str) -> Vec<String> {
        let rows: Vec<Named> = crate::on_conn!(self, c => diesel::sql_query(sql).load(c))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|n| n.name).collect()
    }

    /// Every user table, sorted.
    pub fn tables(&mut self) -> Vec<String> {
        self.names(match self.backend() {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' \
                 ORDER BY tablename"
            }
        })
    }

    /// The schema as sorted text lines, what "the same schema" means: on SQLite the DDL of
    /// every table and index by name; on PostgreSQL every column (type, default, nullability)
    /// and index of the public schema.
    pub fn schema(&mut self) -> Vec<String> {
        let mut all = self.names(match self.backend() {
            Backend::Sqlite => {
                "SELECT name || ': ' || sql AS name FROM sqlite_master \
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
            }
            Backend::Postgres => {
                "SELECT concat_ws(' ', table_name, column_name, data_type, \
                 coalesce(column_default, '-'), is_nullable) AS name \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"
            }
        });
        all.sort();
        all
    }

    /// The text of a query returning one text column named `name` and one row.
    pub fn text(&mut self, sql: &str) -> String {
        let mut rows = self.names(sql);
        assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
        rows.remove(0)
    }
}

/// A borrowed concrete connection: what [`on_conn!`](crate::on_conn) matches on.
pub enum ConnRef<'a> {
    /// SQLite.
    Sqlite(&'a mut SqliteConnection),
    /// PostgreSQL.
    Postgres(&'a mut PgConnection),
}

impl<'a> ConnRef<'a> {
    /// The concrete connection behind `conn`.
    pub fn of(conn: &'a mut impl AsConnRef) -> Self {
        conn.conn_ref()
    }
}

/// A connection of either backend that can lend its concrete connection.
pub trait AsConnRef {
    /// Borrows the concrete connection.
    fn conn_ref(&mut self) -> ConnRef<'_>;
}

impl AsConnRef for TestConnection {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        match self {
            TestConnection::Sqlite(c) => ConnRef::Sqlite(c),
            TestConnection::Postgres(c) => ConnRef::Postgres(c),
        }
    }
}

impl AsConnRef for PooledConn {
    fn conn_ref(&mut self) -> ConnRef<'_> {
        match self {
            PooledConn::Sqlite(c) => ConnRef::Sqlite(c),
            PooledConn::Pg(c) => ConnRef::Postgres(c),
        }
    }
}

/// The PostgreSQL admin URL from `GEO_TEST_DATABASE_URL`.
///
/// # Panics
///
/// When the variable is unset or empty, with instructions: a PostgreSQL test must fail, not
/// skip, without a server.
pub fn pg_admin_url() -> String {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{DATABASE_URL_VAR} is not set: the PostgreSQL suite needs a server. Start one with \
             `eval \"export $(scripts/pg-test-server start)\"` (or run `.ci/run`), then rerun \
             `cargo test --workspace --features geo-tests/pg-suite --test migrations --test runtime \
             --test pg_runtime`."
        ),
    }
}

/// A database created for one test on the server of [`pg_admin_url`], dropped (best effort)
/// when this value is dropped.
#[derive(Debug)]
pub struct PgTestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl PgTestDb {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection URL for the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens a new connection to the database.
    ///
    /// # Panics
    ///
    /// When the server refuses the connection.
    pub fn connect(&self) -> PgConnection {
        PgConnection::establish(&self.url)
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name))
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            // Best effort: a failure leaves a stray database on a throwaway server.
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Creates a uniquely named, empty database `<prefix>_<pid>_<n>_<time>` on the server of
/// [`pg_admin_url`] and returns it; it is dropped again when the returned value is dropped.
///
/// `prefix` is cut to 20 characters and reduced to `[a-z0-9_]`.
///
/// # Panics
///
/// When `GEO_TEST_DATABASE_URL` is unset, the server is unreachable or the database cannot be
/// created.
pub fn fresh_pg_database(prefix: &str) -> PgTestDb {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let admin_url = pg_admin_url();
    let prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(20)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "geo_{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = PgConnection::establish(&admin_url)
        .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR}={admin_url}: {e}"));
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let url = database_url(&admin_url, &name);
    PgTestDb {
        name,
        url,
        admin_url,
    }
}

/// `admin_url` with its database name replaced by `db` (query parameters kept).
pub fn database_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:54329/postgres", "t1"),
            "postgres://postgres@127.0.0.1:54329/t1"
        );
        assert_eq!(
            database_url("postgres://u:p@h/postgres?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
