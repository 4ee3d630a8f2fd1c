//! Scale-out from the CLI with the real `widgets` binary: one `widgets primary` and three
//! `widgets secondary` processes on one PostgreSQL tracking database (a fresh database on the
//! server of `GEO_TEST_DATABASE_URL`; the test fails without it) sharing one blob directory.
//! One secondary is killed with SIGKILL in the middle of its syncs. The others take its claims
//! back after its lease lapses, and:
//!
//! - every record ends synced and verified, every file identical to the primary's;
//! - no record was downloaded by two processes at once (each secondary logs `download started`
//!   and `download finished` per record at debug level; the intervals are compared, the
//!   killed process's open ones ending at its death);
//! - the primary served at most 1.01 × records downloads (its own Prometheus counter of
//!   `retrieve` answers, and its bytes served): only the killed process's downloads in flight
//!   or finished but not yet recorded (at most twice its `--sync-capacity`) are repeated.
//!
//! Every file is larger than the batch limit (`MAX_BATCH_BLOB`, 64 KiB), so each download is one
//! `retrieve` request and no bytes travel in `retrieve_batch` answers.
//!
//! Run: `cargo test -p widgets --features widgets/pg-suite --test scale_out` (`.ci/run` does).

#![cfg(feature = "pg-suite")]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::{Connection, PgConnection, connection::SimpleConnection};
use geo_diesel::db::DbPool;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::registry::Registry;

mod common;
use common::{export, path, run, widgets};

/// Records on the primary: enough that 1 % is more than one process's in-flight downloads.
const RECORDS: usize = 1500;
/// Downloads in flight per secondary: what a killed one may leave half done.
const CAPACITY: usize = 4;
/// The lease period given to every secondary, in seconds.
const LEASE_SECS: u64 = 2;

