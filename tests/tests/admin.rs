//! The operator's database layer (`geo_diesel::admin`) on real databases, each scenario written
//! once and run on a SQLite file (always) and on PostgreSQL (feature `pg-suite`,
//! `GEO_TEST_DATABASE_URL`): registry lists with every filter and sort, keyset pages both ways,
//! cursors, per-row actions, durable bulk updates (several batches, a restart between them, the
//! primary's reverify, a background worker), the data-management records, feature flags and
//! role detection.
//!
//! Registry rows are inserted straight into the tables with known states and times, so the
//! expected order of every list is computed here independently of the SQL.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use geo_diesel::admin::{
    self, AdminError, BulkAction, BulkFilter, PageRequest, RecordFilter, RegistryFilter,
    RegistryRecord, RegistrySort,
};
use geo_diesel::db::{AsDbConn, DbPool};
use geo_diesel::geo_core::{
    Backend, Replicable, ReplicableDescriptor, ReplicationState as R, Role, VerificationState as V,
};
use geo_diesel::registry::{Action, Registry};
use geo_diesel::replicable;
use geo_tests::TestDatabase;
use widgets::{Gadget, Widget, app};

mod note_schema {
    diesel::table! {
        /// Notes: a model without verification.
        notes (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path.
            path -> Text,
        }
    }
}
use note_schema::notes;

/// A replicable without verification. Its model table exists only on the secondary side of
/// these tests, so it has no event triggers (which need the model table on the primary).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notes)]
#[replicable(strategy = "blob", verification = "none", events = "manual")]
pub struct Note {
    /// Primary key.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub path: String,
}

geo_tests::backend_tests! {
    registry_filters_select_the_rows_they_name,
    every_sort_pages_forward_and_backward_through_the_same_rows,
    bad_cursors_and_arguments_are_refused,
    per_row_actions_follow_the_rules,
    bulk_resync_of_failed_rows_runs_in_batches_with_correct_counts,
    bulk_job_resumes_after_a_restart,
    bulk_reverify_on_the_primary_and_the_primary_refuses_resync,
    bulk_worker_runs_jobs_in_the_background_and_stops,
    data_management_lists_records_with_their_checksum_state,
    flags_list_and_set_and_refuse_unknown_names,
    state_filters_read_the_state_and_id_indexes,
    verification_claims_read_their_partial_indexes,
    detect_role_reads_the_ledger,
}

fn wd() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

fn gd() -> &'static ReplicableDescriptor {
    <Gadget as Replicable>::DESCRIPTOR
}

fn nd() -> &'static ReplicableDescriptor {
    <Note as Replicable>::DESCRIPTOR
}

fn exec(conn: &mut impl AsDbConn, sql: &str) {
    conn.db()
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn tracking(backend: Backend) -> (TestDatabase, DbPool) {
    let db = TestDatabase::fresh(backend, "admin_tracking");
    let pool = db.pool(4);
    geo_diesel::run_migrations(&mut pool.get().expect("conn"), Role::Secondary)
        .expect("secondary migrations");
    (db, pool)
}

fn primary(backend: Backend) -> (TestDatabase, DbPool) {
    let db = TestDatabase::fresh(backend, "admin_primary");
    let pool = db.pool(4);
    let mut conn = pool.get().expect("conn");
    app::create_app_schema(&mut conn).expect("app schema");
    geo_diesel::run_migrations(&mut conn, Role::Primary).expect("primary migrations");
    (db, pool)
}

/// What the test knows of one generated registry row.
#[derive(Debug, Clone)]
struct Gen {
    id: i64,
    model: i64,
    state: R,
    vstate: V,
    /// Seconds after the base time.
    synced: Option<i64>,
    verified: Option<i64>,
    path: String,
}

fn ts(secs: i64) -> String {
    let t = chrono::DateTime::from_timestamp(1_772_366_400 + secs, 0).expect("time");
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn sql_time(t: Option<i64>) -> String {
    t.map_or("NULL".into(), |s| format!("'{}'", ts(s)))
}

/// Inserts `n` widget registry rows with states, times and paths from their number (registry
/// id `i`, model id `10 * i`), in statements of 500 rows.
fn seed(conn: &mut impl AsDbConn, n: i64) -> Vec<Gen> {
    let rows: Vec<Gen> = (1..=n)
        .map(|i| Gen {
            id: i,
            model: 10 * i,
            state: R::ALL[(i % 4) as usize],
            vstate: V::ALL[(i % 5) as usize],
            // Ties on purpose: many rows share a time, so the id breaks them.
            synced: (i % 3 != 0).then_some(i % 7),
            verified: (i % 2 != 0).then_some(i % 5),
            path: if i == 5 {
                "odd%5_x.bin".into()
            } else {
                format!("widgets/{i}.bin")
            },
        })
        .collect();
    for chunk in rows.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|g| {
                format!(
                    "({}, {}, {}, {}, {}, {}, '{}')",
                    g.id,
                    g.model,
                    g.state.as_i16(),
                    g.vstate.as_i16(),
                    sql_time(g.synced),
                    sql_time(g.verified),
                    g.path
                )
            })
            .collect();
        exec(
            conn,
            &format!(
                "INSERT INTO widget_registry (id, widget_id, state, verification_state, \
                 last_synced_at, verified_at, blob_path) VALUES {}",
                values.join(", ")
            ),
        );
    }
    if conn.db().backend() == Backend::Postgres {
        exec(
            conn,
            "SELECT setval(pg_get_serial_sequence('widget_registry', 'id'), \
             (SELECT MAX(id) FROM widget_registry))",
        );
    }
    rows
}

