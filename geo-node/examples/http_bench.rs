//! Bench: replication over HTTP vs an rsync daemon on loopback, same data, same run.
//!
//! - B2: 10,000 files of 4 KiB; B3: 100 files of 10 MiB. "ours" is a fresh secondary replicating
//!   everything over the Geo HTTP API until every record is synced and verified (registry,
//!   streaming download with hashing, atomic rename, verification), run by its workers
//!   (`Secondary::spawn`, as the `secondary` command runs them: log cursor, backfill, scheduler
//!   and verification at once); `GEO_BENCH_BY_HAND=1` drives the passes one after another
//!   instead and times each phase. The peer is
//!   `rsync -a rsync://127.0.0.1:PORT/mod/ dst/` against `rsync --daemon` serving the primary's
//!   folder. Runs are interleaved; the median of `--repeat` runs is reported.
//! - RSS: a secondary in a child process syncs one 1 GiB blob; its peak RSS (VmHWM) is reported.
//! - Latency: change → synced over loopback HTTP with default settings. A primary (this process,
//!   SQLite, served over HTTP) and a secondary in a child process (`Secondary::spawn` with
//!   `SecondaryConfig::default()` and `HttpConfig`'s defaults) replicating from it. Records are
//!   created one at a time, 20–60 ms apart; each sample is the time from the commit of the
//!   record's insert to its registry row on the secondary reading `synced` (polled every
//!   millisecond by this process). Pushed (the default: the log cursor long-polls
//!   `events?wait=`) beside polling (`event_wait = 0`: the cursor reads every `idle_sleep`).
//!   Then the CPU (utime + stime from `/proc`) of a quiet secondary over `--quiet-secs`, as a
//!   share of one core, and the primary's over the same window.
//!
//! ```text
//! cargo run --release -p geo-node --example http_bench -- [--quick] [--repeat N] [--dir DIR]
//!     [--only B2,B3,RSS,latency]
//! ```
//!
//! Each run of ours prints its phases and the CPU both sites used (user + system, this
//! process). `GEO_BENCH_OURS_ONLY=1` skips the direct and rsync runs, for profiling ours alone
//! (`perf record`).
//!
//! ```text
//! cargo run --release -p geo-node --example http_bench -- latency [--samples N] [--quiet-secs S]
//! cargo run --release -p geo-node --example http_bench -- s3 [--quick] [--repeat N] [--dir DIR]
//! ```
//!
//! `s3`: B3 with both sites' stores on a real S3-compatible server, beside the AWS CLI
//! (`http_bench/s3.rs`).

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "http_bench/s3.rs"]
mod s3;
#[path = "../tests/common/s3_server.rs"]
mod s3_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use geo_diesel::geo_core::clock::Env;
use geo_node::auth::Credentials;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("rss-child") {
        rss_child(&args[2], Path::new(&args[3]), &args[4]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("latency-child") {
        latency_child(&args[2], Path::new(&args[3]), &args[4], &args[5]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("latency") {
        let parent = flag(&args, "--dir").map_or_else(bench_parent, PathBuf::from);
        let samples = flag(&args, "--samples").map_or(200, |v| v.parse().unwrap());
        let quiet = flag(&args, "--quiet-secs").map_or(10, |v| v.parse().unwrap());
        doc_name();
        run_latency_bench(&parent, samples, Duration::from_secs(quiet));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.get(1).map(String::as_str) == Some("s3") {
        let repeat =
            flag(&args, "--repeat").map_or(if quick { 1 } else { 3 }, |v| v.parse().unwrap());
        let parent = flag(&args, "--dir").map_or_else(bench_parent, PathBuf::from);
        doc_name();
        s3::run(&parent, if quick { 10 } else { 100 }, 10 << 20, repeat);
        return;
    }
    let repeat = flag(&args, "--repeat").map_or(if quick { 1 } else { 3 }, |v| v.parse().unwrap());
    let parent = flag(&args, "--dir").map_or_else(bench_parent, PathBuf::from);
    doc_name();
    let rsync = rsync_version();
    println!(
        "http_bench: data under {} ({}), repeat {repeat}, peer {}",
        parent.display(),
        if quick { "quick" } else { "full" },
        rsync.as_deref().unwrap_or("rsync missing")
    );
    let (b2, b3, big) = if quick {
        (1000, 10, 64 << 20)
    } else {
        (10_000, 100, 1 << 30)
    };
    // `--only B2,B3,RSS,latency`: a subset (all by default).
    let only = flag(&args, "--only").map(|v| v.to_ascii_lowercase());
    let runs = |what: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|w| w.trim() == what))
    };
    if runs("b2") {
        run_sync_bench("B2", &parent, b2, 4096, repeat, rsync.is_some());
    }
    if runs("b3") {
        run_sync_bench("B3", &parent, b3, 10 << 20, repeat, rsync.is_some());
    }
    if runs("rss") {
        run_rss_bench(&parent, big);
    }
    if runs("latency") {
        run_latency_bench(
            &parent,
            if quick { 50 } else { 200 },
            Duration::from_secs(10),
        );
    }
}

/// Where bench data goes by default: `/dev/shm` when there is one.
fn bench_parent() -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn rsync_version() -> Option<String> {
    let out = Command::new("rsync").arg("--version").output().ok()?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_owned();
    Some(
        first
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A secondary reading the primary's database and files directly (the reference).
fn direct_secondary(dir: &Path, primary: &Primary) -> geo_diesel::secondary::Secondary {
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let store = std::sync::Arc::new(
        geo_diesel::geo_core::blob_store::LocalBlobStore::new(dir.join("files")).unwrap(),
    );
    let source = std::sync::Arc::new(geo_diesel::direct::DirectSource::new(
        primary.db.clone(),
        primary.store.clone(),
    ));
    geo_diesel::secondary::Secondary::new(
        tracking,
        source,
        store,
        Env::system(),
        Default::default(),
    )
}

/// Runs the secondary's passes to convergence, timing each phase: cursor, backfill, sync,
/// verification, then a final idle round.
fn converge(sec: &geo_diesel::secondary::Secondary) -> [f64; 5] {
    let mut t = Instant::now();
    let mut lap = || {
        let s = t.elapsed().as_secs_f64();
        t = Instant::now();
        s
    };
    while sec.cursor_pass().unwrap().read >= sec.config().cursor_batch {}
    let cursor = lap();
    sec.backfill_all().unwrap();
    let backfill = lap();
    while sec.sync_pass().unwrap() > 0 {}
    let sync = lap();
    while sec.verification_pass().unwrap() > 0 {}
    let verify = lap();
    sec.run_until_idle(50).unwrap();
    [cursor, backfill, sync, verify, lap()]
}

/// Runs the secondary's workers ([`Secondary::spawn`](geo_diesel::secondary::Secondary::spawn),
/// as the `secondary` command does) until every record is synced and verified; returns when
/// they were, since `started` (the stop that follows waits for the log cursor's long poll).
fn converge_workers(
    sec: &std::sync::Arc<geo_diesel::secondary::Secondary>,
    files: u64,
    started: Instant,
) -> f64 {
    let workers = sec.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let synced = || {
        sec.counters()
            .synced
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    loop {
        // The status counts every registry row (milliseconds of the CPU both sites share): it
        // is asked only once the sync counter says every record was synced.
        if synced() < files {
            assert!(
                Instant::now() < deadline,
                "did not converge: {} synced",
                synced()
            );
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let s = &sec.status().unwrap()[0].1;
        if (s.synced_count, s.verified_count) == (Some(files), Some(files)) {
            let secs = started.elapsed().as_secs_f64();
            workers.stop();
            return secs;
        }
        assert!(Instant::now() < deadline, "did not converge: {s:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run_sync_bench(
    id: &str,
    parent: &Path,
    files: usize,
    size: usize,
    repeat: usize,
    with_rsync: bool,
) {
    let tmp = tempfile::Builder::new()
        .prefix("geo-http-bench-")
        .tempdir_in(parent)
        .unwrap();
    let t = Instant::now();
    let primary = Primary::direct(tmp.path());
    for i in 0..files {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("b/{:03}/{i}.bin", i % 256),
            &data(i as u64, size),
        );
    }
    primary.verify_all();
    let bytes = (files * size) as f64;
    println!(
        "{id}: {files} files x {size} bytes ({:.1} MiB), prepared in {:.1}s",
        bytes / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let daemon = with_rsync.then(|| RsyncDaemon::start(tmp.path(), primary.store.root()));
    let (mut ours, mut peer, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..repeat {
        let dir = tmp.path().join(format!("sec-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let cpu = cpu_seconds("self");
        let (sec, store) = secondary(&dir, &primary.url(), &primary.creds, Env::system());
        let secs = if std::env::var_os("GEO_BENCH_BY_HAND").is_some() {
            let phases = converge(&sec);
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_seconds("self") - cpu;
            println!(
                "  run {run}: ours by hand {secs:.3}s (cursor {:.3}, backfill {:.3}, sync {:.3}, verify {:.3}, rest {:.3}; CPU of both sites {cpu:.2}s)",
                phases[0], phases[1], phases[2], phases[3], phases[4]
            );
            secs
        } else {
            let secs = converge_workers(&sec, files as u64, t);
            let cpu = cpu_seconds("self") - cpu;
            println!("  run {run}: ours {secs:.3}s (workers; CPU of both sites {cpu:.2}s)");
            secs
        };
        let s = &sec.status().unwrap()[0].1;
        assert_eq!(
            (s.synced_count, s.verified_count),
            (Some(files as u64), Some(files as u64)),
            "{id}: not converged"
        );
        assert!(differing(&primary, &store).is_empty(), "{id}: files differ");
        ours.push(secs);
        drop(sec);
        std::fs::remove_dir_all(&dir).unwrap();
        if std::env::var_os("GEO_BENCH_OURS_ONLY").is_some() {
            // For profiling (`perf record -D …`): only our HTTP runs.
            continue;
        }
        // Reference: the same runtime reading the primary directly (no HTTP).
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let sec = direct_secondary(&dir, &primary);
        let phases = converge(&sec);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  run {run}: direct {secs:.3}s (cursor {:.3}, backfill {:.3}, sync {:.3}, verify {:.3}, rest {:.3})",
            phases[0], phases[1], phases[2], phases[3], phases[4]
        );
        direct.push(secs);
        drop(sec);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Some(d) = &daemon {
            let dst = tmp.path().join(format!("rsync-{run}"));
            let t = Instant::now();
            let ok = Command::new("rsync")
                .args([
                    "-a",
                    &format!("rsync://127.0.0.1:{}/mod/", d.port),
                    &format!("{}/", dst.display()),
                ])
                .status()
                .unwrap()
                .success();
            let secs = t.elapsed().as_secs_f64();
            assert!(ok, "rsync failed");
            peer.push(secs);
            std::fs::remove_dir_all(&dst).unwrap();
        }
    }
    // One line per contestant: the median, its rates and every run.
    let report = |label: &str, runs: &[f64]| {
        let m = median(runs.to_vec());
        println!(
            "  {label:<32}median {m:.3}s {:.1} MiB/s {:.0} files/s  runs {runs:.3?}",
            bytes / 1048576.0 / m,
            files as f64 / m
        );
        m
    };
    let o = report("ours (HTTP, synced + verified):", &ours);
    if !direct.is_empty() {
        report("direct mode (no HTTP):", &direct);
    }
    if !peer.is_empty() {
        let p = report("rsync daemon -a:", &peer);
        println!("  ratio ours/rsync: {:.2}", o / p);
    } else {
        println!("  rsync: missing (apt-get install -y rsync)");
    }
}

struct RsyncDaemon {
    child: std::process::Child,
    port: u16,
}

impl RsyncDaemon {
    fn start(dir: &Path, root: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nlog file = {}\npid file = {}\n[mod]\npath = {}\nread only = yes\nuid = root\ngid = root\n",
                dir.join("rsyncd.log").display(),
                dir.join("rsyncd.pid").display(),
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsync")
            .args([
                "--daemon",
                "--no-detach",
                &format!("--config={}", conf.display()),
                &format!("--port={port}"),
                "--address=127.0.0.1",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsync daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RsyncDaemon { child, port }
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_rss_bench(parent: &Path, size: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("geo-http-rss-")
        .tempdir_in(parent)
        .unwrap();
    let primary = Primary::direct(tmp.path());
    // Written in pieces: the bench itself must not hold the blob in memory either.
    let path = "big/blob.bin";
    {
        let piece = data(7, 8 << 20);
        let mut reader = std::io::Read::take(
            Pieces {
                piece: &piece,
                pos: 0,
            },
            size as u64,
        );
        use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
        primary
            .store
            .write(&BlobPath::new(path).unwrap(), &mut reader, None)
            .unwrap();
        insert_doc(&primary.db, path);
    }
    primary.verify_all();
    let dir = tmp.path().join("sec");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "rss-child",
            &primary.url(),
            &dir.display().to_string(),
            primary.creds.access_key.as_str(),
        ])
        .env("GEO_SECRET", primary.creds.secret.expose())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "RSS: one {} MiB blob synced and verified over HTTP in {:.2}s; secondary process {}",
        size >> 20,
        t.elapsed().as_secs_f64(),
        text.trim()
    );
}

/// Child: a secondary that syncs everything once and prints its peak RSS.
fn rss_child(url: &str, dir: &Path, access_key: &str) {
    doc_name();
    let secret = std::env::var("GEO_SECRET").unwrap();
    let creds = Credentials::new(access_key, &secret).unwrap();
    let (sec, _store) = secondary(dir, url, &creds, Env::system());
    sec.run_until_idle(20).unwrap();
    let s = &sec.status().unwrap()[0].1;
    assert_eq!((s.synced_count, s.verified_count), (Some(1), Some(1)));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "peak {}",
        hwm.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
}

/// Repeats one piece forever (a reader for a large synthetic blob).
struct Pieces<'a> {
    piece: &'a [u8],
    pos: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.piece.len() - self.pos);
        buf[..n].copy_from_slice(&self.piece[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.piece.len();
        Ok(n)
    }
}

/// Ticks per second of `/proc/*/stat` CPU times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of process `pid` ("self" for this one), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse().unwrap(), f[12].parse().unwrap());
    (utime + stime) / clock_ticks()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One secondary process replicating from the primary, and what the bench reads of it.
struct SecondaryChild {
    child: std::process::Child,
    tracking: diesel::SqliteConnection,
}

impl SecondaryChild {
    fn start(primary: &Primary, dir: &Path, mode: &str) -> Self {
        use std::io::BufRead;
        std::fs::create_dir_all(dir).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "latency-child",
                &primary.url(),
                &dir.display().to_string(),
                primary.creds.access_key.as_str(),
                mode,
            ])
            .env("GEO_SECRET", primary.creds.secret.expose())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the secondary did not start");
        let tracking =
            geo_diesel::connection::sqlite::establish(dir.join("tracking.sqlite3")).unwrap();
        SecondaryChild { child, tracking }
    }

    fn synced(&mut self, id: i64) -> bool {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::SmallInt)]
            state: i16,
        }
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT state FROM doc_registry WHERE doc_id = {id}"
        ))
        .load(&mut self.tracking)
        .unwrap_or_default();
        rows.first().is_some_and(|r| r.state == 2)
    }

    /// Creates a record and returns the time from its commit to its sync on the secondary.
    fn sample(&mut self, primary: &Primary, i: usize) -> Duration {
        let path = format!("lat/{i}.bin");
        use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
        primary
            .store
            .write(
                &BlobPath::new(&path).unwrap(),
                &mut &data(i as u64, 4096)[..],
                None,
            )
            .unwrap();
        let doc = insert_doc(&primary.db, &path);
        let committed = Instant::now();
        let deadline = committed + Duration::from_secs(60);
        while !self.synced(doc.id) {
            assert!(Instant::now() < deadline, "record {} never synced", doc.id);
            std::thread::sleep(Duration::from_millis(1));
        }
        committed.elapsed()
    }
}

impl Drop for SecondaryChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_latency_bench(parent: &Path, samples: usize, quiet: Duration) {
    let tmp = tempfile::Builder::new()
        .prefix("geo-http-latency-")
        .tempdir_in(parent)
        .unwrap();
    let primary = Primary::direct(tmp.path());
    let _verifier = primary.verifier.spawn().unwrap();
    println!(
        "latency: change -> synced over loopback HTTP, default settings, SQLite primary, {samples} samples 20-60 ms apart; quiet CPU over {}s",
        quiet.as_secs()
    );
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = 0usize;
    for mode in ["pushed", "polling"] {
        let mut sec = SecondaryChild::start(&primary, &tmp.path().join(mode), mode);
        // Warm up: the first record also brings the secondary's cursor to the log's end.
        for _ in 0..3 {
            sec.sample(&primary, next);
            next += 1;
        }
        let mut lat = Vec::with_capacity(samples);
        for _ in 0..samples {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(20 + seed % 41));
            lat.push(sec.sample(&primary, next).as_secs_f64() * 1000.0);
            next += 1;
        }
        lat.sort_by(f64::total_cmp);
        // Quiet: nothing changes; the secondary's and the primary's CPU over the window.
        std::thread::sleep(Duration::from_secs(2));
        let pid = sec.child.id().to_string();
        let (s0, p0, t0) = (cpu_seconds(&pid), cpu_seconds("self"), Instant::now());
        std::thread::sleep(quiet);
        let (s1, p1, secs) = (
            cpu_seconds(&pid),
            cpu_seconds("self"),
            t0.elapsed().as_secs_f64(),
        );
        println!(
            "  {mode:8} p50 {:6.1} ms  p90 {:6.1} ms  p99 {:6.1} ms  max {:6.1} ms | quiet secondary {:.2}% of a core, primary {:.2}%",
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            lat[lat.len() - 1],
            (s1 - s0) / secs * 100.0,
            (p1 - p0) / secs * 100.0,
        );
        drop(sec);
    }
}

/// Child: a secondary with default settings (`polling`: no event wait) running its workers
/// until the parent kills it.
fn latency_child(url: &str, dir: &Path, access_key: &str, mode: &str) {
    doc_name();
    let secret = std::env::var("GEO_SECRET").unwrap();
    let creds = Credentials::new(access_key, &secret).unwrap();
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let store = std::sync::Arc::new(
        geo_diesel::geo_core::blob_store::LocalBlobStore::new(dir.join("files")).unwrap(),
    );
    let source = std::sync::Arc::new(geo_node::client::HttpSource::new(
        geo_node::client::HttpConfig::new(url, creds),
    ));
    let mut config = geo_diesel::secondary::SecondaryConfig::default();
    if mode == "polling" {
        config = config.event_wait(Duration::ZERO);
    }
    let sec = std::sync::Arc::new(geo_diesel::secondary::Secondary::new(
        tracking,
        source,
        store,
        Env::system(),
        config,
    ));
    let _workers = sec.spawn().unwrap();
    println!("ready");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Until the parent closes stdin or kills us.
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
}
