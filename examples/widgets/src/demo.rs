//! `widgets demo`: a primary and a secondary on one machine, each with its own SQLite file and
//! folder (or PostgreSQL databases), replicating widgets and gadgets until every record is
//! synced and verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::status::ReplicableStatus;
use geo_diesel::geo_core::{ReplicableDescriptor, Role};
use geo_diesel::run_migrations;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};

use crate::app;

/// The tenants the demo and `seed` spread widgets over (`Widget::tenant_id`, the partition a
/// secondary's `--selective-sync` selects on): widget `i` belongs to `TENANTS[i % 3]`.
pub const TENANTS: [i64; 3] = [1, 2, 3];

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Records to create (split between widgets and gadgets).
    pub count: usize,
    /// Where the databases and folders go; a temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// Print the final status as JSON instead of a table.
    pub json: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// PostgreSQL server URL (`postgres://…/`); the demo creates two databases there. SQLite
    /// files when `None`.
    pub database_url: Option<String>,
    /// Show progress bars (when stderr is a terminal).
    pub progress: bool,
}

/// A primary and a secondary wired together in one process.
pub struct Sites {
    /// The primary's database.
    pub primary_db: DbPool,
    /// The primary's files.
    pub primary_store: Arc<LocalBlobStore>,
    /// The primary's verification workers.
    pub verifier: Arc<PrimaryVerifier>,
    /// The secondary.
    pub secondary: Arc<Secondary>,
    /// The secondary's files.
    pub secondary_store: Arc<LocalBlobStore>,
}

/// Opens (creating and migrating) a primary and a secondary under `dir`, or in two PostgreSQL
/// databases created on the server at `database_url`.
pub fn open_sites(
    dir: &Path,
    database_url: Option<&str>,
    config: SecondaryConfig,
) -> Result<Sites> {
    let (primary_url, tracking_url) = match database_url {
        None => (
            dir.join("primary.sqlite3").display().to_string(),
            dir.join("secondary.sqlite3").display().to_string(),
        ),
        Some(url) => crate::pg::create_demo_databases(url)?,
    };
    let primary_db = DbPool::connect(&primary_url, 8).context("opening the primary database")?;
    let tracking = DbPool::connect(&tracking_url, 8).context("opening the tracking database")?;
    {
        let mut conn = primary_db.get()?;
        app::create_app_schema(&mut conn)?;
        run_migrations(&mut conn, Role::Primary)?;
        tracking.migrate(Role::Secondary)?;
    }
    let primary_store = Arc::new(LocalBlobStore::new(dir.join("primary-files"))?);
    let secondary_store = Arc::new(LocalBlobStore::new(dir.join("secondary-files"))?);
    let verifier = Arc::new(PrimaryVerifier::new(
        primary_db.clone(),
        primary_store.clone(),
        Env::system(),
        PrimaryConfig::default(),
    ));
    let source = Arc::new(DirectSource::new(primary_db.clone(), primary_store.clone()));
    let secondary = Arc::new(Secondary::new(
        tracking,
        source,
        secondary_store.clone(),
        Env::system(),
        config,
    ));
    Ok(Sites {
        primary_db,
        primary_store,
        verifier,
        secondary,
        secondary_store,
    })
}

/// The outcome of the demo.
#[derive(Debug)]
pub struct DemoReport {
    /// Whether every record converged (synced, verified, files identical) in time.
    pub converged: bool,
    /// Time taken.
    pub elapsed: Duration,
    /// Per-type status on the primary and the secondary.
    pub rows: Vec<StatusRow>,
    /// Records whose secondary file differs from the primary's (should be empty).
    pub file_mismatches: Vec<String>,
}

/// One type's status on both sites.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The replicable.
    pub descriptor: &'static ReplicableDescriptor,
    /// On the primary.
    pub primary: ReplicableStatus,
    /// On the secondary.
    pub secondary: ReplicableStatus,
}

impl StatusRow {
    /// Converged: the secondary tracks exactly the primary's records, all synced, and all
    /// verified on both sides when the type verifies.
    pub fn converged(&self) -> bool {
        let p = &self.primary;
        let s = &self.secondary;
        let records = p.count.unwrap_or(0);
        let synced = s.registry_count == Some(records) && s.synced_count == Some(records);
        let verified = !self.descriptor.verifies()
            || (p.checksummed_count == Some(records) && s.verified_count == Some(records));
        synced && verified
    }
}

/// Demo file content: mostly small, some medium, a few large (1–3 MiB).
pub fn payload(rng: &mut impl Rng, i: usize) -> Vec<u8> {
    // Mixed sizes: mostly small, some medium, a few large.
    let size = match i % 20 {
        0 => rng.random_range(1..4) << 20,
        1..=4 => rng.random_range(64..512) << 10,
        _ => rng.random_range(256..16 << 10),
    };
    let mut data = vec![0u8; size];
    rng.fill(&mut data[..]);
    data
}