fn ids(rows: &[(String, RegistryRecord)]) -> Vec<i64> {
    rows.iter().map(|(_, r)| r.id).collect()
}

fn list_all(
    conn: &mut impl AsDbConn,
    reg: Registry,
    filter: &RegistryFilter,
    sort: RegistrySort,
) -> Vec<i64> {
    let page = reg
        .list(conn, filter, sort, &PageRequest::first(100))
        .expect("list");
    assert!(!page.has_next_page, "fits one page");
    ids(&page.rows)
}

fn registry_filters_select_the_rows_they_name(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let rows = seed(&mut conn, 60);
    let reg = Registry::of(wd());
    let expect = |f: &dyn Fn(&Gen) -> bool| -> Vec<i64> {
        rows.iter().filter(|g| f(g)).map(|g| g.id).collect()
    };
    let cases: Vec<(RegistryFilter, Vec<i64>)> = vec![
        (RegistryFilter::default(), expect(&|_| true)),
        (
            RegistryFilter {
                replication_state: Some(R::Failed),
                ..Default::default()
            },
            expect(&|g| g.state == R::Failed),
        ),
        (
            RegistryFilter {
                verification_state: Some(V::Succeeded),
                ..Default::default()
            },
            expect(&|g| g.vstate == V::Succeeded),
        ),
        (
            RegistryFilter {
                replication_state: Some(R::Synced),
                verification_state: Some(V::Failed),
                ..Default::default()
            },
            expect(&|g| g.state == R::Synced && g.vstate == V::Failed),
        ),
        (
            RegistryFilter {
                ids: Some(vec![3, 9, 44, 1000]),
                ..Default::default()
            },
            vec![3, 9, 44],
        ),
        (
            RegistryFilter {
                ids: Some(vec![]),
                ..Default::default()
            },
            vec![],
        ),
        // A numeric keyword is the model id.
        (
            RegistryFilter {
                keyword: Some("70".into()),
                ..Default::default()
            },
            vec![7],
        ),
        // Otherwise a substring of the path, with LIKE's wildcards taken literally.
        (
            RegistryFilter {
                keyword: Some("widgets/1".into()),
                ..Default::default()
            },
            expect(&|g| g.path.contains("widgets/1")),
        ),
        (
            RegistryFilter {
                keyword: Some("d%5_".into()),
                ..Default::default()
            },
            vec![5],
        ),
        (
            RegistryFilter {
                keyword: Some("s_1".into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, want) in cases {
        assert!(!want.is_empty() || filter.ids.is_some() || filter.keyword.is_some());
        let got = list_all(&mut conn, reg, &filter, RegistrySort::IdAsc);
        assert_eq!(got, want, "{filter:?}");
        let n = reg.count_matching(&mut conn, &filter).expect("count");
        assert_eq!(n, want.len() as i64, "{filter:?}");
    }

    // Every field comes back, and `get` finds a row by its registry id.
    let one = reg.get(&mut conn, 7).expect("get").expect("row 7");
    let g = &rows[6];
    assert_eq!(
        (
            one.id,
            one.model_record_id,
            one.state,
            one.verification_state
        ),
        (7, 70, g.state, g.vstate)
    );
    assert_eq!(
        one.last_synced_at.map(|t| t.timestamp()),
        g.synced.map(|s| 1_772_366_400 + s)
    );
    assert_eq!(one.blob_path.as_deref(), Some("widgets/7.bin"));
    assert!(reg.get(&mut conn, 9999).expect("get").is_none());
}

fn expected_order(rows: &[Gen], sort: RegistrySort) -> Vec<i64> {
    let mut v: Vec<&Gen> = rows.iter().collect();
    let time = |g: &Gen| match sort {
        RegistrySort::VerifiedAtAsc | RegistrySort::VerifiedAtDesc => g.verified,
        RegistrySort::LastSyncedAtAsc | RegistrySort::LastSyncedAtDesc => g.synced,
        _ => None,
    };
    // Ascending: times first (NULL last), then id.
    v.sort_by_key(|g| (time(g).is_none(), time(g), g.id));
    let mut out: Vec<i64> = v.into_iter().map(|g| g.id).collect();
    if matches!(
        sort,
        RegistrySort::IdDesc | RegistrySort::VerifiedAtDesc | RegistrySort::LastSyncedAtDesc
    ) {
        out.reverse();
    }
    out
}

fn every_sort_pages_forward_and_backward_through_the_same_rows(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let rows = seed(&mut conn, 45);
    let reg = Registry::of(wd());
    let none = RegistryFilter::default();
    for sort in [
        RegistrySort::IdAsc,
        RegistrySort::IdDesc,
        RegistrySort::VerifiedAtAsc,
        RegistrySort::VerifiedAtDesc,
        RegistrySort::LastSyncedAtAsc,
        RegistrySort::LastSyncedAtDesc,
    ] {
        let want = expected_order(&rows, sort);
        assert_eq!(list_all(&mut conn, reg, &none, sort), want, "{sort:?}");

        // Forward, 7 at a time.
        let mut got = Vec::new();
        let mut req = PageRequest::first(7);
        let mut pages = 0;
        loop {
            let page = reg.list(&mut conn, &none, sort, &req).expect("page");
            pages += 1;
            assert_eq!(page.has_previous_page, pages > 1, "{sort:?} page {pages}");
            got.extend(ids(&page.rows));
            if !page.has_next_page {
                break;
            }
            assert_eq!(page.rows.len(), 7);
            req = PageRequest::first(7).after(page.end_cursor().expect("cursor"));
        }
        assert_eq!(got, want, "{sort:?} forward");
        assert_eq!(pages, 7, "{sort:?}");

        // Backward, 7 at a time, from the end.
        let mut got: Vec<i64> = Vec::new();
        let mut req = PageRequest::last(7);
        let mut pages = 0;
        loop {
            let page = reg.list(&mut conn, &none, sort, &req).expect("page");
            pages += 1;
            assert_eq!(page.has_next_page, pages > 1, "{sort:?} page {pages}");
            let mut these = ids(&page.rows);
            these.extend(got);
            got = these;
            if !page.has_previous_page {
                break;
            }
            req = PageRequest::last(7).before(page.start_cursor().expect("cursor"));
        }
        assert_eq!(got, want, "{sort:?} backward");

        // A window between two cursors.
        let all = reg
            .list(&mut conn, &none, sort, &PageRequest::first(45))
            .expect("all");
        let (after, before) = (&all.rows[9].0, &all.rows[20].0);
        let window = reg
            .list(
                &mut conn,
                &none,
                sort,
                &PageRequest::first(50)
                    .after(after.clone())
                    .before(before.clone()),
            )
            .expect("window");
        assert_eq!(ids(&window.rows), want[10..20].to_vec(), "{sort:?} window");
    }

    // The page size is clamped, and 20 by default.
    seed_more(&mut conn, 46, 150);
    let page = reg
        .list(
            &mut conn,
            &none,
            RegistrySort::IdAsc,
            &PageRequest::first(500),
        )
        .expect("page");
    assert_eq!(page.rows.len(), admin::MAX_PAGE);
    let page = reg
        .list(
            &mut conn,
            &none,
            RegistrySort::IdAsc,
            &PageRequest::default(),
        )
        .expect("page");
    assert_eq!(page.rows.len(), admin::DEFAULT_PAGE);
}

fn seed_more(conn: &mut impl AsDbConn, from: i64, to: i64) {
    exec(
        conn,
        &format!(
            "INSERT INTO widget_registry (id, widget_id, state) VALUES {}",
            (from..=to)
                .map(|i| format!("({i}, {}, 0)", 10 * i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
}

fn bad_cursors_and_arguments_are_refused(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    seed(&mut conn, 10);
    let reg = Registry::of(wd());
    let none = RegistryFilter::default();
    for bad in ["garbage", "", "7b7d", "%%%", "00ff"] {
        let err = reg
            .list(
                &mut conn,
                &none,
                RegistrySort::IdAsc,
                &PageRequest::first(3).after(bad),
            )
            .expect_err("bad cursor");
        assert!(matches!(err, AdminError::BadCursor), "{bad}: {err}");
    }
    // A cursor of another sort is not accepted either.
    let page = reg
        .list(
            &mut conn,
            &none,
            RegistrySort::IdDesc,
            &PageRequest::first(3),
        )
        .expect("page");
    let cursor = page.end_cursor().expect("cursor").to_owned();
    assert!(
        cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let err = reg
        .list(
            &mut conn,
            &none,
            RegistrySort::VerifiedAtAsc,
            &PageRequest::last(3).before(cursor),
        )
        .expect_err("foreign cursor");
    assert!(matches!(err, AdminError::BadCursor), "{err}");

    let both = PageRequest {
        first: Some(1),
        last: Some(1),
        ..PageRequest::default()
    };
    let err = reg
        .list(&mut conn, &none, RegistrySort::IdAsc, &both)
        .expect_err("first and last");
    assert!(matches!(err, AdminError::BadArgument(_)), "{err}");

    // Verification state on a type without verification (GitLab's ArgumentError).
    let by_vstate = RegistryFilter {
        verification_state: Some(V::Failed),
        ..Default::default()
    };
    let notes = Registry::of(nd());
    let err = notes
        .list(
            &mut conn,
            &by_vstate,
            RegistrySort::IdAsc,
            &PageRequest::default(),
        )
        .expect_err("no verification");
    assert!(
        matches!(&err, AdminError::BadArgument(m) if m.contains("note has no verification")),
        "{err}"
    );
    assert!(matches!(
        notes.count_matching(&mut conn, &by_vstate),
        Err(AdminError::BadArgument(_))
    ));
    assert!(matches!(
        notes.act_on_registry_id(&mut conn, 1, Action::Reverify),
        Err(AdminError::BadArgument(_))
    ));
    // Without the verification filter the list works (and is empty).
    let page = notes
        .list(
            &mut conn,
            &RegistryFilter::default(),
            RegistrySort::IdAsc,
            &PageRequest::default(),
        )
        .expect("notes");
    assert!(page.rows.is_empty() && !page.has_next_page && !page.has_previous_page);
}

fn per_row_actions_follow_the_rules(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let rows = seed(&mut conn, 20);
    let reg = Registry::of(wd());
    let state = |conn: &mut _, id| {
        let r: RegistryRecord = reg.get(conn, id).expect("get").expect("row");
        (r.state, r.verification_state)
    };
    // Row 1 is started: a resync must not touch a running sync.
    assert_eq!(rows[0].state, R::Started);
    assert!(
        !reg.act_on_registry_id(&mut conn, 1, Action::Resync)
            .expect("resync started")
    );
    assert_eq!(state(&mut conn, 1).0, R::Started);
    // Row 3 is failed: it goes back to pending, its retry fields cleared.
    assert_eq!(rows[2].state, R::Failed);
    exec(
        &mut conn,
        &format!(
            "UPDATE widget_registry SET retry_count = 4, retry_at = '{}' WHERE id = 3",
            ts(100)
        ),
    );
    assert!(
        reg.act_on_registry_id(&mut conn, 3, Action::Resync)
            .expect("resync failed")
    );
    let r = reg.get(&mut conn, 3).expect("get").expect("row");
    assert_eq!((r.state, r.retry_count, r.retry_at), (R::Pending, 0, None));
    // Row 2 is synced with verification succeeded (2 % 5 = 2): reverify makes it pending.
    assert_eq!((rows[1].state, rows[1].vstate), (R::Synced, V::Succeeded));
    assert!(
        reg.act_on_registry_id(&mut conn, 2, Action::Reverify)
            .expect("reverify")
    );
    assert_eq!(state(&mut conn, 2), (R::Synced, V::Pending));
    // Row 4 is pending: nothing to reverify.
    assert_eq!(rows[3].state, R::Pending);
    assert!(
        !reg.act_on_registry_id(&mut conn, 4, Action::Reverify)
            .expect("reverify pending")
    );
    // Row 6 is synced but verification started (6 % 5 = 1): left alone.
    assert_eq!((rows[5].state, rows[5].vstate), (R::Synced, V::Started));
    assert!(
        !reg.act_on_registry_id(&mut conn, 6, Action::Reverify)
            .expect("reverify started")
    );
    // No such row.
    assert!(
        !reg.act_on_registry_id(&mut conn, 999, Action::Resync)
            .expect("missing")
    );
}

fn count_where(conn: &mut impl AsDbConn, f: RegistryFilter) -> i64 {
    Registry::of(wd()).count_matching(conn, &f).expect("count")
}

fn bulk_resync_of_failed_rows_runs_in_batches_with_correct_counts(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let rows = seed(&mut conn, 2500);
    let failed = rows.iter().filter(|g| g.state == R::Failed).count() as i64;
    assert_eq!(failed, 625);
    let failed_filter = || RegistryFilter {
        replication_state: Some(R::Failed),
        ..Default::default()
    };

    // Resync all failed, 200 rows a batch: four batches (the fourth comes up short).
    let filter = BulkFilter {
        replication_state: Some(R::Failed),
        ..Default::default()
    };
    let id = admin::enqueue(
        &mut conn,
        Role::Secondary,
        wd(),
        BulkAction::ResyncAll,
        filter.clone(),
    )
    .expect("enqueue");
    let mut steps = Vec::new();
    while let Some(job) = admin::step(&mut conn, Role::Secondary, 200).expect("step") {
        assert_eq!(job.id, id);
        steps.push((job.processed, job.changed, job.finished_at.is_some()));
        assert!(steps.len() < 10, "{steps:?}");
    }
    assert_eq!(
        steps,
        vec![
            (200, 200, false),
            (400, 400, false),
            (600, 600, false),
            (625, 625, true)
        ]
    );
    assert_eq!(count_where(&mut conn, failed_filter()), 0);
    let jobs = admin::jobs(&mut conn, false).expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].filter, filter);
    assert_eq!(jobs[0].action, BulkAction::ResyncAll);
    assert_eq!(jobs[0].replicable, "widget");
    assert!(admin::jobs(&mut conn, true).expect("jobs").is_empty());

    // Resync all (no filter): started rows are left alone, every other row that is not yet
    // pending changes; run_to_end reports progress after every batch.
    let started = rows.iter().filter(|g| g.state == R::Started).count() as i64;
    let pending_now = count_where(
        &mut conn,
        RegistryFilter {
            replication_state: Some(R::Pending),
            ..Default::default()
        },
    );
    admin::enqueue(
        &mut conn,
        Role::Secondary,
        wd(),
        BulkAction::ResyncAll,
        BulkFilter::default(),
    )
    .expect("enqueue");
    let mut seen = 0;
    let done = admin::run_to_end(&mut conn, Role::Secondary, admin::BULK_BATCH, &mut |_| {
        seen += 1
    })
    .expect("run")
    .expect("a job");
    assert_eq!(seen, 3);
    assert_eq!(done.processed, 2500);
    // The resync rule rewrites every row not started (pending ones stay pending).
    assert_eq!(done.changed, 2500 - started);
    assert_eq!(
        count_where(
            &mut conn,
            RegistryFilter {
                replication_state: Some(R::Pending),
                ..Default::default()
            }
        ),
        2500 - started
    );
    assert!(pending_now < 2500 - started);
    assert!(
        admin::step(&mut conn, Role::Secondary, 100)
            .expect("step")
            .is_none()
    );

    // Invalid jobs are refused before anything is recorded.
    for (d, action, filter) in [
        (nd(), BulkAction::ReverifyAll, BulkFilter::default()),
        (
            nd(),
            BulkAction::ResyncAll,
            BulkFilter {
                verification_state: Some(V::Failed),
                ..Default::default()
            },
        ),
    ] {
        assert!(matches!(
            admin::enqueue(&mut conn, Role::Secondary, d, action, filter),
            Err(AdminError::BadArgument(_))
        ));
    }
    assert_eq!(admin::jobs(&mut conn, false).expect("jobs").len(), 2);
}

fn bulk_job_resumes_after_a_restart(backend: Backend) {
    let (db, pool) = tracking(backend);
    let rows = {
        let mut conn = pool.get().expect("conn");
        seed(&mut conn, 2300)
    };
    let reverifiable = rows
        .iter()
        .filter(|g| g.state == R::Synced && g.vstate != V::Started)
        .count() as i64;
    let id = {
        let mut conn = pool.get().expect("conn");
        let id = admin::enqueue(
            &mut conn,
            Role::Secondary,
            wd(),
            BulkAction::ReverifyAll,
            BulkFilter::default(),
        )
        .expect("enqueue");
        let job = admin::step(&mut conn, Role::Secondary, 1000)
            .expect("step")
            .expect("job");
        assert_eq!((job.cursor, job.processed), (1000, 1000));
        id
    };
    // "Restart": every connection goes; a new pool opens the same database.
    drop(pool);
    let pool = db.pool(2);
    let mut conn = pool.get().expect("conn");
    let job = admin::job(&mut conn, id).expect("job").expect("recorded");
    assert_eq!(
        (job.cursor, job.processed, job.finished_at),
        (1000, 1000, None)
    );
    let done =
        admin::run_job_to_end(&mut conn, Role::Secondary, 1000, id, &mut |_| {}).expect("run");
    assert_eq!(done.processed, 2300);
    assert_eq!(done.changed, reverifiable);
    assert!(done.finished_at.is_some());
    assert_eq!(
        count_where(
            &mut conn,
            RegistryFilter {
                replication_state: Some(R::Synced),
                verification_state: Some(V::Pending),
                ..Default::default()
            }
        ),
        reverifiable
    );
}

/// Inserts widgets 1..=n (file `widgets/<i>.bin`) and gadgets 1..=n on the primary, without
/// events; widget states rows for the odd widgets only, with the state `i % 5`.
fn seed_primary(conn: &mut impl AsDbConn, n: i64) {
    let widgets: Vec<String> = (1..=n)
        .map(|i| format!("({i}, 'widgets/{i}.bin', 'w{i}')"))
        .collect();
    // Widgets publish through triggers (`events = "triggers"`): the flag is off for the insert
    // (and back to its default after), so the rows arrive without events or states rows.
    let flag = wd().feature_flag();
    exec(
        conn,
        &format!(
            "BEGIN; INSERT INTO geo_feature_flags (name, enabled) VALUES ('{flag}', FALSE); \
             INSERT INTO widgets (id, file_path, name) VALUES {}; \
             DELETE FROM geo_feature_flags WHERE name = '{flag}'; COMMIT;",
            widgets.join(", ")
        ),
    );
    let states: Vec<String> = (1..=n)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("({i}, {})", V::ALL[(i % 5) as usize].as_i16()))
        .collect();
    exec(
        conn,
        &format!(
            "INSERT INTO widget_states (widget_id, verification_state) VALUES {}",
            states.join(", ")
        ),
    );
    let gadgets: Vec<String> = (1..=n)
        .map(|i| {
            format!(
                "({i}, 'gadgets/{i}.bin', 'g{i}', {})",
                V::ALL[(i % 5) as usize].as_i16()
            )
        })
        .collect();
    exec(
        conn,
        &format!(
            "INSERT INTO gadgets (id, blob_key, label, verification_state) VALUES {}",
            gadgets.join(", ")
        ),
    );
}

fn bulk_reverify_on_the_primary_and_the_primary_refuses_resync(backend: Backend) {
    let (_db, pool) = primary(backend);
    let mut conn = pool.get().expect("conn");
    seed_primary(&mut conn, 300);
    let err = admin::enqueue(
        &mut conn,
        Role::Primary,
        wd(),
        BulkAction::ResyncAll,
        BulkFilter::default(),
    )
    .expect_err("resync on the primary");
    assert!(
        matches!(&err, AdminError::BadArgument(m) if m.contains("resync is for secondaries")),
        "{err}"
    );
    assert!(matches!(
        admin::enqueue(
            &mut conn,
            Role::Primary,
            wd(),
            BulkAction::ReverifyAll,
            BulkFilter {
                replication_state: Some(R::Failed),
                ..Default::default()
            }
        ),
        Err(AdminError::BadArgument(_))
    ));

    // Reverify all succeeded widgets (states rows 1, 3, …; state i % 5 == 2: i = 7, 17, …).
    let succeeded = (1..=300).filter(|i| i % 2 == 1 && i % 5 == 2).count() as i64;
    let by = |v| RecordFilter {
        verification_state: Some(v),
        ..Default::default()
    };
    assert_eq!(
        admin::count_records_matching(&mut conn, wd(), &by(V::Succeeded)).expect("count"),
        succeeded
    );
    let pending_before =
        admin::count_records_matching(&mut conn, wd(), &by(V::Pending)).expect("count");
    let id = admin::enqueue(
        &mut conn,
        Role::Primary,
        wd(),
        BulkAction::ReverifyAll,
        BulkFilter {
            verification_state: Some(V::Succeeded),
            ..Default::default()
        },
    )
    .expect("enqueue");
    let done = admin::run_job_to_end(&mut conn, Role::Primary, 7, id, &mut |_| {}).expect("run");
    assert_eq!((done.processed, done.changed), (succeeded, succeeded));
    assert_eq!(
        admin::count_records_matching(&mut conn, wd(), &by(V::Succeeded)).expect("count"),
        0
    );
    assert_eq!(
        admin::count_records_matching(&mut conn, wd(), &by(V::Pending)).expect("count"),
        pending_before + succeeded
    );

    // Inline verification (gadgets): every record, in batches of 64.
    admin::enqueue(
        &mut conn,
        Role::Primary,
        gd(),
        BulkAction::ReverifyAll,
        BulkFilter::default(),
    )
    .expect("enqueue");
    let done = admin::run_to_end(&mut conn, Role::Primary, 64, &mut |_| {})
        .expect("run")
        .expect("job");
    assert_eq!((done.processed, done.changed), (300, 300));
    assert_eq!(
        admin::count_records_matching(&mut conn, gd(), &by(V::Pending)).expect("count"),
        300
    );
}

fn bulk_worker_runs_jobs_in_the_background_and_stops(backend: Backend) {
    let (_db, pool) = tracking(backend);
    seed(&mut pool.get().expect("conn"), 3500);
    let worker = admin::BulkWorker::spawn(pool.clone(), Role::Secondary, Duration::from_millis(20))
        .expect("spawn");
    let id = admin::enqueue(
        &mut pool.get().expect("conn"),
        Role::Secondary,
        wd(),
        BulkAction::ResyncAll,
        BulkFilter {
            replication_state: Some(R::Failed),
            ..Default::default()
        },
    )
    .expect("enqueue");
    // The CLI may step the same job in the foreground meanwhile: each batch still runs once.
    let mut conn = pool.get().expect("conn");
    let done =
        admin::run_job_to_end(&mut conn, Role::Secondary, 300, id, &mut |_| {}).expect("run");
    assert_eq!((done.processed, done.changed), (875, 875));
    // A second job is the worker's alone.
    let id = admin::enqueue(
        &mut conn,
        Role::Secondary,
        wd(),
        BulkAction::ReverifyAll,
        BulkFilter::default(),
    )
    .expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = admin::job(&mut conn, id).expect("job").expect("row");
        if job.finished_at.is_some() {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not finish: {job:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(job.processed, 3500);
    let started = Instant::now();
    worker.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn data_management_lists_records_with_their_checksum_state(backend: Backend) {
    let (_db, pool) = primary(backend);
    let mut conn = pool.get().expect("conn");
    seed_primary(&mut conn, 30);
    let none = RecordFilter::default();

    // Separate states table: records without a states row show no state.
    let page = admin::list_records(&mut conn, wd(), &none, &PageRequest::first(10)).expect("list");
    let got: Vec<(i64, Option<V>)> = page
        .rows
        .iter()
        .map(|(_, r)| (r.model_record_id, r.verification_state))
        .collect();
    let want: Vec<(i64, Option<V>)> = (1..=10)
        .map(|i| (i, (i % 2 == 1).then(|| V::ALL[(i % 5) as usize])))
        .collect();
    assert_eq!(got, want);
    assert!(page.has_next_page && !page.has_previous_page);
    assert_eq!(page.rows[0].1.file.as_deref(), Some("widgets/1.bin"));
    let next = admin::list_records(
        &mut conn,
        wd(),
        &none,
        &PageRequest::first(25).after(page.end_cursor().expect("cursor")),
    )
    .expect("next");
    assert_eq!(next.rows.len(), 20);
    assert!(!next.has_next_page && next.has_previous_page);
    let back = admin::list_records(
        &mut conn,
        wd(),
        &none,
        &PageRequest::last(3).before(next.start_cursor().expect("cursor")),
    )
    .expect("back");
    let back_ids: Vec<i64> = back.rows.iter().map(|(_, r)| r.model_record_id).collect();
    assert_eq!(back_ids, vec![8, 9, 10]);
    assert!(back.has_previous_page && back.has_next_page);

    // Filters.
    let f = RecordFilter {
        verification_state: Some(V::Failed),
        ..Default::default()
    };
    let failed: Vec<i64> = (1..=30).filter(|i| i % 2 == 1 && i % 5 == 3).collect();
    let page = admin::list_records(&mut conn, wd(), &f, &PageRequest::default()).expect("list");
    let ids: Vec<i64> = page.rows.iter().map(|(_, r)| r.model_record_id).collect();
    assert_eq!(ids, failed);
    assert_eq!(
        admin::count_records_matching(&mut conn, wd(), &f).expect("count"),
        failed.len() as i64
    );
    for (keyword, want) in [
        ("12", vec![12]),
        ("widgets/2", vec![2, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]),
    ] {
        let f = RecordFilter {
            keyword: Some(keyword.into()),
            ..Default::default()
        };
        let page = admin::list_records(&mut conn, wd(), &f, &PageRequest::default()).expect("list");
        let ids: Vec<i64> = page.rows.iter().map(|(_, r)| r.model_record_id).collect();
        assert_eq!(ids, want, "{keyword}");
    }
    let f = RecordFilter {
        ids: Some(vec![4, 5, 99]),
        ..Default::default()
    };
    assert_eq!(
        admin::count_records_matching(&mut conn, wd(), &f).expect("count"),
        2
    );

    // Inline state (gadgets); one record; reverify one record.
    let g = admin::get_record(&mut conn, gd(), 8)
        .expect("get")
        .expect("gadget 8");
    assert_eq!(
        (g.verification_state, g.file.as_deref()),
        (Some(V::Failed), Some("gadgets/8.bin"))
    );
    assert!(admin::reverify_record(&mut conn, gd(), 8).expect("reverify"));
    let g = admin::get_record(&mut conn, gd(), 8)
        .expect("get")
        .expect("gadget 8");
    assert_eq!(g.verification_state, Some(V::Pending));
    // Widget 2 has no states row: reverifying creates it.
    assert_eq!(
        admin::get_record(&mut conn, wd(), 2)
            .expect("get")
            .expect("w2")
            .verification_state,
        None
    );
    assert!(admin::reverify_record(&mut conn, wd(), 2).expect("reverify"));
    assert_eq!(
        admin::get_record(&mut conn, wd(), 2)
            .expect("get")
            .expect("w2")
            .verification_state,
        Some(V::Pending)
    );
    assert!(!admin::reverify_record(&mut conn, wd(), 999).expect("missing"));
    assert!(
        admin::get_record(&mut conn, wd(), 999)
            .expect("get")
            .is_none()
    );
}

fn flags_list_and_set_and_refuse_unknown_names(backend: Backend) {
    let (_db, pool) = primary(backend);
    let mut conn = pool.get().expect("conn");
    let names = |conn: &mut _| -> Vec<(String, bool, bool)> {
        admin::flags(conn)
            .expect("flags")
            .into_iter()
            .map(|f| (f.name, f.enabled, f.stored))
            .collect()
    };
    assert_eq!(
        names(&mut conn),
        vec![
            ("geo_gadget_replication".into(), true, false),
            ("geo_note_replication".into(), true, false),
            ("geo_widget_replication".into(), true, false),
        ]
    );
    let f = admin::set_flag(&mut conn, "geo_widget_replication", false).expect("disable");
    assert_eq!(
        (f.replicable.as_str(), f.enabled, f.default, f.stored),
        ("widget", false, true, true)
    );
    assert!(!geo_diesel::primary::replication_enabled(&mut conn, wd()).expect("read"));
    let f = admin::set_flag(&mut conn, "gadget", true).expect("enable by bare name");
    assert_eq!(
        (f.name.as_str(), f.enabled, f.stored),
        ("geo_gadget_replication", true, true)
    );
    assert_eq!(
        names(&mut conn),
        vec![
            ("geo_gadget_replication".into(), true, true),
            ("geo_note_replication".into(), true, false),
            ("geo_widget_replication".into(), false, true),
        ]
    );
    let err = admin::set_flag(&mut conn, "geo_sprocket_replication", true).expect_err("unknown");
    assert!(
        matches!(&err, AdminError::BadArgument(m) if m.contains("geo_widget_replication") && m.contains("sprocket")),
        "{err}"
    );
}

fn detect_role_reads_the_ledger(backend: Backend) {
    let (_p, primary) = primary(backend);
    let (_t, tracking) = tracking(backend);
    let empty = TestDatabase::fresh(backend, "admin_empty");
    assert_eq!(
        admin::detect_role(&mut primary.get().expect("conn")).expect("primary"),
        Some(Role::Primary)
    );
    assert_eq!(
        admin::detect_role(&mut tracking.get().expect("conn")).expect("tracking"),
        Some(Role::Secondary)
    );
    assert_eq!(
        admin::detect_role(&mut empty.pool(1).get().expect("conn")).expect("empty"),
        None
    );
    // Both roles in one database: refused rather than guessed.
    let mut conn = tracking.get().expect("conn");
    exec(
        &mut conn,
        "INSERT INTO geo_schema_migrations (name) VALUES ('geo_framework_primary')",
    );
    assert!(matches!(
        admin::detect_role(&mut conn),
        Err(AdminError::BadArgument(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Scale: not a timed test (the benchmark measures), a way to look at plans and times by hand:
// `cargo test -p geo-tests --test admin -- --ignored --nocapture scale` (add `--features
// pg-suite` and GEO_TEST_DATABASE_URL for PostgreSQL).
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "1,000,000 registry rows: run by hand with --ignored --nocapture"]
fn scale_sqlite() {
    scale(Backend::Sqlite);
}

#[cfg(feature = "pg-suite")]
#[test]
#[ignore = "1,000,000 registry rows: run by hand with --ignored --nocapture"]
fn scale_postgres() {
    scale(Backend::Postgres);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn scale(backend: Backend) {
    const N: i64 = 1_000_000;
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let t = Instant::now();
    // 1 % failed, the rest synced; verification succeeded on synced rows but every 50th.
    exec(
        &mut conn,
        &format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {N}) \
             INSERT INTO widget_registry (id, widget_id, state, verification_state, blob_path) \
             SELECT n, n, CASE WHEN n % 100 = 0 THEN 3 ELSE 2 END, \
             CASE WHEN n % 100 = 0 THEN 4 WHEN n % 50 = 0 THEN 3 ELSE 2 END, \
             'widgets/' || n || '.bin' FROM s"
        ),
    );
    exec(&mut conn, "ANALYZE");
    println!("{backend:?}: seeded {N} rows in {:?}", t.elapsed());
    let reg = Registry::of(wd());
    for (filter, page) in [
        (
            RegistryFilter {
                replication_state: Some(R::Failed),
                ..Default::default()
            },
            PageRequest::first(20),
        ),
        (
            RegistryFilter {
                replication_state: Some(R::Failed),
                ..Default::default()
            },
            PageRequest::last(20),
        ),
        (
            RegistryFilter {
                verification_state: Some(V::Failed),
                ..Default::default()
            },
            PageRequest::first(20),
        ),
    ] {
        let (list, count) = reg
            .explain_list(&mut conn, &filter, RegistrySort::IdAsc, &page)
            .expect("explain");
        println!(
            "{filter:?} {page:?}\n  list:\n    {}\n  count:\n    {}",
            list.join("\n    "),
            count.join("\n    ")
        );
    }
    let reg = Registry::of(wd());
    let failed = RegistryFilter {
        replication_state: Some(R::Failed),
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut deep = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let page = reg
            .list(
                &mut conn,
                &failed,
                RegistrySort::IdAsc,
                &PageRequest::first(20),
            )
            .expect("list");
        let n = reg.count_matching(&mut conn, &failed).expect("count");
        times.push(t.elapsed());
        assert_eq!((page.rows.len(), n), (20, N / 100));
        let t = Instant::now();
        let page = reg
            .list(
                &mut conn,
                &failed,
                RegistrySort::IdAsc,
                &PageRequest::last(20).before(page.end_cursor().expect("c")),
            )
            .expect("list");
        deep.push(t.elapsed());
        assert_eq!(page.rows.len(), 19);
    }
    println!(
        "{backend:?}: FAILED first 20 + count: median {:?}; a page backward: median {:?}",
        median(times),
        median(deep)
    );
    let t = Instant::now();
    let page = reg
        .list(
            &mut conn,
            &RegistryFilter::default(),
            RegistrySort::LastSyncedAtDesc,
            &PageRequest::first(20),
        )
        .expect("list");
    println!(
        "{backend:?}: unindexed sort last_synced_at desc, first 20: {:?} ({} rows)",
        t.elapsed(),
        page.rows.len()
    );

    for (filter, label) in [
        (
            BulkFilter {
                replication_state: Some(R::Failed),
                ..Default::default()
            },
            "resync all failed",
        ),
        (BulkFilter::default(), "resync all"),
    ] {
        let t = Instant::now();
        admin::enqueue(
            &mut conn,
            Role::Secondary,
            wd(),
            BulkAction::ResyncAll,
            filter,
        )
        .expect("enqueue");
        let mut batches = 0;
        let done = admin::run_to_end(&mut conn, Role::Secondary, admin::BULK_BATCH, &mut |_| {
            batches += 1
        })
        .expect("run")
        .expect("job");
        println!(
            "{backend:?}: {label}: {} rows, {} changed, {batches} batches of {} in {:?}",
            done.processed,
            done.changed,
            admin::BULK_BATCH,
            t.elapsed()
        );
    }
}

/// A secondary's verification claims read the partial index of their candidates, not the
/// `(verification_state, id)` index: every row not yet synced is verification `pending`, so
/// that index holds them all and a claim read through it visits each (on a new secondary of a
/// million records: every verification pass, after every sync pass). Then the claims still
/// claim what the rules say.
fn verification_claims_read_their_partial_indexes(backend: Backend) {
    use geo_diesel::registry::Work;
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    let rows = seed(&mut conn, 400);
    let reg = Registry::of(wd());
    let now = chrono::Utc::now();
    let plans = reg
        .explain_claims(&mut conn, Work::Verification, now)
        .expect("explain");
    assert_eq!(plans.len(), 2);
    if backend == Backend::Sqlite {
        for (plan, index) in plans.iter().zip([
            "index_widget_registry_pending_verification",
            "index_widget_registry_failed_verification",
        ]) {
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("verification_state_and_id"), "{plan}");
        }
    } else {
        assert!(plans.iter().all(|p| !p.is_empty()));
    }
    let claimed = reg
        .claim(&mut conn, Work::Verification, 1000, now)
        .expect("claim");
    let synced_pending = rows
        .iter()
        .filter(|g| g.state == R::Synced && g.vstate == V::Pending)
        .count();
    let synced_failed = rows
        .iter()
        .filter(|g| g.state == R::Synced && g.vstate == V::Failed)
        .count();
    // No row has a verification retry time: every failed one is due.
    assert_eq!(claimed.len(), synced_pending + synced_failed);
    assert!(synced_pending > 0 && synced_failed > 0);
}

fn state_filters_read_the_state_and_id_indexes(backend: Backend) {
    let (_db, pool) = tracking(backend);
    let mut conn = pool.get().expect("conn");
    seed(&mut conn, 200);
    let reg = Registry::of(wd());
    let failed = RegistryFilter {
        replication_state: Some(R::Failed),
        ..Default::default()
    };
    let page = reg
        .list(
            &mut conn,
            &failed,
            RegistrySort::IdAsc,
            &PageRequest::first(20),
        )
        .expect("page");
    let after = PageRequest::first(20).after(page.end_cursor().expect("cursor"));
    let by_vstate = RegistryFilter {
        verification_state: Some(V::Failed),
        ..Default::default()
    };
    let cases = [
        (
            &failed,
            PageRequest::first(20),
            "index_widget_registry_on_state_and_id",
        ),
        (&failed, after, "index_widget_registry_on_state_and_id"),
        (
            &by_vstate,
            PageRequest::last(20),
            "index_widget_registry_on_verification_state_and_id",
        ),
    ];
    for (filter, page, index) in cases {
        let (list, count) = reg
            .explain_list(&mut conn, filter, RegistrySort::IdAsc, &page)
            .expect("explain");
        // PostgreSQL plans a 200-row table with a sequential scan; its plans at a million rows
        // are in `scale_postgres`. SQLite's planner picks the index at any size.
        if backend == Backend::Sqlite {
            let list = list.join("\n");
            let count = count.join("\n");
            assert!(
                list.contains(index) && !list.contains("TEMP B-TREE"),
                "{list}"
            );
            assert!(
                count.contains(&format!("COVERING INDEX {index}")),
                "{count}"
            );
        } else {
            assert!(!list.is_empty() && !count.is_empty());
        }
    }
}
