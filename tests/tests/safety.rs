//! Safety before destruction, end to end on real databases (SQLite always, PostgreSQL with the
//! `pg-suite` feature): the mass-removal guard of the backfill and of `missing_on_primary`, the
//! primary's identity and event-id high-water mark halting a secondary, the operator's
//! reconcile, and files shared by two records. Each scenario is written once and runs as
//! `<scenario>::sqlite` and `<scenario>::postgres`.

mod sites;

use std::sync::Arc;

use chrono::Duration;
use geo_diesel::geo_core::Role;
use geo_diesel::geo_core::safety::{RemovalKind, SafetyHalt};
use geo_diesel::geo_core::source::{PrimaryIdentity, PrimarySource, SourceError};
use geo_diesel::registry::{self, Action};
use geo_diesel::secondary::SecondaryConfig;
use geo_tests::source::{Intercepted, Interceptor};
use geo_tests::{Backend, checksum, data};
use sites::state::*;
use sites::{Sites, exec, gd, wd};
use widgets::app;

geo_tests::backend_tests! {
    backfill_refuses_a_sweep_removing_more_than_ten_percent_and_removes_nothing,
    backfill_removes_ten_percent,
    allow_mass_removal_removes_a_refused_sweep,
    missing_on_primary_marks_beyond_the_share_are_refused,
    primary_identity_is_created_once_per_database,
    another_primary_identity_halts_the_cursor_syncs_and_removals,
    event_ids_going_backwards_halt,
    a_cursor_that_moved_on_during_the_identity_check_is_no_halt,
    reconcile_follows_the_new_primary_and_reverifies_every_synced_file,
    a_file_another_record_uses_is_kept,
}

/// `n` widgets, synced and verified.
fn converged(backend: Backend, n: u64, config: SecondaryConfig) -> (Sites, Vec<(i64, String)>) {
    let s = Sites::open(backend, config, 0);
    let widgets: Vec<(i64, String)> = (0..n)
        .map(|i| {
            let (w, _) = s.widget(i, 100 + i as usize);
            (w.id, w.file_path)
        })
        .collect();
    s.converge();
    assert_eq!(s.tracked(wd()).len() as u64, n);
    (s, widgets)
}

/// Deletes widgets on the primary with raw SQL and no event (a lost `deleted`, a truncated
/// table): only the backfill finds out.
fn delete_silently(s: &Sites, ids: &[i64]) {
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    exec(
        &mut s.p(),
        &format!("DELETE FROM widgets WHERE id IN ({})", list.join(",")),
    );
}

fn backfill_refuses_a_sweep_removing_more_than_ten_percent_and_removes_nothing(backend: Backend) {
    let (s, widgets) = converged(backend, 100, SecondaryConfig::default().backfill_batch(30));
    let gone: Vec<i64> = widgets.iter().take(11).map(|w| w.0).collect();
    delete_silently(&s, &gone);

    // 11 of 100 (over several ranges): nothing is removed, and the refusal says why.
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));
    assert_eq!(s.tracked(wd()).len(), 100);
    for (_, path) in widgets.iter().take(11) {
        assert!(s.secondary_sum(path).is_some(), "{path} must stay");
    }
    let refused = s.secondary.mass_removal_refusals();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let r = &refused[0];
    assert_eq!(
        (
            r.replicable.as_str(),
            r.kind,
            r.would_remove,
            r.registry_rows,
            r.allowed
        ),
        ("widget", RemovalKind::Orphans, 11, 100, 10)
    );
    assert!(r.to_string().contains("--allow-mass-removal"), "{r}");
    // Every later sweep refuses again, and still removes nothing.
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));
    assert_eq!(s.tracked(wd()).len(), 100);
    assert_eq!(s.secondary.mass_removal_refusals().len(), 1);
}

