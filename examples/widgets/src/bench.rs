//! `widgets bench` and `cargo bench -p widgets`: the runtime's speed, measured against peers
//! (b3sum, sha256sum, rsync) run in the same process run, on the same data, interleaved with our
//! own runs, each measurement repeated and reported as the median.
//!
//! | id | what | peers |
//! |---|---|---|
//! | B1 | primary verification of large files ([`PrimaryVerifier::verification_pass`]) | `b3sum`, `sha256sum` |
//! | B2 | direct-mode sync of many 4 KiB files, registry and verification included | `rsync -a` |
//! | B3 | the same with 10 MiB files | `rsync -a` |
//! | B5 | backfill of registry rows ([`Secondary::backfill_all`]) | floor: one `INSERT … SELECT` |
//! | B6 | log-cursor events per second ([`Secondary::cursor_pass`]) | floor: one set-based upsert |
//!
//! Data goes to a tmpfs folder (`/dev/shm`) when there is one, so page-cache and disk effects do
//! not decide the comparison. Peers that are not installed are reported as missing with the
//! command that installs them; nothing is ever estimated in their place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use geo_diesel::db::{AsDbConn, DbPool};
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::{Backend, Replicable, ReplicableDescriptor};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_diesel::registry;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::Widget;
use crate::demo::{Sites, open_sites};

/// One of the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BenchId {
    /// Primary verification of large files vs b3sum and sha256sum.
    B1,
    /// Direct-mode sync of many small files vs rsync.
    B2,
    /// Direct-mode sync of fewer large files vs rsync.
    B3,
    /// Backfill of registry rows.
    B5,
    /// Log-cursor events per second.
    B6,
}

impl BenchId {
    /// Every benchmark, in the order they run.
    pub const ALL: [BenchId; 5] = [
        BenchId::B1,
        BenchId::B2,
        BenchId::B3,
        BenchId::B5,
        BenchId::B6,
    ];

    /// `"B1"`, `"B2"`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            BenchId::B1 => "B1",
            BenchId::B2 => "B2",
            BenchId::B3 => "B3",
            BenchId::B5 => "B5",
            BenchId::B6 => "B6",
        }
    }
}

