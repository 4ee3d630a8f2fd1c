//! The HTTP API over real loopback sockets: replication, auth refusals, path safety, error
//! mapping, and faults retried with backoff.

mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::*;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::{PrimarySource, SourceError};
use geo_node::KeyRing;
use geo_node::api::SiteRole;
use geo_node::auth::{self, Credentials, RequestData};
use geo_node::client::{HttpConfig, HttpSource, NodeClient};
use geo_node::server::{NodeState, SecondaryService, ServerHandle};

#[test]
fn replicates_over_http_with_status_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    for i in 0..60u64 {
        let len = match i % 10 {
            0 => 3 << 20, // larger than one server chunk: streamed through the channel
            1 => 0,
            _ => 1000 + (i as usize) * 37,
        };
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("d/{:02}/{i}.bin", i % 7),
            &data(i, len),
        );
    }
    primary.verify_all();
    let (sec, store) = secondary(tmp.path(), &primary.url(), &primary.creds, Env::system());
    sec.run_until_idle(20).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let status = sec.status().unwrap();
    let (_, s) = &status[0];
    assert_eq!(
        (s.synced_count, s.verified_count, s.failed_count),
        (Some(60), Some(60), Some(0))
    );

    // The secondary's own status server, read with the status client.
    let source: Arc<dyn PrimarySource> = Arc::new(HttpSource::new(HttpConfig::new(
        primary.url(),
        primary.creds.clone(),
    )));
    let sec_state = NodeState::new("test-secondary", KeyRing::with([primary.creds.clone()]))
        .with_secondary(SecondaryService::new(sec.clone(), source));
    let sec_server = ServerHandle::start("127.0.0.1:0", Arc::new(sec_state), 1).unwrap();
    let st = NodeClient::new(HttpConfig::new(sec_server.url(), primary.creds.clone()))
        .status()
        .unwrap();
    assert!(st.is_healthy(), "{st:#?}");
    assert_eq!(st.role, SiteRole::Secondary);
    let secf = st.secondary.as_ref().unwrap();
    let docs = secf.replicables.get("docs").unwrap();
    assert_eq!(docs.synced_count, Some(60));
    assert_eq!(docs.verified_in_percentage(), Some(100.0));
    let cursor = secf.cursor.as_ref().unwrap();
    assert_eq!(
        Some(cursor.cursor_last_event_id),
        secf.last_event_id,
        "{st:#?}"
    );
    assert_eq!(cursor.open_gaps_count, 0);

    // The primary's status and metrics.
    let pst = NodeClient::new(HttpConfig::new(primary.url(), primary.creds.clone()))
        .status()
        .unwrap();
    let pf = pst.primary.as_ref().unwrap();
    let docs = pf.replicables.get("docs").unwrap();
    assert_eq!(docs.count, Some(60));
    assert_eq!(docs.checksummed_count, Some(60));
    assert!(pf.last_event_id.flatten().unwrap() >= 60 + 60, "{pst:#?}");
    let (code, metrics) = raw_get(&primary.addr(), "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("geo_docs_checksummed{name=\"test-primary\"} 60"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            // Only the six 3 MiB blobs: the small ones came in retrieve_batch answers.
            "geo_http_requests_total{name=\"test-primary\",endpoint=\"retrieve\",code=\"200\"} 6\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "geo_http_requests_total{name=\"test-primary\",endpoint=\"retrieve_batch\",code=\"200\"}"
        ),
        "{metrics}"
    );
    let (code, metrics) = raw_get(&sec_server.addr().to_string(), "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("geo_docs_synced{name=\"test-secondary\"} 60"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "geo_cursor_skipped_events_total{name=\"test-secondary\",reason=\"malformed\"} 0"
        ),
        "{metrics}"
    );
}

