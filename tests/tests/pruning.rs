//! Event pruning end to end on real databases (SQLite always, PostgreSQL with the `pg-suite`
//! feature): the primary prunes exactly what every known secondary consumed, never an event a
//! secondary awaits in a gap, and past a lagging secondary only by the retention bound; that
//! secondary is told, recovers with a full backfill plus reverification and converges; one
//! `DELETE` never removes more than the batch size. Each scenario runs as `<scenario>::sqlite`
//! and `<scenario>::postgres`.

mod sites;

use std::sync::Arc;

use chrono::Duration;
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::safety::SafetyHalt;
use geo_diesel::geo_core::source::{PrimarySource, SourceError};
use geo_diesel::geo_core::{Backend, Role};
use geo_diesel::primary::prune::{PruneConfig, PrunePass, prune_pass, pruned_through};
use geo_diesel::primary::sites::known_secondaries;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_tests::{TestDatabase, on_conn};
use sites::{Sites, exec, wd};
use widgets::app;

geo_tests::backend_tests! {
    pruning_deletes_exactly_what_every_secondary_consumed,
    an_event_awaited_in_a_gap_is_not_pruned,
    with_no_secondary_known_everything_is_pruned_in_bounded_batches,
    the_retention_bound_prunes_past_a_lagging_secondary_which_recovers_and_converges,
    the_row_cap_keeps_only_the_newest_events,
    a_changed_primary_identity_halts_instead_of_recovering,
}

/// No retention bound: only what the secondaries consumed is pruned.
fn unbounded() -> PruneConfig {
    PruneConfig::default()
        .retention_age(None)
        .retention_events(None)
}

fn prune(s: &Sites, config: &PruneConfig) -> PrunePass {
    prune_pass(&mut s.p(), config, chrono::Utc::now()).expect("prune pass")
}

/// A direct source for the secondary `name`: it records its position on the primary.
fn named(s: &Sites, name: &str) -> Arc<dyn PrimarySource> {
    Arc::new(DirectSource::new(s.primary_db.clone(), s.primary_store.clone()).for_secondary(name))
}

/// A second secondary with its own tracking database and folder (fields drop in order).
struct Other {
    secondary: Arc<Secondary>,
    _tracking: DbPool,
    _database: TestDatabase,
}

fn other(s: &Sites, name: &str, config: SecondaryConfig) -> Other {
    let database = TestDatabase::fresh(s.backend(), "rt_tracking_other");
    let tracking = database.pool(4);
    on_conn!(&mut tracking.get().expect("conn"), c => geo_diesel::run_migrations(c, Role::Secondary))
        .expect("secondary migrations");
    let store =
        Arc::new(LocalBlobStore::new(s.dir.path().join(format!("{name}-files"))).expect("store"));
    let secondary = Arc::new(Secondary::new(
        tracking.clone(),
        named(s, name),
        store,
        s.env.clone(),
        config,
    ));
    Other {
        secondary,
        _tracking: tracking,
        _database: database,
    }
}

/// Runs cursor passes until the cursor read everything.
fn catch_up(sec: &Secondary) {
    for _ in 0..100 {
        if sec.cursor_pass().expect("cursor pass").read == 0 {
            return;
        }
    }
    panic!("the cursor never caught up");
}

fn event_ids(s: &Sites) -> Vec<i64> {
    s.events().iter().map(|e| e.id).collect()
}

fn pruning_deletes_exactly_what_every_secondary_consumed(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    for i in 0..10 {
        s.widget(i, 50);
    }
    let ids = event_ids(&s);
    assert_eq!(ids.len(), 10);
    let a = other(&s, "a", SecondaryConfig::default());
    let b = s.new_secondary(named(&s, "b"), SecondaryConfig::default().cursor_batch(4));
    catch_up(&a.secondary);
    // b reads one batch of 4, then (telling the primary it consumed 4) another 4; a
    // everything. A position reaches the primary with the read after it.
    assert_eq!(b.cursor_pass().unwrap().read, 4);
    assert_eq!(b.cursor_pass().unwrap().read, 4);
    let known = known_secondaries(&mut s.p()).unwrap();
    let consumed: Vec<(&str, Option<i64>)> = known
        .iter()
        .map(|k| (k.name.as_str(), k.consumed_event_id))
        .collect();
    assert_eq!(consumed, [("a", Some(ids[9])), ("b", Some(ids[3]))]);

    let pass = prune(&s, &unbounded());
    assert_eq!(pass.deleted, 4, "{pass:?}");
    assert_eq!(pass.floor, Some(ids[3]));
    assert_eq!(pass.past_floor, 0);
    assert_eq!(event_ids(&s), ids[4..].to_vec());
    assert_eq!(pruned_through(&mut s.p()).unwrap(), ids[3]);
    // Nothing more is due until b moves on; b keeps reading without noticing.
    assert_eq!(prune(&s, &unbounded()).deleted, 0);
    catch_up(&b);
    assert!(b.last_pruned_recovery().is_none());
    assert_eq!(s.tracked(wd()).len(), 10, "b saw every created event");
    // b's position reaches the primary with its next read; then everything goes.
    b.cursor_pass().unwrap();
    assert_eq!(prune(&s, &unbounded()).deleted, 6);
    assert!(event_ids(&s).is_empty());
    // The ids keep counting: pruning is not ids going backwards.
    let (w, _) = s.widget(20, 10);
    catch_up(&b);
    assert!(s.reg(wd(), w.id).is_some());
    assert_eq!(b.halt().unwrap(), None);
}

