//! `retrieve_batch` over real loopback sockets: many small files in few requests, a mix with
//! large ones, auth, path safety, and a batch answer damaged in flight.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{TimeZone, Utc};
use common::*;
use geo_diesel::geo_core::blob_store::BlobPath;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::{PrimarySource, SourceError};
use geo_node::api::MAX_BATCH_BLOB;
use geo_node::api::batch::{self, BatchEntry};
use geo_node::auth::RequestData;
use geo_node::client::{HttpConfig, HttpSource};

fn requests(primary: &Primary, endpoint: &str) -> u64 {
    primary
        .server
        .as_ref()
        .unwrap()
        .state()
        .metrics()
        .requests(endpoint, 200)
}

#[test]
fn small_and_large_files_converge_with_few_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let small = MAX_BATCH_BLOB as usize;
    let mut large = 0;
    for i in 0..400u64 {
        let len = match i % 50 {
            0 => 1 << 20,
            1 => small + 1,
            2 => small,
            3 => 0,
            _ => 100 + (i as usize * 97) % 8000,
        };
        large += usize::from(len > small);
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("s/{:02}/{i}.bin", i % 13),
            &data(i, len),
        );
    }
    // A record whose file is gone: told apart inside the batch, not fetched.
    let gone = insert_doc(&primary.db, "s/gone.bin");
    primary.verify_all();
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, _clock) = Env::manual(start, 0);
    let (sec, store) = secondary(tmp.path(), &primary.url(), &primary.creds, env);
    sec.cursor_pass().unwrap();
    sec.backfill_all().unwrap();
    while sec.sync_pass().unwrap() > 0 {}
    sec.run_until_idle(20).unwrap();
    // Everything but the record whose file is gone on the primary too.
    assert_eq!(
        differing(&primary, &store),
        vec![format!("{} s/gone.bin", gone.id)]
    );
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(
        (s.synced_count, s.verified_count, s.failed_count),
        (Some(400), Some(400), Some(1))
    );
    // Only the blobs above the batch limit were fetched one by one.
    assert_eq!(requests(&primary, "retrieve"), large as u64);
    assert!(requests(&primary, "retrieve_batch") <= 5);
    let mut conn = sec.tracking().get().unwrap();
    let failure: Vec<(i64, i32)> = {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            doc_id: i64,
            #[diesel(sql_type = diesel::sql_types::Integer)]
            missing_on_primary: i32,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT doc_id, CAST(missing_on_primary AS INTEGER) AS missing_on_primary FROM doc_registry WHERE state = 3"
        ).load(sqlite(&mut conn)).unwrap();
        rows.into_iter()
            .map(|r| (r.doc_id, r.missing_on_primary))
            .collect()
    };
    assert_eq!(failure, vec![(gone.id, 1)]);
}

#[test]
fn prefetched_blobs_are_handed_out_once_with_their_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let a = create_doc(&primary.db, primary.store.as_ref(), "p/a", &data(1, 5000));
    let b = create_doc(
        &primary.db,
        primary.store.as_ref(),
        "p/b",
        &data(2, 1 << 20),
    );
    // Not verified: the checksum is the one of the bytes sent.
    let src = HttpSource::new(HttpConfig::new(primary.url(), primary.creds.clone()));
    let paths = src.blob_paths("doc", &[a.id, b.id, 999]).unwrap();
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[&a.id], "p/a");
    assert_eq!(src.prefetched_bytes(), 5000);
    let mut blob = src
        .open_blob_at("doc", a.id, &BlobPath::new("p/a").unwrap())
        .unwrap();
    assert_eq!(
        blob.checksum,
        Some(geo_diesel::geo_core::checksum::checksum_bytes(&data(
            1, 5000
        )))
    );
    let mut got = Vec::new();
    blob.reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, data(1, 5000));
    assert_eq!(src.prefetched_bytes(), 0);
    assert_eq!(requests(&primary, "retrieve"), 0);
    // Handed out once: a second open goes to `retrieve`.
    src.open_blob("doc", a.id).unwrap();
    assert_eq!(requests(&primary, "retrieve"), 1);
    // A path that no longer matches is not served from the cache.
    src.blob_paths("doc", &[a.id]).unwrap();
    src.open_blob_at("doc", a.id, &BlobPath::new("p/other").unwrap())
        .unwrap();
    assert_eq!(requests(&primary, "retrieve"), 2);
    assert_eq!(src.prefetched_bytes(), 0);
    // Another pass's lookup (other rows; `sync_workers` passes run at once) keeps what this
    // one holds; a new lookup of the same row replaces it.
    src.blob_paths("doc", &[a.id]).unwrap();
    assert_eq!(src.prefetched_bytes(), 5000);
    src.blob_paths("doc", &[b.id]).unwrap();
    assert_eq!(src.prefetched_bytes(), 5000);
    src.blob_paths("doc", &[a.id]).unwrap();
    assert_eq!(src.prefetched_bytes(), 5000);
    src.open_blob_at("doc", a.id, &BlobPath::new("p/a").unwrap())
        .unwrap();
    assert_eq!(src.prefetched_bytes(), 0);
    assert_eq!(requests(&primary, "retrieve"), 2);
}

