//! Bench: replication over HTTP vs an rsync daemon on loopback, same data, same run.
//!
//! - B2: 10,000 files of 4 KiB; B3: 100 files of 10 MiB. "ours" is a fresh secondary replicating
//!   everything over the Geo HTTP API until every record is synced and verified (registry,
//!   streaming download with hashing, atomic rename, verification); the peer is
//!   `rsync -a rsync://127.0.0.1:PORT/mod/ dst/` against `rsync --daemon` serving the primary's
//!   folder. Runs are interleaved; the median of `--repeat` runs is reported.
//! - RSS: a secondary in a child process syncs one 1 GiB blob; its peak RSS (VmHWM) is reported.
//!
//! ```text
//! cargo run --release -p geo-node --example http_bench -- [--quick] [--repeat N] [--dir DIR]
//! ```

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

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
    let quick = args.iter().any(|a| a == "--quick");
    let repeat = flag(&args, "--repeat").map_or(if quick { 1 } else { 3 }, |v| v.parse().unwrap());
    let parent = flag(&args, "--dir").map(PathBuf::from).unwrap_or_else(|| {
        if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        }
    });
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
    run_sync_bench("B2", &parent, b2, 4096, repeat, rsync.is_some());
    run_sync_bench("B3", &parent, b3, 10 << 20, repeat, rsync.is_some());
    run_rss_bench(&parent, big);
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
        let (sec, store) = secondary(&dir, &primary.url(), &primary.creds, Env::system());
        let phases = converge(&sec);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  run {run}: ours {secs:.3}s (cursor {:.3}, backfill {:.3}, sync {:.3}, verify {:.3}, rest {:.3})",
            phases[0], phases[1], phases[2], phases[3], phases[4]
        );
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
    let o = median(ours.clone());
    println!(
        "  ours (HTTP, synced + verified): median {o:.3}s {:.1} MiB/s {:.0} files/s  runs {ours:.3?}",
        bytes / 1048576.0 / o,
        files as f64 / o
    );
    let d = median(direct.clone());
    println!(
        "  direct mode (no HTTP):          median {d:.3}s {:.1} MiB/s {:.0} files/s",
        bytes / 1048576.0 / d,
        files as f64 / d
    );
    if !peer.is_empty() {
        let p = median(peer.clone());
        println!(
            "  rsync daemon -a:                median {p:.3}s {:.1} MiB/s {:.0} files/s  runs {peer:.3?}",
            bytes / 1048576.0 / p,
            files as f64 / p
        );
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
