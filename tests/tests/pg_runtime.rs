//! The runtime scenarios only PostgreSQL can run, on a real server (`GEO_TEST_DATABASE_URL`;
//! `.ci/run` starts one with `scripts/pg-test-server`), with the same fixture as every other
//! scenario ([`Sites`] on [`Backend::Postgres`]). Everything that runs on both backends is in
//! `runtime.rs`.
//!
//! 1. Concurrency: several `Secondary` instances (threads) and several worker processes
//!    (`geo-test-worker`, one killed with SIGKILL mid-sync) on one tracking database never
//!    download one record at the same time and lose no claim (`FOR UPDATE SKIP LOCKED`); two
//!    log cursors on one tracking database apply each event once; several `PrimaryVerifier`s
//!    on one primary never checksum one record twice.
//! 2. Gap tracking under real concurrency: 10,240 events from 32 writers whose transactions
//!    commit out of id order, with the log cursor running all along.
//! 3. `#[ignore]`d figures: B5 (backfill of 1M rows) and B6 (cursor events/s) on PostgreSQL —
//!    `cargo test -p geo-tests --features pg-suite --test pg_runtime -- --ignored --nocapture`.

#![cfg(feature = "pg-suite")]

mod sites;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::Utc;
use diesel::prelude::*;
use geo_diesel::cursor::load_state;
use geo_diesel::geo_core::blob_store::{
    BlobError, BlobPath, BlobReader, BlobStore, LocalBlobStore, Written,
};
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::registry;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_diesel::{publish_created, publish_updated};
use geo_tests::source::{Events, HookedReader, Intercepted, Interceptor, Opened};
use geo_tests::worker::{LogLine, WorkerLog, WorkerOptions};
use geo_tests::{Backend, checksum, data, sum, wait_until};
use sites::state::*;
use sites::{Sites, exec, gd, wd};
use widgets::{Gadget, Widget, app, gadgets, widgets as widgets_table};

/// Both sites on the PostgreSQL server.
fn sites(config: SecondaryConfig) -> Sites {
    Sites::open(Backend::Postgres, config, 0)
}

// ---------------------------------------------------------------------------------------------
// 1. concurrency: several workers on one database
// ---------------------------------------------------------------------------------------------

/// What the watching test doubles saw: downloads (or checksums) in flight per record, how
/// often each record was started, and every overlap.
#[derive(Debug, Default)]
struct Watch {
    active: HashMap<(String, i64), usize>,
    starts: BTreeMap<(String, i64), usize>,
    overlaps: Vec<(String, i64)>,
    in_flight: usize,
    max_in_flight: usize,
}

impl Watch {
    fn start(&mut self, key: (String, i64)) {
        let active = self.active.entry(key.clone()).or_default();
        *active += 1;
        if *active > 1 {
            self.overlaps.push(key.clone());
        }
        *self.starts.entry(key).or_default() += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    fn end(&mut self, key: &(String, i64)) {
        if let Some(n) = self.active.get_mut(key) {
            *n -= 1;
        }
        self.in_flight -= 1;
    }
}

fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records every blob download in a [`Watch`] (from `open_blob` until the stream is dropped)
/// and slows each one down by `delay`.
struct WatchedDownloads {
    watch: Arc<Mutex<Watch>>,
    delay: StdDuration,
}

impl Interceptor for WatchedDownloads {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let key = (replicable.to_string(), id);
        lock(&self.watch).start(key.clone());
        match inner.open_blob(replicable, id) {
            Ok(blob) => {
                let (watch, delay) = (Arc::clone(&self.watch), self.delay);
                Ok(HookedReader::wrap(blob, |r| {
                    r.before_first_read(move || std::thread::sleep(delay))
                        .on_drop(move || lock(&watch).end(&key))
                }))
            }
            Err(e) => {
                lock(&self.watch).end(&key);
                Err(e)
            }
        }
    }
}

/// A blob store that records every `checksum` in a [`Watch`] (keyed by path) and slows it down.
struct WatchingStore {
    inner: Arc<LocalBlobStore>,
    watch: Arc<Mutex<Watch>>,
    delay: StdDuration,
}

impl BlobStore for WatchingStore {
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
        self.inner.open(path)
    }
    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError> {
        self.inner.write(path, reader, expected)
    }
    fn delete(&self, path: &BlobPath) -> Result<bool, BlobError> {
        self.inner.delete(path)
    }
    fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
        self.inner.size(path)
    }
    fn checksum(&self, path: &BlobPath) -> Result<(Checksum, u64), BlobError> {
        let key = (path.as_str().to_string(), 0);
        lock(&self.watch).start(key.clone());
        std::thread::sleep(self.delay);
        let out = self.inner.checksum(path);
        lock(&self.watch).end(&key);
        out
    }
    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError> {
        self.inner.absolute_path(path)
    }
}

