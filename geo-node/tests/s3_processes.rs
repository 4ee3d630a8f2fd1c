//! `primary` and `secondary` as processes with `--blob-store s3://bucket/prefix`, reaching a
//! real S3 server (s3s-fs) through the `AWS_*` variables, replicating over loopback HTTP.
//!
//! The child processes are this test binary itself, re-run with `--ignored --exact child_node`
//! and the node command line in `GEO_NODE_CHILD_ARGS` (one argument per line).

mod common;
#[path = "common/s3_server.rs"]
mod s3_server;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::*;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
use geo_diesel::registry::Registry;
use geo_node::cli::NodeCommand;
use geo_node::store::S3Options;
use s3_server::S3Server;

#[derive(Parser, Debug)]
struct TestCli {
    #[command(subcommand)]
    command: NodeCommand,
}

/// Entry point of the child processes (not a test by itself).
#[test]
#[ignore = "child process entry point, run by the process tests"]
fn child_node() {
    let args = std::env::var("GEO_NODE_CHILD_ARGS").expect("set by the parent test");
    doc_name();
    geo_node::cli::init_tracing();
    let cli = TestCli::parse_from(std::iter::once("node").chain(args.lines()));
    match cli.command.run(&app()) {
        Ok(code) if code == std::process::ExitCode::SUCCESS => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn child(args: &[String], server: &S3Server, secret: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "child_node",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("GEO_NODE_CHILD_ARGS", args.join("\n"))
    .env("GEO_SECRET", secret)
    .env("RUST_LOG", "warn")
    .envs(server.env());
    cmd
}

/// Starts a node; returns it and the URL it printed.
fn start(args: &[String], server: &S3Server, secret: &str) -> (KillOnDrop, String) {
    let mut c = child(args, server, secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the child printed its address")
            .unwrap();
        if let Some((_, url)) = line.split_once(" listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (KillOnDrop(c), url)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn primary_and_secondary_processes_on_s3_replicate_and_verify() {
    let server = S3Server::start(&["primary", "secondary"]);
    let tmp = tempfile::tempdir().unwrap();
    let db_url = tmp.path().join("primary.sqlite3").display().to_string();
    // The primary's records and objects, written here; the primary itself runs as a child.
    let db = geo_node::cli::open_primary_db(&db_url, 4, &app()).unwrap();
    let store = server.store("primary", "app/files", S3Options::default());
    let sizes = [100usize, 300_000, 9 << 20];
    for (i, n) in sizes.iter().enumerate() {
        create_doc(&db, &store, &format!("p/{i}.bin"), &data(i as u64, *n));
    }
    let creds = geo_node::auth::Credentials::generate();
    let keys = tmp.path().join("keys");
    std::fs::write(
        &keys,
        format!("{} {} t\n", creds.access_key, creds.secret.expose()),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let keys = keys.display().to_string();
    let (_primary, url) = start(
        &strings(&[
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db_url,
            "--blob-store",
            "s3://primary/app/files",
            "--keys-file",
            &keys,
        ]),
        &server,
        "",
    );
    let tracking = tmp.path().join("tracking.sqlite3").display().to_string();
    let (_secondary, _) = start(
        &strings(&[
            "secondary",
            "--primary",
            &url,
            "--database-url",
            &tracking,
            "--blob-store",
            "s3://secondary/replica",
            "--sync-object-storage",
            "--access-key",
            creds.access_key.as_str(),
            "--listen",
            "127.0.0.1:0",
            "--idle-ms",
            "20",
        ]),
        &server,
        creds.secret.expose(),
    );
    let pool = geo_diesel::db::DbPool::connect(&tracking, 2).unwrap();
    let d = <Doc as Replicable>::DESCRIPTOR;
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let c = Registry::of(d).counts(&mut pool.get().unwrap()).unwrap();
        if (c.synced, c.verified) == (3, 3) || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (counts.registry, counts.synced, counts.verified),
        (3, 3, 3),
        "{counts:?}"
    );
    let replica = server.store("secondary", "replica", S3Options::default());
    for (i, n) in sizes.iter().enumerate() {
        let path = BlobPath::new(&format!("p/{i}.bin")).unwrap();
        let (sum, len) = replica.checksum(&path).unwrap();
        assert_eq!((sum, len), (store.checksum(&path).unwrap().0, *n as u64));
    }
    assert_eq!(server.pending_parts(), Vec::<String>::new());
}

#[test]
fn a_blob_store_that_cannot_be_used_fails_at_start_naming_it() {
    let server = S3Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let db_url = tmp.path().join("p.sqlite3").display().to_string();
    for (store, expect) in [
        ("gs://bucket/x", "unsupported blob store scheme"),
        ("s3://", "no bucket"),
    ] {
        let out = child(
            &strings(&[
                "primary",
                "--database-url",
                &db_url,
                "--blob-store",
                store,
                "--keys",
                "a:b",
            ]),
            &server,
            "",
        )
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{store}: {err}"
        );
    }
}
