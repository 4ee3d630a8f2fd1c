//! Sites as separate processes, started through the node CLI: a secondary killed with SIGKILL
//! at random moments and restarted, and a primary killed and restarted.
//!
//! The child processes are this test binary itself, re-run with `--ignored --exact child_node`
//! and the node command line in `GEO_NODE_CHILD_ARGS` (one argument per line), so they link the
//! same test model.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, TEMP_PREFIX};
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::clock::Env;
use geo_node::cli::NodeCommand;
use geo_node::client::{HttpConfig, NodeClient};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
struct TestCli {
    #[command(subcommand)]
    command: NodeCommand,
}

/// Entry point of the child processes (not a test by itself).
#[test]
#[ignore = "child process entry point, run by the process tests"]
fn child_node() {
    let args = std::env::var("GEO_NODE_CHILD_ARGS")
        .expect("GEO_NODE_CHILD_ARGS is set by the parent test");
    doc_name();
    geo_node::cli::init_tracing();
    let cli = TestCli::parse_from(std::iter::once("node").chain(args.lines()));
    match cli.command.run(&app()) {
        Ok(code) if code == std::process::ExitCode::SUCCESS => {}
        Ok(_) => std::process::exit(1),
        // A command that fails (a refused key, say) exits non-zero, as the binary does.
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// A node running in a child process.
struct Node {
    child: Child,
    url: String,
}

impl Node {
    fn start(args: &[String], secret: &str) -> Node {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GEO_NODE_CHILD_ARGS", args.join("\n"))
            .env("GEO_SECRET", secret)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the child printed its address before exiting")
                .unwrap();
            if let Some((_, url)) = line.split_once(" listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node { child, url }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SIGTERM: a graceful stop.
        sigterm(self.child.id());
        self.child.wait().unwrap()
    }
}

/// Runs a node command that ends by itself (`status`); its exit status and stdout.
fn run_to_end(args: &[&str], secret: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_node",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GEO_NODE_CHILD_ARGS", args.join("\n"))
        .env("GEO_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    (out.status, String::from_utf8(out.stdout).unwrap())
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

fn secondary_args(dir: &Path, primary_url: &str, access_key: &str, listen: &str) -> Vec<String> {
    [
        "secondary",
        "--primary",
        primary_url,
        "--database-url",
        &dir.join("tracking.sqlite3").display().to_string(),
        "--blob-dir",
        &dir.join("secondary-files").display().to_string(),
        "--access-key",
        access_key,
        "--listen",
        listen,
        "--idle-ms",
        "20",
        "--sync-capacity",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Files at final paths whose content is not a version the primary ever had there; counts
/// temporary files.
fn check_no_partial_file(
    store_root: &Path,
    versions: &BTreeMap<String, BTreeSet<Checksum>>,
) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut temps = 0;
    let mut dirs = vec![store_root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                temps += 1;
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(store_root)
                .unwrap()
                .display()
                .to_string();
            let sum = checksum_bytes(&std::fs::read(e.path()).unwrap());
            if !versions.get(&rel).is_some_and(|v| v.contains(&sum)) {
                bad.push(rel);
            }
        }
    }
    (bad, temps)
}

/// Creates `n` records with files of 256 KiB to 6 MiB (some past `RESUMABLE_FROM`, written
/// resumably) and rewrites one existing file,
/// remembering every version of every path.
fn add(
    primary: &Primary,
    rng: &mut rand::rngs::StdRng,
    docs: &mut Vec<Doc>,
    versions: &mut BTreeMap<String, BTreeSet<Checksum>>,
    n: usize,
) {
    for _ in 0..n {
        let i = docs.len() as u64;
        let bytes = data(i, rng.random_range(256 << 10..6 << 20));
        let path = format!("k/{:02}/{i}.bin", i % 13);
        versions
            .entry(path.clone())
            .or_default()
            .insert(checksum_bytes(&bytes));
        docs.push(create_doc(
            &primary.db,
            primary.store.as_ref(),
            &path,
            &bytes,
        ));
    }
    // Rewrite one existing file too (same path, new content, `updated` event).
    if let Some(d) = docs.get(rng.random_range(0..docs.len())).cloned() {
        let bytes = data(rng.random(), rng.random_range(256 << 10..2 << 20));
        versions
            .entry(d.path.clone())
            .or_default()
            .insert(checksum_bytes(&bytes));
        primary
            .store
            .write(&BlobPath::new(&d.path).unwrap(), &mut &bytes[..], None)
            .unwrap();
        let mut conn = primary.db.get().unwrap();
        geo_diesel::publish_updated(&mut conn, &d).unwrap();
    }
}

#[test]
fn secondary_killed_mid_sync_and_restarted_converges_without_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(tmp.path());
    let _verifier = primary.verifier.spawn().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e0_0de);
    let mut versions: BTreeMap<String, BTreeSet<Checksum>> = BTreeMap::new();
    let mut docs = Vec::new();
    add(&primary, &mut rng, &mut docs, &mut versions, 30);
    let key = primary.creds.access_key.to_string();
    let secret = primary.creds.secret.expose().to_owned();
    let args = secondary_args(tmp.path(), &primary.url(), &key, "127.0.0.1:0");
    let store_root = tmp.path().join("secondary-files");
    let (mut kills, mut with_temps) = (0, 0);
    let started = Instant::now();
    for round in 0..24 {
        let node = Node::start(&args, &secret);
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        node.kill();
        kills += 1;
        let (bad, temps) = check_no_partial_file(&store_root, &versions);
        assert_eq!(
            bad,
            Vec::<String>::new(),
            "round {round}: a partial or corrupt file at a final path"
        );
        if temps > 0 {
            with_temps += 1;
        }
        add(&primary, &mut rng, &mut docs, &mut versions, 10);
    }
    eprintln!(
        "{kills} kills, {with_temps} of them mid-download, in {:?}",
        started.elapsed()
    );
    assert!(kills >= 20);
    assert!(with_temps >= 1, "no kill landed during a download");

    // A last run to convergence, watched through the secondary's own status endpoint.
    let node = Node::start(&args, &secret);
    let client = NodeClient::new(HttpConfig::new(node.url.clone(), primary.creds.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let total = docs.len() as u64;
    let mut last = None;
    let synced = |st: &geo_node::api::NodeStatus| {
        let d = st.secondary.as_ref()?.replicables.get("docs")?;
        Some((d.synced_count?, d.verified_count?))
    };
    while Instant::now() < deadline {
        if let Ok(st) = client.status() {
            let done = synced(&st) == Some((total, total))
                && differing(&primary, &LocalStore::open(&store_root)).is_empty();
            last = Some(st);
            if done {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let last = last.expect("the secondary answered its status");
    assert_eq!(synced(&last), Some((total, total)), "{last:#?}");
    assert!(last.is_healthy(), "{last:#?}");
    assert!(node.terminate().success(), "graceful stop on SIGTERM");
    assert_eq!(
        differing(&primary, &LocalStore::open(&store_root)),
        Vec::<String>::new()
    );
    let (bad, temps) = check_no_partial_file(&store_root, &versions);
    assert_eq!((bad, temps), (Vec::new(), 0));
}

/// Opens a store directory for reading in checks.
struct LocalStore;

impl LocalStore {
    fn open(root: &Path) -> geo_diesel::geo_core::blob_store::LocalBlobStore {
        geo_diesel::geo_core::blob_store::LocalBlobStore::new(root).unwrap()
    }
}

#[test]
fn primary_killed_and_restarted_secondary_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    // The primary's database and files, prepared here; the primary itself runs as a child.
    let primary = Primary::new(tmp.path());
    let keys = tmp.path().join("keys");
    std::fs::write(
        &keys,
        format!(
            "{} {} test\n",
            primary.creds.access_key,
            primary.creds.secret.expose()
        ),
    )
    .unwrap();
    // A node refuses a keys file others may read.
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let primary_args = |listen: &str| -> Vec<String> {
        [
            "primary",
            "--listen",
            listen,
            "--database-url",
            &tmp.path().join("primary.sqlite3").display().to_string(),
            "--blob-dir",
            &tmp.path().join("primary-files").display().to_string(),
            "--keys-file",
            &keys.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let node = Node::start(&primary_args("127.0.0.1:0"), "");
    let url = node.url.clone();
    let listen = url.trim_start_matches("http://").to_owned();
    for i in 0..20u64 {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("p/{i}.bin"),
            &data(i, 100_000),
        );
    }
    let (sec, store) = secondary(tmp.path(), &url, &primary.creds, Env::system());
    let workers = sec.spawn().unwrap();
    let wait = |n: u64, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let s = &sec.status().unwrap()[0].1;
            if s.synced_count == Some(n) && s.verified_count == Some(n) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(wait(20, 60), "{:?}", sec.status().unwrap());
    node.kill();
    // While the primary is down, the application keeps writing.
    for i in 20..40u64 {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("p/{i}.bin"),
            &data(i, 100_000),
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        sec.status().unwrap()[0].1.registry_count,
        Some(20),
        "nothing new is known while the primary is down"
    );
    let node = Node::start(&primary_args(&listen), "");
    assert!(wait(40, 60), "{:?}", sec.status().unwrap());
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    drop(workers);
    assert!(node.terminate().success());
}

#[test]
fn status_command_prints_the_table_and_the_json_of_a_site() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(tmp.path());
    for i in 0..3u64 {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("s/{i}.bin"),
            &data(i, 1000),
        );
    }
    primary.verify_all();
    let url = primary.url();
    let key = primary.creds.access_key.to_string();
    let secret = primary.creds.secret.expose().to_owned();
    let (code, out) = run_to_end(&["status", "--url", &url, "--access-key", &key], &secret);
    assert!(code.success(), "{out}");
    for line in [
        "test-primary (primary): Healthy\nprimary:\n  last_event_id: 6\n",
        "\n  docs_checksum_total_count: 3\n",
        "\n  docs_checksummed_count: 3\n",
        "\n  docs_count: 3\n",
        "\nreplicables: doc\n",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    let (code, out) = run_to_end(
        &["status", "--url", &url, "--access-key", &key, "--json"],
        &secret,
    );
    assert!(code.success(), "{out}");
    // The harness writes `test child_node ... ` just before it, on the same line.
    let start = out.find("{\n  \"name\"").expect("a JSON object");
    let end = out.find("\n}\n").expect("its end") + 2;
    let st: geo_node::api::NodeStatus = serde_json::from_str(&out[start..end]).unwrap();
    let p = st.primary.as_ref().unwrap();
    assert_eq!(p.last_event_id, Some(Some(6)));
    assert_eq!(
        p.replicables.get("docs").unwrap().checksummed_count,
        Some(3)
    );
    // A refused key: the command fails.
    let other = geo_node::auth::Credentials::generate();
    let (code, _) = run_to_end(
        &[
            "status",
            "--url",
            &url,
            "--access-key",
            other.access_key.as_str(),
        ],
        other.secret.expose(),
    );
    assert!(!code.success());
}

#[test]
fn the_primary_command_prunes_what_its_secondary_consumed() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(tmp.path());
    let keys = tmp.path().join("keys");
    let line = format!(
        "{} {}\n",
        primary.creds.access_key,
        primary.creds.secret.expose()
    );
    std::fs::write(&keys, line).unwrap();
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let path = |p: &str| tmp.path().join(p).display().to_string();
    let args: Vec<String> = [
        "primary",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &path("primary.sqlite3"),
        "--blob-dir",
        &path("primary-files"),
        "--keys-file",
        &path("keys"),
        "--prune-interval",
        "200ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let node = Node::start(&args, "");
    let (sec, store) = secondary(tmp.path(), &node.url, &primary.creds, Env::system());
    // The secondary reads first (the primary knows it from then on), then documents arrive.
    sec.cursor_pass().unwrap();
    for i in 0..5u64 {
        let path = format!("q/{i}.bin");
        create_doc(&primary.db, primary.store.as_ref(), &path, &data(i, 500));
    }
    let events = || {
        use diesel::prelude::*;
        let mut conn = primary.db.get().unwrap();
        geo_diesel::schema::geo_events::table
            .count()
            .get_result::<i64>(sqlite(&mut conn))
            .unwrap()
    };
    // The verifier publishes a `checksum_succeeded` per document; the pruner (every 200 ms)
    // removes none of the ten events, which the secondary has not read.
    let deadline = Instant::now() + Duration::from_secs(20);
    while events() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        events(),
        10,
        "nothing the secondary has not consumed is pruned"
    );
    sec.run_until_idle(20).unwrap();
    sec.cursor_pass().unwrap(); // tells the primary it consumed everything
    let deadline = Instant::now() + Duration::from_secs(20);
    while events() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        events(),
        0,
        "the primary command pruned what its secondary consumed"
    );
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let st = NodeClient::new(HttpConfig::new(&node.url, primary.creds.clone()))
        .status()
        .unwrap();
    let p = st.primary.unwrap();
    assert_eq!(p.secondaries.len(), 1);
    assert_eq!(p.secondaries[0].name, primary.creds.access_key.as_str());
    assert_eq!(p.secondaries[0].events_behind, 0);
    assert!(p.event_log_pruned_through.is_some());
    assert_eq!(
        sec.counters()
            .pruned_recoveries
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(node.terminate().success());
}