/// Creates `widgets` widgets and `gadgets` gadgets through the application; returns the
/// expected download keys.
fn create_records(s: &Sites, widgets: u64, gadgets: u64) -> BTreeSet<(String, i64)> {
    let mut keys = BTreeSet::new();
    for i in 0..widgets {
        keys.insert(("widget".to_string(), s.widget(i, 200 + i as usize).0.id));
    }
    for i in 0..gadgets {
        keys.insert(("gadget".to_string(), s.gadget(i, 300 + i as usize).0.id));
    }
    keys
}

fn worker_config() -> SecondaryConfig {
    SecondaryConfig::default()
        .reclaim_on_start(false)
        .sync_batch(6)
        .sync_capacity(3)
        .idle_sleep(StdDuration::from_millis(10))
}

/// `n` secondaries on the tracking database of `s`, each with its own pool of `pool`
/// connections and the system clock, downloading through one source that records every
/// download in the returned [`Watch`] and slows each down by 3 ms.
fn watched_secondaries(s: &Sites, n: usize, pool: u32) -> (Arc<Mutex<Watch>>, Vec<Arc<Secondary>>) {
    let watch = Arc::new(Mutex::new(Watch::default()));
    let source: Arc<dyn PrimarySource> = Intercepted::new(
        s.direct(),
        WatchedDownloads {
            watch: Arc::clone(&watch),
            delay: StdDuration::from_millis(3),
        },
    );
    let workers = (0..n)
        .map(|_| {
            Arc::new(Secondary::new(
                s.tracking_database.pool(pool),
                Arc::clone(&source),
                s.secondary_store.clone(),
                Env::system(),
                worker_config(),
            ))
        })
        .collect();
    (watch, workers)
}

/// Several `Secondary` instances, each with its own pool and every worker thread running, on
/// one tracking database: the scheduler's `FOR UPDATE SKIP LOCKED` claims hand each record to
/// exactly one of them.
#[test]
fn secondaries_on_one_tracking_database_never_download_one_record_at_once() {
    let s = sites(SecondaryConfig::default());
    let keys = create_records(&s, 150, 50);
    s.verifier.run_until_idle(20).unwrap();
    while s.secondary.cursor_pass().unwrap().read > 0 {}
    assert_eq!(s.synced_and_total(), (0, 200));

    let (watch, workers) = watched_secondaries(&s, 4, 4);
    let handles: Vec<_> = workers.iter().map(|w| w.spawn().unwrap()).collect();
    wait_until(StdDuration::from_secs(60), "every row synced", || {
        s.synced_and_total() == (200, 200)
    });
    drop(handles);

    let watch = lock(&watch);
    assert!(watch.overlaps.is_empty(), "overlaps: {:?}", watch.overlaps);
    assert_eq!(watch.starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "downloaded more than once: {twice:?}");
    let busy = workers
        .iter()
        .filter(|w| w.counters().synced.load(Ordering::Relaxed) > 0)
        .count();
    assert!(busy >= 2, "only {busy} worker(s) synced anything");
    assert!(watch.max_in_flight > 1, "no downloads ran concurrently");
    let total: u64 = workers
        .iter()
        .map(|w| w.counters().synced.load(Ordering::Relaxed))
        .sum();
    assert_eq!(total, 200);
    // Downloads matched the primary's checksums, so every row is verified too.
    let mut conn = s.t();
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut conn)
            .unwrap()
            .verified,
        150
    );
    assert_eq!(
        registry::Registry::of(gd())
            .counts(&mut conn)
            .unwrap()
            .verified,
        50
    );
    s.assert_files_identical();
}

/// The same with records created while the workers run: every worker runs its own log cursor
/// and backfill too, as separate processes started with `Secondary::spawn` do.
#[test]
fn secondaries_running_every_worker_while_records_are_created_download_each_record_once() {
    let s = sites(SecondaryConfig::default());
    let (watch, workers) = watched_secondaries(&s, 3, 5);
    let handles: Vec<_> = workers.iter().map(|w| w.spawn().unwrap()).collect();
    let keys = create_records(&s, 90, 30);
    wait_until(StdDuration::from_secs(60), "every row synced", || {
        s.synced_and_total() == (120, 120)
    });
    // Let the cursors and backfills run a little longer: a late re-application would show.
    std::thread::sleep(StdDuration::from_millis(500));
    drop(handles);

    let watch = lock(&watch);
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        watch.overlaps.is_empty() && twice.is_empty(),
        "overlapping downloads: {:?}; downloaded more than once: {twice:?}",
        watch.overlaps
    );
    assert_eq!(watch.starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    assert_eq!(s.synced_and_total(), (120, 120));
}

