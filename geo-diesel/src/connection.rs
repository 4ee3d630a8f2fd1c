//! Opening connections ([`sqlite::establish`] opens a SQLite file with the pragmas a
//! multi-threaded worker process needs; pools: [`crate::db::DbPool`]), and the migration
//! runner's per-backend primitives (crate-private).

use diesel::connection::Connection;
use diesel::prelude::*;
use diesel::result::QueryResult;
use geo_core::Backend;

use crate::schema::geo_schema_migrations;

#[cfg(feature = "postgres")]
use diesel::PgConnection;

/// What the migration runner needs of a concrete connection: its backend, a transaction that
/// serialises runners, and the ledger queries.
pub(crate) trait Ledger: Connection {
    /// The backend this connection talks to, which selects the SQL dialect of migrations.
    fn backend(&self) -> Backend;

    /// Runs `f` in a transaction that also serialises migration runners: `BEGIN IMMEDIATE` on
    /// SQLite (takes the write lock up front), a transaction-scoped advisory lock on PostgreSQL.
    /// Commits when `f` returns `Ok`, rolls back otherwise.
    fn migration_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>;

    /// Whether the ledger `geo_schema_migrations` records the migration `name`.
    fn migration_applied(&mut self, name: &str) -> QueryResult<bool>;

    /// Records `name` in the ledger with the current time.
    fn record_migration(&mut self, name: &str) -> QueryResult<()>;

    /// Removes `name` from the ledger.
    fn forget_migration(&mut self, name: &str) -> QueryResult<()>;

    /// How many migrations the ledger records.
    fn recorded_migration_count(&mut self) -> QueryResult<i64>;
}

/// The ledger queries are the same Diesel DSL on both backends; only the connection type
/// differs, so they are written once here.
macro_rules! ledger_methods {
    () => {
        fn migration_applied(&mut self, name: &str) -> QueryResult<bool> {
            diesel::select(diesel::dsl::exists(geo_schema_migrations::table.find(name)))
                .get_result(self)
        }

        fn record_migration(&mut self, name: &str) -> QueryResult<()> {
            diesel::insert_into(geo_schema_migrations::table)
                .values((
                    geo_schema_migrations::name.eq(name),
                    geo_schema_migrations::applied_at.eq(crate::UtcDateTime(chrono::Utc::now())),
                ))
                .execute(self)
                .map(drop)
        }

        fn forget_migration(&mut self, name: &str) -> QueryResult<()> {
            diesel::delete(geo_schema_migrations::table.find(name))
                .execute(self)
                .map(drop)
        }

        fn recorded_migration_count(&mut self) -> QueryResult<i64> {
            geo_schema_migrations::table.count().get_result(self)
        }
    };
}

impl Ledger for SqliteConnection {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn migration_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        self.immediate_transaction(f)
    }

    ledger_methods!();
}

#[cfg(feature = "postgres")]
impl Ledger for PgConnection {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn migration_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        use diesel::connection::SimpleConnection;
        self.transaction(|conn| {
            // Key: the bytes "geo_migr" as a big-endian i64. Released at commit or rollback.
            conn.batch_execute("SELECT pg_advisory_xact_lock(7450483614202554226)")?;
            f(conn)
        })
    }

    ledger_methods!();
}

/// Opening SQLite databases for a multi-threaded worker process.
pub mod sqlite {
    use std::path::Path;

    use diesel::connection::{Connection, SimpleConnection};
    use diesel::{ConnectionError, SqliteConnection};

    /// How long a connection waits for another writer's lock before failing with
    /// `SQLITE_BUSY`, in milliseconds.
    pub const BUSY_TIMEOUT_MS: u32 = 30_000;

    /// The pragmas applied to every connection: wait up to [`BUSY_TIMEOUT_MS`] for locks,
    /// write-ahead logging (readers do not block the writer), `synchronous = NORMAL` (durable
    /// across application crashes; safe with WAL), and foreign keys enforced.
    pub const PRAGMAS: &str = "PRAGMA busy_timeout = 30000;\n\
                               PRAGMA journal_mode = WAL;\n\
                               PRAGMA synchronous = NORMAL;\n\
                               PRAGMA foreign_keys = ON;";

    /// Applies [`PRAGMAS`] to an open connection.
    pub fn configure(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
        conn.batch_execute(PRAGMAS)
    }

    /// Opens (creating if needed) the SQLite database file at `path` and applies [`PRAGMAS`].
    ///
    /// The parent folder must exist. A path that is not valid UTF-8 is rejected with
    /// [`ConnectionError::InvalidConnectionUrl`].
    pub fn establish(path: impl AsRef<Path>) -> Result<SqliteConnection, ConnectionError> {
        let url = url_of(path.as_ref())?;
        let mut conn = SqliteConnection::establish(url)?;
        configure(&mut conn).map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    fn url_of(path: &Path) -> Result<&str, ConnectionError> {
        path.to_str().ok_or_else(|| {
            ConnectionError::InvalidConnectionUrl(format!(
                "SQLite path {} is not valid UTF-8",
                path.display()
            ))
        })
    }
}