#[test]
fn every_bad_token_is_refused_with_401() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(tmp.path());
    let doc = create_doc(
        &primary.db,
        primary.store.as_ref(),
        "a/secret.bin",
        b"top secret bytes",
    );
    let addr = primary.addr();
    let c = &primary.creds;
    let now = Utc::now().timestamp();
    let path = format!("/api/geo/retrieve/doc/{}", doc.id);
    let blob = RequestData::blob("doc", doc.id);
    let good = c.authorization(&blob, now);
    let (code, body) = raw_get(&addr, &path, Some(&good));
    assert_eq!((code, body.as_str()), (200, "top secret bytes"));

    let other = Credentials::generate();
    let wrong_secret = Credentials {
        access_key: c.access_key.clone(),
        secret: other.secret.clone(),
    };
    let header = |jwt: String| format!("{} {}:{jwt}", auth::SCHEME, c.access_key);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("wrong scheme", Some(good.replacen("GL-Geo", "Bearer", 1))),
        ("no colon", Some(format!("GL-Geo {}", c.access_key))),
        ("garbage token", Some(header("not.a.jwt".into()))),
        ("two parts", Some(header("abc.def".into()))),
        (
            "expired",
            Some(header(auth::sign(&c.secret, &blob, now - 300, now - 240))),
        ),
        (
            "issued in the future",
            Some(header(auth::sign(&c.secret, &blob, now + 300, now + 360))),
        ),
        (
            "valid too long",
            Some(header(auth::sign(&c.secret, &blob, now, now + 86_400))),
        ),
        ("unknown key", Some(other.authorization(&blob, now))),
        (
            "wrong signature",
            Some(wrong_secret.authorization(&blob, now)),
        ),
        (
            "wrong id",
            Some(c.authorization(&RequestData::blob("doc", doc.id + 1), now)),
        ),
        (
            "wrong replicable",
            Some(c.authorization(&RequestData::blob("widget", doc.id), now)),
        ),
        (
            "path binding instead of blob",
            Some(c.authorization(&RequestData::get(&path), now)),
        ),
    ];
    // One answer for every refusal, byte for byte: a prober learns nothing of why.
    let one = r#"{"geo_code":"UNAUTHORIZED","message":"the request's GL-Geo token was refused"}"#;
    for (what, h) in &cases {
        let headers: Vec<(&str, &str)> = h.iter().map(|h| ("Authorization", h.as_str())).collect();
        let (code, head, body) = http(&addr, "GET", &path, &headers, "");
        assert_eq!(code, 401, "{what}: {body}");
        assert_eq!(body, one, "{what}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/json")
                && head.contains(&format!("content-length: {}", one.len())),
            "{what}: {head}"
        );
    }
    // The other endpoints are bound to their path and query.
    let events = "/api/geo/events?after=0&limit=10";
    let (code, _) = raw_get(
        &addr,
        events,
        Some(&c.authorization(&RequestData::get(events), now)),
    );
    assert_eq!(code, 200);
    for (what, path, signed) in [
        ("other query", events, "/api/geo/events?after=0&limit=11"),
        ("other path", "/api/geo/status", "/api/geo/events/last"),
        (
            "ids",
            "/api/geo/ids/doc?from=1&to=5",
            "/api/geo/ids/doc?from=1&to=6",
        ),
        (
            "checksums",
            "/api/geo/checksums/doc?ids=1",
            "/api/geo/checksums/doc?ids=2",
        ),
    ] {
        let (code, body) = raw_get(
            &addr,
            path,
            Some(&c.authorization(&RequestData::get(signed), now)),
        );
        assert_eq!((code, body.as_str()), (401, one), "{what}");
        let (code, body) = raw_get(&addr, path, None);
        assert_eq!((code, body.as_str()), (401, one), "{what} without a token");
    }
    assert_eq!(
        primary
            .server
            .as_ref()
            .unwrap()
            .state()
            .metrics()
            .auth_failures(),
        cases.len() as u64 + 8
    );
    // Through the client, a refused key is `Unauthorized`.
    let bad = HttpSource::new(HttpConfig::new(primary.url(), other));
    assert!(matches!(
        bad.max_event_id(),
        Err(SourceError::Unauthorized { .. })
    ));
    assert!(matches!(
        bad.open_blob("doc", doc.id),
        Err(SourceError::Unauthorized { .. })
    ));
}