/// A wait that gives up after `limit`: the gate of a test double.
#[derive(Default)]
struct Flag(Mutex<bool>, Condvar);

impl Flag {
    fn set(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.1.notify_all();
    }

    fn wait(&self, limit: StdDuration) -> bool {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .1
            .wait_timeout_while(guard, limit, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// `events_after` announces itself and then waits (at most 5 s) for a go.
struct GatedEvents {
    reading: Arc<Flag>,
    go: Arc<Flag>,
}

impl Interceptor for GatedEvents {
    fn events_after(&self, inner: &dyn PrimarySource, after_id: i64, limit: usize) -> Events {
        self.reading.set();
        self.go.wait(StdDuration::from_secs(5));
        inner.events_after(after_id, limit)
    }
}

/// Two log cursors on one tracking database (two worker processes): cursor B has read the
/// cursor position and is reading events when cursor A applies the same batch, and the rows
/// are synced; B's pass must not apply the batch again (which would send every synced row
/// back to `pending` and download it again).
#[test]
fn two_log_cursors_racing_on_one_tracking_database_apply_each_event_once() {
    let s = sites(SecondaryConfig::default());
    let keys = create_records(&s, 20, 0);
    let (reading, go) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
    let b = s.new_secondary(
        Intercepted::new(
            s.direct(),
            GatedEvents {
                reading: Arc::clone(&reading),
                go: Arc::clone(&go),
            },
        ),
        SecondaryConfig::default(),
    );
    let a = &s.secondary;
    std::thread::scope(|scope| {
        let b_pass = scope.spawn(|| b.cursor_pass());
        assert!(
            reading.wait(StdDuration::from_secs(10)),
            "cursor B never read"
        );
        a.cursor_pass().unwrap();
        while a.sync_pass().unwrap() > 0 {}
        go.set();
        b_pass.join().expect("cursor B").unwrap();
    });
    while a.sync_pass().unwrap() > 0 {}

    let applied = a.cursor().counters.applied.load(Ordering::Relaxed)
        + b.cursor().counters.applied.load(Ordering::Relaxed);
    let downloads = a.counters().synced.load(Ordering::Relaxed);
    assert_eq!(
        (applied, downloads),
        (keys.len() as u64, keys.len() as u64),
        "each of the {} events must be applied once and each record downloaded once",
        keys.len()
    );
    assert_eq!(s.synced_and_total(), (20, 20));
}

/// `open_blob` of one record announces itself and then waits (at most 10 s) for a release: a
/// download held in flight.
struct HeldDownload {
    target: (String, i64),
    entered: Arc<Flag>,
    release: Arc<Flag>,
}

impl Interceptor for HeldDownload {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let blob = inner.open_blob(replicable, id)?;
        if (replicable, id) == (self.target.0.as_str(), self.target.1) {
            self.entered.set();
            self.release.wait(StdDuration::from_secs(10));
        }
        Ok(blob)
    }
}

/// Worker A is downloading a record when the record is updated and the cursor applies the
/// event; worker B, another process on the same tracking database, runs its scheduler while
/// A's download is still in flight. The two must not sync the record at the same time (the row
/// stays `started`, with a moved claim token), A's stale download must not be recorded, and the
/// row ends synced with the new content at the record's path.
#[test]
fn record_updated_during_a_download_is_not_downloaded_by_a_second_worker_at_the_same_time() {
    let s = sites(SecondaryConfig::default());
    let (w, old) = s.widget(1, 50_000);
    s.secondary.cursor_pass().unwrap();
    let watch = Arc::new(Mutex::new(Watch::default()));
    let watched = |inner: Arc<dyn PrimarySource>| -> Arc<dyn PrimarySource> {
        Intercepted::new(
            inner,
            WatchedDownloads {
                watch: Arc::clone(&watch),
                delay: StdDuration::ZERO,
            },
        )
    };
    let (entered, release) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
    let a = s.new_secondary(
        Intercepted::new(
            watched(s.direct()),
            HeldDownload {
                target: ("widget".to_string(), w.id),
                entered: Arc::clone(&entered),
                release: Arc::clone(&release),
            },
        ),
        worker_config(),
    );
    let b = s.new_secondary(watched(s.direct()), worker_config());
    let new = data(2, 60_000);
    std::thread::scope(|scope| {
        let a_pass = scope.spawn(|| a.sync_pass());
        assert!(
            entered.wait(StdDuration::from_secs(10)),
            "A never downloaded"
        );
        app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w, &new).unwrap();
        s.secondary.cursor_pass().unwrap();
        assert_eq!(s.reg(wd(), w.id).unwrap().state, STARTED);
        // B's scheduler runs while A's download is in flight.
        let b_synced = b.sync_pass().unwrap();
        release.set();
        a_pass.join().expect("worker A").unwrap();
        assert_eq!(b_synced, 0, "B downloaded a record A was downloading");
    });
    assert!(lock(&watch).overlaps.is_empty(), "{:?}", lock(&watch));
    // Whoever syncs it, the row ends synced with the new content at the path.
    while s.secondary.sync_pass().unwrap() > 0 {}
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, SYNCED);
    assert_eq!(row.verification_checksum, Some(sum(&new)));
    assert_ne!(sum(&old), sum(&new));
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&new)));
}

