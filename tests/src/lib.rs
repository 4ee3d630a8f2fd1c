//! Shared helpers for the workspace test suites.
//!
//! PostgreSQL: the suites behind the `pg-suite` feature connect to the server named by
//! `GEO_TEST_DATABASE_URL` (an admin URL, e.g. `postgres://postgres@127.0.0.1:54329/postgres`)
//! and each test works in its own fresh database ([`fresh_pg_database`]). `.ci/run` starts a
//! private server with `scripts/pg-test-server` and sets the variable; by hand:
//!
//! ```text
//! eval "export $(scripts/pg-test-server start)"
//! cargo test -p geo-tests --features pg-suite
//! scripts/pg-test-server stop
//! ```
//!
//! A suite that needs PostgreSQL fails loudly when the variable is unset; it never skips.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// The environment variable naming the PostgreSQL admin URL.
pub const DATABASE_URL_VAR: &str = "GEO_TEST_DATABASE_URL";

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
             `cargo test -p geo-tests --features pg-suite`."
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

/// A temporary folder and the path of a (not yet created) SQLite file inside it. Keep the
/// [`tempfile::TempDir`] alive as long as the file is used; dropping it deletes the folder.
///
/// # Panics
///
/// When no temporary folder can be created.
pub fn sqlite_temp_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("geo-test-")
        .tempdir()
        .expect("create a temporary folder for a SQLite test database");
    let path = dir.path().join("geo.sqlite3");
    (dir, path)
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