fn an_event_awaited_in_a_gap_is_not_pruned(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w1, _) = s.widget(1, 10);
    let (w2, _) = s.widget(2, 10);
    // Ids 3 and 4 are taken by transactions that commit later; the next event is 5.
    s.set_next_event_id(5);
    let (w5, _) = s.widget(5, 10);
    let b = s.new_secondary(named(&s, "b"), SecondaryConfig::default());
    catch_up(&b);
    // The cursor passed 5 and awaits 3 and 4: it has consumed only up to 2.
    assert_eq!(
        geo_diesel::cursor::load_state(&mut s.t()).unwrap().gaps,
        [3, 4]
    );
    // The transaction holding id 3 commits now: a created event for a widget the cursor has
    // not seen.
    let late = s.widget_silently(3, 10).0;
    s.insert_event(
        Some(3),
        "widget",
        "created",
        late,
        &format!(r#"{{"model_record_id": {late}}}"#),
    );
    assert_eq!(
        known_secondaries(&mut s.p()).unwrap()[0].consumed_event_id,
        Some(2)
    );
    // Pruning spares everything above 2, the late event included (its `after` was 5).
    let pass = prune(&s, &unbounded());
    assert_eq!(pass.deleted, 2, "{pass:?}");
    assert_eq!(event_ids(&s), [3, 5]);
    // The gap fills from the feed: the late record is replicated, not skipped.
    catch_up(&b);
    assert!(s.reg(wd(), late).is_some(), "the late event was applied");
    assert_eq!(
        geo_diesel::cursor::load_state(&mut s.t()).unwrap().gaps,
        [4]
    );
    for w in [w1.id, w2.id, w5.id] {
        assert!(s.reg(wd(), w).is_some());
    }
    // Now 3 is consumed; 4 is still awaited, so 5 stays.
    b.cursor_pass().unwrap();
    assert_eq!(prune(&s, &unbounded()).deleted, 1);
    assert_eq!(event_ids(&s), [5]);
}

fn with_no_secondary_known_everything_is_pruned_in_bounded_batches(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    for i in 0..10 {
        s.widget(i, 10);
    }
    let config = unbounded().batch(3).max_batches(2);
    // Two batches of at most 3, then the pass stops with events still due.
    let pass = prune(&s, &config);
    assert_eq!(pass.batches, [3, 3]);
    assert!(pass.more);
    assert_eq!(event_ids(&s).len(), 4);
    let pass = prune(&s, &config.clone().max_batches(10));
    assert_eq!(pass.batches, [3, 1]);
    assert!(!pass.more);
    assert!(event_ids(&s).is_empty());
    // One statement never removes more than the batch, even when more are due.
    for i in 10..30 {
        s.widget(i, 10);
    }
    let pass = prune(&s, &unbounded().batch(7));
    assert_eq!(pass.batches, [7, 7, 6]);
    assert!(pass.batches.iter().all(|n| *n <= 7));
}