/// Reads both sites' status.
pub fn status_rows(sites: &Sites) -> Result<Vec<StatusRow>> {
    let primary = sites.verifier.status()?;
    let secondary = sites.secondary.status()?;
    Ok(primary
        .into_iter()
        .zip(secondary)
        .map(|((d, p), (_, s))| StatusRow {
            descriptor: d,
            primary: p,
            secondary: s,
        })
        .collect())
}

/// Compares every primary file with the secondary's copy (blake3 of both). Returns mismatches.
pub fn compare_files(sites: &Sites) -> Result<Vec<String>> {
    let mut conn = sites.primary_db.get()?;
    let mut bad = Vec::new();
    for d in geo_diesel::geo_core::replicables() {
        let ids = geo_diesel::primary::all_ids(&mut conn, d)?;
        for chunk in ids.chunks(500) {
            for (id, path) in geo_diesel::primary::blob_paths(&mut conn, d, chunk)? {
                let p = BlobPath::new(&path)?;
                let a = sites.primary_store.checksum(&p).map(|x| x.0).ok();
                let b = sites.secondary_store.checksum(&p).map(|x| x.0).ok();
                if a.is_none() || a != b {
                    bad.push(format!("{} {id} ({path})", d.name));
                }
            }
        }
    }
    Ok(bad)
}

/// Runs the demo.
pub fn run(opts: &DemoOptions) -> Result<DemoReport> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("geo-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let config = SecondaryConfig::default().idle_sleep(Duration::from_millis(50));
    let sites = open_sites(&dir, opts.database_url.as_deref(), config)?;
    let started = Instant::now();
    let primary_workers = sites.verifier.spawn()?;
    let secondary_workers = sites.secondary.spawn()?;

    let multi = MultiProgress::new();
    if !opts.progress {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>18} [{bar:40}] {pos}/{len} {msg}")
        .expect("static template")
        .progress_chars("=> ");
    let creating = multi.add(
        ProgressBar::new(opts.count as u64)
            .with_style(style.clone())
            .with_prefix("created"),
    );

    // Create records while the secondary replicates; update and delete some along the way.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e0);
    let mut conn = sites.primary_db.get()?;
    let store: &dyn BlobStore = sites.primary_store.as_ref();
    let (mut widgets, mut gadgets) = (Vec::new(), Vec::new());
    for i in 0..opts.count {
        let data = payload(&mut rng, i);
        if i % 3 == 2 {
            gadgets.push(app::create_gadget(
                &mut conn,
                store,
                &format!("gadget {i}"),
                &format!("gadgets/{i:06}.bin"),
                &data,
            )?);
        } else {
            widgets.push(app::create_widget_in(
                &mut conn,
                store,
                TENANTS[i % TENANTS.len()],
                &format!("widget {i}"),
                &format!("widgets/{:03}/{i:06}.bin", i % 97),
                &data,
            )?);
        }
        creating.inc(1);
    }
    creating.finish_with_message("done");
    let changes = multi.add(ProgressBar::new_spinner().with_prefix("updated/deleted"));
    let (mut updated, mut deleted) = (0, 0);
    for (i, w) in widgets.iter().enumerate() {
        if i % 10 == 3 {
            app::update_widget(&mut conn, store, w, &payload(&mut rng, i + 1))?;
            updated += 1;
        } else if i % 20 == 7 {
            app::delete_widget(&mut conn, store, w)?;
            deleted += 1;
        }
    }
    for (i, g) in gadgets.iter().enumerate() {
        if i % 8 == 1 {
            app::update_gadget(&mut conn, store, g, &payload(&mut rng, i + 2))?;
            updated += 1;
        } else if i % 16 == 5 {
            app::delete_gadget(&mut conn, store, g)?;
            deleted += 1;
        }
    }
    drop(conn);
    changes.finish_with_message(format!("{updated} updated, {deleted} deleted"));

    // Watch the secondary converge.
    let mut bars = Vec::new();
    for d in geo_diesel::geo_core::replicables() {
        let synced = multi.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix(format!("{} synced", d.plural)),
        );
        let verified = multi.add(
            ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix(format!("{} verified", d.plural)),
        );
        bars.push((synced, verified));
    }
    let mut converged = false;
    while started.elapsed() < opts.timeout {
        let rows = status_rows(&sites)?;
        for (row, (synced, verified)) in rows.iter().zip(&bars) {
            let total = row.primary.count.unwrap_or(0);
            synced.set_length(total);
            synced.set_position(row.secondary.synced_count.unwrap_or(0));
            verified.set_length(total);
            verified.set_position(row.secondary.verified_count.unwrap_or(0));
            let failed = row.secondary.failed_count.unwrap_or(0);
            synced.set_message(if failed > 0 {
                format!("{failed} failed (retrying)")
            } else {
                String::new()
            });
        }
        if rows.iter().all(StatusRow::converged) {
            converged = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (s, v) in &bars {
        s.finish();
        v.finish();
    }
    secondary_workers.stop();
    primary_workers.stop();
    let rows = status_rows(&sites)?;
    let file_mismatches = compare_files(&sites)?;
    let converged =
        converged && rows.iter().all(StatusRow::converged) && file_mismatches.is_empty();
    if let Some(d) = &opts.dir {
        tracing::info!(dir = %d.display(), "demo data kept");
    }
    Ok(DemoReport {
        converged,
        elapsed: started.elapsed(),
        rows,
        file_mismatches,
    })
}

/// The status table printed at the end of the demo.
pub fn render_table(report: &DemoReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<10} {:>8} {:>12} {:>9} {:>8} {:>7} {:>9} {:>8} {:>9}\n",
        "type",
        "records",
        "checksummed",
        "registry",
        "synced",
        "failed",
        "verified",
        "synced%",
        "verified%"
    ));
    for row in &report.rows {
        let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        out.push_str(&format!(
            "{:<10} {:>8} {:>12} {:>9} {:>8} {:>7} {:>9} {:>8} {:>9}\n",
            row.descriptor.plural,
            n(row.primary.count),
            n(row.primary.checksummed_count),
            n(row.secondary.registry_count),
            n(row.secondary.synced_count),
            n(row.secondary.failed_count),
            n(row.secondary.verified_count),
            pct(row.secondary.synced_in_percentage()),
            pct(row.secondary.verified_in_percentage()),
        ));
    }
    out.push_str(&format!(
        "{} in {:.2}s{}\n",
        if report.converged {
            "converged: every record synced and verified"
        } else {
            "NOT converged"
        },
        report.elapsed.as_secs_f64(),
        if report.file_mismatches.is_empty() {
            String::new()
        } else {
            format!("; {} files differ", report.file_mismatches.len())
        }
    ));
    out
}

