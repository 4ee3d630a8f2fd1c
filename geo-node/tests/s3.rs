//! The S3-compatible blob store against a real S3 server process (s3s-fs on loopback, SigV4
//! with its own key): reads, ranges, deletes, atomic visibility of streamed and multipart
//! writes, and replication between two sites on object storage, with `sync_object_storage` on
//! (the secondary downloads) and off (it only tracks and verifies).

mod common;
#[path = "common/s3_server.rs"]
mod s3_server;

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{Doc, create_doc, data, raw_get, sqlite};
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::{BlobError, BlobPath, BlobStore};
use geo_diesel::geo_core::checksum::checksum_bytes;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::registry::Registry;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_node::auth::{Credentials, KeyRing};
use geo_node::client::{HttpConfig, HttpSource};
use geo_node::server::{NodeState, PrimaryService, ServerHandle};
use geo_node::store::{S3BlobStore, S3Options};
use object_store::ObjectStoreExt;
use s3_server::S3Server;

fn p(s: &str) -> BlobPath {
    BlobPath::new(s).unwrap()
}

fn read_all(store: &dyn BlobStore, path: &BlobPath, offset: u64) -> (Vec<u8>, u64) {
    let mut blob = store.open_at(path, offset).unwrap();
    let mut out = Vec::new();
    blob.reader.read_to_end(&mut out).unwrap();
    (out, blob.size)
}

/// The smallest part S3 takes (and s3s-fs, like S3, refuses smaller ones but the last).
const PART: usize = 5 * 1024 * 1024;

fn small_parts() -> S3Options {
    S3Options::default().part_size(PART)
}

#[test]
fn write_read_range_exists_delete_against_the_server() {
    let server = S3Server::start(&["geo"]);
    let store = server.store("geo", "site/files", S3Options::default());
    let path = p("docs/a.txt");
    let body = b"hello object storage".to_vec();
    assert!(!store.exists(&path).unwrap());
    assert_eq!(store.size(&path).unwrap(), None);

    let w = store.write(&path, &mut &body[..], None).unwrap();
    assert_eq!(
        (w.bytes, w.checksum),
        (body.len() as u64, checksum_bytes(&body))
    );
    assert!(store.is_object_storage());
    assert_eq!(
        read_all(&store, &path, 0),
        (body.clone(), body.len() as u64)
    );
    // A ranged GET: the rest after the offset, the whole size.
    assert_eq!(
        read_all(&store, &path, 6),
        (body[6..].to_vec(), body.len() as u64)
    );
    assert_eq!(read_all(&store, &path, 99), (Vec::new(), body.len() as u64));
    assert_eq!(store.size(&path).unwrap(), Some(body.len() as u64));
    assert_eq!(
        store.checksum(&path).unwrap(),
        (checksum_bytes(&body), body.len() as u64)
    );
    // The object is under the prefix, on the server's disk.
    assert_eq!(
        std::fs::read(server.root.join("geo/site/files/docs/a.txt")).unwrap(),
        body
    );
    assert_eq!(store.list().unwrap(), vec!["docs/a.txt".to_string()]);

    let e = store.absolute_path(&path).unwrap_err();
    assert!(matches!(e, BlobError::Unsupported { .. }));
    assert!(e.to_string().contains("docs/a.txt"), "{e}");

    assert!(store.delete(&path).unwrap());
    assert!(!store.delete(&path).unwrap());
    assert!(!store.exists(&path).unwrap());
    let e = store.open(&path).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains("docs/a.txt"), "{e}");
}

