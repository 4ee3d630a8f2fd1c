//! The cursor reads the [`PrimarySource`] itself and hands its errors back whole, so a caller
//! can tell a transient failure from a permanent one.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use chrono::{TimeZone, Utc};
use geo_core::Role;
use geo_core::blob_store::LocalBlobStore;
use geo_core::event::Event;
use geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};

use super::{CursorError, LogCursor, load_state};
use crate::db::DbPool;

/// A primary whose event feed returns `after` and whose gap lookup returns `by_ids` (each
/// `Err` is built fresh per call, since `SourceError` is not `Clone`).
struct Feed {
    after: Box<dyn Fn() -> Result<Vec<Event>, SourceError> + Send + Sync>,
    by_ids: Box<dyn Fn() -> Result<Vec<Event>, SourceError> + Send + Sync>,
    /// The ids each gap lookup asked for.
    asked: Mutex<Vec<Vec<i64>>>,
}

impl PrimarySource for Feed {
    fn events_after(&self, _: i64, _: usize) -> Result<Vec<Event>, SourceError> {
        (self.after)()
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.asked.lock().unwrap().push(ids.to_vec());
        (self.by_ids)()
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        unreachable!("the cursor does not ask for the newest event id")
    }
    fn model_ids(&self, _: &str, _: RangeInclusive<i64>) -> Result<Vec<i64>, SourceError> {
        unreachable!("the cursor does not backfill")
    }
    fn max_model_id(&self, _: &str) -> Result<Option<i64>, SourceError> {
        unreachable!("the cursor does not backfill")
    }
    fn primary_checksums(
        &self,
        _: &str,
        _: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        unreachable!("the cursor does not verify")
    }
    fn blob_path(&self, _: &str, _: i64) -> Result<Option<String>, SourceError> {
        unreachable!("the cursor does not download")
    }
    fn open_blob(&self, _: &str, _: i64) -> Result<BlobStream, SourceError> {
        unreachable!("the cursor does not download")
    }
}

fn feed(
    after: impl Fn() -> Result<Vec<Event>, SourceError> + Send + Sync + 'static,
    by_ids: impl Fn() -> Result<Vec<Event>, SourceError> + Send + Sync + 'static,
) -> Feed {
    Feed {
        after: Box::new(after),
        by_ids: Box::new(by_ids),
        asked: Mutex::new(Vec::new()),
    }
}

/// An event for a replicable no build registers: the cursor skips it but still advances.
fn unknown_event(id: i64) -> Event {
    Event {
        id,
        replicable_name: "not_registered_anywhere".into(),
        event_name: "created".into(),
        model_record_id: id,
        payload: serde_json::json!({ "model_record_id": id }),
        created_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
    }
}

struct Site {
    _dir: tempfile::TempDir,
    tracking: DbPool,
    store: LocalBlobStore,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracking.sqlite3");
    let mut conn = crate::connection::sqlite::establish(&path).unwrap();
    crate::run_migrations(&mut conn, Role::Secondary).unwrap();
    let tracking = DbPool::connect(path.to_str().unwrap(), 2).unwrap();
    let store = LocalBlobStore::new(dir.path().join("files")).unwrap();
    Site {
        _dir: dir,
        tracking,
        store,
    }
}

fn pass(site: &Site, source: &dyn PrimarySource) -> Result<super::CursorPass, CursorError> {
    LogCursor::default().pass(
        &site.tracking,
        source,
        Some(&site.store),
        &|_| true,
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 1, 0).unwrap(),
    )
}

#[test]
fn a_transient_feed_failure_stays_transient_and_moves_nothing() {
    let site = site();
    let source = feed(
        || {
            Err(SourceError::transient(
                "GET /events",
                std::io::Error::other("connection reset"),
            ))
        },
        || Ok(vec![]),
    );
    let err = pass(&site, &source).unwrap_err();
    let CursorError::Source(e) = &err else {
        panic!("expected a source error, got {err:?}");
    };
    assert!(e.is_transient());
    assert_eq!(
        err.to_string(),
        "reading events from the primary: GET /events: connection reset"
    );
    let state = load_state(&mut site.tracking.get().unwrap()).unwrap();
    assert_eq!((state.last_event_id, state.gaps.len()), (0, 0));
}

#[test]
fn a_refused_feed_is_not_transient() {
    let site = site();
    let source = feed(
        || {
            Err(SourceError::Unauthorized {
                message: "bad token".into(),
            })
        },
        || Ok(vec![]),
    );
    match pass(&site, &source) {
        Err(CursorError::Source(e @ SourceError::Unauthorized { .. })) => {
            assert!(!e.is_transient())
        }
        other => panic!("expected the primary's refusal, got {other:?}"),
    }
}

#[test]
fn a_failed_gap_lookup_keeps_its_kind_and_its_gaps() {
    let site = site();
    // Event 3 arrives first: 1 and 2 become gaps.
    let first = feed(|| Ok(vec![unknown_event(3)]), || Ok(vec![]));
    let p = pass(&site, &first).unwrap();
    assert_eq!((p.cursor, p.gaps_detected), (3, 2));
    assert!(first.asked.lock().unwrap().is_empty());

    let second = feed(
        || Ok(vec![]),
        || {
            Err(SourceError::other(
                "POST /events/lookup",
                std::io::Error::other("bad json"),
            ))
        },
    );
    let err = pass(&site, &second).unwrap_err();
    assert!(
        matches!(&err, CursorError::Source(e @ SourceError::Other { .. }) if !e.is_transient()),
        "{err:?}"
    );
    assert_eq!(*second.asked.lock().unwrap(), vec![vec![1, 2]]);
    let state = load_state(&mut site.tracking.get().unwrap()).unwrap();
    assert_eq!((state.last_event_id, state.gaps), (3, vec![1, 2]));
}
