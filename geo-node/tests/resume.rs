//! Resumable transfers and a primary that slow readers cannot pin, over real loopback HTTP:
//! `Range` on retrieve; a 1 GiB blob through a proxy that cuts the connection at 3 random
//! points; a secondary process killed mid-transfer and restarted on the same tracking database
//! and blob directory; a primary file that changed between attempts; the direct source resuming
//! too; the no-progress timeout; and many clients that open a large retrieve and read nothing
//! while a signed small request still completes within 1 s.
//!
//! Run the 1 GiB case alone with
//! `cargo test -p geo-node --test resume -- --nocapture one_gib` (it prints its seed; set
//! `GEO_RESUME_SEED` to replay one).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Parser;
use common::*;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{
    BlobPath, BlobStore, LocalBlobStore, TEMP_PREFIX, is_temp_file_name,
};
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes, checksum_file};
use geo_diesel::geo_core::clock::{Env, ManualClock};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{
    BlobStream, PrimaryChecksum, PrimarySource, RangedBlobStream, SourceError,
};
use geo_diesel::geo_core::state::{ReplicationState, VerificationState};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_node::auth::{KeyRing, RequestData};
use geo_node::cli::NodeCommand;
use geo_node::server::{NodeState, PrimaryService};
use rand::{Rng, SeedableRng};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// fixtures
// ---------------------------------------------------------------------------------------------

/// Fast pseudo-random bytes (xorshift64*, eight bytes per step), `len` of them.
struct Noise {
    state: u64,
    left: u64,
}