/// Several primary verification workers on one primary database: each record is checksummed
/// by exactly one of them, once, and every record ends verified with one `checksum_succeeded`.
#[test]
fn primary_verifiers_on_one_database_never_checksum_one_record_twice() {
    let s = sites(SecondaryConfig::default());
    let keys = create_records(&s, 150, 60);
    let watch = Arc::new(Mutex::new(Watch::default()));
    let store: Arc<dyn BlobStore> = Arc::new(WatchingStore {
        inner: s.primary_store.clone(),
        watch: Arc::clone(&watch),
        delay: StdDuration::from_millis(2),
    });
    let verifiers: Vec<Arc<PrimaryVerifier>> = (0..3)
        .map(|_| {
            Arc::new(PrimaryVerifier::new(
                s.primary_database.pool(3),
                Arc::clone(&store),
                Env::system(),
                PrimaryConfig::default()
                    .verification_batch(7)
                    .verification_threads(2)
                    .idle_sleep(StdDuration::from_millis(10)),
            ))
        })
        .collect();
    let handles: Vec<_> = verifiers.iter().map(|v| v.spawn().unwrap()).collect();
    let verified = || {
        let mut conn = s.p();
        [wd(), gd()]
            .into_iter()
            .map(|d| {
                geo_diesel::primary::verification_groups(&mut conn, d)
                    .unwrap()
                    .into_iter()
                    .filter(|(state, _)| *state == V_SUCCEEDED)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum::<u64>()
    };
    wait_until(StdDuration::from_secs(60), "every record verified", || {
        verified() == 210
    });
    drop(handles);

    let watch = lock(&watch);
    assert!(watch.overlaps.is_empty(), "overlaps: {:?}", watch.overlaps);
    assert_eq!(watch.starts.len(), keys.len());
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "checksummed more than once: {twice:?}");
    assert!(watch.max_in_flight > 1, "no checksums ran concurrently");
    let busy = verifiers
        .iter()
        .filter(|v| v.checksummed.load(Ordering::Relaxed) > 0)
        .count();
    assert!(busy >= 2, "only {busy} verifier(s) did any work");
    let total: u64 = verifiers
        .iter()
        .map(|v| v.checksummed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(total, 210);
    assert_eq!(s.event_count("checksum_succeeded"), 210);
    let dup = s.primary_number(
        "SELECT COUNT(*)::BIGINT AS n FROM (SELECT replicable_name, model_record_id FROM geo_events \
         WHERE event_name = 'checksum_succeeded' GROUP BY 1, 2 HAVING COUNT(*) > 1) d",
    );
    assert_eq!(dup, 0);
}

// ---------------------------------------------------------------------------------------------
// 1b. separate worker processes; one dies with SIGKILL mid-sync
// ---------------------------------------------------------------------------------------------

/// Replays the log: downloads of one record in flight in two processes at once, and how many
/// times each record was started by each process.
#[allow(clippy::type_complexity)]
fn replay(lines: &[LogLine]) -> (Vec<String>, BTreeMap<(String, i64), Vec<u32>>) {
    let mut active: HashMap<(String, i64), BTreeSet<u32>> = HashMap::new();
    let mut starts: BTreeMap<(String, i64), Vec<u32>> = BTreeMap::new();
    let mut overlaps = Vec::new();
    for line in lines {
        match line {
            LogLine::Start(r, i, p) => {
                let set = active.entry((r.clone(), *i)).or_default();
                if !set.is_empty() {
                    overlaps.push(format!("{r} {i}: started by {p} while {set:?} had it"));
                }
                set.insert(*p);
                starts.entry((r.clone(), *i)).or_default().push(*p);
            }
            LogLine::End(r, i, p) => {
                if let Some(set) = active.get_mut(&(r.clone(), *i)) {
                    set.remove(p);
                }
            }
            LogLine::Killed(p) => {
                for set in active.values_mut() {
                    set.remove(p);
                }
            }
            LogLine::Ready(..) | LogLine::Stopped(_) => {}
        }
    }
    (overlaps, starts)
}

/// Three worker processes (`geo-test-worker`, each running `Secondary::spawn`) on one tracking
/// database; the first is killed with SIGKILL while a download is in flight. The others never
/// download a record the victim (or another live worker) is downloading, and once the
/// victim's claims time out they take them over: every row ends synced.
#[test]
fn worker_processes_share_the_work_and_finish_the_claims_of_a_killed_one() {
    let s = sites(SecondaryConfig::default());
    let keys = create_records(&s, 90, 30);
    s.verifier.run_until_idle(20).unwrap();
    while s.secondary.cursor_pass().unwrap().read > 0 {}
    assert_eq!(s.synced_and_total(), (0, 120));

    let log_path = s.dir.path().join("workers.log");
    let stop = s.dir.path().join("stop");
    std::fs::write(&log_path, b"").unwrap();
    let options = WorkerOptions {
        warp_base_ms: Some(Utc::now().timestamp_millis()),
        // 30× time: the 60 s sync timeout is 2 s, the 16 s retry half a second.
        warp_factor: 30,
        sync_timeout_s: 60,
        download_delay_ms: 40,
        sync_batch: 4,
        sync_capacity: 2,
        ..WorkerOptions::new(
            s.tracking_database.url(),
            s.primary_database.url(),
            s.primary_store.root(),
            s.secondary_store.root(),
            &log_path,
            &stop,
        )
    };
    let spawn_worker = |n: usize| {
        let out = std::fs::File::create(s.dir.path().join(format!("worker-{n}.err"))).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_geo-test-worker"))
            .args(options.args())
            .stdout(std::process::Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start geo-test-worker")
    };
    let log = || LogLine::read_all(&log_path);

    // The victim starts first; once it downloads, the others start; then it is killed while a
    // download of its is in flight.
    let mut victim = spawn_worker(0);
    let vpid = victim.id();
    let open_download = |lines: &[LogLine]| {
        let mut open = BTreeSet::new();
        for l in lines {
            match l {
                LogLine::Start(r, i, p) if *p == vpid => {
                    open.insert((r.clone(), *i));
                }
                LogLine::End(r, i, p) if *p == vpid => {
                    open.remove(&(r.clone(), *i));
                }
                _ => {}
            }
        }
        open
    };
    wait_until(
        StdDuration::from_secs(30),
        "the victim's first download",
        || !open_download(&log()).is_empty(),
    );
    let mut others: Vec<_> = (1..3).map(spawn_worker).collect();
    wait_until(
        StdDuration::from_secs(30),
        "the other workers' first downloads",
        || {
            let lines = log();
            let started: BTreeSet<u32> = lines
                .iter()
                .filter_map(|l| match l {
                    LogLine::Start(_, _, p) => Some(*p),
                    _ => None,
                })
                .collect();
            started.len() == 3
        },
    );
    wait_until(
        StdDuration::from_secs(10),
        "a victim download in flight",
        || !open_download(&log()).is_empty(),
    );
    victim.kill().expect("SIGKILL the victim");
    victim.wait().expect("reap the victim");
    WorkerLog::open(&log_path)
        .unwrap()
        .append(&LogLine::Killed(vpid));

    let finished = Instant::now();
    let mut outcome = Ok(());
    while s.synced_and_total() != (120, 120) {
        if finished.elapsed() > StdDuration::from_secs(60) {
            outcome = Err(s.synced_and_total());
            break;
        }
        std::thread::sleep(StdDuration::from_millis(50));
    }
    std::fs::write(&stop, b"").unwrap();
    for child in &mut others {
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() > StdDuration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(StdDuration::from_millis(20));
        }
    }
    let stderr: String = (0..3)
        .map(|n| std::fs::read_to_string(s.dir.path().join(format!("worker-{n}.err"))).unwrap())
        .collect();
    assert_eq!(
        outcome,
        Ok(()),
        "not every row synced (synced, total); worker stderr:\n{stderr}"
    );

    let lines = log();
    let (overlaps, starts) = replay(&lines);
    assert!(overlaps.is_empty(), "overlapping downloads: {overlaps:#?}");
    assert_eq!(starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    // Records the victim never touched were downloaded exactly once; records it had started
    // at most once more, by a survivor that took over its timed-out claim.
    let mut taken_over = 0;
    for (key, pids) in &starts {
        let by_victim = pids.iter().filter(|p| **p == vpid).count();
        let by_others = pids.len() - by_victim;
        assert!(
            by_victim <= 1,
            "{key:?} started {by_victim} times by the victim"
        );
        if by_victim == 0 {
            assert_eq!(by_others, 1, "{key:?} downloaded by {pids:?}");
        } else {
            assert!(by_others <= 1, "{key:?} downloaded by {pids:?}");
            taken_over += by_others;
        }
    }
    assert!(
        taken_over >= 1,
        "no claim of the killed worker was taken over by a survivor"
    );
    let stopped = lines
        .iter()
        .filter(|l| matches!(l, LogLine::Stopped(_)))
        .count();
    assert_eq!(
        stopped, 2,
        "the two survivors stop cleanly; stderr:\n{stderr}"
    );
    assert_eq!(s.synced_and_total(), (120, 120));
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 2. gap tracking: concurrent writers committing out of id order
// ---------------------------------------------------------------------------------------------

/// A tiny xorshift generator (the tests crate has no `rand`).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one writer thread changed on the primary: events published, records created and
/// deleted.
#[derive(Debug, Default)]
struct Changes {
    events: usize,
    created: usize,
    deleted: usize,
}

/// One writer: `ops` transactions on its own connection, each writing a record change and its
/// event, then sleeping 0–20 ms before the commit, so a transaction holding event id N often
/// commits after N+1 was read. Creates widgets and gadgets, updates some, deletes some.
fn writer(s: &Sites, n: u64, ops: usize) -> Changes {
    let mut conn = PgConnection::establish(s.primary_database.url()).expect("writer connection");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (n + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let store = s.primary_store.as_ref();
    let mut live_w: Vec<Widget> = Vec::new();
    let mut live_g: Vec<Gadget> = Vec::new();
    let mut out = Changes::default();
    // The files are test setup, not the system under test: written without the store's fsyncs.
    let put = |path: &str, bytes: &[u8]| {
        let full = store.root().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, bytes).expect("write file");
    };
    for k in 0..ops {
        let delay = StdDuration::from_millis(rng.below(21));
        let widget = k % 2 == 0;
        if matches!(k % 10, 7 | 9) && !live_w.is_empty() {
            // Delete the oldest widget (its `created` committed long ago).
            let w = live_w.remove(0);
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                // Widgets publish through their table's triggers (`events = "triggers"`).
                diesel::delete(widgets_table::table.find(w.id)).execute(c)?;
                std::thread::sleep(delay);
                Ok(())
            })
            .expect("delete transaction");
            store
                .delete(&BlobPath::new(&w.file_path).unwrap())
                .expect("delete file");
            out.deleted += 1;
        } else if matches!(k % 10, 4 | 5 | 8) && !live_g.is_empty() {
            // Update a random gadget: new content, then `updated`.
            let g = &live_g[rng.below(live_g.len() as u64) as usize];
            put(
                &g.blob_key,
                &data(rng.below(u64::MAX), 64 + rng.below(200) as usize),
            );
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                publish_updated(c, g).expect("publish updated");
                std::thread::sleep(delay);
                Ok(())
            })
            .expect("update transaction");
        } else {
            let bytes = data(n * 1_000_000 + k as u64, 64 + rng.below(200) as usize);
            let path = format!("gap/{n}/{}/{k}.bin", if widget { "w" } else { "g" });
            put(&path, &bytes);
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                if widget {
                    let w: Widget = diesel::insert_into(widgets_table::table)
                        .values((
                            widgets_table::file_path.eq(&path),
                            widgets_table::name.eq("gap"),
                        ))
                        .returning(Widget::as_returning())
                        .get_result(c)?;
                    std::thread::sleep(delay);
                    live_w.push(w);
                } else {
                    let g: Gadget = diesel::insert_into(gadgets::table)
                        .values((gadgets::blob_key.eq(&path), gadgets::label.eq("gap")))
                        .returning(Gadget::as_returning())
                        .get_result(c)?;
                    publish_created(c, &g).expect("publish created");
                    std::thread::sleep(delay);
                    live_g.push(g);
                }
                Ok(())
            })
            .expect("create transaction");
            out.created += 1;
        }
        out.events += 1;
    }
    out
}