#[test]
fn traversal_and_unknown_replicable_are_refused_without_reading_outside() {
    // Through a generic source and through the direct service the CLI uses.
    refuses_traversal(false);
    refuses_traversal(true);
}

fn refuses_traversal(direct: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let primary = if direct {
        Primary::direct(tmp.path())
    } else {
        Primary::new(tmp.path())
    };
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE-THE-STORE").unwrap();
    // Records whose stored path tries to leave the store.
    let dotdot = insert_doc(&primary.db, "../outside.txt");
    let absolute = insert_doc(&primary.db, &outside.display().to_string());
    std::os::unix::fs::symlink(tmp.path(), primary.store.root().join("link")).unwrap();
    let through_link = insert_doc(&primary.db, "link/outside.txt");
    let c = &primary.creds;
    let addr = primary.addr();
    let now = Utc::now().timestamp();
    for d in [&dotdot, &absolute, &through_link] {
        let path = format!("/api/geo/retrieve/doc/{}", d.id);
        let (code, body) = raw_get(
            &addr,
            &path,
            Some(&c.authorization(&RequestData::blob("doc", d.id), now)),
        );
        assert!((400..500).contains(&code), "{}: {code} {body}", d.path);
        assert!(body.contains("BLOB_PATH_REFUSED"), "{}: {body}", d.path);
        assert!(!body.contains("OUTSIDE-THE-STORE"));
    }
    // Traversal and junk in the URL itself.
    for (path, replicable, id) in [
        (
            "/api/geo/retrieve/..%2F..%2Foutside.txt/1",
            "../../outside.txt",
            1,
        ),
        ("/api/geo/retrieve/widget/1", "widget", 1),
        ("/api/geo/retrieve/Doc/1", "Doc", 1),
    ] {
        let (code, body) = raw_get(
            &addr,
            path,
            Some(&c.authorization(&RequestData::blob(replicable, id), now)),
        );
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains("UNKNOWN_REPLICABLE"), "{path}: {body}");
    }
    for path in [
        "/api/geo/retrieve/doc/..%2F..%2Foutside.txt",
        "/api/geo/retrieve/doc/-1",
        "/api/geo/retrieve/doc/1.5",
    ] {
        let (code, body) = raw_get(&addr, path, None);
        assert_eq!(code, 400, "{path}: {body}");
    }
    for path in [
        "/api/geo/retrieve/../../outside.txt",
        "/api/geo/../../outside.txt",
        "/../outside.txt",
    ] {
        let (code, body) = raw_get(&addr, path, None);
        assert!((400..500).contains(&code), "{path}: {code} {body}");
        assert!(!body.contains("OUTSIDE-THE-STORE"));
    }
    let (code, body) = raw_get(
        &addr,
        "/api/geo/ids/nope?from=1&to=2",
        Some(&c.authorization(&RequestData::get("/api/geo/ids/nope?from=1&to=2"), now)),
    );
    assert_eq!(code, 400, "{body}");
    // The client maps an unknown replicable.
    let src = HttpSource::new(HttpConfig::new(primary.url(), c.clone()));
    assert!(matches!(
        src.max_model_id("widget"),
        Err(SourceError::UnknownReplicable { .. })
    ));
    assert!(matches!(
        src.open_blob("../x", 1),
        Err(SourceError::UnknownReplicable { .. })
    ));
}

#[test]
fn missing_file_and_missing_record_are_told_apart() {
    missing_file_and_record(false);
    missing_file_and_record(true);
}