fn backfill_removes_ten_percent(backend: Backend) {
    let (s, widgets) = converged(backend, 100, SecondaryConfig::default().backfill_batch(30));
    let gone: Vec<i64> = widgets.iter().take(10).map(|w| w.0).collect();
    delete_silently(&s, &gone);
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 10));
    assert_eq!(s.tracked(wd()).len(), 90);
    for (id, path) in widgets.iter().take(10) {
        assert!(s.reg(wd(), *id).is_none());
        assert!(s.secondary_sum(path).is_none(), "{path} must be removed");
    }
    assert!(s.secondary_sum(&widgets[10].1).is_some());
    assert!(s.secondary.mass_removal_refusals().is_empty());
}

fn allow_mass_removal_removes_a_refused_sweep(backend: Backend) {
    let (s, widgets) = converged(backend, 20, SecondaryConfig::default());
    let gone: Vec<i64> = widgets.iter().take(15).map(|w| w.0).collect();
    delete_silently(&s, &gone);
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));
    assert_eq!(s.secondary.mass_removal_refusals().len(), 1);

    // The operator's confirmation: another secondary on the same tracking database and folder
    // (what `widgets backfill --allow-mass-removal` runs) removes them all.
    let confirmed = s.new_secondary(
        s.direct(),
        SecondaryConfig::default().allow_mass_removal(true),
    );
    assert_eq!(confirmed.backfill_all().unwrap(), (0, 15));
    assert_eq!(s.tracked(wd()).len(), 5);
    for (_, path) in widgets.iter().take(15) {
        assert!(s.secondary_sum(path).is_none(), "{path}");
    }
    // The running secondary's next sweep finds nothing left and its refusal clears.
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));
    assert!(s.secondary.mass_removal_refusals().is_empty());
}

fn missing_on_primary_marks_beyond_the_share_are_refused(backend: Backend) {
    let (s, widgets) = converged(backend, 20, SecondaryConfig::default());
    let vanish = |from: usize, to: usize| {
        let ids: Vec<i64> = widgets[from..to].iter().map(|w| w.0).collect();
        for (_, path) in &widgets[from..to] {
            std::fs::remove_file(s.primary_store.root().join(path)).unwrap();
        }
        registry::Registry::of(wd())
            .act(&mut s.t(), Action::Resync, Some(&ids))
            .unwrap();
        ids
    };
    // 2 of 20 (10 %): marked.
    let first = vanish(0, 2);
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    for id in &first {
        let row = s.reg(wd(), *id).unwrap();
        assert!(row.state == FAILED && row.missing_on_primary, "{row:?}");
    }
    assert!(s.secondary.mass_removal_refusals().is_empty());
    // 3 more would make 5 of 20: plain failures, with the reason, and a refusal.
    let more = vanish(2, 5);
    assert_eq!(s.secondary.sync_pass().unwrap(), 3);
    for id in &more {
        let row = s.reg(wd(), *id).unwrap();
        assert_eq!(row.state, FAILED);
        assert!(!row.missing_on_primary, "{row:?}");
        assert!(
            row.last_sync_failure
                .as_deref()
                .unwrap()
                .contains("mass-removal guard"),
            "{row:?}"
        );
    }
    let refused = s.secondary.mass_removal_refusals();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (refused[0].kind, refused[0].would_remove, refused[0].allowed),
        (RemovalKind::MissingOnPrimary, 5, 2)
    );
}

fn identity(s: &Sites) -> String {
    geo_diesel::direct::primary_identity(&mut s.p())
        .unwrap()
        .expect("the primary has an identity")
        .identity
}

fn primary_identity_is_created_once_per_database(backend: Backend) {
    let a = Sites::open(backend, SecondaryConfig::default(), 0);
    let b = Sites::open(backend, SecondaryConfig::default(), 0);
    let id = identity(&a);
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_ne!(id, identity(&b), "two databases, two identities");
    geo_tests::on_conn!(&mut a.p(), c => geo_diesel::run_migrations(c, Role::Primary))
        .expect("migrate again");
    assert_eq!(identity(&a), id, "migrating again keeps it");
    // The high-water mark survives pruning: it is the id counter, not the largest row.
    let (w, _) = a.widget(1, 10);
    a.widget(2, 10);
    let mark = geo_diesel::direct::primary_identity(&mut a.p())
        .unwrap()
        .unwrap()
        .high_water_mark;
    assert!(mark >= 2, "{mark}");
    exec(&mut a.p(), "DELETE FROM geo_events");
    let after = geo_diesel::direct::primary_identity(&mut a.p())
        .unwrap()
        .unwrap();
    assert_eq!(after.high_water_mark, mark);
    assert!(w.id > 0);
}