impl Noise {
    fn new(seed: u64, len: u64) -> Self {
        Noise {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            left: len,
        }
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !7;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A record whose file is `len` bytes of [`Noise`] from `seed`, written straight into the
/// primary's store (never held in memory), and its checksum.
fn big_doc(primary: &Primary, path: &str, seed: u64, len: u64) -> (Doc, Checksum) {
    let written = primary
        .store
        .write(
            &BlobPath::new(path).unwrap(),
            &mut Noise::new(seed, len),
            None,
        )
        .unwrap();
    assert_eq!(written.bytes, len);
    (insert_doc(&primary.db, path), written.checksum)
}

/// A secondary replicating from `url` over HTTP with a manual clock (failed downloads are
/// retried as soon as the test moves the clock past their backoff).
fn manual_secondary(
    dir: &Path,
    url: &str,
    primary: &Primary,
) -> (Arc<Secondary>, Arc<LocalBlobStore>, ManualClock) {
    let (env, clock) = Env::manual(Utc::now(), 0);
    let (sec, store) = secondary(dir, url, &primary.creds, env);
    (sec, store, clock)
}

/// Runs passes until the record is synced, moving the clock past each failure's backoff; at
/// most `rounds` rounds.
fn sync_until_synced(sec: &Secondary, clock: &ManualClock, rounds: usize) -> usize {
    for round in 0..rounds {
        sec.run_until_idle(20).unwrap();
        let status = sec.status().unwrap();
        if status[0].1.synced_count == Some(1) {
            return round;
        }
        clock.advance(TimeDelta::hours(2));
    }
    panic!(
        "not synced after {rounds} rounds: {:?}",
        sec.status().unwrap()
    );
}

/// (synced, verified, failed) of the test type.
fn counts(sec: &Secondary) -> (Option<u64>, Option<u64>, Option<u64>) {
    let status = sec.status().unwrap();
    let s = &status[0].1;
    (s.synced_count, s.verified_count, s.failed_count)
}

/// Every temporary file under `root`.
fn temp_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if is_temp_file_name(&e.file_name()) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn seed() -> u64 {
    let seed = std::env::var("GEO_RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("GEO_RESUME_SEED={seed}");
    seed
}

/// A TCP forwarder in front of the primary that counts every byte it moves (both ways) and
/// drops the connection carrying the byte at each cut position (counted in bytes moved from
/// the primary to the secondary, over all connections).
struct CuttingProxy {
    addr: String,
    moved: Arc<AtomicU64>,
    cuts: Arc<Mutex<Vec<u64>>>,
    /// While set, nothing is forwarded (a stalled link).
    stalled: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: String, mut cuts: Vec<u64>) -> CuttingProxy {
        cuts.sort_unstable();
        cuts.reverse(); // the next cut is last
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let moved = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(Mutex::new(cuts));
        let stalled = Arc::new(AtomicBool::new(false));
        let (m, c, s) = (moved.clone(), cuts.clone(), stalled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (m1, m2, c2, s1, s2, d2) = (
                    m.clone(),
                    m.clone(),
                    c.clone(),
                    s.clone(),
                    s.clone(),
                    down.clone(),
                );
                let (cl1, sv1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || forward(cl1, sv1, &m1, None, &s1));
                std::thread::spawn(move || forward(server, client, &m2, Some((&d2, &c2)), &s2));
            }
        });
        CuttingProxy {
            addr,
            moved,
            cuts,
            stalled,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn moved(&self) -> u64 {
        self.moved.load(Ordering::SeqCst)
    }

    fn cuts_left(&self) -> usize {
        self.cuts.lock().unwrap().len()
    }
}

/// Copies `from` → `to`, counting into `moved`; downstream (`cut` given), drops both sockets
/// when the bytes moved downstream reach the next cut.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    moved: &AtomicU64,
    cut: Option<(&AtomicU64, &Mutex<Vec<u64>>)>,
    stalled: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut send = n;
        let mut drop_now = false;
        if let Some((down, cuts)) = cut {
            let mut cuts = cuts.lock().unwrap();
            let before = down.load(Ordering::SeqCst);
            if let Some(&next) = cuts.last()
                && before + n as u64 >= next
            {
                send = (next - before.min(next)) as usize;
                cuts.pop();
                drop_now = true;
            }
            down.fetch_add(send as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..send]).is_err() {
            break;
        }
        moved.fetch_add(send as u64, Ordering::SeqCst);
        if drop_now {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// One raw HTTP/1.1 GET with a binary body: (status, lower-cased headers, body).
fn get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, buf[at + 4..].to_vec())
}

// ---------------------------------------------------------------------------------------------
// Range on retrieve
// ---------------------------------------------------------------------------------------------

#[test]
fn retrieve_answers_a_range_with_206_and_the_whole_blobs_checksum() {
    // Both ways a primary serves blobs: its local store (a seek) and a source (the default,
    // which reads and discards).
    for direct in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let primary = if direct {
            Primary::direct(tmp.path())
        } else {
            Primary::new(tmp.path())
        };
        let bytes = data(7, 3 * MIB as usize + 123);
        let total = bytes.len() as u64;
        let doc = create_doc(&primary.db, primary.store.as_ref(), "r/big.bin", &bytes);
        primary.verify_all();
        let sum = checksum_bytes(&bytes).to_hex();
        let auth = primary
            .creds
            .authorization(&RequestData::blob("doc", doc.id), Utc::now().timestamp());
        let path = format!("/api/geo/retrieve/doc/{}", doc.id);
        let ask = |range: Option<&str>| {
            let mut h = vec![("Authorization", auth.as_str())];
            if let Some(r) = range {
                h.push(("Range", r));
            }
            get(&primary.addr(), &path, &h)
        };

        let (code, h, body) = ask(None);
        assert_eq!(code, 200, "direct={direct}");
        assert_eq!(h.get("accept-ranges").map(String::as_str), Some("bytes"));
        assert_eq!(h.get("content-length"), Some(&total.to_string()));
        assert_eq!(h.get("x-geo-checksum"), Some(&sum));
        assert!(body == bytes);

        for (range, start, end) in [
            ("bytes=1000-", 1000, total - 1),
            ("bytes=10-19", 10, 19),
            ("bytes=3145000-99999999", 3_145_000, total - 1),
            ("bytes=-100", total - 100, total - 1),
        ] {
            let (code, h, body) = ask(Some(range));
            assert_eq!(code, 206, "{range} direct={direct}");
            assert_eq!(
                h.get("content-range"),
                Some(&format!("bytes {start}-{end}/{total}")),
                "{range}"
            );
            assert_eq!(
                h.get("content-length"),
                Some(&(end + 1 - start).to_string())
            );
            assert_eq!(
                h.get("x-geo-checksum"),
                Some(&sum),
                "the whole blob's checksum"
            );
            assert_eq!(h.get("accept-ranges").map(String::as_str), Some("bytes"));
            assert!(body == bytes[start as usize..=end as usize], "{range}");
        }

        for unsatisfiable in [format!("bytes={total}-"), format!("bytes={}-", total + 5)] {
            let (code, h, body) = ask(Some(&unsatisfiable));
            assert_eq!(code, 416, "{unsatisfiable}");
            assert_eq!(h.get("content-range"), Some(&format!("bytes */{total}")));
            assert!(body.is_empty());
        }

        // Not one well-formed byte range: ignored, the whole blob.
        for ignored in [
            "bytes=abc-",
            "bytes=5-1",
            "bytes=0-1,5-9",
            "lines=1-2",
            "bytes=0-",
        ] {
            let (code, h, body) = ask(Some(ignored));
            assert_eq!(code, 200, "{ignored}");
            assert!(!h.contains_key("content-range"));
            assert!(body == bytes, "{ignored}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// slow readers
// ---------------------------------------------------------------------------------------------

/// More clients than the server has blocking threads open a 64 MiB retrieve and read nothing;
/// a signed small request still completes within 1 s, and a stalled download still completes
/// once its client reads.
#[test]
fn slow_readers_do_not_pin_the_blocking_pool() {
    const BLOCKING_THREADS: usize = 4;
    const SLOW_CLIENTS: usize = 24;
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let (big, _) = big_doc(&primary, "s/big.bin", 1, 64 * MIB);
    let small = create_doc(&primary.db, primary.store.as_ref(), "s/small.bin", b"small");
    primary.verify_all();

    // The primary's router on a runtime with a small blocking pool. The per-key limit is
    // raised past the stalled clients: this test is about the pool, not that limit.
    let state = NodeState::new("slow-readers", KeyRing::with([primary.creds.clone()]))
        .with_primary(PrimaryService::direct(
            primary.db.clone(),
            primary.store.clone(),
            None,
        ))
        .with_max_requests_per_key(SLOW_CLIENTS + 8);
    let app = geo_node::router(Arc::new(state));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .unwrap();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        })
    });