fn the_retention_bound_prunes_past_a_lagging_secondary_which_recovers_and_converges(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let mut widgets: Vec<_> = (0..6).map(|i| s.widget(i, 100 + i as usize)).collect();
    let b = s.new_secondary(named(&s, "b"), SecondaryConfig::default());
    let a = other(&s, "a", SecondaryConfig::default());
    // b converges on the first six widgets, then stops reading (it lags, or is gone).
    for _ in 0..2 {
        s.verifier.run_until_idle(20).unwrap();
        b.run_until_idle(20).unwrap();
    }
    for (w, bytes) in &widgets {
        s.assert_synced_verified(wd(), w.id, bytes);
    }
    let stopped_at = geo_diesel::cursor::load_state(&mut s.t())
        .unwrap()
        .safe_position();
    // Meanwhile: three more widgets, one file rewritten, one widget deleted.
    for i in 6..9 {
        widgets.push(s.widget(i, 200 + i as usize));
    }
    let new_bytes = geo_tests::data(99, 333);
    app::update_widget(
        &mut s.p(),
        s.primary_store.as_ref(),
        &widgets[1].0,
        &new_bytes,
    )
    .unwrap();
    widgets[1].1 = new_bytes.clone();
    let (gone, _) = widgets.remove(2);
    app::delete_widget(&mut s.p(), s.primary_store.as_ref(), &gone).unwrap();
    s.verifier.run_until_idle(20).unwrap();
    catch_up(&a.secondary);
    a.secondary.cursor_pass().unwrap();

    // Without a bound, b holds pruning at its position.
    let pass = prune(&s, &unbounded());
    assert_eq!(pass.floor, Some(stopped_at));
    // The age bound (events older than an hour, seen from two hours on) prunes past b.
    let bounded = unbounded().retention_age(Some(Duration::hours(1)));
    let pass = prune_pass(
        &mut s.p(),
        &bounded,
        chrono::Utc::now() + Duration::hours(2),
    )
    .unwrap();
    assert!(pass.past_floor > 0, "{pass:?}");
    assert!(event_ids(&s).is_empty());
    let mark = pruned_through(&mut s.p()).unwrap();
    assert!(mark > stopped_at);

    // b's next read is told, explicitly: the feed refuses, it never skips silently.
    let direct = DirectSource::new(s.primary_db.clone(), s.primary_store.clone());
    direct.note_consumed(stopped_at);
    match direct.event_feed(stopped_at, 10) {
        Err(SourceError::EventsPruned {
            pruned_through,
            consumed,
        }) => assert_eq!((pruned_through, consumed), (mark, stopped_at)),
        other => panic!("expected EventsPruned, got {other:?}"),
    }
    let pass = b.cursor_pass().unwrap();
    let r = pass.pruned.clone().expect("the pass recovered");
    assert_eq!((r.pruned_through, r.consumed), (mark, stopped_at));
    assert_eq!(r.reverify, 6, "every synced row marked for reverification");
    assert_eq!(r.created, 3, "the backfill found the three new widgets");
    assert_eq!(r.removed, 1, "and removed the deleted one");
    assert!(r.cursor >= mark);
    assert_eq!(pass.halted, None);
    assert_eq!(
        b.counters()
            .pruned_recoveries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(b.last_pruned_recovery(), Some(r.clone()));
    assert_eq!(b.halt().unwrap(), None, "pruning is not a wrong primary");
    assert!(s.reg(wd(), gone.id).is_none());

    // It converges: every widget synced and verified, the rewritten one with its new bytes
    // (its reverification finds the old file, fails with a mismatch and resyncs at its retry).
    for _ in 0..3 {
        s.verifier.run_until_idle(20).unwrap();
        b.run_until_idle(20).unwrap();
        s.clock.advance(Duration::minutes(5));
    }
    assert_eq!(s.tracked(wd()).len(), widgets.len());
    for (w, bytes) in &widgets {
        s.assert_synced_verified(wd(), w.id, bytes);
    }
    assert_eq!(s.secondary_bytes(&widgets[1].0.file_path), Some(new_bytes));
    s.assert_files_identical();
    // And continues from the primary's current point: later events apply as usual.
    let (w, bytes) = s.widget(50, 77);
    for _ in 0..2 {
        s.verifier.run_until_idle(20).unwrap();
        b.run_until_idle(20).unwrap();
    }
    s.assert_synced_verified(wd(), w.id, &bytes);
    assert_eq!(
        b.counters()
            .pruned_recoveries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

fn the_row_cap_keeps_only_the_newest_events(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let b = s.new_secondary(named(&s, "b"), SecondaryConfig::default());
    b.cursor_pass().unwrap();
    for i in 0..10 {
        s.widget(i, 10);
    }
    let ids = event_ids(&s);
    // b consumed nothing; the cap keeps the newest 3 ids.
    let pass = prune(&s, &unbounded().retention_events(Some(3)));
    assert_eq!(pass.deleted, 7);
    assert_eq!(pass.past_floor, 7);
    assert_eq!(event_ids(&s), ids[7..].to_vec());
    assert_eq!(pruned_through(&mut s.p()).unwrap(), ids[6]);
}

fn a_changed_primary_identity_halts_instead_of_recovering(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, bytes) = s.widget(1, 10);
    let b = s.new_secondary(named(&s, "b"), SecondaryConfig::default());
    for _ in 0..2 {
        s.verifier.run_until_idle(20).unwrap();
        b.run_until_idle(20).unwrap();
    }
    s.widget(2, 10);
    // Another database behind the same address (its identity differs), pruned past b.
    exec(
        &mut s.p(),
        "UPDATE geo_node_identity SET identity = 'ffffffffffffffffffffffffffffffff'",
    );
    prune_pass(
        &mut s.p(),
        &PruneConfig::default().retention_events(Some(0)),
        chrono::Utc::now(),
    )
    .unwrap();
    let pass = b.cursor_pass().unwrap();
    assert!(pass.pruned.is_none(), "{pass:?}");
    assert!(
        matches!(pass.halted, Some(SafetyHalt::IdentityChanged { .. })),
        "{pass:?}"
    );
    // Nothing was marked or removed: the synced row is as it was.
    s.assert_synced_verified(wd(), w.id, &bytes);
    assert!(b.last_pruned_recovery().is_none());
}