fn another_primary_identity_halts_the_cursor_syncs_and_removals(backend: Backend) {
    let (s, widgets) = converged(backend, 10, SecondaryConfig::default());
    let followed = identity(&s);
    // The primary's database is replaced (here: its identity changes under the same data).
    exec(
        &mut s.p(),
        "UPDATE geo_node_identity SET identity = '0123456789abcdef0123456789abcdef'",
    );
    // A sync asks the primary before it downloads: it refuses, records the reason, and the
    // secondary is halted from then on.
    let (resynced, resynced_path) = &widgets[3];
    registry::Registry::of(wd())
        .act(&mut s.t(), Action::Resync, Some(&[*resynced]))
        .unwrap();
    let before = s.secondary_sum(resynced_path);
    assert_eq!(s.secondary.sync_pass().unwrap(), 0);
    let row = s.reg(wd(), *resynced).unwrap();
    assert_eq!(row.state, FAILED);
    assert!(
        row.last_sync_failure
            .as_deref()
            .unwrap()
            .contains("identity changed"),
        "{row:?}"
    );
    assert_eq!(s.secondary_sum(resynced_path), before);
    match s.secondary.halt().unwrap() {
        Some(SafetyHalt::IdentityChanged { followed: f, seen }) => {
            assert_eq!(f, followed);
            assert_eq!(seen, "0123456789abcdef0123456789abcdef");
        }
        other => panic!("expected an identity halt, got {other:?}"),
    }

    // Events are not applied, the backfill removes nothing, nothing syncs.
    let (fresh, _) = s.widget(50, 100);
    let (deleted, deleted_path) = &widgets[0];
    delete_silently(&s, &[*deleted]);
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.applied, 0);
    assert!(pass.halted.is_some(), "{pass:?}");
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));
    assert!(s.reg(wd(), fresh.id).is_none());
    assert!(s.reg(wd(), *deleted).is_some());
    assert!(s.secondary_sum(deleted_path).is_some());
    assert_eq!(s.secondary.sync_pass().unwrap(), 0);
    assert_eq!(s.secondary.verification_pass().unwrap(), 0);

    // The halt is recorded: the old identity coming back does not resume anything.
    exec(
        &mut s.p(),
        &format!("UPDATE geo_node_identity SET identity = '{followed}'"),
    );
    assert!(s.secondary.cursor_pass().unwrap().halted.is_some());
    assert!(s.secondary.halt().unwrap().is_some());
}

fn event_ids_going_backwards_halt(backend: Backend) {
    let (s, _) = converged(backend, 6, SecondaryConfig::default());
    let cursor = geo_diesel::cursor::load_state(&mut s.t())
        .unwrap()
        .last_event_id;
    assert!(cursor >= 6, "{cursor}");
    // A restore: the primary's id counter is behind what the cursor passed, and its next
    // events reuse ids the cursor would skip.
    exec(&mut s.p(), "DELETE FROM geo_events");
    s.set_next_event_id(cursor - 2);
    let (w, _) = s.widget(70, 100);
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.applied, 0);
    match pass.halted {
        Some(SafetyHalt::EventIdsWentBackwards {
            cursor: c,
            high_water_mark,
        }) => {
            assert_eq!(c, cursor);
            assert_eq!(high_water_mark, cursor - 2);
        }
        other => panic!("expected ids going backwards, got {other:?}"),
    }
    assert!(s.reg(wd(), w.id).is_none(), "never applied by skipping");
    // Even once the ids pass the cursor again, the halt stays.
    s.set_next_event_id(cursor + 10);
    s.widget(71, 100);
    assert!(s.secondary.cursor_pass().unwrap().halted.is_some());
}