impl fmt::Display for BenchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A benchmark name that is not one of [`BenchId::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown benchmark {0:?}: expected one of B1, B2, B3, B5, B6")]
pub struct UnknownBench(pub String);

impl FromStr for BenchId {
    type Err = UnknownBench;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BenchId::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownBench(s.to_string()))
    }
}

/// How much data each benchmark uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    /// B1: number of files.
    pub b1_files: usize,
    /// B1: size of each file in bytes.
    pub b1_file_bytes: u64,
    /// B2: number of files.
    pub b2_files: usize,
    /// B2: size of each file in bytes.
    pub b2_file_bytes: u64,
    /// B3: number of files.
    pub b3_files: usize,
    /// B3: size of each file in bytes.
    pub b3_file_bytes: u64,
    /// B5: model rows to backfill.
    pub b5_rows: i64,
    /// B5: the `backfill_batch` values tried.
    pub b5_batches: Vec<i64>,
    /// B6: `created` events to apply.
    pub b6_events: i64,
    /// B6: the `cursor_batch` values tried.
    pub b6_batches: Vec<usize>,
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

impl Sizes {
    /// The sizes of the issue: 8 × 128 MiB, 10 000 × 4 KiB, 100 × 10 MiB, 1 000 000 rows,
    /// 100 000 events.
    pub fn full() -> Self {
        Sizes {
            b1_files: 8,
            b1_file_bytes: 128 * MIB,
            b2_files: 10_000,
            b2_file_bytes: 4 * KIB,
            b3_files: 100,
            b3_file_bytes: 10 * MIB,
            b5_rows: 1_000_000,
            b5_batches: vec![10_000, 100_000],
            b6_events: 100_000,
            b6_batches: vec![1000, 5000],
        }
    }

    /// Small sizes for a smoke test that runs in seconds (figures are not meaningful).
    pub fn quick() -> Self {
        Sizes {
            b1_files: 2,
            b1_file_bytes: 4 * MIB,
            b2_files: 200,
            b2_file_bytes: 4 * KIB,
            b3_files: 4,
            b3_file_bytes: MIB,
            b5_rows: 20_000,
            b5_batches: vec![10_000, 100_000],
            b6_events: 5_000,
            b6_batches: vec![1000, 5000],
        }
    }
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Benchmarks to run; all when empty.
    pub only: BTreeSet<BenchId>,
    /// Small sizes and one repetition: a smoke test, not a measurement.
    pub quick: bool,
    /// Repetitions of every measurement (the median is reported).
    pub repeat: usize,
    /// Data sizes.
    pub sizes: Sizes,
    /// Parent folder of the benchmark data; tmpfs (`/dev/shm`) when available, else the temp dir.
    pub dir: Option<PathBuf>,
    /// A PostgreSQL server URL: the databases are created there instead of SQLite files.
    pub database_url: Option<String>,
    /// Threads used by our verification and given to `b3sum` (default: available cores).
    pub threads: usize,
}

impl BenchOptions {
    /// Full sizes, three repetitions, every benchmark, SQLite.
    pub fn full() -> Self {
        BenchOptions {
            only: BTreeSet::new(),
            quick: false,
            repeat: 3,
            sizes: Sizes::full(),
            dir: None,
            database_url: None,
            threads: available_cores(),
        }
    }

    /// Quick sizes and one repetition.
    pub fn quick() -> Self {
        BenchOptions {
            quick: true,
            repeat: 1,
            sizes: Sizes::quick(),
            ..BenchOptions::full()
        }
    }

    /// Whether `id` is selected.
    pub fn selected(&self, id: BenchId) -> bool {
        self.only.is_empty() || self.only.contains(&id)
    }
}

/// The number of cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One timed thing: its runs, and how much work one run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What ran.
    pub label: String,
    /// Seconds of each run.
    pub samples: Vec<f64>,
    /// Work items per run (files, rows, events).
    pub items: f64,
    /// The unit of `items`.
    pub item_unit: &'static str,
    /// Bytes per run, when the work is bytes.
    pub bytes: Option<f64>,
}

impl Figure {
    /// The median of the runs, in seconds.
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// Items per second at the median.
    pub fn items_per_sec(&self) -> f64 {
        self.items / self.median()
    }

    /// GB/s (10⁹ bytes) at the median, when the work is bytes.
    pub fn gb_per_sec(&self) -> Option<f64> {
        self.bytes.map(|b| b / 1e9 / self.median())
    }
}

/// The median of `xs` (the mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// What a comparison line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another tool doing the same job (b3sum, sha256sum, rsync).
    Tool,
    /// The least the database must do for the same result, measured on the same tables: a lower
    /// bound for our time, not a competitor.
    Floor,
}

/// The outcome of a comparison line.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerOutcome {
    /// Measured in this run.
    Measured(Figure),
    /// The tool is not installed.
    Missing {
        /// The program looked up on `PATH`.
        program: String,
        /// How to install it.
        install: String,
    },
}

/// A comparison line.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Tool or floor.
    pub kind: PeerKind,
    /// Name (`b3sum 1.8.2`, `rsync 3.2.7`, …).
    pub name: String,
    /// The figure, or why there is none.
    pub outcome: PeerOutcome,
}

impl Peer {
    /// `peer median / our median` for each of `ours` (> 1: we are faster). `None` when missing.
    pub fn ratios(&self, ours: &[Figure]) -> Option<Vec<f64>> {
        match &self.outcome {
            PeerOutcome::Measured(f) => {
                Some(ours.iter().map(|o| f.median() / o.median()).collect())
            }
            PeerOutcome::Missing { .. } => None,
        }
    }
}

/// The target a benchmark aims for.
#[derive(Debug, Clone, PartialEq)]
pub enum Aim {
    /// At least this many GB/s.
    MinGbPerSec(f64),
    /// At least this many items per second.
    MinItemsPerSec(f64),
    /// At most this many seconds.
    MaxSeconds(f64),
    /// No slower than the named peer.
    NotSlowerThan(String),
}

impl fmt::Display for Aim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aim::MinGbPerSec(x) => write!(f, "≥ {x} GB/s"),
            Aim::MinItemsPerSec(x) => write!(f, "≥ {} per second", human(*x)),
            Aim::MaxSeconds(x) => write!(f, "≤ {x} s"),
            Aim::NotSlowerThan(p) => write!(f, "no slower than {p}"),
        }
    }
}

/// The result of one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Which.
    pub id: BenchId,
    /// What is measured.
    pub what: String,
    /// The data.
    pub data: String,
    /// Our figures (several when a tunable is tried at more than one value).
    pub ours: Vec<Figure>,
    /// Peers and floors.
    pub peers: Vec<Peer>,
    /// The target.
    pub aim: Aim,
    /// Remarks (setup times, checks made).
    pub notes: Vec<String>,
}

impl BenchResult {
    /// Whether the best of our figures meets the aim; `None` when it cannot be judged (the peer
    /// is missing).
    pub fn aim_met(&self) -> Option<bool> {
        let best = self
            .ours
            .iter()
            .min_by(|a, b| a.median().total_cmp(&b.median()))?;
        match &self.aim {
            Aim::MinGbPerSec(x) => best.gb_per_sec().map(|g| g >= *x),
            Aim::MinItemsPerSec(x) => Some(best.items_per_sec() >= *x),
            Aim::MaxSeconds(x) => Some(best.median() <= *x),
            Aim::NotSlowerThan(name) => {
                let peer = self
                    .peers
                    .iter()
                    .find(|p| p.name.starts_with(name.as_str()))?;
                match &peer.outcome {
                    PeerOutcome::Measured(f) => Some(best.median() <= f.median()),
                    PeerOutcome::Missing { .. } => None,
                }
            }
        }
    }
}

/// Everything a bench run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The folder the data went to.
    pub dir: PathBuf,
    /// Its file system type (`tmpfs`, `ext4`, …) when known.
    pub fs_type: Option<String>,
    /// The database backend.
    pub backend: Backend,
    /// Cores available.
    pub cores: usize,
    /// Repetitions per measurement.
    pub repeat: usize,
    /// Quick mode.
    pub quick: bool,
    /// One entry per benchmark run.
    pub results: Vec<BenchResult>,
}

// ---------------------------------------------------------------------------------------------
// Peers on PATH

/// Finds `program` in the directories of `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// A peer program found on `PATH`, with its version line.
#[derive(Debug, Clone)]
struct Tool {
    path: PathBuf,
    name: String,
}

/// How to install each peer.
fn install_hint(program: &str) -> String {
    match program {
        "b3sum" => "cargo install b3sum".to_string(),
        "rsync" => "apt-get install -y rsync".to_string(),
        "sha256sum" => "apt-get install -y coreutils".to_string(),
        other => format!("install {other}"),
    }
}

fn lookup_tool(program: &str) -> Result<Tool, Peer> {
    match find_program(program) {
        Some(path) => {
            let version = Command::new(&path)
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_string))
                .map(|line| version_of(&line))
                .unwrap_or_default();
            let name = if version.is_empty() {
                program.to_string()
            } else {
                format!("{program} {version}")
            };
            Ok(Tool { path, name })
        }
        None => Err(Peer {
            kind: PeerKind::Tool,
            name: program.to_string(),
            outcome: PeerOutcome::Missing {
                program: program.to_string(),
                install: install_hint(program),
            },
        }),
    }
}