/// The status as JSON: GitLab's per-type fields for both sites.
pub fn render_json(report: &DemoReport) -> serde_json::Value {
    let mut primary = serde_json::Map::new();
    let mut secondary = serde_json::Map::new();
    for row in &report.rows {
        row.primary.write_json(&mut primary);
        row.secondary.write_json(&mut secondary);
    }
    serde_json::json!({
        "converged": report.converged,
        "elapsed_seconds": report.elapsed.as_secs_f64(),
        "primary": primary,
        "secondary": secondary,
        "file_mismatches": report.file_mismatches,
    })
}

/// What `widgets seed` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Records created.
    pub created: usize,
    /// Records whose file was replaced.
    pub updated: usize,
    /// Records deleted.
    pub deleted: usize,
}

/// A folder name no earlier run used: the file contents follow `--seed`, the paths never do,
/// so a second run never points its records at the files of the first run's records.
fn fresh_tag(blob_dir: &Path) -> String {
    loop {
        let tag = format!("{:016x}", rand::random::<u64>());
        if ["widgets", "gadgets"]
            .iter()
            .all(|kind| !blob_dir.join(kind).join(&tag).exists())
        {
            return tag;
        }
    }
}

/// Creates `count` widgets and gadgets with files of mixed sizes on a primary (its database and
/// blob folder), then updates and deletes some — the demo's data, for a primary that runs as its
/// own process (`widgets primary`). Every change publishes its event in the same transaction.
pub fn seed(database_url: &str, blob_dir: &Path, count: usize, seed: u64) -> Result<SeedReport> {
    let db = DbPool::connect(database_url, 2).context("opening the primary database")?;
    let mut conn = db.get()?;
    app::create_app_schema(&mut conn)?;
    run_migrations(&mut conn, Role::Primary)?;
    let store = LocalBlobStore::new(blob_dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tag = fresh_tag(blob_dir);
    let mut report = SeedReport::default();
    let (mut widgets, mut gadgets) = (Vec::new(), Vec::new());
    for i in 0..count {
        let data = payload(&mut rng, i);
        if i % 3 == 2 {
            gadgets.push(app::create_gadget(
                &mut conn,
                &store,
                &format!("gadget {i}"),
                &format!("gadgets/{tag}/{i:06}.bin"),
                &data,
            )?);
        } else {
            widgets.push(app::create_widget_in(
                &mut conn,
                &store,
                TENANTS[i % TENANTS.len()],
                &format!("widget {i}"),
                &format!("widgets/{tag}/{i:06}.bin"),
                &data,
            )?);
        }
        report.created += 1;
    }
    for (i, w) in widgets.iter().enumerate() {
        if i % 10 == 3 {
            app::update_widget(&mut conn, &store, w, &payload(&mut rng, i + 1))?;
            report.updated += 1;
        } else if i % 20 == 7 {
            app::delete_widget(&mut conn, &store, w)?;
            report.deleted += 1;
        }
    }
    for (i, g) in gadgets.iter().enumerate() {
        if i % 8 == 1 {
            app::update_gadget(&mut conn, &store, g, &payload(&mut rng, i + 2))?;
            report.updated += 1;
        } else if i % 16 == 5 {
            app::delete_gadget(&mut conn, &store, g)?;
            report.deleted += 1;
        }
    }
    Ok(report)
}
