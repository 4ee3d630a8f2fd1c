//! `http_bench s3`: B3 (100 × 10 MiB, synced and verified) with both sites' blob stores on one
//! real S3-compatible server (s3s-fs on loopback, SigV4), beside the AWS CLI against the same
//! server in the same run.
//!
//! - ours: a primary whose store is bucket `primary` serves over loopback HTTP; a fresh
//!   secondary with `sync_object_storage` on downloads every blob over the Geo API (the primary
//!   streams it from S3) and uploads it to bucket `secondary` (multipart, 8 MiB parts, hashed
//!   while streaming) — until every row is synced and verified (as with a local store, a blob
//!   whose streamed hash matched the primary's checksum is verified at once).
//! - `aws s3 sync` through a client: download the primary's objects to a local directory, then
//!   upload them to another bucket (every byte through the client twice, as ours; no
//!   verification).
//! - `aws s3 sync` bucket to bucket: server-side `CopyObject`s, no byte crosses the client —
//!   the floor of what any copier can do against this server, not a like-for-like peer.
//! - ours, `sync_object_storage` off: the secondary downloads nothing and verifies the objects a
//!   provider's replication left (here: those `aws s3 sync` copied).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geo_diesel::geo_core::clock::Env;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_node::auth::{Credentials, KeyRing};
use geo_node::client::{HttpConfig, HttpSource};
use geo_node::server::{NodeState, PrimaryService, ServerHandle};
use geo_node::store::{S3BlobStore, S3Options};

use super::common::{app, create_doc, data};
use super::s3_server::S3Server;
use super::{converge, median};

fn aws_version() -> Option<String> {
    let out = Command::new("aws").arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(text.split_whitespace().next()?.to_owned())
}

