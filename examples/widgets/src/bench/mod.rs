//! `widgets bench` and `cargo bench -p widgets`: the runtime's speed, measured against peers
//! (b3sum, sha256sum, rsync) run in the same process run, on the same data, interleaved with our
//! own runs, each measurement repeated and reported as the median.
//!
//! | id | what | peers |
//! |---|---|---|
//! | B1 | primary verification of large files ([`PrimaryVerifier::verification_pass`](geo_diesel::verifier::PrimaryVerifier::verification_pass)) | `b3sum`, `sha256sum` |
//! | B2 | direct-mode sync of many 4 KiB files, registry and verification included | `rsync -a` |
//! | B3 | the same with 10 MiB files | `rsync -a` |
//! | B5 | backfill of registry rows ([`Secondary::backfill_all`](geo_diesel::secondary::Secondary::backfill_all)) | floor: one `INSERT … SELECT` |
//! | B6 | log-cursor events per second ([`Secondary::cursor_pass`](geo_diesel::secondary::Secondary::cursor_pass)) | floor: one set-based upsert |
//! | B7 | a filtered `widgetRegistries` GraphQL query over HTTP on a 1,000,000-row registry | aim: ≤ 50 ms median |
//! | B8 | a bulk resync (`RESYNC_ALL`) of the same registry | aim: ≤ 10 s |
//! | B9 | 100,000 single-row inserts captured by the event triggers | floor: a plain table without triggers; peer: manual publish calls |
//!
//! Data goes to a tmpfs folder (`/dev/shm`) when there is one, so page-cache and disk effects do
//! not decide the comparison. Peers that are not installed are reported as missing with the
//! command that installs them; nothing is ever estimated in their place.
//!
//! One file per section: `verification.rs` (B1), `sync.rs` (B2, B3), `backfill.rs` (B5),
//! `cursor.rs` (B6), `admin.rs` (B7, B8), `triggers.rs` (B9); `peers.rs` finds and times the peers and holds the shared measuring helpers
//! (median, load average, tmpfs choice), `data.rs` writes the files and rows every section runs
//! on, `report.rs` holds the figures and renders them as text and JSON.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail, ensure};
use geo_diesel::geo_core::Backend;

mod admin;
mod backfill;
mod cursor;
mod data;
mod peers;
mod report;
mod sync;
mod triggers;
mod verification;

pub use peers::{default_data_dir, find_program, fs_type, load_average, median};
pub use report::{
    Aim, BenchReport, BenchResult, Figure, Peer, PeerKind, PeerOutcome, human, render,
    render_header, render_json, render_result,
};

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
    /// A filtered GraphQL registries query over a large registry.
    B7,
    /// A bulk resync of a large registry.
    B8,
    /// Inserts with and without the event triggers.
    B9,
}

impl BenchId {
    /// Every benchmark, in the order they run.
    pub const ALL: [BenchId; 8] = [
        BenchId::B1,
        BenchId::B2,
        BenchId::B3,
        BenchId::B5,
        BenchId::B6,
        BenchId::B7,
        BenchId::B8,
        BenchId::B9,
    ];

    /// `"B1"`, `"B2"`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            BenchId::B1 => "B1",
            BenchId::B2 => "B2",
            BenchId::B3 => "B3",
            BenchId::B5 => "B5",
            BenchId::B6 => "B6",
            BenchId::B7 => "B7",
            BenchId::B8 => "B8",
            BenchId::B9 => "B9",
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
#[error("unknown benchmark {0:?}: expected one of B1, B2, B3, B5, B6, B7, B8, B9")]
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
    /// B7, B8: registry rows queried and bulk-resynced.
    pub b7_rows: i64,
    /// B9: inserts per way (plain, triggers, manual publish).
    pub b9_inserts: usize,
}

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

impl Sizes {
    /// The sizes of the issues: 8 × 128 MiB, 10 000 × 4 KiB, 100 × 10 MiB, 1 000 000 rows,
    /// 100 000 events, a 1 000 000-row registry.
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
            b7_rows: 1_000_000,
            b9_inserts: 100_000,
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
            b7_rows: 20_000,
            b9_inserts: 2_000,
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

/// Runs the selected benchmarks and prints the report on standard output: as text while it runs,
/// or, when `json`, as one JSON document at the end. What `widgets bench` and
/// `cargo bench -p widgets` print.
pub fn run_and_print(opts: &BenchOptions, json: bool) -> Result<BenchReport> {
    let report = run_with(opts, &mut |p| {
        if json {
            return;
        }
        match p {
            Progress::Started(report) => print!("{}", render_header(report)),
            Progress::Finished(r) => print!("{}", render_result(r, opts.quick)),
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
    })?;
    if json {
        println!("{:#}", render_json(&report));
    }
    Ok(report)
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
            BenchId::B1 => verification::bench_primary_verification(opts, &dir),
            BenchId::B2 => sync::bench_sync(
                opts,
                &dir,
                BenchId::B2,
                opts.sizes.b2_files,
                opts.sizes.b2_file_bytes,
            ),
            BenchId::B3 => sync::bench_sync(
                opts,
                &dir,
                BenchId::B3,
                opts.sizes.b3_files,
                opts.sizes.b3_file_bytes,
            ),
            BenchId::B5 => backfill::bench_backfill(opts, &dir),
            BenchId::B6 => cursor::bench_cursor(opts, &dir),
            BenchId::B7 => admin::bench_query(opts, &dir),
            BenchId::B8 => admin::bench_bulk(opts, &dir),
            BenchId::B9 => triggers::bench_trigger_overhead(opts, &dir),
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
        // On PostgreSQL, B5–B9 are also measured on SQLite in the same run, side by side.
        if opts.database_url.is_some()
            && matches!(
                id,
                BenchId::B5 | BenchId::B6 | BenchId::B7 | BenchId::B8 | BenchId::B9
            )
        {
            let sqlite_opts = BenchOptions {
                database_url: None,
                ..opts.clone()
            };
            let sdir = tmp.path().join(format!("{}-sqlite", id.as_str()));
            fs::create_dir_all(&sdir)?;
            let mut sqlite = match id {
                BenchId::B5 => backfill::bench_backfill(&sqlite_opts, &sdir),
                BenchId::B7 => admin::bench_query(&sqlite_opts, &sdir),
                BenchId::B8 => admin::bench_bulk(&sqlite_opts, &sdir),
                BenchId::B9 => triggers::bench_trigger_overhead(&sqlite_opts, &sdir),
                _ => cursor::bench_cursor(&sqlite_opts, &sdir),
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
    fn bench_ids_parse() {
        assert_eq!(
            parse_only("B1, b5").unwrap(),
            BTreeSet::from([BenchId::B1, BenchId::B5])
        );
        assert_eq!(parse_only("B4"), Err(UnknownBench("B4".to_string())));
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