fn missing_file_and_record(direct: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let primary = if direct {
        Primary::direct(tmp.path())
    } else {
        Primary::new(tmp.path())
    };
    let gone = insert_doc(&primary.db, "never/written.bin");
    let src = HttpSource::new(HttpConfig::new(primary.url(), primary.creds.clone()));
    assert!(
        matches!(src.open_blob("doc", gone.id), Err(SourceError::MissingOnPrimary { id, .. }) if id == gone.id)
    );
    assert!(matches!(
        src.open_blob("doc", 999),
        Err(SourceError::RecordNotFound { id: 999, .. })
    ));
    assert_eq!(src.blob_path("doc", 999).unwrap(), None);
    let (code, body) = raw_get(
        &primary.addr(),
        &format!("/api/geo/retrieve/doc/{}", gone.id),
        Some(
            &primary
                .creds
                .authorization(&RequestData::blob("doc", gone.id), Utc::now().timestamp()),
        ),
    );
    assert_eq!(code, 404);
    assert!(body.contains("\"geo_code\":\"FILE_NOT_FOUND\""), "{body}");

    // The secondary records `missing_on_primary` with the long backoff.
    let (sec, _) = secondary(tmp.path(), &primary.url(), &primary.creds, Env::system());
    sec.run_until_idle(5).unwrap();
    let s = &sec.status().unwrap()[0].1;
    assert_eq!(s.failed_count, Some(1));
    let mut conn = sec.tracking().get().unwrap();
    let rows = registry_rows(&mut conn);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].doc_id, gone.id);
    assert!(rows[0].missing_on_primary, "{rows:?}");
}

#[derive(Debug, diesel::QueryableByName)]
struct RegRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    doc_id: i64,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    state: i16,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    retry_count: i16,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    retry_at: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_sync_failure: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    missing_on_primary: bool,
}

fn registry_rows(conn: &mut geo_diesel::db::PooledConn) -> Vec<RegRow> {
    use diesel::RunQueryDsl;
    diesel::sql_query(
        "SELECT doc_id, state, retry_count, retry_at, last_sync_failure, missing_on_primary FROM doc_registry ORDER BY doc_id"
    ).load(sqlite(conn)).unwrap()
}

#[test]
fn server_errors_truncation_and_corruption_fail_then_retry_with_backoff() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::new(tmp.path());
    // Big enough to be streamed in several pieces, so truncation happens mid-body.
    for i in 0..3u64 {
        create_doc(
            &primary.db,
            primary.store.as_ref(),
            &format!("f/{i}.bin"),
            &data(i, 1 << 20),
        );
    }
    primary.verify_all();
    let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let (env, clock) = Env::manual(start, 0);
    let (sec, store) = secondary(tmp.path(), &primary.url(), &primary.creds, env);
    sec.cursor_pass().unwrap();
    sec.backfill_all().unwrap();

    for (mode, expect) in [
        (fault::ERROR_500, "500"),
        (fault::TRUNCATE, "Error downloading file"),
        (fault::CORRUPT, "checksum mismatch"),
    ] {
        primary.set_fault(mode);
        assert_eq!(sec.sync_pass().unwrap(), 3, "mode {mode}");
        let mut conn = sec.tracking().get().unwrap();
        let rows = registry_rows(&mut conn);
        for r in &rows {
            assert_eq!(r.state, 3, "mode {mode}: {r:?}");
            let failure = r.last_sync_failure.clone().unwrap_or_default();
            assert!(failure.contains(expect), "mode {mode}: {failure}");
            assert!(
                r.retry_at
                    .as_deref()
                    .is_some_and(|t| t > "2030-01-01T00:00:00.000Z"),
                "{r:?}"
            );
        }
        // No partial or corrupt file at a final path, and no temporary left behind.
        assert_eq!(
            files_under(store.root()),
            Vec::<String>::new(),
            "mode {mode}"
        );
        // Not retried before retry_at: no tight loop.
        assert_eq!(sec.sync_pass().unwrap(), 0, "mode {mode}");
        clock.advance(chrono::Duration::hours(2));
    }
    let mut conn = sec.tracking().get().unwrap();
    assert!(registry_rows(&mut conn).iter().all(|r| r.retry_count == 3));
    primary.set_fault(fault::NONE);
    // Healthy again: once due, the retry converges.
    assert_eq!(sec.sync_pass().unwrap(), 3);
    sec.run_until_idle(10).unwrap();
    assert_eq!(differing(&primary, &store), Vec::<String>::new());
    let s = &sec.status().unwrap()[0].1;
    assert_eq!((s.synced_count, s.verified_count), (Some(3), Some(3)));
}