/// A fresh database on the server of `GEO_TEST_DATABASE_URL`, dropped afterwards.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn fresh() -> PgDb {
        let admin = match std::env::var("GEO_TEST_DATABASE_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => panic!(
                "GEO_TEST_DATABASE_URL is not set: this test needs a PostgreSQL server. Start one \
                 with `eval \"export $(scripts/pg-test-server start)\"` (or run `.ci/run`)."
            ),
        };
        let name = format!(
            "geo_scale_out_{}_{}",
            std::process::id(),
            Utc::now().timestamp_subsec_nanos()
        );
        let mut conn = PgConnection::establish(&admin)
            .unwrap_or_else(|e| panic!("cannot connect to GEO_TEST_DATABASE_URL={admin}: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let authority = base.find("://").map_or(0, |i| i + 3);
        let base = match base[authority..].find('/') {
            Some(slash) => &base[..authority + slash],
            None => base,
        };
        let url = if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        };
        PgDb { admin, name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A node process (stderr to a file); killed on drop.
struct Node {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Node {
    fn start(args: &[&str], env: &[(&str, &str)], log: PathBuf, rust_log: &str) -> Node {
        let mut child = widgets()
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no output; log:\n{}", read(&log)))
            .unwrap();
        let url = line
            .split_once(" listening on ")
            .map(|(_, u)| u.to_owned())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // Keep reading stdout so the process never writes into a closed pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            addr: url.trim_start_matches("http://").to_owned(),
            log,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The sum of the samples of `metric` whose labels contain every one of `labels`.
fn metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A download seen in a secondary's log: its start and (unless the process died) its end.
#[derive(Debug, Clone, Copy)]
struct Interval {
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

/// The value of `key=` in a log line (quotes removed).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// Every widget download in one secondary's log, by model id, and the process's worker id.
fn downloads(log: &str) -> (BTreeMap<i64, Vec<Interval>>, Option<String>) {
    let mut out: BTreeMap<i64, Vec<Interval>> = BTreeMap::new();
    let mut worker = None;
    for raw in log.lines() {
        // Strip colour codes, should the subscriber print any.
        let line: String = {
            let mut s = String::new();
            let mut esc = false;
            for c in raw.chars() {
                match (esc, c) {
                    (false, '\u{1b}') => esc = true,
                    (true, 'm') => esc = false,
                    (true, _) => {}
                    (false, c) => s.push(c),
                }
            }
            s
        };
        let started = line.contains("download started");
        let finished = line.contains("download finished");
        if !(started || finished) || field(&line, "replicable") != Some("widget") {
            continue;
        }
        let ts = line.split_whitespace().next().unwrap();
        let at = DateTime::parse_from_rfc3339(ts)
            .unwrap_or_else(|e| panic!("timestamp {ts:?} in {line:?}: {e}"))
            .with_timezone(&Utc);
        let id: i64 = field(&line, "id").unwrap().parse().unwrap();
        worker = field(&line, "worker").map(str::to_owned).or(worker);
        let list = out.entry(id).or_default();
        if started {
            list.push(Interval {
                start: at,
                end: None,
            });
        } else {
            let open = list
                .iter_mut()
                .rev()
                .find(|i| i.end.is_none())
                .unwrap_or_else(|| panic!("finished without a start: {line}"));
            open.end = Some(at);
        }
    }
    (out, worker)
}

/// Deterministic bytes: 64 KiB and a little more, different for every record.
fn content(i: usize) -> Vec<u8> {
    let len = 64 * 1024 + 512 + (i * 37) % 2048;
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_secondaries_on_one_postgres_tracking_database_converge_without_double_downloads() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgDb::fresh();
    let keys = tmp.path().join("keys");
    let site = run(&["keys", "generate", "--append-to", path(&keys)]);
    let creds = [
        ("GEO_ACCESS_KEY", export(&site, "GEO_ACCESS_KEY")),
        ("GEO_SECRET", export(&site, "GEO_SECRET")),
    ];
    let creds: Vec<(&str, &str)> = creds.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // The primary's records, seeded through the application before the primary starts.
    let (pdb, pfiles, sfiles) = (
        tmp.path().join("p.sqlite3"),
        tmp.path().join("pf"),
        tmp.path().join("sf"),
    );
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    {
        let db = DbPool::connect(path(&pdb), 2).unwrap();
        let mut conn = db.get().unwrap();
        widgets::app::create_app_schema(&mut conn).unwrap();
        geo_diesel::run_migrations(&mut conn, geo_diesel::geo_core::Role::Primary).unwrap();
        let store = LocalBlobStore::new(&pfiles).unwrap();
        for i in 0..RECORDS {
            let file = format!("w/{:03}/{i:05}.bin", i % 97);
            let data = content(i);
            widgets::app::create_widget(&mut conn, &store, &format!("w{i}"), &file, &data).unwrap();
            expected.insert(file, data);
        }
    }
    let total_bytes: usize = expected.values().map(Vec::len).sum();
    let primary = Node::start(
        &[
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            path(&pdb),
            "--blob-dir",
            path(&pfiles),
            "--keys-file",
            path(&keys),
        ],
        &[],
        tmp.path().join("primary.log"),
        "warn",
    );
    let primary_url = format!("http://{}", primary.addr);
    let lease = LEASE_SECS.to_string();
    let capacity = CAPACITY.to_string();
    let secondary = |n: usize| {
        Node::start(
            &[
                "secondary",
                "--primary",
                &primary_url,
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &pg.url,
                "--blob-dir",
                path(&sfiles),
                "--idle-ms",
                "20",
                "--sync-capacity",
                &capacity,
                "--lease-period",
                &lease,
            ],
            &creds,
            tmp.path().join(format!("secondary-{n}.log")),
            "warn,geo_diesel::secondary=debug",
        )
    };
    let tracking = DbPool::connect(&pg.url, 2).unwrap();
    let d = <widgets::Widget as Replicable>::DESCRIPTOR;
    let counts = || {
        Registry::of(d)
            .counts(&mut tracking.get().unwrap())
            .unwrap_or_default()
    };

    // The victim starts first; the two others once it downloads.
    let mut victim = secondary(0);
    let finished_by = |log: &Path| read(log).matches("download finished").count();
    wait_until(
        "the victim's first downloads",
        Duration::from_secs(60),
        || finished_by(&victim.log) >= 20,
    );
    let others = [secondary(1), secondary(2)];
    wait_until(
        "downloads by every secondary",
        Duration::from_secs(60),
        || others.iter().all(|o| finished_by(&o.log) > 0),
    );
    let (_, victim_id) = downloads(&read(&victim.log));
    let victim_id = victim_id.expect("the victim's worker id");
    let held = || {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM widget_registry WHERE state = {} AND claimed_by = '{victim_id}'",
            geo_diesel::geo_core::ReplicationState::Started.as_i16()
        );
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = PgConnection::establish(&pg.url).unwrap();
        diesel::RunQueryDsl::load::<N>(diesel::sql_query(sql), &mut conn).unwrap()[0].n
    };
    // Mid-sync: the victim holds claims and most records are not synced yet.
    wait_until("the victim holding claims", Duration::from_secs(30), || {
        held() > 0
    });
    assert!(
        counts().synced < RECORDS as i64 / 2,
        "too late to kill mid-sync: {:?}",
        counts()
    );
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Utc::now();
    let stranded = held();
    eprintln!("killed the victim holding {stranded} claims");

    wait_until(
        "every record synced and verified",
        Duration::from_secs(120),
        || {
            let c = counts();
            c.synced == RECORDS as i64 && c.verified == RECORDS as i64
        },
    );
    assert_eq!(held(), 0, "the victim's claims were taken back");
    for (file, data) in &expected {
        let copy = std::fs::read(sfiles.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(copy == *data, "{file} differs from the primary's");
    }

    // No record in flight in two processes at once.
    let mut all: BTreeMap<i64, Vec<(usize, Interval)>> = BTreeMap::new();
    for (n, node) in [&victim, &others[0], &others[1]].into_iter().enumerate() {
        let (seen, _) = downloads(&read(&node.log));
        for (id, list) in seen {
            for mut i in list {
                if i.end.is_none() {
                    assert_eq!(n, 0, "a survivor's download of {id} never finished");
                    i.end = Some(killed_at);
                }
                all.entry(id).or_default().push((n, i));
            }
        }
    }
    assert_eq!(all.len(), RECORDS, "downloads logged for every record");
    let mut repeated = 0;
    for (id, list) in &all {
        repeated += list.len() - 1;
        // Only the killed process's work is done twice: its downloads in flight and those
        // finished but not yet recorded when it died.
        assert!(
            list.len() == 1 || (list.len() == 2 && list.iter().any(|(p, _)| *p == 0)),
            "widget {id} downloaded {} times: {list:?}",
            list.len()
        );
        for (x, (p, a)) in list.iter().enumerate() {
            for (q, b) in &list[x + 1..] {
                let overlap = a.start < b.end.unwrap() && b.start < a.end.unwrap();
                assert!(
                    !(overlap && p != q),
                    "widget {id} downloaded by secondaries {p} and {q} at once: {a:?} {b:?}"
                );
            }
        }
    }

    // The primary's count: its `retrieve` answers and its bytes served.
    let scrape = || get(&primary.addr, "/metrics");
    let mut text = scrape();
    wait_until(
        "the primary's metrics settle",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(500));
            let again = scrape();
            let same = metric(
                &again,
                "geo_http_requests_total",
                &["endpoint=\"retrieve\""],
            ) == metric(&text, "geo_http_requests_total", &["endpoint=\"retrieve\""]);
            text = again;
            same
        },
    );
    let served = metric(
        &text,
        "geo_http_requests_total",
        &["endpoint=\"retrieve\"", "code=\"200\""],
    );
    let bytes = metric(&text, "geo_blob_bytes_served_total", &[]);
    eprintln!(
        "{RECORDS} records, {served} retrieve answers ({repeated} repeated in the secondaries' \
         logs), {bytes} bytes served for {total_bytes} bytes of files, {stranded} claims held by \
         the killed process"
    );
    assert!(
        served >= RECORDS as f64,
        "fewer downloads than records: {served}"
    );
    assert!(
        served <= RECORDS as f64 * 1.01,
        "{served} downloads for {RECORDS} records"
    );
    assert!(bytes <= total_bytes as f64 * 1.01, "{bytes} bytes served");
    assert!(
        repeated <= 2 * CAPACITY,
        "{repeated} downloads repeated: more than the killed process's in flight and unrecorded"
    );
    drop(others);
    drop(victim);
    drop(primary);
}