/// A one-shot gate: `primary_identity` reads the real answer, says so, and holds it until
/// told to go (at most 10 s).
#[derive(Default)]
struct HeldIdentity {
    armed: std::sync::atomic::AtomicBool,
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl HeldIdentity {
    fn wait_for(&self, which: impl Fn(&(bool, bool)) -> bool) {
        let guard = self.state.lock().unwrap();
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, std::time::Duration::from_secs(10), |s| !which(s))
            .unwrap();
        assert!(!timeout.timed_out(), "gate never reached: {:?}", *guard);
    }

    fn set(&self, f: impl FnOnce(&mut (bool, bool))) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
}

/// The interceptor sharing a [`HeldIdentity`] with the test.
struct Held(Arc<HeldIdentity>);

impl Interceptor for Held {
    fn primary_identity(
        &self,
        inner: &dyn PrimarySource,
    ) -> Result<Option<PrimaryIdentity>, SourceError> {
        let answer = inner.primary_identity();
        if self
            .0
            .armed
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.0.set(|s| s.0 = true);
            self.0.wait_for(|s| s.1);
        }
        answer
    }
}

/// The sync scheduler asks the primary for its identity before it downloads; meanwhile the log
/// cursor (here another worker's) applies newer events, so by the time the answer is compared
/// the cursor is past the answer's high-water mark. That answer is merely older than the
/// position, not a primary whose ids went backwards: no halt, and the rows sync.
fn a_cursor_that_moved_on_during_the_identity_check_is_no_halt(backend: Backend) {
    let (s, _) = converged(backend, 3, SecondaryConfig::default());
    let gate = Arc::new(HeldIdentity::default());
    let scheduler = s.new_secondary(
        Intercepted::new(s.direct(), Held(Arc::clone(&gate))),
        SecondaryConfig::default(),
    );
    let (pending, bytes) = s.widget(40, 200);
    assert!(s.secondary.cursor_pass().unwrap().applied > 0);
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let pass = {
        let scheduler = Arc::clone(&scheduler);
        std::thread::spawn(move || scheduler.sync_pass())
    };
    gate.wait_for(|s| s.0);
    // The answer is read; two more events, and the cursor applies them.
    let (later, _) = s.widget(41, 200);
    s.widget(42, 200);
    let moved = s.secondary.cursor_pass().unwrap();
    assert!(moved.applied >= 2 && moved.halted.is_none(), "{moved:?}");
    gate.set(|s| s.1 = true);
    let synced = pass.join().unwrap().unwrap();

    assert_eq!(
        s.secondary.halt().unwrap(),
        None,
        "a healthy secondary was halted"
    );
    assert_eq!(synced, 1);
    assert_eq!(s.reg(wd(), pending.id).unwrap().state, SYNCED);
    assert_eq!(s.secondary_bytes(&pending.file_path), Some(bytes));
    // And the cursor keeps going.
    assert!(s.reg(wd(), later.id).is_some());
    s.widget(43, 200);
    assert!(s.secondary.cursor_pass().unwrap().halted.is_none());
}

