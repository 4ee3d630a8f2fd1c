//! The one way Geo holds a connection, for users and workers alike: [`DbPool`] owns connections
//! of either backend and lends [`PooledConn`]s; anything that can lend a [`DbConn`] — a
//! `SqliteConnection`, a `PgConnection`, a pooled connection — is an [`AsDbConn`], which every
//! geo-diesel function takes. Inside the crate, `with_conn!` compiles query code once per
//! backend.

use diesel::SqliteConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use geo_core::Backend;

#[cfg(feature = "postgres")]
use diesel::PgConnection;

mod write_gate;

/// A mutable borrow of a connection of either backend.
pub enum DbConn<'a> {
    /// SQLite.
    Sqlite(&'a mut SqliteConnection),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Pg(&'a mut PgConnection),
}

impl DbConn<'_> {
    /// Runs SQL text that holds one or more statements and no parameters (DDL, say).
    pub fn batch_execute(&mut self, sql: &str) -> diesel::QueryResult<()> {
        use diesel::connection::SimpleConnection;
        with_conn!(self, c => c.batch_execute(sql))
    }

    /// Runs `f` in a write transaction on this connection ([`WriteTransaction`]: `BEGIN
    /// IMMEDIATE` on SQLite): committed when `f` returns `Ok`, rolled back otherwise (nested
    /// calls use savepoints, as Diesel does).
    pub fn transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn<'_>) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        with_conn!(self, c => c.write_transaction(|c| f(&mut AsDbConn::db(c))))
    }

    /// The backend of this connection.
    pub fn backend(&self) -> Backend {
        match self {
            DbConn::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            DbConn::Pg(_) => Backend::Postgres,
        }
    }
}

/// The one way Geo opens a transaction that writes, on either backend.
///
/// SQLite runs a plain `BEGIN` as *deferred*: it takes the write lock at the first write, and a
/// transaction that read before that write fails at once with `SQLITE_BUSY` ("database is
/// locked") when another connection committed in between. The busy timeout does not help,
/// because waiting cannot make the snapshot it read current again. `BEGIN IMMEDIATE` takes the
/// write lock first, waiting up to the busy timeout for another writer, so every statement in
/// the transaction then sees the latest data and no write can fail that way. Inside an open
/// transaction the call nests as a savepoint. PostgreSQL: Diesel's transaction.
///
/// Within one process, the write transactions of one SQLite file first queue at that file's
/// gate (`db/write_gate.rs`), which wakes the next writer the moment the last one ends, where
/// SQLite's busy handler would sleep up to 25 ms and more between tries.
///
/// Use it for every transaction that writes, the application's included: an event published
/// with `publish_*` reads the feature flags before it inserts.
pub trait WriteTransaction: diesel::Connection {
    /// Runs `f` in a write transaction: committed when `f` returns `Ok`, rolled back otherwise.
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>;
}

impl WriteTransaction for SqliteConnection {
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        use diesel::Connection;
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        let open =
            <AnsiTransactionManager as TransactionManager<Self>>::transaction_manager_status_mut(
                self,
            )
            .transaction_depth()?
            .is_some();
        if open {
            self.transaction(f)
        } else {
            // This process's writers queue at the file's gate, not in SQLite's busy handler.
            write_gate::gated(self, |c| c.immediate_transaction(f))
        }
    }
}

#[cfg(feature = "postgres")]
impl WriteTransaction for PgConnection {
    fn write_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        diesel::Connection::transaction(self, f)
    }
}

/// Anything that can lend a [`DbConn`]: a connection of either backend or a pooled one.
pub trait AsDbConn {
    /// Borrows the connection.
    fn db(&mut self) -> DbConn<'_>;
}

impl AsDbConn for SqliteConnection {
    fn db(&mut self) -> DbConn<'_> {
        DbConn::Sqlite(self)
    }
}

#[cfg(feature = "postgres")]
impl AsDbConn for PgConnection {
    fn db(&mut self) -> DbConn<'_> {
        DbConn::Pg(self)
    }
}

impl AsDbConn for DbConn<'_> {
    fn db(&mut self) -> DbConn<'_> {
        match self {
            DbConn::Sqlite(c) => DbConn::Sqlite(c),
            #[cfg(feature = "postgres")]
            DbConn::Pg(c) => DbConn::Pg(c),
        }
    }
}

/// Runs `$body` with `$c` bound to the concrete connection (`&mut SqliteConnection`; with the
/// `postgres` feature also `&mut PgConnection`), so query code written once type-checks against
/// each backend. Private to geo-diesel: users and workers hold an [`AsDbConn`] or a [`DbPool`].
#[cfg(feature = "postgres")]
macro_rules! with_conn {
    ($db:expr, $c:ident => $body:expr) => {
        match $crate::db::AsDbConn::db($db) {
            $crate::db::DbConn::Sqlite($c) => $body,
            $crate::db::DbConn::Pg($c) => $body,
        }
    };
}

