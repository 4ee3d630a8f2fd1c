//! The pushed event feed over real loopback HTTP: `events?wait=` answers when an event is
//! committed during the wait, ends empty at its deadline, is cut to [`api::MAX_EVENT_WAIT`],
//! refuses a malformed wait, and a secondary whose idle sleep is an hour still syncs a new
//! record (its log cursor long-polls, its sync worker is woken by the new row) and stops at
//! once.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::secondary::SecondaryConfig;
use geo_node::api::{self, EventsResponse};
use geo_node::auth::RequestData;
use geo_node::client::{HttpConfig, HttpSource};

/// An HTTP source reading `primary` with a read timeout long enough for the waits below.
fn source(primary: &Primary) -> HttpSource {
    let mut http = HttpConfig::new(primary.url(), primary.creds.clone());
    http.read_timeout = Duration::from_secs(30);
    HttpSource::new(http)
}

#[test]
fn a_waiting_feed_answers_with_the_event_committed_during_the_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    create_doc(&primary.db, primary.store.as_ref(), "a/0.bin", b"zero");
    let source = source(&primary);
    let last = source.max_event_id().unwrap().expect("one event");

    let db = primary.db.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // Another pooled connection, a trigger-written event: only the database watch sees it.
        insert_doc(&db, "a/1.bin")
    });
    let wait = Duration::from_secs(20);
    let started = Instant::now();
    let feed = source.event_feed_wait(last, 100, wait).unwrap();
    let took = started.elapsed();
    let doc = writer.join().unwrap();
    assert_eq!(feed.events.len(), 1, "{feed:?}");
    assert_eq!(feed.events[0].model_record_id, doc.id);
    assert_eq!(feed.events[0].event_name, "created");
    assert!(
        feed.primary.as_ref().unwrap().high_water_mark >= feed.events[0].id,
        "{feed:?}"
    );
    // Answered by the commit, not by the deadline.
    assert!(took < wait / 2, "answered after {took:?}");
}

#[test]
fn a_wait_with_nothing_to_return_ends_empty_at_its_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    create_doc(&primary.db, primary.store.as_ref(), "a/0.bin", b"zero");
    let source = source(&primary);
    let last = source.max_event_id().unwrap().expect("one event");
    let wait = Duration::from_millis(500);
    let started = Instant::now();
    let feed = source.event_feed_wait(last, 100, wait).unwrap();
    assert!(feed.events.is_empty(), "{feed:?}");
    assert!(
        started.elapsed() >= wait,
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(feed.primary.unwrap().high_water_mark, last);
    // Events already there are answered at once, whatever the wait.
    let feed = source.event_feed_wait(0, 100, wait).unwrap();
    assert_eq!(feed.events.len(), 1);
}

/// A raw signed `GET` of `path` on `primary`: (status, body).
fn signed_get(primary: &Primary, path: &str) -> (u16, String) {
    let auth = primary
        .creds
        .authorization(&RequestData::get(path), Utc::now().timestamp());
    raw_get(&primary.addr(), path, Some(&auth))
}

#[test]
fn a_wait_above_the_cap_is_cut_to_the_cap_and_a_malformed_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let path = "/api/geo/events?after=0&limit=10&wait=3600000";
    let started = Instant::now();
    let (code, body) = signed_get(&primary, path);
    let took = started.elapsed();
    assert_eq!(code, 200, "{body}");
    let answer: EventsResponse = serde_json::from_str(&body).unwrap();
    assert!(answer.events.is_empty());
    assert!(
        took >= api::MAX_EVENT_WAIT && took < api::MAX_EVENT_WAIT + Duration::from_secs(8),
        "an hour's wait answered after {took:?}"
    );

    for bad in ["wait=soon", "wait=-1"] {
        let path = format!("/api/geo/events?after=0&{bad}");
        let (code, body) = signed_get(&primary, &path);
        assert_eq!(code, 400, "{bad}: {body}");
    }
}

#[test]
fn a_secondary_with_an_hour_of_idle_sleep_syncs_a_new_record_and_stops_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let dir = tmp.path().join("secondary");
    std::fs::create_dir_all(&dir).unwrap();
    let tracking =
        geo_node::cli::open_secondary_db(&dir.join("tracking.sqlite3").display().to_string(), 8)
            .unwrap();
    let store = std::sync::Arc::new(
        geo_diesel::geo_core::blob_store::LocalBlobStore::new(dir.join("files")).unwrap(),
    );
    let config = SecondaryConfig::default().idle_sleep(Duration::from_secs(3600));
    let event_wait = config.event_wait;
    let sec = std::sync::Arc::new(geo_diesel::secondary::Secondary::new(
        tracking,
        std::sync::Arc::new(source(&primary)),
        store.clone(),
        Env::system(),
        config,
    ));
    let workers = sec.spawn().unwrap();
    // Let every worker finish its first pass and go idle (for an hour, were it polling).
    std::thread::sleep(Duration::from_millis(500));

    let doc = create_doc(
        &primary.db,
        primary.store.as_ref(),
        "n/1.bin",
        b"new content",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = &sec.status().unwrap()[0].1;
        if s.synced_count == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "not synced: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(differing(&primary, &store).is_empty());
    assert_eq!(primary.paths(), vec![(doc.id, "n/1.bin".to_owned())]);

    // The log cursor is in a long poll, every other worker in an hour-long idle wait: a stop
    // ends them all within one event wait.
    let started = Instant::now();
    workers.stop();
    let took = started.elapsed();
    assert!(
        took < event_wait + Duration::from_secs(2),
        "stop took {took:?}"
    );
}