fn reconcile_follows_the_new_primary_and_reverifies_every_synced_file(backend: Backend) {
    let (s, widgets) = converged(backend, 8, SecondaryConfig::default());
    exec(
        &mut s.p(),
        "UPDATE geo_node_identity SET identity = 'fedcba9876543210fedcba9876543210'",
    );
    let (while_halted, while_halted_bytes) = s.widget(80, 300);
    assert!(s.secondary.cursor_pass().unwrap().halted.is_some());
    // A file that went bad on the secondary meanwhile: only a reverification finds it.
    let (bad_id, bad_path) = &widgets[2];
    std::fs::write(s.secondary_store.root().join(bad_path), b"rotten").unwrap();

    let mark = geo_diesel::direct::primary_identity(&mut s.p())
        .unwrap()
        .unwrap()
        .high_water_mark;
    let report = s.secondary.reconcile().unwrap();
    assert_eq!(
        report.identity.as_deref(),
        Some("fedcba9876543210fedcba9876543210")
    );
    assert!(report.before.halt.is_some());
    assert_eq!(report.cursor, mark);
    assert_eq!(report.reverify, 8, "{report:?}");
    assert_eq!(
        report.created, 1,
        "the record made while halted, by the backfill"
    );
    assert!(s.secondary.halt().unwrap().is_none());
    let state = geo_diesel::cursor::load_state(&mut s.t()).unwrap();
    assert_eq!((state.last_event_id, state.gaps.len()), (mark, 0));
    for (id, _) in &widgets {
        let row = s.reg(wd(), *id).unwrap();
        assert_eq!(
            (row.state, row.verification_state),
            (SYNCED, V_PENDING),
            "{row:?}"
        );
    }

    // Events after the mark are applied; the bad file is found and fetched again.
    let (after, after_bytes) = s.widget(81, 200);
    s.converge();
    // The mismatch resyncs with backoff (delay(1) = 16 s with FixedRandom(0)).
    s.clock.advance(Duration::seconds(17));
    s.converge();
    s.assert_synced_verified(wd(), after.id, &after_bytes);
    s.assert_synced_verified(wd(), while_halted.id, &while_halted_bytes);
    let expected = data(2, 102);
    assert_eq!(s.secondary_sum(bad_path), Some(checksum(&expected)));
    s.assert_synced_verified(wd(), *bad_id, &expected);
}

fn a_file_another_record_uses_is_kept(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let bytes = data(5, 500);
    let shared = "shared/one.bin";
    let mut conn = s.p();
    let a = app::create_widget(&mut conn, s.primary_store.as_ref(), "a", shared, &bytes).unwrap();
    let b = app::create_widget(&mut conn, s.primary_store.as_ref(), "b", shared, &bytes).unwrap();
    let cross = "shared/two.bin";
    let c = app::create_widget(&mut conn, s.primary_store.as_ref(), "c", cross, &bytes).unwrap();
    let g = app::create_gadget(&mut conn, s.primary_store.as_ref(), "g", cross, &bytes).unwrap();
    drop(conn);
    let others: Vec<i64> = (0..6).map(|i| s.widget(100 + i, 50).0.id).collect();
    s.converge();
    for id in [a.id, b.id, c.id].iter().chain(&others) {
        assert_eq!(s.reg(wd(), *id).unwrap().state, SYNCED);
    }
    assert_eq!(s.reg(gd(), g.id).unwrap().state, SYNCED);

    // One of two widgets on one path deleted with raw SQL (its trigger publishes `deleted` with
    // the path): the other still uses the file.
    exec(
        &mut s.p(),
        &format!("DELETE FROM widgets WHERE id = {}", a.id),
    );
    assert_eq!(s.secondary.cursor_pass().unwrap().applied, 1);
    assert!(s.reg(wd(), a.id).is_none());
    assert_eq!(s.secondary_sum(shared), Some(checksum(&bytes)), "b uses it");
    // Then the last one: the file goes.
    exec(
        &mut s.p(),
        &format!("DELETE FROM widgets WHERE id = {}", b.id),
    );
    assert_eq!(s.secondary.cursor_pass().unwrap().applied, 1);
    assert_eq!(s.secondary_sum(shared), None);

    // An orphan widget whose path a gadget (another type, same store) uses: the row goes, the
    // file stays.
    delete_silently(&s, &[c.id]);
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 1));
    assert!(s.reg(wd(), c.id).is_none());
    assert_eq!(
        s.secondary_sum(cross),
        Some(checksum(&bytes)),
        "the gadget uses it"
    );
    assert_eq!(s.reg(gd(), g.id).unwrap().state, SYNCED);
}