    let now = Utc::now().timestamp();
    let open_big = || {
        let mut s = TcpStream::connect(&addr).unwrap();
        let auth = primary
            .creds
            .authorization(&RequestData::blob("doc", big.id), now);
        write!(
            s,
            "GET /api/geo/retrieve/doc/{} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n",
            big.id
        )
        .unwrap();
        s
    };
    let mut slow: Vec<TcpStream> = (0..SLOW_CLIENTS).map(|_| open_big()).collect();
    // Let every one of them fill its socket buffers and stall.
    std::thread::sleep(Duration::from_millis(800));

    for _ in 0..3 {
        let started = Instant::now();
        let auth = primary
            .creds
            .authorization(&RequestData::blob("doc", small.id), Utc::now().timestamp());
        let (code, _, body) = get(
            &addr,
            &format!("/api/geo/retrieve/doc/{}", small.id),
            &[("Authorization", &auth)],
        );
        let took = started.elapsed();
        assert_eq!((code, body.as_slice()), (200, &b"small"[..]));
        assert!(
            took < Duration::from_secs(1),
            "a signed small request took {took:?} behind {SLOW_CLIENTS} stalled readers"
        );
    }

    // A stalled download goes on once its client reads.
    let one = slow.pop().unwrap();
    one.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head_and_body = Vec::new();
    one.take(64 * MIB + 64 * 1024)
        .read_to_end(&mut head_and_body)
        .ok();
    let at = head_and_body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap();
    assert_eq!(head_and_body.len() - at - 4, 64 * MIB as usize);
    drop(slow);
}

// ---------------------------------------------------------------------------------------------
// resumed downloads over HTTP
// ---------------------------------------------------------------------------------------------

/// The test: a 1 GiB blob over loopback HTTP through a proxy that drops the
/// connection at 3 random points ends synced and verified with at most 1.1 GiB moved.
#[test]
fn one_gib_cut_at_three_random_points_moves_at_most_1_1_gib_and_ends_verified() {
    let size: u64 = 1 << 30;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cuts: Vec<u64> = (0..3)
        .map(|_| rng.random_range(size / 20..size - size / 20))
        .collect();
    println!("cuts at {cuts:?}");
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let started = Instant::now();
    let (doc, sum) = big_doc(&primary, "g/one.gib", seed, size);
    primary.verify_all();
    println!(
        "1 GiB written and verified on the primary in {:?}",
        started.elapsed()
    );
    let proxy = CuttingProxy::start(primary.addr(), cuts.clone());
    let (sec, store, clock) = manual_secondary(tmp.path(), &proxy.url(), &primary);
    let started = Instant::now();
    let rounds = sync_until_synced(&sec, &clock, 10);
    let moved = proxy.moved();
    println!(
        "synced after {rounds} retries in {:?}; {moved} bytes moved through the proxy ({:.4} × the blob)",
        started.elapsed(),
        moved as f64 / size as f64
    );
    assert_eq!(proxy.cuts_left(), 0, "every cut happened");
    assert!(rounds >= 1, "the cuts failed attempts");
    assert!(
        moved as f64 <= 1.1 * size as f64,
        "{moved} bytes moved for a {size}-byte blob (seed {seed})"
    );
    assert_eq!(counts(&sec), (Some(1), Some(1), Some(0)));
    let local = store.root().join(&doc.path);
    assert_eq!(checksum_file(&local).unwrap(), (sum, size));
    assert!(temp_files(store.root()).is_empty());
}

