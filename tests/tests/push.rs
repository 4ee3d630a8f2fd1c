//! The pushed event feed and the workers that wake on work, on real SQLite files (always) and a
//! real PostgreSQL server (feature `pg-suite`, `GEO_TEST_DATABASE_URL`), with the widgets
//! example's primary and a secondary ([`Sites`]):
//!
//! - `DirectSource::event_feed_wait` answers with an event committed during the wait: one the
//!   application writes through the library's pool (the model-table trigger publishes it), and
//!   one written by raw SQL on a connection of its own (another session: on PostgreSQL the
//!   `geo_events` trigger's NOTIFY wakes the feed, on SQLite the `data_version` watch does);
//! - a wait with nothing to return ends empty at its deadline;
//! - a secondary whose idle sleep is an hour still syncs a new record (the log cursor
//!   long-polls, the sync worker is woken by the new pending row), and a stop ends every
//!   worker at once.

mod sites;

use std::time::{Duration, Instant};

use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::secondary::SecondaryConfig;
use geo_tests::Backend;
use sites::state::*;
use sites::{Sites, wd};

geo_tests::backend_tests! {
    waiting_feed_answers_with_an_event_the_application_commits,
    waiting_feed_answers_with_a_row_written_by_another_session,
    waiting_feed_with_nothing_to_return_ends_empty_at_its_deadline,
    workers_sync_a_new_record_without_waiting_their_idle_sleep_and_stop_at_once,
}

/// Long enough that an answer well before it was caused by the commit.
const LONG_WAIT: Duration = Duration::from_secs(20);

/// The last event id on the primary (0 without events).
fn last_event(s: &Sites) -> i64 {
    s.direct()
        .max_event_id()
        .expect("max event id")
        .unwrap_or(0)
}

fn waiting_feed_answers_with_an_event_the_application_commits(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    s.widget(0, 100);
    let last = last_event(&s);
    let feed = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            s.widget(1, 200).0
        });
        let started = Instant::now();
        let feed = s.direct().event_feed_wait(last, 100, LONG_WAIT).unwrap();
        let took = started.elapsed();
        let w = writer.join().unwrap();
        assert!(took < LONG_WAIT / 2, "answered after {took:?}");
        assert_eq!(feed.events.len(), 1, "{feed:?}");
        assert_eq!(feed.events[0].model_record_id, w.id);
        feed
    });
    assert_eq!(feed.events[0].event_name, "created");
    assert!(feed.events[0].id > last);
    let primary = feed.primary.expect("the primary's identity");
    assert!(primary.high_water_mark >= feed.events[0].id);
}

fn waiting_feed_answers_with_a_row_written_by_another_session(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let last = last_event(&s);
    let feed = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // A connection of its own, outside every pool, and no library call: the model
            // table's trigger writes the event; only the database can say it was committed.
            let mut other = s.primary_database.connect();
            other
                .batch_execute(
                    "INSERT INTO widgets (file_path, name) VALUES ('raw/1.bin', 'raw sql')",
                )
                .expect("raw insert");
        });
        let started = Instant::now();
        let feed = s.direct().event_feed_wait(last, 100, LONG_WAIT).unwrap();
        let took = started.elapsed();
        assert!(took < LONG_WAIT / 2, "answered after {took:?}");
        feed
    });
    assert_eq!(feed.events.len(), 1, "{feed:?}");
    assert_eq!(feed.events[0].replicable_name, wd().name);
    assert_eq!(feed.events[0].event_name, "created");
}

fn waiting_feed_with_nothing_to_return_ends_empty_at_its_deadline(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    s.widget(0, 100);
    let last = last_event(&s);
    let wait = Duration::from_millis(400);
    let started = Instant::now();
    let feed = s.direct().event_feed_wait(last, 100, wait).unwrap();
    let took = started.elapsed();
    assert!(feed.events.is_empty(), "{feed:?}");
    assert!(took >= wait, "ended after {took:?}");
    assert_eq!(feed.primary.expect("identity").high_water_mark, last);
    // With events after the id it answers at once, and a zero wait is a plain read.
    assert_eq!(
        s.direct()
            .event_feed_wait(0, 100, LONG_WAIT)
            .unwrap()
            .events
            .len(),
        1
    );
    assert!(
        s.direct()
            .event_feed_wait(last, 100, Duration::ZERO)
            .unwrap()
            .events
            .is_empty()
    );
}

fn workers_sync_a_new_record_without_waiting_their_idle_sleep_and_stop_at_once(backend: Backend) {
    let config = SecondaryConfig::default().idle_sleep(Duration::from_secs(3600));
    let event_wait = config.event_wait;
    let s = Sites::open(backend, config, 0);
    let workers = s.secondary.spawn().expect("spawn");
    // Every worker has done its first pass and gone idle (for an hour, were it polling).
    std::thread::sleep(Duration::from_millis(500));

    let (w, bytes) = s.widget(7, 4096);
    geo_tests::wait_until(Duration::from_secs(60), "the new widget synced", || {
        s.reg(wd(), w.id).is_some_and(|r| r.state == SYNCED)
    });
    assert_eq!(s.secondary_bytes(&w.file_path), Some(bytes));

    let started = Instant::now();
    workers.stop();
    let took = started.elapsed();
    assert!(
        took < event_wait + Duration::from_secs(2),
        "stop took {took:?}"
    );
}
