//! Several secondary processes on one tracking database, each scenario written once and run on
//! a real SQLite file (always) and a real PostgreSQL server (feature `pg-suite`): claims owned by
//! a heartbeating process, the named leases of the log cursor and the backfill, the backfill's
//! position in the database, and a failed recording that releases its claims. Each "process"
//! is a [`Secondary`] of its own on the shared tracking database and the shared manual clock,
//! driven pass by pass, so every lease period is exact. The same with real processes
//! (`widgets secondary` ×3, one SIGKILLed) is `examples/widgets/tests/scale_out.rs`.

mod sites;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use diesel::sql_types::{BigInt, Nullable, SmallInt, Text};
use diesel::{QueryableByName, RunQueryDsl, sql_query};
use geo_diesel::geo_core::ReplicableDescriptor;
use geo_diesel::lease::{self, BACKFILL_LEASE, LOG_CURSOR_LEASE};
use geo_diesel::registry::{Registry, Work};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_tests::{Backend, wait_until};
use sites::state::*;
use sites::{Sites, exec, try_exec, wd};

geo_tests::backend_tests! {
    a_start_never_resets_a_live_processs_claims,
    a_dead_processs_claims_return_within_two_lease_periods,
    a_clean_stop_gives_back_claims_leases_and_registration,
    the_log_cursor_lease_moves_to_another_process_after_its_holder_stops,
    only_the_lease_holders_log_cursor_applies_events,
    the_backfill_continues_where_the_last_process_stopped,
    a_failed_recording_releases_its_claims_at_once,
    another_process_counts_as_running_until_its_heartbeat_is_older_than_the_lease,
    a_restart_on_the_same_host_takes_a_dead_predecessors_rows_back_at_once,
}

const LEASE: Duration = Duration::seconds(30);

fn config() -> SecondaryConfig {
    SecondaryConfig::default()
        .lease_period(LEASE)
        .idle_sleep(StdDuration::from_millis(10))
}

#[derive(QueryableByName)]
struct Owned {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = SmallInt)]
    state: i16,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = Nullable<Text>)]
    claimed_by: Option<String>,
}

/// Every registry row of `d`: (state, verification state, claimed_by) by model id.
fn owners(
    s: &Sites,
    d: &'static ReplicableDescriptor,
) -> BTreeMap<i64, (i16, i16, Option<String>)> {
    let sql = format!(
        "SELECT \"{k}\" AS id, state, verification_state, claimed_by FROM \"{t}\"",
        k = d.tables.registry_model_id,
        t = d.tables.registry
    );
    let rows: Vec<Owned> =
        geo_tests::on_conn!(&mut s.t(), c => sql_query(&sql).load(c)).expect("registry rows");
    rows.into_iter()
        .map(|r| (r.id, (r.state, r.verification_state, r.claimed_by)))
        .collect()
}

/// `n` widgets created through the application, their events applied: `n` pending rows.
fn pending_widgets(s: &Sites, n: u64) -> Vec<i64> {
    let ids = (0..n).map(|i| s.widget(i, 300 + i as usize).0.id).collect();
    while s.secondary.cursor_pass().expect("cursor").read > 0 {}
    ids
}

/// `p` claims up to `n` rows to sync as its own, as its scheduler does before downloading.
fn claim(s: &Sites, p: &Secondary, n: i64) -> Vec<i64> {
    Registry::of(wd())
        .claim_as(&mut s.t(), Work::Sync, n, s.now(), p.worker_id())
        .expect("claim")
}

fn worker_ids(s: &Sites) -> Vec<String> {
    geo_tests::on_conn!(&mut s.t(), c => lease::workers(c))
        .expect("workers")
        .into_iter()
        .map(|w| w.id)
        .collect()
}

fn holder(s: &Sites, name: &str) -> Option<String> {
    geo_tests::on_conn!(&mut s.t(), c => lease::holder(c, name))
        .expect("lease holder")
        .map(|(owner, _)| owner)
}

// ---------------------------------------------------------------------------------------------