#[test]
fn wrong_credentials_fail_naming_the_blob() {
    let server = S3Server::start(&["geo"]);
    let builder = server.builder().with_secret_access_key("not-the-secret");
    let store = S3BlobStore::with_builder(builder, "geo", "", S3Options::default()).unwrap();
    let e = store
        .write(&p("x/y.bin"), &mut &b"data"[..], None)
        .unwrap_err();
    assert!(matches!(e, BlobError::Remote { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("x/y.bin") && text.contains("s3://geo"),
        "{text}"
    );
}

#[test]
fn a_checksum_mismatch_stores_nothing_and_keeps_the_old_object() {
    let server = S3Server::start(&["geo"]);
    let store = server.store("geo", "", small_parts());
    // One PUT and a multipart upload (3.5 parts).
    for (name, len) in [("small.bin", 1000), ("large.bin", PART * 7 / 2)] {
        let path = p(name);
        let old = data(1, len);
        store.write(&path, &mut &old[..], None).unwrap();
        let new = data(2, len);
        let wrong = checksum_bytes(b"something else");
        let e = store.write(&path, &mut &new[..], Some(&wrong)).unwrap_err();
        match &e {
            BlobError::ChecksumMismatch {
                path: at,
                actual,
                bytes,
                ..
            } => {
                assert_eq!(at, name);
                assert_eq!(*actual, checksum_bytes(&new));
                assert_eq!(*bytes, len as u64);
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            read_all(&store, &path, 0).0,
            old,
            "{name}: the old object changed"
        );
        assert_eq!(
            server.pending_parts(),
            Vec::<String>::new(),
            "{name}: upload not aborted"
        );
    }
    assert_eq!(store.list().unwrap(), ["large.bin", "small.bin"]);
}

/// Yields `ok` bytes, then fails.
struct FailingReader {
    ok: Vec<u8>,
    at: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.ok.len() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the primary went away",
            ));
        }
        let n = buf.len().min(self.ok.len() - self.at).min(10_000);
        buf[..n].copy_from_slice(&self.ok[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_reader_failing_mid_stream_leaves_nothing_at_the_key() {
    let server = S3Server::start(&["geo"]);
    let store = server.store("geo", "p", small_parts());
    for (name, ok) in [
        ("in-first-part.bin", PART / 2),
        ("after-3-parts.bin", PART * 3 + 10),
    ] {
        let mut reader = FailingReader {
            ok: data(3, ok),
            at: 0,
        };
        let e = store.write(&p(name), &mut reader, None).unwrap_err();
        match &e {
            BlobError::Source { path, bytes, .. } => {
                assert_eq!((path.as_str(), *bytes), (name, ok as u64));
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            !store.exists(&p(name)).unwrap(),
            "{name}: a partial object is visible"
        );
        assert_eq!(
            server.pending_parts(),
            Vec::<String>::new(),
            "{name}: dangling upload"
        );
    }
    assert_eq!(store.list().unwrap(), Vec::<String>::new());
    // Over an existing object: the old one stays.
    let old = data(4, 100);
    store.write(&p("kept.bin"), &mut &old[..], None).unwrap();
    let mut reader = FailingReader {
        ok: data(5, PART * 2),
        at: 0,
    };
    store.write(&p("kept.bin"), &mut reader, None).unwrap_err();
    assert_eq!(read_all(&store, &p("kept.bin"), 0).0, old);
}

#[test]
fn a_blob_over_the_multipart_threshold_round_trips_in_parts() {
    let server = S3Server::start(&["geo"]);
    // The default 8 MiB parts: 20 MiB is three parts.
    let store = server.store("geo", "big", S3Options::default());
    let body = data(6, 20 << 20);
    let sum = checksum_bytes(&body);
    let w = store
        .write(&p("blob.bin"), &mut &body[..], Some(&sum))
        .unwrap();
    assert_eq!((w.bytes, w.checksum), (body.len() as u64, sum));
    assert_eq!(
        store.checksum(&p("blob.bin")).unwrap(),
        (sum, body.len() as u64)
    );
    let (tail, size) = read_all(&store, &p("blob.bin"), (17 << 20) + 3);
    assert_eq!(
        (tail.as_slice(), size),
        (&body[(17 << 20) + 3..], body.len() as u64)
    );
    // Uploaded as a multipart upload: S3's ETag of one ends in `-<parts>`.
    let client = server.builder().with_bucket_name("geo").build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let meta = rt.block_on(client.head(&"big/blob.bin".into())).unwrap();
    assert!(
        meta.e_tag
            .as_deref()
            .unwrap_or("")
            .trim_matches('"')
            .ends_with("-3"),
        "{meta:?}"
    );
    assert_eq!(server.pending_parts(), Vec::<String>::new());
}

/// A primary on object storage, served over loopback HTTP as the CLI serves it.
struct S3Primary {
    db: geo_diesel::db::DbPool,
    store: Arc<S3BlobStore>,
    verifier: Arc<PrimaryVerifier>,
    server: ServerHandle,
    creds: Credentials,
}

fn s3_primary(dir: &std::path::Path, server: &S3Server) -> S3Primary {
    let db = geo_node::cli::open_primary_db(
        &dir.join("primary.sqlite3").display().to_string(),
        8,
        &common::app(),
    )
    .unwrap();
    let store = Arc::new(server.store("primary", "files", small_parts()));
    let verifier = Arc::new(PrimaryVerifier::new(
        db.clone(),
        store.clone(),
        Env::system(),
        PrimaryConfig::default(),
    ));
    let creds = Credentials::generate();
    let state = NodeState::new("s3-primary", KeyRing::with([creds.clone()])).with_primary(
        PrimaryService::direct(db.clone(), store.clone(), Some(verifier.clone())),
    );
    let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
    S3Primary {
        db,
        store,
        verifier,
        server,
        creds,
    }
}

fn s3_secondary(
    dir: &std::path::Path,
    primary: &S3Primary,
    store: Arc<S3BlobStore>,
    env: Env,
    sync_object_storage: bool,
) -> Arc<Secondary> {
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let mut http = HttpConfig::new(primary.server.url(), primary.creds.clone());
    http.read_timeout = Duration::from_secs(10);
    let config = SecondaryConfig::default()
        .idle_sleep(Duration::from_millis(20))
        .sync_object_storage(sync_object_storage);
    Arc::new(Secondary::new(
        tracking,
        Arc::new(HttpSource::new(http)),
        store,
        env,
        config,
    ))
}

/// What the primary served: retrieve and retrieve_batch answers, and blob bytes.
fn served(primary: &S3Primary) -> (u64, u64) {
    let (code, text) = raw_get(&primary.server.addr().to_string(), "/metrics", None);
    assert_eq!(code, 200);
    let mut retrieves = 0;
    let mut bytes = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = || line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
        if line.starts_with("geo_http_requests_total") && line.contains("endpoint=\"retrieve") {
            retrieves += value();
        }
        if line.starts_with("geo_blob_bytes_served_total") {
            bytes += value();
        }
    }
    (retrieves, bytes)
}

fn counts(sec: &Secondary) -> geo_diesel::registry::RegistryCounts {
    let mut conn = sec.tracking().get().unwrap();
    Registry::of(<Doc as Replicable>::DESCRIPTOR)
        .counts(&mut conn)
        .unwrap()
}

#[test]
fn primary_on_s3_to_secondary_on_s3_replicates_and_verifies_over_http() {
    let server = S3Server::start(&["primary", "secondary"]);
    let tmp = tempfile::tempdir().unwrap();
    let primary = s3_primary(tmp.path(), &server);
    let sizes = [10, 70_000, PART * 3 + 1];
    for (i, len) in sizes.iter().enumerate() {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("d/{i}.bin"),
            &data(i as u64, *len),
        );
    }
    primary.verifier.run_until_idle(50).unwrap();
    let store = Arc::new(server.store("secondary", "replica", small_parts()));
    let sec = s3_secondary(tmp.path(), &primary, store.clone(), Env::system(), true);
    sec.run_until_idle(100).unwrap();
    let c = counts(&sec);
    assert_eq!((c.registry, c.synced, c.verified), (3, 3, 3), "{c:?}");
    for (i, len) in sizes.iter().enumerate() {
        let path = p(&format!("d/{i}.bin"));
        assert_eq!(read_all(store.as_ref(), &path, 0).0, data(i as u64, *len));
    }
    assert_eq!(store.list().unwrap(), ["d/0.bin", "d/1.bin", "d/2.bin"]);
    let (retrieves, bytes) = served(&primary);
    assert!(
        retrieves >= 1 && bytes >= sizes.iter().sum::<usize>() as u64,
        "{retrieves} {bytes}"
    );
    assert_eq!(server.pending_parts(), Vec::<String>::new());
}

#[derive(diesel::QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    doc_id: i64,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    state: i16,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_sync_failure: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    retry_at: Option<String>,
}

#[test]
fn sync_object_storage_off_downloads_nothing_and_only_tracks_and_verifies() {
    let server = S3Server::start(&["primary", "secondary"]);
    let tmp = tempfile::tempdir().unwrap();
    let primary = s3_primary(tmp.path(), &server);
    let mut ids = Vec::new();
    for i in 0..3u64 {
        ids.push(
            create_doc(
                &primary.db,
                primary.store.as_ref(),
                &format!("d/{i}.bin"),
                &data(i, 5000),
            )
            .id,
        );
    }
    primary.verifier.run_until_idle(50).unwrap();
    // The storage provider replicated doc 0 rightly and doc 1 wrongly; doc 2 not yet.
    let store = Arc::new(server.store("secondary", "replica", small_parts()));
    store
        .write(&p("d/0.bin"), &mut &data(0, 5000)[..], None)
        .unwrap();
    store
        .write(&p("d/1.bin"), &mut &b"stale bytes"[..], None)
        .unwrap();
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, clock) = Env::manual(start, 0);
    let sec = s3_secondary(tmp.path(), &primary, store.clone(), env, false);
    sec.run_until_idle(100).unwrap();

    assert_eq!(
        served(&primary),
        (0, 0),
        "the secondary downloaded from the primary"
    );
    assert_eq!(
        store.list().unwrap(),
        ["d/0.bin", "d/1.bin"],
        "the secondary wrote objects"
    );
    let rows: Vec<Row> = {
        use diesel::RunQueryDsl;
        let mut conn = sec.tracking().get().unwrap();
        diesel::sql_query(
            "SELECT doc_id, state, last_sync_failure, retry_at FROM doc_registry ORDER BY doc_id",
        )
        .load(sqlite(&mut conn))
        .unwrap()
    };
    let synced = geo_diesel::geo_core::ReplicationState::Synced as i16;
    let failed = geo_diesel::geo_core::ReplicationState::Failed as i16;
    assert_eq!(rows.iter().map(|r| r.doc_id).collect::<Vec<_>>(), ids);
    assert_eq!(rows[0].state, synced, "{rows:?}");
    let fail1 = rows[1].last_sync_failure.as_deref().unwrap_or("");
    assert!(
        rows[1].state == failed && fail1.contains("checksum mismatch"),
        "{rows:?}"
    );
    let fail2 = rows[2].last_sync_failure.as_deref().unwrap_or("");
    assert!(
        rows[2].state == failed && fail2.contains("not in this site's object storage"),
        "{rows:?}"
    );
    assert!(
        rows[1].retry_at.is_some() && rows[2].retry_at.is_some(),
        "{rows:?}"
    );
    let c = counts(&sec);
    assert_eq!((c.synced, c.verified, c.failed), (1, 1, 2), "{c:?}");

    // The provider catches up: at the retry, both verify without a download.
    store
        .write(&p("d/1.bin"), &mut &data(1, 5000)[..], None)
        .unwrap();
    store
        .write(&p("d/2.bin"), &mut &data(2, 5000)[..], None)
        .unwrap();
    clock.advance(chrono::TimeDelta::hours(2));
    sec.run_until_idle(100).unwrap();
    let c = counts(&sec);
    assert_eq!((c.synced, c.verified, c.failed), (3, 3, 0), "{c:?}");
    assert_eq!(served(&primary), (0, 0));

    // A record deleted on the primary leaves the registry; its object is the provider's and
    // stays (in a bucket shared with the primary, it is the primary's own object).
    {
        use diesel::RunQueryDsl;
        let mut conn = primary.db.get().unwrap();
        diesel::sql_query(format!("DELETE FROM docs WHERE id = {}", ids[0]))
            .execute(sqlite(&mut conn))
            .unwrap();
    }
    sec.run_until_idle(100).unwrap();
    assert_eq!(counts(&sec).registry, 2);
    assert_eq!(
        store.list().unwrap(),
        ["d/0.bin", "d/1.bin", "d/2.bin"],
        "the secondary deleted an object it does not manage"
    );
}
