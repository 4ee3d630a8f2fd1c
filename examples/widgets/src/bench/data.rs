//! The data and databases the benchmarks run on: random files, bulk-inserted rows, resets
//! between runs.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use geo_diesel::AsDbConn;
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::{Backend, Replicable, ReplicableDescriptor};
use geo_diesel::registry;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::{BenchOptions, KIB, MIB};
use crate::Widget;
use crate::demo::{Sites, open_sites};

/// Writes `size` pseudo-random bytes (seeded, so every file differs) to `path`.
pub(super) fn write_random_file(path: &Path, size: u64, seed: u64, buf: &mut [u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = (left.min(buf.len() as u64)) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

pub(super) fn widget() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

pub(super) fn exec(pool: &DbPool, sql: &str) -> Result<()> {
    let mut conn = pool.get()?;
    conn.db()
        .batch_execute(sql)
        .with_context(|| format!("running {}", sql.chars().take(120).collect::<String>()))
}

/// `INSERT INTO <target> SELECT <select> FROM <series 1..=n as x>`: one set-based statement per
/// backend (a recursive CTE on SQLite, `generate_series` on PostgreSQL). `select` names the
/// series value `x`.
pub(super) fn insert_series_sql(backend: Backend, target: &str, select: &str, n: i64) -> String {
    match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {n}) \
             INSERT INTO {target} SELECT {select} FROM s"
        ),
        Backend::Postgres => format!(
            "INSERT INTO {target} SELECT {select} FROM generate_series(1, {n}::bigint) AS g(x)"
        ),
    }
}

/// `sql` in one transaction with the widget's replication flag off, so the insert triggers on
/// `widgets` (`events = "triggers"`) write no events and no verification states: benchmark data
/// is loaded as an import would be, and each benchmark sets up exactly the state it measures.
/// The flag row is removed again (back to the default) in the same transaction.
pub(super) fn without_events_sql(sql: &str) -> String {
    let flag = widget().feature_flag();
    format!(
        "BEGIN;\nINSERT INTO geo_feature_flags (name, enabled) VALUES ('{flag}', FALSE) \
         ON CONFLICT (name) DO UPDATE SET enabled = FALSE;\n{sql};\n\
         DELETE FROM geo_feature_flags WHERE name = '{flag}';\nCOMMIT;"
    )
}

/// The blob path of the `i`-th benchmark file.
pub(super) fn bench_path(prefix: &str, i: usize) -> String {
    format!("{prefix}/{:03}/{i:06}.bin", i % 97)
}

/// Inserts widgets `1..=paths.len()` with the given file paths and pending verification states,
/// in multi-row statements.
pub(super) fn insert_widgets(pool: &DbPool, paths: &[String]) -> Result<()> {
    let d = widget();
    let (m, id, file) = (
        ident(d.tables.model),
        ident(d.tables.model_id),
        ident(d.tables.model_file),
    );
    let mut sql = String::new();
    for (chunk_no, chunk) in paths.chunks(1000).enumerate() {
        let values = chunk
            .iter()
            .enumerate()
            .map(|(j, p)| {
                format!(
                    "({}, '{}', 'bench')",
                    chunk_no * 1000 + j + 1,
                    p.replace('\'', "''")
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        sql.push_str(&format!(
            "INSERT INTO {m} ({id}, {file}, \"name\") VALUES {values};\n"
        ));
    }
    if let Some((states, key)) = d.tables.verification {
        sql.push_str(&format!(
            "INSERT INTO {} ({}, verification_state) SELECT {id}, 0 FROM {m};",
            ident(states),
            ident(key)
        ));
    }
    exec(pool, &without_events_sql(&sql))
}

/// Empties the secondary: registry rows, cursor, gaps and files.
pub(super) fn reset_secondary(sites: &Sites) -> Result<()> {
    let d = widget();
    let tracking = sites.secondary.tracking();
    let tables = [
        ident(d.tables.registry),
        "geo_event_log_states".to_string(),
        "geo_event_log_gaps".to_string(),
    ];
    exec(tracking, &clear_tables_sql(tracking.backend(), &tables))?;
    let root = sites.secondary_store.root();
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root)?;
    Ok(())
}

/// Empties tables between runs: `DELETE` without a condition on SQLite (its truncate
/// optimisation), `TRUNCATE` on PostgreSQL (a `DELETE` there leaves dead rows and bloated indexes
/// that would slow the next run down).
pub(super) fn clear_tables_sql(backend: Backend, tables: &[String]) -> String {
    match backend {
        Backend::Sqlite => tables.iter().map(|t| format!("DELETE FROM {t};")).collect(),
        Backend::Postgres => format!("TRUNCATE {};", tables.join(", ")),
    }
}

pub(super) fn registry_counts(sites: &Sites) -> Result<registry::RegistryCounts> {
    let mut conn = sites.secondary.tracking().get()?;
    Ok(registry::Registry::of(widget()).counts(&mut conn)?)
}

pub(super) fn secondary_with(sites: &Sites, config: SecondaryConfig) -> Secondary {
    let source = Arc::new(DirectSource::new(
        sites.primary_db.clone(),
        sites.primary_store.clone(),
    ));
    Secondary::new(
        sites.secondary.tracking().clone(),
        source,
        sites.secondary_store.clone(),
        Env::system(),
        config,
    )
}

/// Files and bytes under `dir`.
pub(super) fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                dirs.push(e.path());
            } else if kind.is_file() {
                files += 1;
                bytes += e.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}

pub(super) fn open(opts: &BenchOptions, dir: &Path, config: SecondaryConfig) -> Result<Sites> {
    open_sites(dir, opts.database_url.as_deref(), config)
}

pub(super) fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// A quoted SQL identifier, for the benchmark's own setup statements.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