/// Process A is downloading (its rows `started`, owned by it) when process B starts with every
/// worker: B's start leaves A's rows alone (before, every start reset every `started` row), and
/// B syncs only the rest.
fn a_start_never_resets_a_live_processs_claims(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    pending_widgets(&s, 8);
    let a = s.new_secondary(s.direct(), config());
    a.heartbeat_pass().expect("A registers");
    let mine = claim(&s, &a, 3);
    assert_eq!(mine.len(), 3);

    let b = s.new_secondary(s.direct(), config());
    let handle = b.spawn().expect("B starts");
    wait_until(StdDuration::from_secs(30), "B synced the rest", || {
        s.synced_and_total() == (5, 8)
    });
    handle.stop();

    let rows = owners(&s, wd());
    for id in &mine {
        assert_eq!(
            rows[id],
            (STARTED, V_PENDING, Some(a.worker_id().to_owned())),
            "A's row {id} after B's start and stop"
        );
    }
    assert_eq!(worker_ids(&s), [a.worker_id().to_owned()], "B deregistered");
}

/// A claims rows to sync and to verify, then dies (no more heartbeats). B heartbeats every
/// third of the lease and sweeps: A's rows come back within two lease periods of A's last
/// heartbeat — not before its lease lapsed — while B's own claims stay B's; then B syncs them.
fn a_dead_processs_claims_return_within_two_lease_periods(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    pending_widgets(&s, 6);
    // One row synced, for A's verification claim.
    let synced = {
        let one = s.new_secondary(s.direct(), config().sync_batch(1).sync_capacity(1));
        one.sync_pass().expect("sync one");
        *owners(&s, wd())
            .iter()
            .find(|(_, r)| r.0 == SYNCED)
            .expect("a synced row")
            .0
    };
    exec(
        &mut s.t(),
        &format!(
            "UPDATE widget_registry SET verification_state = {V_PENDING} WHERE widget_id = {synced}"
        ),
    );
    let (a, b) = (
        s.new_secondary(s.direct(), config()),
        s.new_secondary(s.direct(), config()),
    );
    a.heartbeat_pass().expect("A registers");
    b.heartbeat_pass().expect("B registers");
    let a_rows = claim(&s, &a, 3);
    let verifying = Registry::of(wd())
        .claim_as(&mut s.t(), Work::Verification, 5, s.now(), a.worker_id())
        .expect("verification claim");
    assert_eq!(verifying, [synced]);
    let b_rows = claim(&s, &b, 1);
    let died_at: DateTime<Utc> = s.now();

    let step = LEASE / 3;
    let mut released_at = None;
    for _ in 0..9 {
        s.clock.advance(step);
        b.heartbeat_pass().expect("B heartbeats");
        let n = b.release_silent(false).expect("B sweeps");
        if n > 0 {
            assert_eq!(n, a_rows.len() + verifying.len(), "exactly A's claims");
            released_at = Some(s.now());
            break;
        }
        let rows = owners(&s, wd());
        assert!(
            a_rows.iter().all(|id| rows[id].0 == STARTED),
            "released before A's lease lapsed"
        );
    }
    let released_at = released_at.expect("A's claims never came back");
    assert!(released_at - died_at > LEASE, "released within one lease");
    assert!(
        released_at - died_at <= LEASE * 2,
        "took longer than two leases"
    );

    let rows = owners(&s, wd());
    for id in &a_rows {
        assert_eq!(rows[id], (PENDING, V_PENDING, None), "A's row {id}");
    }
    assert_eq!(rows[&synced], (SYNCED, V_PENDING, None), "A's verification");
    for id in &b_rows {
        assert_eq!(rows[id].2.as_deref(), Some(b.worker_id()), "B's row {id}");
    }
    assert_eq!(worker_ids(&s), [b.worker_id().to_owned()], "A was removed");
    while b.sync_pass().expect("B syncs") > 0 {}
    let rows = owners(&s, wd());
    assert!(a_rows.iter().all(|id| rows[id].0 == SYNCED));
}

/// A spawned secondary registers and takes the leases; stopping it returns its claims (taken
/// by hand here, as downloads in flight hold them; replication is off so its own scheduler
/// leaves the rows alone), its leases and its registration.
fn a_clean_stop_gives_back_claims_leases_and_registration(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    pending_widgets(&s, 3);
    geo_diesel::primary::set_replication_enabled(&mut s.t(), wd(), false, s.now())
        .expect("replication off");
    let a = s.new_secondary(s.direct(), config());
    let handle = a.spawn().expect("start");
    wait_until(StdDuration::from_secs(30), "A holds both leases", || {
        holder(&s, LOG_CURSOR_LEASE).as_deref() == Some(a.worker_id())
            && holder(&s, BACKFILL_LEASE).as_deref() == Some(a.worker_id())
    });
    assert_eq!(worker_ids(&s), [a.worker_id().to_owned()]);
    let claimed = claim(&s, &a, 2);
    assert_eq!(claimed.len(), 2);
    handle.stop();

    assert!(worker_ids(&s).is_empty(), "A deregistered");
    assert_eq!(holder(&s, LOG_CURSOR_LEASE), None);
    assert_eq!(holder(&s, BACKFILL_LEASE), None);
    let rows = owners(&s, wd());
    for id in &claimed {
        assert_eq!(
            rows[id],
            (PENDING, V_PENDING, None),
            "A's row {id} after its stop"
        );
    }
}