/// The primary's file changes (same size, same verified checksum on record) after an attempt
/// left a prefix: the resumed result mismatches and the secondary starts over from 0 in the
/// same attempt; nothing is stored until the primary's checksum is the new content's, and the
/// secondary then ends with the new content — never a mix of the two.
#[test]
fn a_primary_file_that_changed_between_attempts_is_never_stored_as_a_mix() {
    let size = 24 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let (doc, old_sum) = big_doc(&primary, "c/changing.bin", 1, size);
    primary.verify_all();
    let proxy = CuttingProxy::start(primary.addr(), vec![size * 2 / 5]);
    let (sec, store, clock) = manual_secondary(tmp.path(), &proxy.url(), &primary);
    sec.run_until_idle(20).unwrap();
    assert_eq!(proxy.cuts_left(), 0);
    assert_eq!(counts(&sec).2, Some(1), "the cut failed the first attempt");
    assert_eq!(temp_files(store.root()).len(), 1, "its prefix is kept");

    // Rewritten out of band: the record still says the old checksum.
    let new_sum = primary
        .store
        .write(
            &BlobPath::new(&doc.path).unwrap(),
            &mut Noise::new(2, size),
            None,
        )
        .unwrap()
        .checksum;
    assert_ne!(new_sum, old_sum);
    clock.advance(TimeDelta::hours(2));
    let before = proxy.moved();
    sec.run_until_idle(20).unwrap();
    assert_eq!(counts(&sec).0, Some(0));
    assert!(
        !store.root().join(&doc.path).exists(),
        "nothing at the final path: the old prefix and the new tail mismatch, and so does the new whole"
    );
    assert!(
        proxy.moved() - before > size,
        "the resumed tail, then the whole blob again from 0"
    );

    // The application records the change; the primary verifies the new content.
    geo_diesel::publish_updated(&mut primary.db.get().unwrap(), &doc).unwrap();
    primary.verify_all();
    clock.advance(TimeDelta::hours(2));
    sync_until_synced(&sec, &clock, 5);
    assert_eq!(counts(&sec), (Some(1), Some(1), Some(0)));
    assert_eq!(
        checksum_file(store.root().join(&doc.path)).unwrap(),
        (new_sum, size)
    );
}

// ---------------------------------------------------------------------------------------------
// a secondary process killed mid-transfer
// ---------------------------------------------------------------------------------------------

#[derive(Parser, Debug)]
struct TestCli {
    #[command(subcommand)]
    command: NodeCommand,
}

/// Entry point of the child processes (not a test by itself).
#[test]
#[ignore = "child process entry point, run by the restart test"]
fn child_node_resume() {
    let args = std::env::var("GEO_NODE_CHILD_ARGS")
        .expect("GEO_NODE_CHILD_ARGS is set by the parent test");
    doc_name();
    geo_node::cli::init_tracing();
    let cli = TestCli::parse_from(std::iter::once("node").chain(args.lines()));
    match cli.command.run(&app()) {
        Ok(code) if code == std::process::ExitCode::SUCCESS => {}
        _ => std::process::exit(1),
    }
}