fn aws(server: &S3Server, args: &[&str]) -> f64 {
    let t = Instant::now();
    let status = Command::new("aws")
        .args(["--endpoint-url", &server.endpoint, "--only-show-errors"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .status()
        .expect("running aws");
    assert!(status.success(), "aws {args:?} failed");
    t.elapsed().as_secs_f64()
}

fn secondary(
    dir: &Path,
    url: &str,
    creds: &Credentials,
    store: Arc<S3BlobStore>,
    sync_object_storage: bool,
) -> Secondary {
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let source = Arc::new(HttpSource::new(HttpConfig::new(url, creds.clone())));
    let config = SecondaryConfig::default()
        .idle_sleep(Duration::from_millis(20))
        .sync_object_storage(sync_object_storage);
    Secondary::new(tracking, source, store, Env::system(), config)
}

fn converged(sec: &Secondary, files: usize) {
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(
        (s.synced_count, s.verified_count),
        (Some(files as u64), Some(files as u64)),
        "not converged"
    );
}

/// Runs the bench: `files` blobs of `size` bytes, `repeat` interleaved runs.
pub fn run(parent: &Path, files: usize, size: usize, repeat: usize) {
    let Some(aws_v) = aws_version() else {
        panic!("the peer is the AWS CLI: pip install awscli");
    };
    let mut buckets = vec!["primary".to_owned()];
    for run in 0..repeat {
        for b in ["ours", "peer-local", "peer-copy"] {
            buckets.push(format!("{b}-{run}"));
        }
    }
    let names: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let server = S3Server::start(&names);
    let tmp = tempfile::Builder::new()
        .prefix("geo-s3-bench-")
        .tempdir_in(parent)
        .unwrap();
    let t = Instant::now();
    let db = geo_node::cli::open_primary_db(
        &tmp.path().join("primary.sqlite3").display().to_string(),
        8,
        &app(),
    )
    .unwrap();
    let store = Arc::new(server.store("primary", "files", S3Options::default()));
    let verifier = Arc::new(PrimaryVerifier::new(
        db.clone(),
        store.clone(),
        Env::system(),
        PrimaryConfig::default(),
    ));
    for i in 0..files {
        let path = format!("b/{:03}/{i}.bin", i % 256);
        create_doc(&db, store.as_ref(), &path, &data(i as u64, size));
    }
    verifier.run_until_idle(100).unwrap();
    let creds = Credentials::generate();
    let state = NodeState::new("s3-primary", KeyRing::with([creds.clone()])).with_primary(
        PrimaryService::direct(db.clone(), store.clone(), Some(verifier.clone())),
    );
    let http = ServerHandle::start("127.0.0.1:0", Arc::new(state), 4).unwrap();
    let bytes = (files * size) as f64;
    println!(
        "B3-S3: {files} files x {size} bytes ({:.1} MiB) in s3://primary/files on s3s-fs at {}, prepared in {:.1}s; peer {aws_v}",
        bytes / 1048576.0,
        server.endpoint,
        t.elapsed().as_secs_f64()
    );
    let (mut ours, mut local, mut copy, mut off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..repeat {
        let dir = tmp.path().join(format!("sec-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let sec_store =
            Arc::new(server.store(&format!("ours-{run}"), "files", S3Options::default()));
        let sec = secondary(&dir, &http.url(), &creds, sec_store.clone(), true);
        let phases = converge(&sec);
        let secs = t.elapsed().as_secs_f64();
        converged(&sec, files);
        assert_eq!(sec_store.list().unwrap().len(), files);
        println!(
            "  run {run}: ours {secs:.3}s (cursor {:.3}, backfill {:.3}, sync {:.3}, verify {:.3}, rest {:.3})",
            phases[0], phases[1], phases[2], phases[3], phases[4]
        );
        ours.push(secs);
        drop(sec);

        let stage = tmp.path().join(format!("stage-{run}"));
        let down = aws(
            &server,
            &["s3", "sync", "s3://primary/files/", stage.to_str().unwrap()],
        );
        let up = aws(
            &server,
            &[
                "s3",
                "sync",
                stage.to_str().unwrap(),
                &format!("s3://peer-local-{run}/files/"),
            ],
        );
        std::fs::remove_dir_all(&stage).unwrap();
        println!(
            "  run {run}: aws s3 sync via a local dir {:.3}s (down {down:.3}, up {up:.3})",
            down + up
        );
        local.push(down + up);

        let c = aws(
            &server,
            &[
                "s3",
                "sync",
                "s3://primary/files/",
                &format!("s3://peer-copy-{run}/files/"),
            ],
        );
        println!("  run {run}: aws s3 sync bucket to bucket (server-side copy) {c:.3}s");
        copy.push(c);

        // What a provider's replication left: verify in place, no download.
        let dir = tmp.path().join(format!("off-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let replica =
            Arc::new(server.store(&format!("peer-copy-{run}"), "files", S3Options::default()));
        let sec = secondary(&dir, &http.url(), &creds, replica.clone(), false);
        converge(&sec);
        let secs = t.elapsed().as_secs_f64();
        converged(&sec, files);
        assert_eq!(
            sec.counters()
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        println!("  run {run}: ours, sync_object_storage off (track + verify in place) {secs:.3}s");
        off.push(secs);
    }
    let line = |what: &str, runs: &[f64]| {
        let m = median(runs.to_vec());
        println!(
            "  {what:<44} median {m:.3}s {:.1} MiB/s {:.0} files/s  runs {runs:.3?}",
            bytes / 1048576.0 / m,
            files as f64 / m
        );
        m
    };
    let o = line("ours (HTTP, S3 -> S3, synced + verified):", &ours);
    let l = line("aws s3 sync via a local dir (down + up):", &local);
    let c = line("aws s3 sync bucket to bucket (CopyObject):", &copy);
    line("ours, sync_object_storage off (verify only):", &off);
    println!(
        "  ratio ours/aws-via-client: {:.2}, ours/aws-server-copy: {:.2}",
        o / l,
        o / c
    );
}