#[test]
fn batch_needs_a_token_for_its_exact_query_and_never_reads_outside_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let ok = create_doc(&primary.db, primary.store.as_ref(), "ok.bin", b"fine");
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE-THE-STORE").unwrap();
    let dotdot = insert_doc(&primary.db, "../outside.txt");
    let absolute = insert_doc(&primary.db, &outside.display().to_string());
    std::os::unix::fs::symlink(tmp.path(), primary.store.root().join("link")).unwrap();
    let through_link = insert_doc(&primary.db, "link/outside.txt");
    let ids = [ok.id, dotdot.id, absolute.id, through_link.id];
    let query = format!(
        "/api/geo/retrieve_batch/doc?ids={}",
        geo_node::api::join_ids(&ids)
    );
    let c = &primary.creds;
    let now = Utc::now().timestamp();
    let addr = primary.addr();
    // A token for another query, a blob token, or none: 401.
    for auth in [
        Some(c.authorization(
            &RequestData::get(&format!("/api/geo/retrieve_batch/doc?ids={}", ok.id)),
            now,
        )),
        Some(c.authorization(&RequestData::blob("doc", ok.id), now)),
        None,
    ] {
        let (code, body) = raw_get(&addr, &query, auth.as_deref());
        assert_eq!(code, 401, "{body}");
    }
    let (code, body) = raw_get(
        &addr,
        &query,
        Some(&c.authorization(&RequestData::get(&query), now)),
    );
    assert_eq!(code, 200);
    assert!(!body.contains("OUTSIDE-THE-STORE"));
    // Through the client: the three refused paths are left to `retrieve`, which refuses them.
    let src = HttpSource::new(HttpConfig::new(primary.url(), c.clone()));
    let paths = src.blob_paths("doc", &ids).unwrap();
    assert_eq!(paths.len(), 4);
    assert_eq!(src.prefetched_bytes(), 4);
    let err = src
        .open_blob_at(
            "doc",
            through_link.id,
            &BlobPath::new("link/outside.txt").unwrap(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("BLOB_PATH_REFUSED") || err.to_string().contains("403"),
        "{err}"
    );
    for d in [&dotdot, &absolute] {
        assert!(BlobPath::new(&paths[&d.id]).is_err());
        let err = src.open_blob("doc", d.id).unwrap_err();
        assert!(!matches!(err, SourceError::Transient { .. }), "{err}");
    }
    // Junk in the query.
    for q in ["ids=1,x", "ids=-"] {
        let path = format!("/api/geo/retrieve_batch/doc?{q}");
        let (code, _) = raw_get(
            &addr,
            &path,
            Some(&c.authorization(&RequestData::get(&path), now)),
        );
        assert_eq!(code, 400, "{path}");
    }
}

/// A keep-alive HTTP/1.1 proxy that, while `corrupt` is set, flips one byte of every blob in
/// `retrieve_batch` answers and re-frames them, keeping their checksums.
struct CorruptingProxy {
    addr: String,
    corrupt: Arc<AtomicBool>,
}

impl CorruptingProxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let corrupt = Arc::new(AtomicBool::new(false));
        let flag = corrupt.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (up, flag) = (upstream.clone(), flag.clone());
                std::thread::spawn(move || {
                    let _ = proxy_connection(client, &up, &flag);
                });
            }
        });
        CorruptingProxy { addr, corrupt }
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Ok(Some(head));
        }
    }
}