fn start_secondary_process(args: &[String], secret: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_node_resume",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GEO_NODE_CHILD_ARGS", args.join("\n"))
        .env("GEO_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `secondary` process is killed (SIGKILL) in the middle of a large download; a new one on
/// the same tracking database and blob directory resumes it: the blob ends synced and
/// verified with less than 1.1 × its size moved in total.
#[test]
fn a_secondary_killed_mid_transfer_resumes_after_a_restart() {
    let size = 256 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let (doc, sum) = big_doc(&primary, "k/killed.bin", 3, size);
    primary.verify_all();
    let proxy = CuttingProxy::start(primary.addr(), vec![]);
    let args: Vec<String> = [
        "secondary",
        "--primary",
        &proxy.url(),
        "--database-url",
        &tmp.path().join("tracking.sqlite3").display().to_string(),
        "--blob-dir",
        &tmp.path().join("secondary-files").display().to_string(),
        "--access-key",
        &primary.creds.access_key.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--idle-ms",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let secret = primary.creds.secret.expose().to_owned();
    let mut first = start_secondary_process(&args, &secret);
    wait_for(
        "40 % of the blob through the proxy",
        Duration::from_secs(60),
        || proxy.moved() > size * 2 / 5,
    );
    // Stall the link so the kill lands mid-transfer, whatever the speed.
    proxy.stalled.store(true, Ordering::SeqCst);
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = proxy.moved();
    proxy.stalled.store(false, Ordering::SeqCst);
    let local = tmp.path().join("secondary-files").join(&doc.path);
    assert!(!local.exists(), "nothing at the final path after the kill");
    let partials = temp_files(&tmp.path().join("secondary-files"));
    assert_eq!(partials.len(), 1, "{partials:?}");
    assert!(partials[0].contains(TEMP_PREFIX));

    let mut second = start_secondary_process(&args, &secret);
    let tracking = geo_node::cli::open_secondary_db(
        &tmp.path().join("tracking.sqlite3").display().to_string(),
        2,
    )
    .unwrap();
    let synced_and_verified = || {
        let status = geo_diesel::secondary::secondary_status(&mut tracking.get().unwrap()).unwrap();
        let s = &status[0].1;
        (s.synced_count, s.verified_count)
    };
    // The file is renamed into place a moment before its row records it: wait for the row.
    wait_for(
        "the resumed download recorded",
        Duration::from_secs(60),
        || synced_and_verified() == (Some(1), Some(1)),
    );
    second.kill().unwrap();
    second.wait().unwrap();
    let moved = proxy.moved();
    println!(
        "{at_kill} bytes moved before the kill, {moved} in total ({:.4} × the blob)",
        moved as f64 / size as f64
    );
    assert!(
        (moved as f64) < 1.1 * size as f64,
        "{moved} bytes moved for a {size}-byte blob"
    );
    assert_eq!(checksum_file(&local).unwrap(), (sum, size));
    assert_eq!(synced_and_verified(), (Some(1), Some(1)));
}

// ---------------------------------------------------------------------------------------------
// the direct source, and the no-progress timeout
// ---------------------------------------------------------------------------------------------

/// A direct source whose blob readers fail after the cut positions (bytes yielded over all
/// readers) and which counts the bytes it yields; `gate`, when set, makes each read wait for a
/// permit.
struct CutDirect {
    inner: DirectSource,
    yielded: Arc<AtomicU64>,
    cuts: Arc<Mutex<Vec<u64>>>,
    gate: Option<Arc<Mutex<mpsc::Receiver<bool>>>>,
    opened_at: Arc<Mutex<Vec<u64>>>,
}

struct CutReader {
    inner: Box<dyn Read + Send>,
    yielded: Arc<AtomicU64>,
    cuts: Arc<Mutex<Vec<u64>>>,
    gate: Option<Arc<Mutex<mpsc::Receiver<bool>>>>,
}

impl Read for CutReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(gate) = &self.gate {
            match gate.lock().unwrap().recv() {
                Ok(true) => {}
                _ => return Err(std::io::Error::other("the link went silent")),
            }
        }
        let so_far = self.yielded.load(Ordering::SeqCst);
        let mut cuts = self.cuts.lock().unwrap();
        let room = match cuts.first() {
            Some(&c) if c <= so_far => {
                cuts.remove(0);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "cut",
                ));
            }
            Some(&c) => (c - so_far) as usize,
            None => usize::MAX,
        };
        let len = buf.len().min(room).min(64 * 1024);
        let n = self.inner.read(&mut buf[..len])?;
        self.yielded.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

impl CutDirect {
    fn wrap(&self, r: RangedBlobStream) -> RangedBlobStream {
        self.opened_at.lock().unwrap().push(r.start);
        RangedBlobStream {
            start: r.start,
            stream: BlobStream {
                reader: Box::new(CutReader {
                    inner: r.stream.reader,
                    yielded: self.yielded.clone(),
                    cuts: self.cuts.clone(),
                    gate: self.gate.clone(),
                }),
                ..r.stream
            },
        }
    }
}