/// At least 10,000 events from 32 concurrent writers whose transactions commit out of id
/// order, with the log cursor running all along: every event is applied exactly once, the
/// registries hold exactly the live records, every gap detected is filled, and the cursor ends
/// at the last event with no gap open.
#[test]
fn out_of_order_commits_from_concurrent_writers_are_all_applied_exactly_once() {
    const WRITERS: u64 = 32;
    const OPS: usize = 320;
    let s = sites(SecondaryConfig::default());
    let writers_done = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    let max_open_gaps = AtomicUsize::new(0);
    let started = Instant::now();
    let changes: Changes = std::thread::scope(|scope| {
        let cursor = scope.spawn(|| {
            loop {
                // Read before the pass: a pass that started before the last commit proves
                // nothing about the end of the log.
                let writers_finished = writers_done.load(Ordering::Acquire);
                let pass = s.secondary.cursor_pass().expect("cursor pass");
                passes.fetch_add(1, Ordering::Relaxed);
                let state = load_state(&mut s.t()).expect("cursor state");
                max_open_gaps.fetch_max(state.gaps.len(), Ordering::Relaxed);
                if writers_finished && pass.read == 0 && state.gaps.is_empty() {
                    break;
                }
                assert!(
                    started.elapsed() < StdDuration::from_secs(120),
                    "the cursor never caught up: {state:?}"
                );
                if pass.read == 0 {
                    std::thread::sleep(StdDuration::from_millis(5));
                }
            }
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let s = &s;
                scope.spawn(move || writer(s, n, OPS))
            })
            .collect();
        let mut changes = Changes::default();
        for w in writers {
            let c = w.join().expect("writer");
            changes.events += c.events;
            changes.created += c.created;
            changes.deleted += c.deleted;
        }
        writers_done.store(true, Ordering::Release);
        cursor.join().expect("cursor");
        changes
    });
    let events = changes.events;
    let writing = started.elapsed();

    let total = s.primary_number("SELECT COUNT(*)::BIGINT AS n FROM geo_events");
    let max_id = s.primary_number("SELECT MAX(id)::BIGINT AS n FROM geo_events");
    assert_eq!(total as usize, events);
    assert!(events >= 10_000, "{events} events");
    assert_eq!(
        max_id, total,
        "no event id was skipped (no transaction rolled back)"
    );

    let state = load_state(&mut s.t()).unwrap();
    assert_eq!(
        state.last_event_id, max_id,
        "the cursor ends at the last event"
    );
    assert!(state.gaps.is_empty(), "gaps left open: {:?}", state.gaps);
    let c = &s.secondary.cursor().counters;
    let (applied, detected, filled, expired) = (
        c.applied.load(Ordering::Relaxed),
        c.gaps_detected.load(Ordering::Relaxed),
        c.gaps_filled.load(Ordering::Relaxed),
        c.gaps_expired.load(Ordering::Relaxed),
    );
    eprintln!(
        "{events} events from {WRITERS} writers in {writing:?}; {} cursor passes; gaps detected \
         {detected}, filled {filled}, at most {} open at once",
        passes.load(Ordering::Relaxed),
        max_open_gaps.load(Ordering::Relaxed)
    );
    assert_eq!(applied, events as u64, "every event applied exactly once");
    assert_eq!(c.skipped(), 0);
    assert!(
        detected > 0,
        "no commit was ever out of order: the test proves nothing"
    );
    assert_eq!(filled, detected, "every gap filled");
    assert_eq!(expired, 0);

    // The registries hold exactly the live records, each once, all pending.
    for d in [wd(), gd()] {
        assert_eq!(s.tracked(d), s.primary_ids(d), "{}", d.name);
    }
    let (w, g) = (
        registry::Registry::of(wd()).counts(&mut s.t()).unwrap(),
        registry::Registry::of(gd()).counts(&mut s.t()).unwrap(),
    );
    assert_eq!((w.pending, g.pending), (w.registry, g.registry));
    assert_eq!(
        (w.registry + g.registry) as usize,
        changes.created - changes.deleted,
        "{changes:?}"
    );

    // Pending → synced, with the primary's content; nothing moves back afterwards.
    let syncing = Instant::now();
    while s.secondary.sync_pass().unwrap() > 0 {}
    eprintln!(
        "synced {} rows in {:?}",
        w.registry + g.registry,
        syncing.elapsed()
    );
    assert_eq!(
        s.synced_and_total(),
        (w.registry + g.registry, w.registry + g.registry)
    );
    assert_eq!(s.secondary.cursor_pass().unwrap().read, 0);
    assert_eq!(
        s.synced_and_total(),
        (w.registry + g.registry, w.registry + g.registry)
    );
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 3. figures: B5 and B6 on PostgreSQL
// ---------------------------------------------------------------------------------------------

/// B5 (backfill of 1M rows) and B6 (log-cursor events per second) on this PostgreSQL server.
/// Aims: backfill of 1M ≤ 8 s; cursor ≥ 20,000 events/s. Prints the figures.
#[test]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
fn figures_b5_backfill_and_b6_cursor_on_postgres() {
    const B5_ROWS: i64 = 1_000_000;
    const B6_EVENTS: i64 = 200_000;
    let s = sites(SecondaryConfig::default());
    exec(
        &mut s.p(),
        &format!(
            "INSERT INTO widgets (file_path, name) SELECT 'b5/' || g || '.bin', 'b5' \
             FROM generate_series(1, {B5_ROWS}) g; ANALYZE widgets;"
        ),
    );
    for batch in [10_000i64, 50_000] {
        exec(&mut s.t(), "TRUNCATE widget_registry, gadget_registry");
        let sec = s.new_secondary(s.direct(), SecondaryConfig::default().backfill_batch(batch));
        let t = Instant::now();
        let (created, removed) = sec.backfill_all().unwrap();
        let took = t.elapsed();
        assert_eq!((created, removed), (B5_ROWS as usize, 0));
        println!(
            "B5 PostgreSQL: backfill_all of {B5_ROWS} rows, backfill_batch {batch}: {:.2} s ({:.0} rows/s)",
            took.as_secs_f64(),
            B5_ROWS as f64 / took.as_secs_f64()
        );
    }

    // Where the time goes: reading the primary's ids, and inserting the rows (set-based, as
    // the backfill does); the floor is one INSERT … SELECT on the server.
    exec(&mut s.t(), "TRUNCATE widget_registry");
    let direct = s.direct();
    let t = Instant::now();
    let mut ids = Vec::with_capacity(B5_ROWS as usize);
    for from in (1..=B5_ROWS).step_by(10_000) {
        ids.extend(direct.model_ids("widget", from..=from + 9_999).unwrap());
    }
    let read = t.elapsed();
    let t = Instant::now();
    registry::Registry::of(wd())
        .insert_missing(&mut s.t(), &ids)
        .unwrap();
    let insert = t.elapsed();
    exec(&mut s.t(), "TRUNCATE widget_registry");
    let t = Instant::now();
    exec(
        &mut s.t(),
        &format!(
            "INSERT INTO widget_registry (widget_id) SELECT g FROM generate_series(1, {B5_ROWS}) g"
        ),
    );
    println!(
        "B5 PostgreSQL breakdown: reading 1M primary ids {:.2} s; registry::insert_missing of 1M ids {:.2} s; \
         floor (one INSERT … SELECT of 1M registry rows) {:.2} s",
        read.as_secs_f64(),
        insert.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    exec(
        &mut s.p(),
        &format!(
            "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) \
             SELECT 'widget', 'created', g, jsonb_build_object('model_record_id', g), now() \
             FROM generate_series(1, {B6_EVENTS}) g"
        ),
    );
    for batch in [1000usize, 5000] {
        exec(
            &mut s.t(),
            "TRUNCATE widget_registry, gadget_registry, geo_event_log_states, geo_event_log_gaps",
        );
        let sec = s.new_secondary(s.direct(), SecondaryConfig::default().cursor_batch(batch));
        let t = Instant::now();
        let mut read = 0;
        loop {
            let p = sec.cursor_pass().unwrap();
            read += p.read;
            if p.read == 0 {
                break;
            }
        }
        let took = t.elapsed();
        assert_eq!(read, B6_EVENTS as usize);
        println!(
            "B6 PostgreSQL: cursor_pass over {B6_EVENTS} created events, cursor_batch {batch}: {:.2} s ({:.0} events/s)",
            took.as_secs_f64(),
            B6_EVENTS as f64 / took.as_secs_f64()
        );
    }
}