/// See the `postgres` variant.
#[cfg(not(feature = "postgres"))]
macro_rules! with_conn {
    ($db:expr, $c:ident => $body:expr) => {
        match $crate::db::AsDbConn::db($db) {
            $crate::db::DbConn::Sqlite($c) => $body,
        }
    };
}

pub(crate) use with_conn;

/// Errors opening a database or a pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL names a backend this build does not support.
    #[error(
        "unsupported database URL {0:?}: use a SQLite file path (or sqlite://PATH) or postgres://…"
    )]
    Unsupported(String),
    /// The pool could not be built (the first connection failed).
    #[error("cannot connect to {url}: {source}")]
    Pool {
        /// The URL, with any password removed.
        url: String,
        /// The cause.
        source: diesel::r2d2::PoolError,
    },
}

/// Applies the SQLite settings every Geo connection uses: WAL, a 30 s busy timeout,
/// foreign keys on, `synchronous = NORMAL`.
#[derive(Debug, Clone, Copy)]
pub struct SqliteSettings;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqliteSettings {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        crate::connection::sqlite::configure(conn).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A connection pool of either backend.
#[derive(Clone)]
pub enum DbPool {
    /// SQLite file.
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    /// PostgreSQL server.
    #[cfg(feature = "postgres")]
    Pg(Pool<ConnectionManager<PgConnection>>),
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbPool({})", self.backend())
    }
}

/// A connection checked out of a [`DbPool`].
pub enum PooledConn {
    /// SQLite.
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Pg(PooledConnection<ConnectionManager<PgConnection>>),
}

impl AsDbConn for PooledConn {
    fn db(&mut self) -> DbConn<'_> {
        match self {
            PooledConn::Sqlite(c) => DbConn::Sqlite(c),
            #[cfg(feature = "postgres")]
            PooledConn::Pg(c) => DbConn::Pg(c),
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl DbPool {
    /// Opens a pool for `url`: `postgres://…`/`postgresql://…` (with the `postgres` feature), or a
    /// SQLite file path (optionally `sqlite://PATH`), created if missing.
    pub fn connect(url: &str, max_size: u32) -> Result<Self, ConnectError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                let manager = ConnectionManager::<PgConnection>::new(url);
                return Pool::builder()
                    .max_size(max_size)
                    .build(manager)
                    .map(DbPool::Pg)
                    .map_err(|source| ConnectError::Pool {
                        url: redact(url),
                        source,
                    });
            }
            #[cfg(not(feature = "postgres"))]
            return Err(ConnectError::Unsupported(redact(url)));
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.contains("://") {
            return Err(ConnectError::Unsupported(redact(url)));
        }
        // The pool opens its first connections in parallel and each turns write-ahead logging
        // on: on a new file the first to do so needs the lock the others hold while they wait,
        // and their busy handlers slept (a start took 0.4 s now and then). One connection first
        // creates the file in WAL mode (which persists); an error here is the pool's to report.
        drop(crate::connection::sqlite::establish(path));
        let manager = ConnectionManager::<SqliteConnection>::new(path);
        Pool::builder()
            .max_size(max_size)
            // A local file never goes stale: skip r2d2's `SELECT 1` on every checkout.
            .test_on_check_out(false)
            .connection_customizer(Box::new(SqliteSettings))
            .build(manager)
            .map(DbPool::Sqlite)
            .map_err(|source| ConnectError::Pool {
                url: redact(url),
                source,
            })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        match self {
            DbPool::Sqlite(_) => Backend::Sqlite,
            #[cfg(feature = "postgres")]
            DbPool::Pg(_) => Backend::Postgres,
        }
    }

    /// Applies every pending migration of `role` (the framework tables, then each registered
    /// replicable's tables); see [`crate::run_migrations`].
    pub fn migrate(
        &self,
        role: geo_core::Role,
    ) -> Result<crate::MigrationReport, crate::MigrationError> {
        let mut conn = self.get().map_err(crate::MigrationError::Pool)?;
        crate::run_migrations(&mut conn, role)
    }

    /// Checks out a connection.
    pub fn get(&self) -> Result<PooledConn, diesel::r2d2::PoolError> {
        Ok(match self {
            DbPool::Sqlite(p) => PooledConn::Sqlite(p.get()?),
            #[cfg(feature = "postgres")]
            DbPool::Pg(p) => PooledConn::Pg(p.get()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_password_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("/tmp/x.sqlite3"), "/tmp/x.sqlite3");
    }
}