impl PrimarySource for CutDirect {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.inner.events_after(after_id, limit)
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids)
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        self.inner.max_event_id()
    }
    fn model_ids(&self, r: &str, range: RangeInclusive<i64>) -> Result<Vec<i64>, SourceError> {
        self.inner.model_ids(r, range)
    }
    fn max_model_id(&self, r: &str) -> Result<Option<i64>, SourceError> {
        self.inner.max_model_id(r)
    }
    fn primary_checksums(
        &self,
        r: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        self.inner.primary_checksums(r, ids)
    }
    fn blob_path(&self, r: &str, id: i64) -> Result<Option<String>, SourceError> {
        self.inner.blob_path(r, id)
    }
    fn open_blob(&self, r: &str, id: i64) -> Result<BlobStream, SourceError> {
        let path = self.inner.blob_path(r, id)?.unwrap();
        self.open_blob_at(r, id, &BlobPath::new(&path).unwrap())
    }
    fn open_blob_at(&self, r: &str, id: i64, path: &BlobPath) -> Result<BlobStream, SourceError> {
        Ok(self.open_blob_from(r, id, path, 0)?.stream)
    }
    fn open_blob_from(
        &self,
        r: &str,
        id: i64,
        path: &BlobPath,
        offset: u64,
    ) -> Result<RangedBlobStream, SourceError> {
        Ok(self.wrap(self.inner.open_blob_from(r, id, path, offset)?))
    }
}

fn direct_secondary(
    dir: &Path,
    primary: &Primary,
    cuts: Vec<u64>,
    gate: Option<mpsc::Receiver<bool>>,
) -> (
    Arc<Secondary>,
    Arc<LocalBlobStore>,
    ManualClock,
    Arc<CutDirect>,
) {
    let config = SecondaryConfig::default().idle_sleep(Duration::from_millis(10));
    direct_secondary_with(dir, primary, cuts, gate, config)
}

/// [`direct_secondary`] with `config`.
fn direct_secondary_with(
    dir: &Path,
    primary: &Primary,
    cuts: Vec<u64>,
    gate: Option<mpsc::Receiver<bool>>,
    config: SecondaryConfig,
) -> (
    Arc<Secondary>,
    Arc<LocalBlobStore>,
    ManualClock,
    Arc<CutDirect>,
) {
    let tracking = geo_node::cli::open_secondary_db(
        &dir.join("tracking-direct.sqlite3").display().to_string(),
        4,
    )
    .unwrap();
    let store = Arc::new(LocalBlobStore::new(dir.join("secondary-direct")).unwrap());
    let source = Arc::new(CutDirect {
        inner: DirectSource::new(primary.db.clone(), primary.store.clone()),
        yielded: Arc::new(AtomicU64::new(0)),
        cuts: Arc::new(Mutex::new(cuts)),
        gate: gate.map(|g| Arc::new(Mutex::new(g))),
        opened_at: Arc::new(Mutex::new(Vec::new())),
    });
    let (env, clock) = Env::manual(Utc::now(), 0);
    let sec = Arc::new(Secondary::new(
        tracking,
        source.clone(),
        store.clone(),
        env,
        config,
    ));
    (sec, store, clock, source)
}

#[test]
fn the_direct_source_resumes_by_seeking() {
    let size = 40 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let (doc, sum) = big_doc(&primary, "d/direct.bin", 4, size);
    primary.verify_all();
    let cuts = vec![size / 4, size / 2, size * 3 / 4];
    let (sec, store, clock, source) = direct_secondary(tmp.path(), &primary, cuts.clone(), None);
    let rounds = sync_until_synced(&sec, &clock, 10);
    assert_eq!(rounds, 3, "three cut attempts, then the one that finished");
    let yielded = source.yielded.load(Ordering::SeqCst);
    assert_eq!(
        yielded, size,
        "every byte read from the primary exactly once"
    );
    assert_eq!(
        *source.opened_at.lock().unwrap(),
        [0, cuts[0], cuts[1], cuts[2]],
        "each attempt started where the last one stopped"
    );
    assert_eq!(counts(&sec), (Some(1), Some(1), Some(0)));
    assert_eq!(
        checksum_file(store.root().join(&doc.path)).unwrap(),
        (sum, size)
    );
    assert!(temp_files(store.root()).is_empty());
}