/// The first word of a `--version` line that starts with a digit (`rsync  version 3.2.7 …`).
fn version_of(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("")
        .to_string()
}

/// Runs a peer and returns its wall time; a non-zero exit is an error (a peer that fails is not
/// a figure).
fn run_timed(cmd: &mut Command) -> Result<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((secs, out.stdout))
}

// ---------------------------------------------------------------------------------------------
// Data and databases

/// The tmpfs folder when there is one (`/dev/shm`), else the temp dir.
pub fn default_data_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if fs_type(shm).as_deref() == Some("tmpfs") && writable(shm) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn writable(dir: &Path) -> bool {
    tempfile::Builder::new()
        .prefix("geo-bench-probe-")
        .tempfile_in(dir)
        .is_ok()
}

/// The 1-minute load average (Linux `/proc/loadavg`); other processes on the machine skew
/// every figure, so the report says how busy it was.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The type of the file system holding `path`, from `/proc/mounts` (Linux); `None` elsewhere.
pub fn fs_type(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, kind) = (f.next()?, f.next()?, f.next()?);
            let mount = mount.replace("\\040", " ");
            path.starts_with(&mount)
                .then(|| (mount.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// Writes `size` pseudo-random bytes (seeded, so every file differs) to `path`.
fn write_random_file(path: &Path, size: u64, seed: u64, buf: &mut [u8]) -> Result<()> {
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

/// A quoted SQL identifier, for the benchmark's own setup statements.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn widget() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

fn exec(pool: &DbPool, sql: &str) -> Result<()> {
    let mut conn = pool.get()?;
    conn.db()
        .batch_execute(sql)
        .with_context(|| format!("running {}", sql.chars().take(120).collect::<String>()))
}

/// `INSERT INTO <target> SELECT <select> FROM <series 1..=n as x>`: one set-based statement per
/// backend (a recursive CTE on SQLite, `generate_series` on PostgreSQL). `select` names the
/// series value `x`.
fn insert_series_sql(backend: Backend, target: &str, select: &str, n: i64) -> String {
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

/// The blob path of the `i`-th benchmark file.
fn bench_path(prefix: &str, i: usize) -> String {
    format!("{prefix}/{:03}/{i:06}.bin", i % 97)
}

/// Inserts widgets `1..=paths.len()` with the given file paths and pending verification states,
/// in multi-row statements.
fn insert_widgets(pool: &DbPool, paths: &[String]) -> Result<()> {
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
    exec(pool, &format!("BEGIN; {sql} COMMIT;"))
}

/// Empties the secondary: registry rows, cursor, gaps and files.
fn reset_secondary(sites: &Sites) -> Result<()> {
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
fn clear_tables_sql(backend: Backend, tables: &[String]) -> String {
    match backend {
        Backend::Sqlite => tables.iter().map(|t| format!("DELETE FROM {t};")).collect(),
        Backend::Postgres => format!("TRUNCATE {};", tables.join(", ")),
    }
}

fn registry_counts(sites: &Sites) -> Result<registry::RegistryCounts> {
    let mut conn = sites.secondary.tracking().get()?;
    Ok(registry::Registry::of(widget()).counts(&mut conn)?)
}

fn secondary_with(sites: &Sites, config: SecondaryConfig) -> Secondary {
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
fn tree_size(dir: &Path) -> Result<(u64, u64)> {
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

// ---------------------------------------------------------------------------------------------
// Running

/// What [`run_with`] reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The run started (the report has no results yet).
    Started(&'a BenchReport),
    /// A benchmark finished.
    Finished(&'a BenchResult),
}

/// Runs the selected benchmarks and returns every figure.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    run_with(opts, &mut |_| {})
}

/// Runs the selected benchmarks, calling `progress` at the start and as each one finishes (to
/// print as it goes).
pub fn run_with(
    opts: &BenchOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<BenchReport> {
    ensure!(opts.repeat >= 1, "--repeat must be at least 1");
    ensure!(opts.threads >= 1, "threads must be at least 1");
    let parent = match &opts.dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            d.clone()
        }
        None => default_data_dir(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("geo-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a folder in {}", parent.display()))?;
    let backend = if opts.database_url.is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let mut report = BenchReport {
        dir: tmp.path().to_path_buf(),
        fs_type: fs_type(tmp.path()),
        backend,
        cores: available_cores(),
        repeat: opts.repeat,
        quick: opts.quick,
        results: Vec::new(),
    };
    progress(Progress::Started(&report));
    for id in BenchId::ALL {
        if !opts.selected(id) {
            continue;
        }
        let dir = tmp.path().join(id.as_str());
        fs::create_dir_all(&dir)?;
        let load_before = load_average();
        let mut result = match id {
            BenchId::B1 => bench_primary_verification(opts, &dir),
            BenchId::B2 => bench_sync(
                opts,
                &dir,
                BenchId::B2,
                opts.sizes.b2_files,
                opts.sizes.b2_file_bytes,
            ),
            BenchId::B3 => bench_sync(
                opts,
                &dir,
                BenchId::B3,
                opts.sizes.b3_files,
                opts.sizes.b3_file_bytes,
            ),
            BenchId::B5 => bench_backfill(opts, &dir),
            BenchId::B6 => bench_cursor(opts, &dir),
        }
        .with_context(|| format!("benchmark {id}"))?;
        if let (Some(a), Some(b)) = (load_before, load_average()) {
            result.notes.push(format!(
                "1-minute load average {a:.2} before, {b:.2} after ({} cores)",
                report.cores
            ));
        }
        // Free the tmpfs space before the next benchmark.
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        // On PostgreSQL, B5 and B6 are also measured on SQLite in the same run, side by side.
        if opts.database_url.is_some() && matches!(id, BenchId::B5 | BenchId::B6) {
            let sqlite_opts = BenchOptions {
                database_url: None,
                ..opts.clone()
            };
            let sdir = tmp.path().join(format!("{}-sqlite", id.as_str()));
            fs::create_dir_all(&sdir)?;
            let mut sqlite = match id {
                BenchId::B5 => bench_backfill(&sqlite_opts, &sdir),
                _ => bench_cursor(&sqlite_opts, &sdir),
            }
            .with_context(|| format!("benchmark {id} on SQLite"))?;
            fs::remove_dir_all(&sdir).with_context(|| format!("removing {}", sdir.display()))?;
            sqlite.what = format!("{} [SQLite]", sqlite.what);
            result.what = format!("{} [PostgreSQL]", result.what);
            progress(Progress::Finished(&sqlite));
            report.results.push(sqlite);
        }
        progress(Progress::Finished(&result));
        report.results.push(result);
    }
    Ok(report)
}

fn open(opts: &BenchOptions, dir: &Path, config: SecondaryConfig) -> Result<Sites> {
    open_sites(dir, opts.database_url.as_deref(), config)
}

fn size_text(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// B1: `PrimaryVerifier::verification_pass` over N large files vs `b3sum` and `sha256sum`.
fn bench_primary_verification(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let (n, size) = (opts.sizes.b1_files, opts.sizes.b1_file_bytes);
    ensure!(n > 0 && size > 0, "B1 needs at least one non-empty file");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let t = Instant::now();
    let paths: Vec<String> = (0..n).map(|i| format!("b1/{i:03}.bin")).collect();
    let mut buf = vec![0u8; MIB.min(size) as usize];
    let root = sites.primary_store.root().to_path_buf();
    for (i, p) in paths.iter().enumerate() {
        write_random_file(&root.join(p), size, 0xb1_0000 + i as u64, &mut buf)?;
    }
    drop(buf);
    insert_widgets(&sites.primary_db, &paths)?;
    let setup = t.elapsed().as_secs_f64();
    let files: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();

    let config = PrimaryConfig {
        verification_batch: n as i64,
        verification_threads: opts.threads,
        ..PrimaryConfig::default()
    };
    let verifier = PrimaryVerifier::new(
        sites.primary_db.clone(),
        sites.primary_store.clone(),
        Env::system(),
        config,
    );
    let (states, _) = d
        .tables
        .verification
        .ok_or_else(|| anyhow!("widgets must keep verification state"))?;
    let reset = format!(
        "UPDATE {} SET verification_state = 0, verification_checksum = NULL, verified_at = NULL, verification_started_at = NULL",
        ident(states)
    );

    let b3 = lookup_tool("b3sum");
    let sha = lookup_tool("sha256sum");
    let (mut ours, mut b3_samples, mut b3_one_samples, mut sha_samples) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut notes = vec![format!(
        "setup (write files, insert rows) {setup:.1} s, not timed"
    )];
    for rep in 0..opts.repeat {
        exec(&sites.primary_db, &reset)?;
        let before = verifier
            .checksummed
            .load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        let processed = verifier.verification_pass()?;
        ours.push(t.elapsed().as_secs_f64());
        let done = verifier
            .checksummed
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
        ensure!(
            processed == n && done == n as u64,
            "verification pass checksummed {done} of {n} files"
        );

        if let Ok(tool) = &b3 {
            let (secs, out) = run_timed(
                Command::new(&tool.path)
                    .arg("--num-threads")
                    .arg(opts.threads.to_string())
                    .args(&files),
            )?;
            b3_samples.push(secs);
            if rep == 0 {
                check_against_b3sum(&sites, &root, &paths, &out)?;
                notes.push("our checksums equal b3sum's for every file".to_string());
            }
            if opts.threads > 1 {
                let (secs, _) = run_timed(
                    Command::new(&tool.path)
                        .args(["--num-threads", "1"])
                        .args(&files),
                )?;
                b3_one_samples.push(secs);
            }
        }
        if let Ok(tool) = &sha {
            let (secs, _) = run_timed(Command::new(&tool.path).args(&files))?;
            sha_samples.push(secs);
        }
    }
    let bytes = (n as u64 * size) as f64;
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "files",
        bytes: Some(bytes),
    };
    let mut peers = vec![tool_peer(b3.clone(), |t| {
        fig(
            format!("{} --num-threads {}", t.name, opts.threads),
            b3_samples,
        )
    })];
    if opts.threads > 1 {
        // One core's worth of blake3 in this run: what the machine gives a single thread now.
        peers.push(tool_peer(b3, |t| {
            fig(format!("{} --num-threads 1", t.name), b3_one_samples)
        }));
    }
    peers.push(tool_peer(sha, |t| fig(t.name.clone(), sha_samples)));
    Ok(BenchResult {
        id: BenchId::B1,
        what: "primary verification (PrimaryVerifier::verification_pass)".to_string(),
        data: format!("{n} files × {} = {:.2} GB", size_text(size), bytes / 1e9),
        ours: vec![fig(
            format!("verification_pass, {} threads", opts.threads),
            ours,
        )],
        peers,
        aim: Aim::MinGbPerSec(4.0),
        notes,
    })
}

fn tool_peer(tool: Result<Tool, Peer>, figure: impl FnOnce(&Tool) -> Figure) -> Peer {
    match tool {
        Ok(t) => {
            let f = figure(&t);
            Peer {
                kind: PeerKind::Tool,
                name: f.label.clone(),
                outcome: PeerOutcome::Measured(f),
            }
        }
        Err(missing) => missing,
    }
}

/// Compares the checksums the verifier stored with `b3sum`'s output (`<hex>  <path>` lines).
fn check_against_b3sum(sites: &Sites, root: &Path, paths: &[String], out: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(out);
    let by_path: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p, h))
        .collect();
    let ids: Vec<i64> = (1..=paths.len() as i64).collect();
    let mut conn = sites.primary_db.get()?;
    let sums = geo_diesel::primary::primary_checksums(&mut conn, widget(), &ids)?;
    ensure!(
        sums.len() == paths.len(),
        "{} checksums stored for {} files",
        sums.len(),
        paths.len()
    );
    for s in sums {
        let path = root.join(&paths[(s.id - 1) as usize]);
        let ours = s
            .checksum
            .as_deref()
            .map(hex)
            .ok_or_else(|| anyhow!("widget {} has no checksum", s.id))?;
        let theirs = by_path
            .get(path.to_string_lossy().as_ref())
            .ok_or_else(|| anyhow!("b3sum printed nothing for {}", path.display()))?;
        ensure!(
            ours == *theirs,
            "checksum of {} differs: ours {ours}, b3sum {theirs}",
            path.display()
        );
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// B2/B3: direct-mode sync of `n` files of `size` bytes, from pending registry rows to all
/// synced and verified, vs `rsync -a` of the same folder.
fn bench_sync(
    opts: &BenchOptions,
    dir: &Path,
    id: BenchId,
    n: usize,
    size: u64,
) -> Result<BenchResult> {
    ensure!(n > 0, "{id} needs at least one file");
    let config = SecondaryConfig::default();
    let sites = open(opts, dir, config.clone())?;
    let d = widget();
    let t = Instant::now();
    let paths: Vec<String> = (0..n).map(|i| bench_path("widgets", i)).collect();
    let root = sites.primary_store.root().to_path_buf();
    let mut buf = vec![0u8; MIB.min(size.max(1)) as usize];
    for (i, p) in paths.iter().enumerate() {
        write_random_file(&root.join(p), size, (id as u64) << 32 | i as u64, &mut buf)?;
    }
    drop(buf);
    insert_widgets(&sites.primary_db, &paths)?;
    let files_written = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sites.verifier.run_until_idle(100_000)?;
    let primary_verification = t.elapsed().as_secs_f64();
    let status = sites.verifier.status()?;
    let checksummed = status
        .iter()
        .find(|(x, _)| x.name == d.name)
        .and_then(|(_, s)| s.checksummed_count)
        .unwrap_or(0);
    ensure!(
        checksummed == n as u64,
        "the primary checksummed {checksummed} of {n} files"
    );

    let ids: Vec<i64> = (1..=n as i64).collect();
    let rsync = lookup_tool("rsync");
    let dst = dir.join("rsync-dst");
    let (mut ours, mut rsync_samples) = (Vec::new(), Vec::new());
    for rep in 0..opts.repeat {
        reset_secondary(&sites)?;
        {
            let mut conn = sites.secondary.tracking().get()?;
            registry::Registry::of(d).upsert_pending(&mut conn, &ids)?;
        }
        let bytes_before = sites
            .secondary
            .counters()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        while sites.secondary.sync_pass()? > 0 {}
        while sites.secondary.verification_pass()? > 0 {}
        ours.push(t.elapsed().as_secs_f64());
        let c = registry_counts(&sites)?;
        ensure!(
            c.synced == n as i64 && c.verified == n as i64,
            "not converged: {} synced, {} verified, {} failed of {n}",
            c.synced,
            c.verified,
            c.failed
        );
        let written = sites
            .secondary
            .counters()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            - bytes_before;
        ensure!(
            written == n as u64 * size,
            "the secondary wrote {written} bytes, expected {}",
            n as u64 * size
        );

        if let Ok(tool) = &rsync {
            if dst.exists() {
                fs::remove_dir_all(&dst)?;
            }
            let src = format!("{}/", root.display());
            let to = format!("{}/", dst.display());
            let (secs, _) = run_timed(Command::new(&tool.path).arg("-a").arg(&src).arg(&to))?;
            rsync_samples.push(secs);
            if rep == 0 {
                let (files, bytes) = tree_size(&dst)?;
                ensure!(
                    files == n as u64 && bytes == n as u64 * size,
                    "rsync copied {files} files, {bytes} bytes"
                );
            }
        }
    }
    let bytes = (n as u64 * size) as f64;
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "files",
        bytes: Some(bytes),
    };
    Ok(BenchResult {
        id,
        what: "direct-mode sync, registry and verification included (sync_pass + verification_pass until done)".to_string(),
        data: format!("{n} files × {} = {:.1} MB", size_text(size), bytes / 1e6),
        ours: vec![fig(format!("sync_capacity {}, sync_batch {}", config.sync_capacity, config.sync_batch), ours)],
        peers: vec![tool_peer(rsync, |t| fig(format!("{} -a src/ dst/", t.name), rsync_samples))],
        aim: Aim::NotSlowerThan("rsync".to_string()),
        notes: vec![
            format!("setup not timed: files and rows {files_written:.1} s, primary verification {primary_verification:.1} s"),
            "checked after each run: every registry row synced and verified, every byte written".to_string(),
        ],
    })
}

/// B5: `Secondary::backfill_all` over a model table of N ids into an empty registry.
fn bench_backfill(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let n = opts.sizes.b5_rows;
    ensure!(n > 0, "B5 needs rows");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let backend = sites.primary_db.backend();
    let t = Instant::now();
    exec(
        &sites.primary_db,
        &insert_series_sql(
            backend,
            &format!(
                "{} ({}, {}, \"name\")",
                ident(d.tables.model),
                ident(d.tables.model_id),
                ident(d.tables.model_file)
            ),
            "x, 'widgets/' || x || '.bin', 'bench'",
            n,
        ),
    )?;
    let setup = t.elapsed().as_secs_f64();
    let registry_table = ident(d.tables.registry);
    let clear = clear_tables_sql(backend, std::slice::from_ref(&registry_table));
    let floor_sql = insert_series_sql(
        backend,
        &format!("{registry_table} ({})", ident(d.tables.registry_model_id)),
        "x",
        n,
    );
    let secondaries: Vec<(i64, Secondary)> = opts
        .sizes
        .b5_batches
        .iter()
        .map(|&b| {
            (
                b,
                secondary_with(
                    &sites,
                    SecondaryConfig {
                        backfill_batch: b,
                        ..SecondaryConfig::default()
                    },
                ),
            )
        })
        .collect();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); secondaries.len()];
    let mut floor = Vec::new();
    for _ in 0..opts.repeat {
        for (i, (_, s)) in secondaries.iter().enumerate() {
            exec(s.tracking(), &clear)?;
            let t = Instant::now();
            let (created, removed) = s.backfill_all()?;
            ours[i].push(t.elapsed().as_secs_f64());
            ensure!(
                created == n as usize && removed == 0,
                "backfill created {created} and removed {removed} rows, expected {n} and 0"
            );
        }
        exec(sites.secondary.tracking(), &clear)?;
        let t = Instant::now();
        exec(sites.secondary.tracking(), &floor_sql)?;
        floor.push(t.elapsed().as_secs_f64());
        let c = registry_counts(&sites)?;
        ensure!(c.registry == n, "the floor inserted {} rows", c.registry);
    }
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "rows",
        bytes: None,
    };
    Ok(BenchResult {
        id: BenchId::B5,
        what: "backfill of registry rows (Secondary::backfill_all, empty tracking database)"
            .to_string(),
        data: format!("{n} model ids on the primary"),
        ours: secondaries
            .iter()
            .zip(ours)
            .map(|((b, _), s)| fig(format!("backfill_all, backfill_batch {b}"), s))
            .collect(),
        peers: vec![Peer {
            kind: PeerKind::Floor,
            name: "INSERT … SELECT of the ids (one statement)".to_string(),
            outcome: PeerOutcome::Measured(fig("INSERT … SELECT".to_string(), floor)),
        }],
        // Issue aims: 3 s on SQLite, 8 s on PostgreSQL.
        aim: Aim::MaxSeconds(if backend == Backend::Postgres {
            8.0
        } else {
            3.0
        }),
        notes: vec![format!(
            "setup (bulk insert of {n} model rows) {setup:.1} s, not timed"
        )],
    })
}

/// B6: log-cursor passes until caught up with N `created` events.
fn bench_cursor(opts: &BenchOptions, dir: &Path) -> Result<BenchResult> {
    let n = opts.sizes.b6_events;
    ensure!(n > 0, "B6 needs events");
    let sites = open(opts, dir, SecondaryConfig::default())?;
    let d = widget();
    let backend = sites.primary_db.backend();
    let payload = match backend {
        Backend::Sqlite => {
            "'{\"model_record_id\":' || x || '}', strftime('%Y-%m-%dT%H:%M:%fZ','now')"
        }
        Backend::Postgres => "jsonb_build_object('model_record_id', x), now()",
    };
    let t = Instant::now();
    exec(
        &sites.primary_db,
        &insert_series_sql(
            backend,
            "geo_events (replicable_name, event_name, model_record_id, payload, created_at)",
            &format!("'{}', 'created', x, {payload}", d.name),
            n,
        ),
    )?;
    let setup = t.elapsed().as_secs_f64();
    let secondaries: Vec<(usize, Secondary)> = opts
        .sizes
        .b6_batches
        .iter()
        .map(|&b| {
            (
                b,
                secondary_with(
                    &sites,
                    SecondaryConfig {
                        cursor_batch: b,
                        ..SecondaryConfig::default()
                    },
                ),
            )
        })
        .collect();
    let ids: Vec<i64> = (1..=n).collect();
    let mut ours: Vec<Vec<f64>> = vec![Vec::new(); secondaries.len()];
    let mut floor = Vec::new();
    for _ in 0..opts.repeat {
        for (i, (batch, s)) in secondaries.iter().enumerate() {
            reset_secondary(&sites)?;
            let mut applied = 0;
            let t = Instant::now();
            loop {
                let p = s.cursor_pass()?;
                applied += p.applied;
                if p.read < *batch {
                    break;
                }
            }
            ours[i].push(t.elapsed().as_secs_f64());
            let c = registry_counts(&sites)?;
            ensure!(
                applied == n as usize && c.pending == n,
                "the cursor applied {applied} events and left {} pending rows, expected {n}",
                c.pending
            );
        }
        reset_secondary(&sites)?;
        let t = Instant::now();
        {
            let mut conn = sites.secondary.tracking().get()?;
            conn.db().transaction::<_, anyhow::Error, _>(|c| {
                registry::Registry::of(d).upsert_pending(c, &ids)?;
                Ok(())
            })?;
        }
        floor.push(t.elapsed().as_secs_f64());
    }
    let fig = |label: String, samples: Vec<f64>| Figure {
        label,
        samples,
        items: n as f64,
        item_unit: "events",
        bytes: None,
    };
    Ok(BenchResult {
        id: BenchId::B6,
        what: "log cursor (cursor_pass until caught up)".to_string(),
        data: format!("{n} `created` events in geo_events"),
        ours: secondaries
            .iter()
            .zip(ours)
            .map(|((b, _), s)| fig(format!("cursor_pass, cursor_batch {b}"), s))
            .collect(),
        peers: vec![Peer {
            kind: PeerKind::Floor,
            name: "upsert_pending of the ids (one transaction)".to_string(),
            outcome: PeerOutcome::Measured(fig("upsert_pending".to_string(), floor)),
        }],
        // Issue aims: 50k/s on SQLite, 20k/s on PostgreSQL.
        aim: Aim::MinItemsPerSec(if backend == Backend::Postgres {
            20_000.0
        } else {
            50_000.0
        }),
        notes: vec![format!(
            "setup (bulk insert of {n} events) {setup:.1} s, not timed"
        )],
    })
}

// ---------------------------------------------------------------------------------------------
// Output

/// `1.23k`, `4.56M`: a number with a metric suffix.
pub fn human(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn secs_text(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn throughput_text(f: &Figure) -> String {
    let items = format!("{} {}/s", human(f.items_per_sec()), f.item_unit);
    match f.gb_per_sec() {
        Some(g) => format!("{g:.2} GB/s, {items}"),
        None => items,
    }
}

/// The header line of a report.
pub fn render_header(report: &BenchReport) -> String {
    format!(
        "Geo for Rust benchmarks: {} backend, data in {} ({}), {} cores, median of {} run{} (ours and peers interleaved){}\n",
        report.backend,
        report.dir.display(),
        report.fs_type.as_deref().unwrap_or("file system unknown"),
        report.cores,
        report.repeat,
        if report.repeat == 1 { "" } else { "s" },
        if report.quick {
            "; QUICK mode: small sizes, figures are not measurements"
        } else {
            ""
        },
    )
}

/// One benchmark as text: what, data, our time and throughput, each peer's time and ratio.
pub fn render_result(r: &BenchResult, quick: bool) -> String {
    let mut out = format!("\n{}  {}\n    data: {}\n", r.id, r.what, r.data);
    let width = r
        .ours
        .iter()
        .map(|f| f.label.chars().count())
        .chain(r.peers.iter().map(|p| p.name.chars().count()))
        .max()
        .unwrap_or(0);
    for f in &r.ours {
        let runs = f
            .samples
            .iter()
            .map(|s| secs_text(*s))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "    ours   {:<width$}  {:>10}  {}   [runs: {runs}]\n",
            f.label,
            secs_text(f.median()),
            throughput_text(f)
        ));
    }
    for p in &r.peers {
        let kind = match p.kind {
            PeerKind::Tool => "peer ",
            PeerKind::Floor => "floor",
        };
        match &p.outcome {
            PeerOutcome::Measured(f) => {
                let ratios = p.ratios(&r.ours).unwrap_or_default();
                let ratio_text = ratios
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" / ");
                out.push_str(&format!(
                    "    {kind}  {:<width$}  {:>10}  {}   ratio peer/ours {ratio_text}\n",
                    p.name,
                    secs_text(f.median()),
                    throughput_text(f)
                ));
            }
            PeerOutcome::Missing { program, install } => {
                out.push_str(&format!("    {kind}  {:<width$}  missing (install with `{install}`; {program} is not on PATH)\n", p.name));
            }
        }
    }
    let verdict = if quick {
        "not judged in quick mode".to_string()
    } else {
        match r.aim_met() {
            Some(true) => "met".to_string(),
            Some(false) => "NOT met".to_string(),
            None => "cannot be judged (peer missing)".to_string(),
        }
    };
    out.push_str(&format!("    aim    {}: {verdict}\n", r.aim));
    for n in &r.notes {
        out.push_str(&format!("    note   {n}\n"));
    }
    out
}

/// The whole report as text.
pub fn render(report: &BenchReport) -> String {
    let mut out = render_header(report);
    for r in &report.results {
        out.push_str(&render_result(r, report.quick));
    }
    out
}

fn figure_json(f: &Figure) -> serde_json::Value {
    serde_json::json!({
        "label": f.label,
        "samples_seconds": f.samples,
        "median_seconds": f.median(),
        "items": f.items,
        "item_unit": f.item_unit,
        "items_per_second": f.items_per_sec(),
        "gb_per_second": f.gb_per_sec(),
    })
}

/// The whole report as JSON (`peers[].ratios` are peer/ours, one per entry of `ours`).
pub fn render_json(report: &BenchReport) -> serde_json::Value {
    let results: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|r| {
            let peers: Vec<serde_json::Value> = r
                .peers
                .iter()
                .map(|p| {
                    let kind = match p.kind {
                        PeerKind::Tool => "tool",
                        PeerKind::Floor => "floor",
                    };
                    match &p.outcome {
                        PeerOutcome::Measured(f) => serde_json::json!({
                            "kind": kind, "name": p.name, "figure": figure_json(f), "ratios": p.ratios(&r.ours),
                        }),
                        PeerOutcome::Missing { program, install } => serde_json::json!({
                            "kind": kind, "name": p.name, "missing": true, "program": program, "install": install,
                        }),
                    }
                })
                .collect();
            serde_json::json!({
                "id": r.id.as_str(),
                "what": r.what,
                "data": r.data,
                "ours": r.ours.iter().map(figure_json).collect::<Vec<_>>(),
                "peers": peers,
                "aim": r.aim.to_string(),
                "aim_met": if report.quick { None } else { r.aim_met() },
                "notes": r.notes,
            })
        })
        .collect();
    serde_json::json!({
        "dir": report.dir.display().to_string(),
        "fs_type": report.fs_type,
        "backend": report.backend.to_string(),
        "cores": report.cores,
        "repeat": report.repeat,
        "quick": report.quick,
        "results": results,
    })
}

/// Parses `--only B1,B2`-style lists.
pub fn parse_only(list: &str) -> Result<BTreeSet<BenchId>, UnknownBench> {
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(BenchId::from_str)
        .collect()
}

/// Parses the arguments of the `cargo bench` target (`--quick`, `--only B1,B2`, `--repeat N`,
/// `--dir DIR`, `--database-url URL`, `--json`; cargo's own `--bench` is ignored). Returns the
/// options and whether JSON was asked for.
pub fn parse_bench_args(args: impl IntoIterator<Item = String>) -> Result<(BenchOptions, bool)> {
    let args: Vec<String> = args.into_iter().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut opts = if quick {
        BenchOptions::quick()
    } else {
        BenchOptions::full()
    };
    let mut json = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| anyhow!("{name} needs a value"));
        match a.as_str() {
            "--bench" | "--quick" => {}
            "--json" => json = true,
            "--only" => opts.only = parse_only(&value("--only")?)?,
            "--repeat" => opts.repeat = value("--repeat")?.parse().context("--repeat")?,
            "--dir" => opts.dir = Some(PathBuf::from(value("--dir")?)),
            "--database-url" => opts.database_url = Some(value("--database-url")?),
            other => bail!(
                "unknown argument {other:?} (expected --quick, --only B1,B2, --repeat N, --dir DIR, --database-url URL, --json)"
            ),
        }
    }
    Ok((opts, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn bench_ids_parse() {
        assert_eq!(
            parse_only("B1, b5").unwrap(),
            BTreeSet::from([BenchId::B1, BenchId::B5])
        );
        assert_eq!(parse_only("B4"), Err(UnknownBench("B4".to_string())));
    }

    #[test]
    fn versions_are_found_in_version_lines() {
        assert_eq!(
            version_of("rsync  version 3.2.7  protocol version 31"),
            "3.2.7"
        );
        assert_eq!(version_of("b3sum 1.8.2"), "1.8.2");
        assert_eq!(version_of("sha256sum (GNU coreutils) 9.1"), "9.1");
    }

    #[test]
    fn a_missing_program_is_missing() {
        let peer = lookup_tool("geo-bench-no-such-program").unwrap_err();
        assert!(matches!(peer.outcome, PeerOutcome::Missing { .. }));
        assert!(peer.ratios(&[]).is_none());
    }

    #[test]
    fn ratios_are_peer_over_ours() {
        let f = |s: f64| Figure {
            label: String::new(),
            samples: vec![s],
            items: 1.0,
            item_unit: "files",
            bytes: Some(1e9),
        };
        let peer = Peer {
            kind: PeerKind::Tool,
            name: "rsync 3".into(),
            outcome: PeerOutcome::Measured(f(2.0)),
        };
        assert_eq!(peer.ratios(&[f(1.0), f(4.0)]), Some(vec![2.0, 0.5]));
        let r = BenchResult {
            id: BenchId::B2,
            what: String::new(),
            data: String::new(),
            ours: vec![f(1.0)],
            peers: vec![peer],
            aim: Aim::NotSlowerThan("rsync".into()),
            notes: vec![],
        };
        assert_eq!(r.aim_met(), Some(true));
        assert_eq!(f(0.5).gb_per_sec(), Some(2.0));
    }

    #[test]
    fn bench_args_parse() {
        let (o, json) =
            parse_bench_args(["--bench", "--quick", "--only", "B6", "--json"].map(String::from))
                .unwrap();
        assert!(o.quick && json);
        assert_eq!(o.only, BTreeSet::from([BenchId::B6]));
        assert!(parse_bench_args(["--frobnicate".to_string()]).is_err());
    }
}