/// A holds the log cursor's lease and renews it; B cannot take it. A stops renewing: B takes
/// it once A's lease lapses (within one lease of A's last renewal), and A, back, has lost it.
fn the_log_cursor_lease_moves_to_another_process_after_its_holder_stops(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    let (a, b) = (
        s.new_secondary(s.direct(), config()),
        s.new_secondary(s.direct(), config()),
    );
    a.heartbeat_pass().expect("A registers");
    b.heartbeat_pass().expect("B registers");
    assert!(a.holds(LOG_CURSOR_LEASE).expect("A asks"));
    assert!(!b.holds(LOG_CURSOR_LEASE).expect("B asks"));
    // A renews at every heartbeat for three leases: B never gets it.
    for _ in 0..9 {
        s.clock.advance(LEASE / 3);
        a.heartbeat_pass().expect("A renews");
        assert!(!b.holds(LOG_CURSOR_LEASE).expect("B asks"));
        assert!(a.holds(LOG_CURSOR_LEASE).expect("A still holds it"));
    }
    let last_renewal = s.now();
    // A stops. B asks every second.
    let mut taken = None;
    for _ in 0..120 {
        s.clock.advance(Duration::seconds(1));
        if b.holds(LOG_CURSOR_LEASE).expect("B asks") {
            taken = Some(s.now());
            break;
        }
    }
    let taken = taken.expect("B never took the lease");
    assert!(
        taken - last_renewal > LEASE,
        "taken before A's lease lapsed"
    );
    assert!(
        taken - last_renewal <= LEASE + Duration::seconds(1),
        "taken later than one lease after A's last renewal"
    );
    assert_eq!(holder(&s, LOG_CURSOR_LEASE).as_deref(), Some(b.worker_id()));
    a.heartbeat_pass().expect("A is back");
    assert!(!a.holds(LOG_CURSOR_LEASE).expect("A asks"));
}

