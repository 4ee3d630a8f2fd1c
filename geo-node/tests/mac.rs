//! Content that can't be planted: a proxy on the path (a real HTTP forwarder on loopback) that
//! replaces blob bytes and recomputes every plain checksum — the `retrieve` header, the
//! `retrieve_batch` entry, the `checksums` answer — is refused by the secondary, which stores
//! nothing planted and reports the records as failed; with the proxy passing everything through
//! unchanged, the same secondary converges, synced and verified.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{TimeZone, Utc};
use common::*;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore};
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::PrimarySource;
use geo_node::api::batch::{self, BatchEntry};
use geo_node::api::{CHECKSUM_HEADER, ChecksumsResponse};
use geo_node::client::{HttpConfig, HttpSource};

/// What the proxy plants as the content of record `id`.
fn planted(id: i64) -> Vec<u8> {
    format!("planted by the proxy: not the content of doc {id}\n").into_bytes()
}

/// A keep-alive HTTP/1.1 forwarder; while `rewrite` is set it replaces the content of every
/// blob with [`planted`] and recomputes the plain checksums that go with it (keeping whatever
/// MAC the primary sent, which it cannot recompute).
struct RewritingProxy {
    url: String,
    rewrite: Arc<AtomicBool>,
}

impl RewritingProxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rewrite = Arc::new(AtomicBool::new(false));
        let flag = rewrite.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (up, flag) = (upstream.clone(), flag.clone());
                std::thread::spawn(move || {
                    let _ = forward(client, &up, &flag);
                });
            }
        });
        RewritingProxy { url, rewrite }
    }

    fn set(&self, rewrite: bool) {
        self.rewrite.store(rewrite, Ordering::SeqCst);
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

/// `head` with header `name` set to `value` (replaced, or added).
fn set_header(head: &str, name: &str, value: &str) -> String {
    let mut lines: Vec<String> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .collect();
    lines.push(format!("{name}: {value}"));
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` without header `name`.
fn drop_header(head: &str, name: &str) -> String {
    let lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
        .collect();
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

/// The whole body after `head`: `Content-Length` bytes, or a chunked body decoded.
fn read_body(head: &str, r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    if let Some(n) = header(head, "content-length") {
        let mut body = vec![0u8; n.parse().unwrap()];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    assert!(
        header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
        "a body with neither Content-Length nor chunked: {head}"
    );
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16).unwrap();
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk)?;
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// The record id at the end of a `/retrieve/{replicable}/{id}` request line.
fn retrieve_id(request: &str) -> Option<i64> {
    let target = request.split_whitespace().nth(1)?;
    let rest = target.split_once("/api/geo/retrieve/")?.1;
    rest.rsplit('/').next()?.parse().ok()
}

fn forward(client: TcpStream, upstream: &str, rewrite: &AtomicBool) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let up = TcpStream::connect(upstream)?;
    let mut to_up = up.try_clone()?;
    let mut from_up = BufReader::new(up);
    while let Some(req) = read_head(&mut from_client)? {
        to_up.write_all(req.as_bytes())?;
        let Some(mut head) = read_head(&mut from_up)? else {
            return Ok(());
        };
        let mut body = read_body(&head, &mut from_up)?;
        // Sent on with its length, whichever framing it came in.
        head = drop_header(&head, "transfer-encoding");
        let ok = head.starts_with("HTTP/1.1 200");
        if ok && rewrite.load(Ordering::SeqCst) {
            if let Some(id) = retrieve_id(&req) {
                body = planted(id);
                head = set_header(&head, CHECKSUM_HEADER, &checksum_bytes(&body).to_hex());
            } else if req.contains("/retrieve_batch/") {
                let mut enc = batch::Encoder::new();
                for e in batch::decode(body.into()).unwrap() {
                    enc.push(&match e {
                        BatchEntry::Blob { id, path, mac, .. } => BatchEntry::Blob {
                            id,
                            path,
                            checksum: checksum_bytes(&planted(id)),
                            mac,
                            data: planted(id).into(),
                        },
                        other => other,
                    });
                }
                body = enc.finish().to_vec();
            } else if req.contains("/checksums/") {
                let mut r: ChecksumsResponse = serde_json::from_slice(&body).unwrap();
                for e in &mut r.checksums {
                    if e.checksum.is_some() {
                        e.checksum = Some(checksum_bytes(&planted(e.id)));
                    }
                }
                body = serde_json::to_vec(&r).unwrap();
            }
        }
        head = set_header(&head, "content-length", &body.len().to_string());
        to_client.write_all(head.as_bytes())?;
        to_client.write_all(&body)?;
    }
    Ok(())
}

#[derive(Debug, diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    doc_id: i64,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    state: i16,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_sync_failure: Option<String>,
}

fn rows(sec: &geo_diesel::secondary::Secondary) -> Vec<Row> {
    use diesel::RunQueryDsl;
    let mut conn = sec.tracking().get().unwrap();
    diesel::sql_query(
        "SELECT doc_id, state, verification_state, last_sync_failure FROM doc_registry ORDER BY doc_id",
    )
    .load(sqlite(&mut conn))
    .unwrap()
}

/// Syncs `n` docs of `len` bytes (half of them verified on the primary) through a rewriting
/// proxy: every download fails as unauthentic and nothing lands; then through the same proxy
/// passing everything unchanged: converged, synced and verified.
fn planted_content_is_refused_then_converges(n: u64, len: usize, endpoint: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    for i in 0..n {
        if i == n / 2 {
            primary.verify_all();
        }
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("m/{i}.bin"),
            &data(i, len + i as usize),
        );
    }
    let proxy = RewritingProxy::start(primary.addr());
    proxy.set(true);
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, clock) = Env::manual(start, 0);
    let (sec, store) = secondary(tmp.path(), &proxy.url, &primary.creds, env);
    sec.cursor_pass().unwrap();
    sec.backfill_all().unwrap();
    let before = primary
        .server
        .as_ref()
        .unwrap()
        .state()
        .metrics()
        .requests(endpoint, 200);
    assert_eq!(sec.sync_pass().unwrap(), n as usize);
    let after = primary
        .server
        .as_ref()
        .unwrap()
        .state()
        .metrics()
        .requests(endpoint, 200);
    assert!(after > before, "the blobs came through {endpoint}");
    let rows = rows(&sec);
    assert_eq!(rows.len(), n as usize);
    for r in &rows {
        assert_eq!(r.state, 3, "{r:?}");
        let failure = r.last_sync_failure.as_deref().unwrap_or("");
        assert!(
            failure.contains(&format!("checksum of doc {} is not authentic", r.doc_id)),
            "{r:?}"
        );
    }
    // Nothing planted landed, and nothing was left behind.
    assert_eq!(files_under(store.root()), Vec::<String>::new());
    // Not retried before it is due.
    assert_eq!(sec.sync_pass().unwrap(), 0);

    proxy.set(false);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(sec.sync_pass().unwrap(), n as usize);
    sec.run_until_idle(10).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(
        (s.synced_count, s.verified_count, s.failed_count),
        (Some(n), Some(n), Some(0))
    );
}

#[test]
fn retrieve_with_planted_content_and_checksum_is_refused() {
    // Larger than a batch blob and than one server chunk: `retrieve`, and the primary hashes
    // the unverified ones before it answers.
    planted_content_is_refused_then_converges(4, 300 * 1024, "retrieve");
}

#[test]
fn retrieve_batch_with_planted_content_and_checksum_is_refused() {
    planted_content_is_refused_then_converges(20, 4096, "retrieve_batch");
}

#[test]
fn a_rewritten_checksums_answer_fails_verification_instead_of_passing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let n = 6;
    for i in 0..n {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("v/{i}.bin"),
            &data(i, 2000),
        );
    }
    primary.verify_all();
    let proxy = RewritingProxy::start(primary.addr());
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, clock) = Env::manual(start, 0);
    let (sec, store) = secondary(tmp.path(), &proxy.url, &primary.creds, env);
    sec.run_until_idle(10).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());

    // The source itself: through the rewriting proxy, no checksum it reports is the planted
    // one; passing through, each is the primary's.
    let src = HttpSource::new(HttpConfig::new(&proxy.url, primary.creds.clone()));
    let ids: Vec<i64> = primary.paths().iter().map(|(id, _)| *id).collect();
    let genuine = src.primary_checksums("doc", &ids).unwrap();
    proxy.set(true);
    let rewritten = src.primary_checksums("doc", &ids).unwrap();
    for id in &ids {
        let real = genuine[id].verified_checksum().copied().unwrap();
        let (_, p) = &primary.paths()[ids.iter().position(|x| x == id).unwrap()];
        let on_primary = primary
            .store
            .checksum(&BlobPath::new(p).unwrap())
            .unwrap()
            .0;
        assert_eq!(real, on_primary);
        let got: Checksum = rewritten[id].verified_checksum().copied().unwrap();
        assert_ne!(got, checksum_bytes(&planted(*id)), "doc {id}");
        assert_ne!(got, real, "doc {id}");
    }
    assert!(
        src.stats().last_error().contains("not authentic"),
        "{}",
        src.stats().last_error()
    );

    // Someone planted content on the secondary's disk and rewrites the checksums answer to
    // match it: re-verification must fail, not pass.
    for (id, path) in primary.paths() {
        std::fs::write(store.root().join(&path), planted(id)).unwrap();
    }
    {
        use diesel::RunQueryDsl;
        let mut conn = sec.tracking().get().unwrap();
        diesel::sql_query("UPDATE doc_registry SET verification_state = 0")
            .execute(sqlite(&mut conn))
            .unwrap();
    }
    assert_eq!(sec.verification_pass().unwrap(), n as usize);
    for r in rows(&sec) {
        assert_eq!(r.verification_state, 3, "{r:?}");
    }
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(s.verified_count, Some(0));

    // Passing through again: the resync and the verification converge on the real content.
    proxy.set(false);
    clock.advance(chrono::Duration::hours(2));
    sec.run_until_idle(10).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let s = &sec.status().unwrap()[0].1;
    assert_eq!((s.synced_count, s.verified_count), (Some(n), Some(n)));
}