/// Starts a sync pass on a thread of its own over a gated [`CutDirect`], and returns it with a
/// `step(minutes)` that lets one read through the gate, waits for it, then moves the clock.
fn gated_pass<'a>(
    sec: &Arc<Secondary>,
    source: &'a CutDirect,
    permit: &'a mpsc::Sender<bool>,
    clock: &'a ManualClock,
) -> (std::thread::JoinHandle<usize>, impl Fn(i64) + 'a) {
    let syncing = {
        let sec = sec.clone();
        std::thread::spawn(move || sec.sync_pass().unwrap())
    };
    let step = move |minutes: i64| {
        let before = source.yielded.load(Ordering::SeqCst);
        permit.send(true).unwrap();
        wait_for("a read", Duration::from_secs(10), || {
            source.yielded.load(Ordering::SeqCst) > before
        });
        clock.advance(TimeDelta::minutes(minutes));
    };
    (syncing, step)
}

/// A sync that keeps receiving bytes is never timed out, however long it has been running; one
/// that receives nothing for the no-progress timeout (5 min by default) fails.
#[test]
fn only_a_download_without_progress_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let bytes = data(9, 2 * MIB as usize);
    let doc = create_doc(&primary.db, primary.store.as_ref(), "t/slow.bin", &bytes);
    primary.verify_all();
    let (permit, gate) = mpsc::channel();
    let (sec, store, clock, source) = direct_secondary(tmp.path(), &primary, vec![], Some(gate));
    assert_eq!(sec.config().sync_timeout, TimeDelta::minutes(5));
    sec.cursor_pass().unwrap();
    let (syncing, step) = gated_pass(&sec, &source, &permit, &clock);
    let started = |sec: &Secondary| {
        let status = sec.status().unwrap();
        status[0].1.synced_count == Some(0) && status[0].1.failed_count == Some(0)
    };
    // Bytes keep coming every 4 minutes for 20 minutes: never timed out.
    for _ in 0..5 {
        step(4);
        assert_eq!(sec.timeouts_pass().unwrap(), 0);
        assert!(started(&sec));
    }
    // Then silence: 4 minutes is not yet a timeout, 6 are.
    assert_eq!(sec.timeouts_pass().unwrap(), 0);
    clock.advance(TimeDelta::minutes(2));
    assert_eq!(sec.timeouts_pass().unwrap(), 1);
    let status = sec.status().unwrap();
    assert_eq!(status[0].1.failed_count, Some(1));
    // The stalled read ends (the link is dropped); nothing is stored as synced.
    permit.send(false).unwrap();
    drop(step);
    drop(permit);
    syncing.join().unwrap();
    assert_eq!(counts(&sec).0, Some(0));
    assert!(!store.root().join(&doc.path).exists());
    let _ = (ReplicationState::Failed, VerificationState::Pending);
}

/// A row a pass claimed, waiting behind a long download that keeps receiving bytes, is not
/// timed out: it is judged by its pass's progress, not by its claim time. When the pass goes
/// silent, the queued row fails with the download.
#[test]
fn a_row_queued_behind_a_progressing_download_is_not_timed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    for i in 0..2 {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("q/{i}.bin"),
            &data(i, 2 * MIB as usize),
        );
    }
    primary.verify_all();
    let (permit, gate) = mpsc::channel();
    let config = SecondaryConfig::default()
        .idle_sleep(Duration::from_millis(10))
        .sync_capacity(1);
    let (sec, _store, clock, source) =
        direct_secondary_with(tmp.path(), &primary, vec![], Some(gate), config);
    sec.cursor_pass().unwrap();
    let (syncing, step) = gated_pass(&sec, &source, &permit, &clock);
    // One download at a time: the first receives bytes every 4 minutes for 20 minutes while
    // the second waits, claimed 20 minutes ago.
    for _ in 0..5 {
        step(4);
        assert_eq!(sec.timeouts_pass().unwrap(), 0, "a queued row timed out");
    }
    // Then silence for 6 minutes: the download and the row queued behind it fail.
    clock.advance(TimeDelta::minutes(6));
    assert_eq!(sec.timeouts_pass().unwrap(), 2);
    drop(step);
    drop(permit);
    syncing.join().unwrap();
    assert_eq!(counts(&sec).0, Some(0));
}