fn proxy_connection(
    client: TcpStream,
    upstream: &str,
    corrupt: &AtomicBool,
) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let up = TcpStream::connect(upstream)?;
    let mut to_up = up.try_clone()?;
    let mut from_up = BufReader::new(up);
    while let Some(req) = read_head(&mut from_client)? {
        to_up.write_all(req.as_bytes())?;
        let Some(head) = read_head(&mut from_up)? else {
            return Ok(());
        };
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        if let Some(len) = header("content-length") {
            body = vec![0u8; len.parse().unwrap()];
            from_up.read_exact(&mut body)?;
        } else {
            assert!(chunked, "neither Content-Length nor chunked: {head}");
            loop {
                let mut line = String::new();
                from_up.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap();
                let mut chunk = vec![0u8; n + 2];
                from_up.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        // Sent on with its length, whichever framing it came in.
        let mut head: String = head
            .trim_end_matches("\r\n")
            .split("\r\n")
            .filter(|l| {
                !l.split_once(':').is_some_and(|(k, _)| {
                    let k = k.trim();
                    k.eq_ignore_ascii_case("transfer-encoding")
                        || k.eq_ignore_ascii_case("content-length")
                })
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        if req.contains("/retrieve_batch/") && corrupt.load(Ordering::SeqCst) {
            let mut enc = batch::Encoder::new();
            for e in batch::decode(body.into()).unwrap() {
                enc.push(&match e {
                    BatchEntry::Blob {
                        id,
                        path,
                        checksum,
                        mac,
                        data,
                    } => {
                        let mut d = data.to_vec();
                        if let Some(b) = d.last_mut() {
                            *b ^= 0x20;
                        }
                        BatchEntry::Blob {
                            id,
                            path,
                            checksum,
                            mac,
                            data: d.into(),
                        }
                    }
                    other => other,
                });
            }
            body = enc.finish().to_vec();
        }
        head.push_str(&format!("\r\ncontent-length: {}\r\n\r\n", body.len()));
        to_client.write_all(head.as_bytes())?;
        to_client.write_all(&body)?;
    }
    Ok(())
}

#[test]
fn a_batch_damaged_in_flight_fails_with_backoff_then_converges() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    // Half verified on the primary (checksum from the verification), half not (checksum of
    // the bytes sent): both are caught.
    for i in 0..30u64 {
        if i == 15 {
            primary.verify_all();
        }
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("c/{i}.bin"),
            &data(i, 1000 + i as usize),
        );
    }
    let proxy = CorruptingProxy::start(primary.addr());
    proxy.corrupt.store(true, Ordering::SeqCst);
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, clock) = Env::manual(start, 0);
    let (sec, store) = secondary(
        tmp.path(),
        &format!("http://{}", proxy.addr),
        &primary.creds,
        env,
    );
    sec.cursor_pass().unwrap();
    sec.backfill_all().unwrap();
    assert_eq!(sec.sync_pass().unwrap(), 30);
    let mut conn = sec.tracking().get().unwrap();
    let failed: i64 = {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let r: N = diesel::sql_query(
            "SELECT COUNT(*) AS n FROM doc_registry WHERE state = 3 AND last_sync_failure LIKE '%checksum mismatch%' AND retry_at > '2030-01-01T00:00:00.000Z'"
        ).get_result(sqlite(&mut conn)).unwrap();
        r.n
    };
    assert_eq!(failed, 30);
    // Nothing landed, nothing left behind, and no tight retry loop.
    let mut files = Vec::new();
    for e in files_under(store.root()) {
        files.push(e);
    }
    assert_eq!(files, Vec::<String>::new());
    assert_eq!(sec.sync_pass().unwrap(), 0);
    // Healthy again: once due, the retry converges (verified on the primary this time).
    primary.verify_all();
    proxy.corrupt.store(false, Ordering::SeqCst);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(sec.sync_pass().unwrap(), 30);
    sec.run_until_idle(10).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let s = &sec.status().unwrap()[0].1;
    assert_eq!((s.synced_count, s.verified_count), (Some(30), Some(30)));
}