/// Two processes with every worker running: only the one holding the log cursor's lease
/// applies events; each event is applied once and every record syncs.
fn only_the_lease_holders_log_cursor_applies_events(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    let (a, b) = (
        s.new_secondary(s.direct(), config()),
        s.new_secondary(s.direct(), config()),
    );
    let handles = [a.spawn().expect("A"), b.spawn().expect("B")];
    let n = 12;
    for i in 0..n {
        s.widget(i, 500);
    }
    wait_until(StdDuration::from_secs(30), "every record synced", || {
        s.synced_and_total() == (n as i64, n as i64)
    });
    let cursor_holder = holder(&s, LOG_CURSOR_LEASE).expect("someone holds the cursor");
    drop(handles);
    let applied = |p: &Secondary| {
        p.cursor()
            .counters
            .applied
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (by_holder, by_other) = if cursor_holder == a.worker_id() {
        (applied(&a), applied(&b))
    } else {
        (applied(&b), applied(&a))
    };
    assert_eq!((by_holder, by_other), (n, 0));
}

/// The backfill's position is in the tracking database: a process that stops after one range
/// leaves it for the next process, which continues with the following range.
fn the_backfill_continues_where_the_last_process_stopped(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    let ids: Vec<i64> = (0..12).map(|i| s.widget_silently(i, 100).0).collect();
    let first = s.new_secondary(s.direct(), config().backfill_batch(5));
    let (created, _, done) = first.backfill_step(wd()).expect("first range");
    assert_eq!((created, done), (5, false));
    drop(first);
    let next = s.new_secondary(s.direct(), config().backfill_batch(5));
    assert_eq!(
        next.backfill_position(&mut s.t(), wd()).expect("position"),
        ids[0] + 5
    );
    let (created, _, done) = next.backfill_step(wd()).expect("second range");
    assert_eq!(
        (created, done),
        (5, false),
        "the second range, not the first again"
    );
    assert_eq!(s.tracked(wd()), ids[..10].to_vec());
    let (created, _, done) = next.backfill_step(wd()).expect("last range");
    assert_eq!((created, done), (2, true));
    assert_eq!(
        next.backfill_position(&mut s.t(), wd()).expect("position"),
        1
    );
}

/// The transaction recording a batch's downloads fails (a trigger refuses every `synced`
/// update): the pass fails and its rows are back to `pending` at once, not left `started` for
/// the sync timeout; once the database accepts it again they sync.
fn a_failed_recording_releases_its_claims_at_once(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    let ids = pending_widgets(&s, 5);
    let (install, remove) = match backend {
        Backend::Sqlite => (
            format!(
                "CREATE TRIGGER refuse_synced BEFORE UPDATE ON widget_registry \
                 WHEN NEW.state = {SYNCED} BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            "DROP TRIGGER refuse_synced;".to_owned(),
        ),
        Backend::Postgres => (
            format!(
                "CREATE FUNCTION refuse_synced() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER refuse_synced BEFORE UPDATE ON widget_registry FOR EACH ROW \
                 WHEN (NEW.state = {SYNCED}) EXECUTE FUNCTION refuse_synced();"
            ),
            "DROP TRIGGER refuse_synced ON widget_registry; DROP FUNCTION refuse_synced();"
                .to_owned(),
        ),
    };
    try_exec(&mut s.t(), &install).expect("install the trigger");
    let p = s.new_secondary(s.direct(), config());
    let err = p.sync_pass().expect_err("the recording must fail");
    assert!(err.to_string().contains("injected failure"), "{err}");
    let rows = owners(&s, wd());
    for id in &ids {
        assert_eq!(rows[id], (PENDING, V_PENDING, None), "row {id}");
    }

    exec(&mut s.t(), &remove);
    while p.sync_pass().expect("sync") > 0 {}
    assert_eq!(s.synced_and_total(), (5, 5));
}

/// A process starting alone may clean up after its predecessors (the CLI then removes every
/// temporary file): another process counts as running while its heartbeat is younger than the
/// lease period.
fn another_process_counts_as_running_until_its_heartbeat_is_older_than_the_lease(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    let (a, b) = (
        s.new_secondary(s.direct(), config()),
        s.new_secondary(s.direct(), config()),
    );
    assert!(!b.other_processes_running().expect("alone"));
    a.heartbeat_pass().expect("A registers");
    assert!(b.other_processes_running().expect("A runs"));
    assert!(!a.other_processes_running().expect("A is alone"));
    s.clock.advance(LEASE);
    assert!(
        b.other_processes_running()
            .expect("A's lease has not lapsed")
    );
    s.clock.advance(Duration::milliseconds(1));
    assert!(!b.other_processes_running().expect("A is silent"));
}

/// A predecessor on this host died a moment ago (its heartbeat is fresh, its pid is gone): a
/// process starting with `reclaim_on_start` takes its rows back at once, without waiting for
/// its lease; a live process of the same host keeps its rows.
fn a_restart_on_the_same_host_takes_a_dead_predecessors_rows_back_at_once(backend: Backend) {
    let s = Sites::open(backend, config(), 0);
    pending_widgets(&s, 6);
    let live = s.new_secondary(s.direct(), config());
    live.heartbeat_pass().expect("registers");
    let host = geo_tests::on_conn!(&mut s.t(), c => lease::workers(c)).expect("workers")[0]
        .host
        .clone();
    let mut exited = std::process::Command::new("true")
        .spawn()
        .expect("a process");
    let dead_pid = exited.id();
    exited.wait().expect("it exits");
    geo_tests::on_conn!(&mut s.t(), c => lease::heartbeat(c, "dead-one", &host, dead_pid, s.now()))
        .expect("the predecessor's registration");
    let theirs = Registry::of(wd())
        .claim_as(&mut s.t(), Work::Sync, 2, s.now(), "dead-one")
        .expect("the predecessor's claims");
    let mine = claim(&s, &live, 2);
    // No replication, so the new process's scheduler leaves the released rows alone.
    geo_diesel::primary::set_replication_enabled(&mut s.t(), wd(), false, s.now())
        .expect("replication off");

    let restarted = s.new_secondary(s.direct(), config());
    let handle = restarted.spawn().expect("start");
    let rows = owners(&s, wd());
    for id in &theirs {
        assert_eq!(
            rows[id],
            (PENDING, V_PENDING, None),
            "the dead one's row {id}"
        );
    }
    for id in &mine {
        assert_eq!(
            rows[id].2.as_deref(),
            Some(live.worker_id()),
            "the live one's row {id}"
        );
    }
    assert!(!worker_ids(&s).contains(&"dead-one".to_owned()));
    handle.stop();
}
