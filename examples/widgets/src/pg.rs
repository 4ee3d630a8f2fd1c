//! PostgreSQL helpers for the demo and the bench: fresh databases on a server.

use anyhow::{Context, Result};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

/// Replaces the database name in a `postgres://…/db?opts` URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Creates (dropping any leftovers) two databases for a demo run on the server at `url` and
/// returns their URLs: (primary, tracking).
pub fn create_demo_databases(url: &str) -> Result<(String, String)> {
    let tag = std::process::id();
    let primary = format!("geo_demo_primary_{tag}");
    let tracking = format!("geo_demo_tracking_{tag}");
    let mut admin =
        PgConnection::establish(url).with_context(|| format!("connecting to {}", redact(url)))?;
    for db in [&primary, &tracking] {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\""))?;
        admin.batch_execute(&format!("CREATE DATABASE \"{db}\""))?;
    }
    Ok((with_database(url, &primary), with_database(url, &tracking)))
}

/// The URL without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h/p?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    }
}
