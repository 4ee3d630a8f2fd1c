//! The migration runner, the diesel_cli writer and the framework tables, each scenario written
//! once and run on a real SQLite file (always) and in a fresh database on a real PostgreSQL
//! server (feature `pg-suite`, `GEO_TEST_DATABASE_URL`). Test names are `<scenario>::sqlite`
//! and `<scenario>::postgres`; the SQLite connection pragmas and the PostgreSQL session time
//! zone have a test of their own.
//!
//! Two replicables are registered by hand (the `#[replicable]` attribute would generate the
//! same kind of descriptor), with SQL for both backends: `sample` with a table per role, and
//! `bare` without verification, whose primary migration is empty.

use chrono::{TimeZone, Utc};
use diesel::prelude::*;
use geo_diesel::geo_core::{
    Backend, EventCapture, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode,
};
use geo_diesel::schema::{
    geo_event_log_gaps, geo_event_log_states, geo_events, geo_feature_flags, geo_schema_migrations,
};
use geo_diesel::{
    JsonValue, MigrationError, UtcDateTime, migration_plan, write_diesel_cli_migrations,
};
use geo_tests::{TestConnection, TestDatabase, on_conn};

const NO_SQL: Migration = Migration { up: "", down: "" };

static SAMPLE: ReplicableDescriptor = ReplicableDescriptor {
    name: "sample",
    plural: "samples",
    type_name: "Sample",
    strategy: Strategy::Blob,
    verification: VerificationMode::Separate,
    enabled_by_default: true,
    events: EventCapture::Manual,
    tables: Tables {
        model: "samples",
        model_id: "id",
        model_file: "file_path",
        registry: "sample_registry",
        registry_model_id: "sample_id",
        verification: Some(("sample_states", "sample_id")),
        partition: None,
    },
    migrations: MigrationSet {
        sqlite_primary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "sample_states" (
    "sample_id" BIGINT NOT NULL PRIMARY KEY,
    "verification_state" SMALLINT NOT NULL DEFAULT 0
);"#,
            down: r#"DROP TABLE IF EXISTS "sample_states";"#,
        },
        sqlite_secondary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "sample_registry" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "sample_id" BIGINT NOT NULL UNIQUE,
    "state" SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS "index_sample_registry_on_state" ON "sample_registry" ("state");"#,
            down: r#"DROP TABLE IF EXISTS "sample_registry";"#,
        },
        postgres_primary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "sample_states" (
    "sample_id" BIGINT NOT NULL PRIMARY KEY,
    "verification_state" SMALLINT NOT NULL DEFAULT 0
);"#,
            down: r#"DROP TABLE IF EXISTS "sample_states";"#,
        },
        postgres_secondary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "sample_registry" (
    "id" BIGSERIAL PRIMARY KEY,
    "sample_id" BIGINT NOT NULL UNIQUE,
    "state" SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS "index_sample_registry_on_state" ON "sample_registry" ("state");"#,
            down: r#"DROP TABLE IF EXISTS "sample_registry";"#,
        },
    },
};

static BARE: ReplicableDescriptor = ReplicableDescriptor {
    name: "bare",
    plural: "bares",
    type_name: "Bare",
    strategy: Strategy::Blob,
    verification: VerificationMode::None,
    enabled_by_default: false,
    events: EventCapture::Manual,
    tables: Tables {
        model: "bares",
        model_id: "id",
        model_file: "file_path",
        registry: "bare_registry",
        registry_model_id: "bare_id",
        verification: None,
        partition: None,
    },
    migrations: MigrationSet {
        sqlite_primary: NO_SQL,
        sqlite_secondary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "bare_registry" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT,
    "bare_id" BIGINT NOT NULL UNIQUE
);"#,
            down: r#"DROP TABLE IF EXISTS "bare_registry";"#,
        },
        postgres_primary: NO_SQL,
        postgres_secondary: Migration {
            up: r#"CREATE TABLE IF NOT EXISTS "bare_registry" (
    "id" BIGSERIAL PRIMARY KEY,
    "bare_id" BIGINT NOT NULL UNIQUE
);"#,
            down: r#"DROP TABLE IF EXISTS "bare_registry";"#,
        },
    },
};

geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&SAMPLE) }
geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&BARE) }

geo_tests::backend_tests! {
    plan_is_framework_then_replicables_in_name_order,
    primary_migrations_apply_once_and_revert,
    secondary_migrations_apply_once_and_revert,
    revert_keeps_the_ledger_for_the_other_role,
    concurrent_runners_apply_each_migration_once,
    diesel_cli_folders_are_byte_identical_and_build_the_same_schema,
    geo_events_round_trip_json_and_time_and_never_reuse_ids,
    a_failing_migration_is_named_and_rolled_back,
}

fn ledger(conn: &mut TestConnection) -> Vec<String> {
    let query = geo_schema_migrations::table
        .select(geo_schema_migrations::name)
        .order(geo_schema_migrations::name);
    on_conn!(conn, c => query.load(c)).expect("read the ledger")
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// `names`, a list of primary steps, with the PostgreSQL-only `geo_notify_primary` (the
/// `geo_events` trigger that NOTIFYs waiting feeds) where `backend` has it: right after
/// `geo_safety_primary` in apply order, right before it in ledger (name) order and in revert
/// order; and `geo_prune_primary` (the pruning tables) after those in apply order, right
/// before `geo_safety_primary` in name order, and first of them in revert order.
fn primary_steps(backend: Backend, names: &[&str]) -> Vec<String> {
    let mut out = strings(names);
    let at = |out: &[String], n: &str| out.iter().position(|s| s == n).expect("a framework step");
    let apply_order = at(&out, "geo_framework_primary") < at(&out, "geo_admin_primary");
    // Name order has `bare_primary` first; revert order has the replicables last-applied first.
    let ledger_order = !apply_order && out.first().is_some_and(|n| n == "bare_primary");
    let last_framework = if backend == Backend::Postgres {
        let safety = at(&out, "geo_safety_primary");
        let i = if apply_order { safety + 1 } else { safety };
        out.insert(i, "geo_notify_primary".to_owned());
        "geo_notify_primary"
    } else {
        "geo_safety_primary"
    };
    let i = if apply_order {
        at(&out, last_framework) + 1
    } else if ledger_order {
        at(&out, "geo_safety_primary")
    } else {
        at(&out, last_framework)
    };
    out.insert(i, "geo_prune_primary".to_owned());
    out
}

/// A fresh database of `backend` with the migrations of `role` applied, and a connection.
fn migrated(backend: Backend, prefix: &str, role: Role) -> (TestDatabase, TestConnection) {
    let db = TestDatabase::fresh(backend, prefix);
    let mut conn = db.connect();
    conn.run_migrations(role).expect("migrate");
    (db, conn)
}

fn plan_is_framework_then_replicables_in_name_order(backend: Backend) {
    for role in Role::ALL {
        let names: Vec<String> = migration_plan(backend, role)
            .into_iter()
            .map(|m| m.name)
            .collect();
        let mut want = vec![
            format!("geo_framework_{role}"),
            format!("geo_admin_{role}"),
            format!("geo_safety_{role}"),
        ];
        if role == Role::Secondary {
            want.push("geo_leases_secondary".to_owned());
        }
        if role == Role::Primary && backend == Backend::Postgres {
            want.push("geo_notify_primary".to_owned());
        }
        if role == Role::Primary {
            want.push("geo_prune_primary".to_owned());
        }
        want.extend([format!("bare_{role}"), format!("sample_{role}")]);
        assert_eq!(names, want);
    }
}

fn primary_migrations_apply_once_and_revert(backend: Backend) {
    let db = TestDatabase::fresh(backend, "primary");
    let mut conn = db.connect();

    let first = conn.run_migrations(Role::Primary).expect("first run");
    assert_eq!(first.backend, backend);
    assert_eq!(
        first.applied,
        primary_steps(
            backend,
            &[
                "geo_framework_primary",
                "geo_admin_primary",
                "geo_safety_primary",
                "bare_primary",
                "sample_primary"
            ]
        )
    );
    assert!(first.already_applied.is_empty());
    assert!(!first.is_up_to_date());
    assert_eq!(
        conn.tables(),
        strings(&[
            "geo_bulk_updates",
            "geo_event_prune_state",
            "geo_events",
            "geo_feature_flags",
            "geo_known_secondaries",
            "geo_node_identity",
            "geo_schema_migrations",
            "sample_states"
        ])
    );
    assert_eq!(
        ledger(&mut conn),
        primary_steps(
            backend,
            &[
                "bare_primary",
                "geo_admin_primary",
                "geo_framework_primary",
                "geo_safety_primary",
                "sample_primary"
            ]
        )
    );

    // A second run, on a new connection, applies nothing and says so.
    let mut again = db.connect();
    let second = again.run_migrations(Role::Primary).expect("second run");
    assert!(second.is_up_to_date(), "{second}");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, first.applied);
    assert!(second.to_string().contains("up to date"), "{second}");

    let reverted = again.revert_migrations(Role::Primary).expect("revert");
    assert_eq!(
        reverted.reverted,
        primary_steps(
            backend,
            &[
                "sample_primary",
                "bare_primary",
                "geo_safety_primary",
                "geo_admin_primary",
                "geo_framework_primary"
            ]
        )
    );
    assert!(reverted.dropped_ledger);
    assert_eq!(again.tables(), Vec::<String>::new());

    // And it can be applied again from scratch.
    let third = again.run_migrations(Role::Primary).expect("re-apply");
    assert_eq!(third.applied, first.applied);
}

fn secondary_migrations_apply_once_and_revert(backend: Backend) {
    let db = TestDatabase::fresh(backend, "secondary");
    let mut conn = db.connect();

    let first = conn.run_migrations(Role::Secondary).expect("first run");
    assert_eq!(
        first.applied,
        strings(&[
            "geo_framework_secondary",
            "geo_admin_secondary",
            "geo_safety_secondary",
            "geo_leases_secondary",
            "bare_secondary",
            "sample_secondary"
        ])
    );
    assert_eq!(
        conn.tables(),
        strings(&[
            "bare_registry",
            "geo_backfill_positions",
            "geo_bulk_updates",
            "geo_event_log_gaps",
            "geo_event_log_states",
            "geo_feature_flags",
            "geo_followed_primary",
            "geo_leases",
            "geo_schema_migrations",
            "geo_secondary_workers",
            "sample_registry",
        ])
    );
    assert_eq!(
        ledger(&mut conn),
        strings(&[
            "bare_secondary",
            "geo_admin_secondary",
            "geo_framework_secondary",
            "geo_leases_secondary",
            "geo_safety_secondary",
            "sample_secondary"
        ])
    );
    let second = conn.run_migrations(Role::Secondary).expect("second run");
    assert!(second.is_up_to_date(), "{second}");

    // The cursor, gap and flag tables work through their `table!`s, with default timestamps.
    let insert_cursor = diesel::insert_into(geo_event_log_states::table).values((
        geo_event_log_states::id.eq(0),
        geo_event_log_states::event_id.eq(41_i64),
    ));
    on_conn!(&mut conn, c => insert_cursor.execute(c)).expect("insert cursor");
    let read_cursor = geo_event_log_states::table.select((
        geo_event_log_states::event_id,
        geo_event_log_states::updated_at,
    ));
    let (event_id, updated_at): (i64, UtcDateTime) =
        on_conn!(&mut conn, c => read_cursor.first(c)).expect("read cursor");
    assert_eq!(event_id, 41);
    assert!((Utc::now() - updated_at.get()).num_seconds().abs() < 60);

    let insert_gap = diesel::insert_into(geo_event_log_gaps::table)
        .values(geo_event_log_gaps::event_id.eq(6_i64));
    on_conn!(&mut conn, c => insert_gap.execute(c)).expect("insert gap");
    let insert_flag = diesel::insert_into(geo_feature_flags::table).values((
        geo_feature_flags::name.eq("geo_sample_replication"),
        geo_feature_flags::enabled.eq(false),
    ));
    on_conn!(&mut conn, c => insert_flag.execute(c)).expect("insert flag");
    let read_gap = geo_event_log_gaps::table.select((
        geo_event_log_gaps::event_id,
        geo_event_log_gaps::detected_at,
    ));
    let (gap, seen): (i64, UtcDateTime) =
        on_conn!(&mut conn, c => read_gap.first(c)).expect("read gap");
    assert_eq!(gap, 6);
    assert!((Utc::now() - seen.get()).num_seconds().abs() < 60);
    let read_flag = geo_feature_flags::table
        .find("geo_sample_replication")
        .select(geo_feature_flags::enabled);
    let enabled: bool = on_conn!(&mut conn, c => read_flag.first(c)).expect("read flag");
    assert!(!enabled);

    // The scale-out tables work through their `table!`s too.
    on_conn!(&mut conn, c => {
        use geo_diesel::lease;
        lease::heartbeat(c, "w1", "host", 7, Utc::now()).expect("heartbeat");
        let held = lease::try_hold(c, "log_cursor", "w1", Utc::now(), chrono::Duration::seconds(30));
        assert!(held.expect("lease"));
        lease::set_backfill_position(c, "sample", 11, Utc::now()).expect("position");
        assert_eq!(lease::backfill_position(c, "sample").expect("read position"), 11);
    });

    let reverted = conn.revert_migrations(Role::Secondary).expect("revert");
    assert_eq!(reverted.reverted.len(), 6);
    assert_eq!(conn.tables(), Vec::<String>::new());
}

fn revert_keeps_the_ledger_for_the_other_role(backend: Backend) {
    let (_db, mut conn) = migrated(backend, "both_roles", Role::Primary);
    conn.run_migrations(Role::Secondary).expect("secondary");
    let reverted = conn
        .revert_migrations(Role::Secondary)
        .expect("revert secondary");
    assert!(!reverted.dropped_ledger);
    assert_eq!(
        ledger(&mut conn),
        primary_steps(
            backend,
            &[
                "bare_primary",
                "geo_admin_primary",
                "geo_framework_primary",
                "geo_safety_primary",
                "sample_primary"
            ]
        )
    );
    assert!(conn.tables().contains(&"geo_events".to_string()));
}

fn concurrent_runners_apply_each_migration_once(backend: Backend) {
    let db = TestDatabase::fresh(backend, "concurrent");
    // Create the database (on SQLite: the file, switched to WAL) before the race.
    drop(db.connect());
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| db.connect().run_migrations(Role::Secondary)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut applied: Vec<String> = reports
        .into_iter()
        .flat_map(|r| r.expect("concurrent run").applied)
        .collect();
    applied.sort();
    assert_eq!(
        applied,
        strings(&[
            "bare_secondary",
            "geo_admin_secondary",
            "geo_framework_secondary",
            "geo_leases_secondary",
            "geo_safety_secondary",
            "sample_secondary"
        ])
    );
}

fn diesel_cli_folders_are_byte_identical_and_build_the_same_schema(backend: Backend) {
    let out = tempfile::tempdir().expect("tempdir");
    for role in Role::ALL {
        let a = out.path().join(format!("a-{role}"));
        let b = out.path().join(format!("b-{role}"));
        let names = |v: &[std::path::PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let folders = names(&write_diesel_cli_migrations(&a, backend, role).expect("write a"));
        let again = names(&write_diesel_cli_migrations(&b, backend, role).expect("write b"));
        assert_eq!(folders, again);
        assert_eq!(folders[0], format!("00000000000001_geo_framework_{role}"));
        // `bare` has no primary SQL, so no folder on the primary.
        assert_eq!(folders[1], format!("00000000000002_geo_admin_{role}"));
        assert_eq!(folders[2], format!("00000000000003_geo_safety_{role}"));
        let expected = match role {
            Role::Primary if backend == Backend::Postgres => 6,
            Role::Primary => 5,
            Role::Secondary => 6,
        };
        assert_eq!(folders.len(), expected, "{folders:?}");
        for folder in &folders {
            for file in ["up.sql", "down.sql"] {
                let x = std::fs::read(a.join(folder).join(file)).expect("read a");
                let y = std::fs::read(b.join(folder).join(file)).expect("read b");
                assert!(!x.is_empty());
                assert_eq!(x, y, "{folder}/{file} differs between runs");
            }
        }

        // Applying the up.sql files in version order gives the runner's schema.
        let by_hand_db = TestDatabase::fresh(backend, &format!("hand_{role}"));
        let mut by_hand = by_hand_db.connect();
        let mut sorted = folders.clone();
        sorted.sort();
        for folder in &sorted {
            let sql = std::fs::read_to_string(a.join(folder).join("up.sql")).expect("read up");
            by_hand
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{folder}/up.sql: {e}"));
        }
        let (_runner_db, mut runner) = migrated(backend, &format!("runner_{role}"), role);
        let expected = runner.schema();
        assert!(!expected.is_empty());
        assert_eq!(by_hand.schema(), expected);

        // And the down.sql files in reverse order remove everything but the ledger.
        for folder in sorted.iter().rev() {
            let sql = std::fs::read_to_string(a.join(folder).join("down.sql")).expect("read");
            by_hand
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{folder}/down.sql: {e}"));
        }
        assert_eq!(by_hand.tables(), strings(&["geo_schema_migrations"]));
    }
}

fn geo_events_round_trip_json_and_time_and_never_reuse_ids(backend: Backend) {
    let (_db, mut conn) = migrated(backend, "events", Role::Primary);

    let at = UtcDateTime(Utc.with_ymd_and_hms(2026, 11, 27, 22, 27, 26).unwrap())
        .get()
        .checked_add_signed(chrono::Duration::milliseconds(123))
        .map(UtcDateTime)
        .unwrap();
    let payload =
        serde_json::json!({"model_record_id": 7, "blob_path": "a/b é.bin", "n": [1, 2.5, null]});
    let insert = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("created"),
            geo_events::model_record_id.eq(7_i64),
            geo_events::payload.eq(JsonValue(payload.clone())),
            geo_events::created_at.eq(at),
        ))
        .returning(geo_events::id);
    let id: i64 = on_conn!(&mut conn, c => insert.get_result(c)).expect("insert event");

    let read = geo_events::table
        .find(id)
        .select((geo_events::payload, geo_events::created_at));
    let (read_payload, read_at): (JsonValue, UtcDateTime) =
        on_conn!(&mut conn, c => read.first(c)).expect("read event");
    assert_eq!(read_payload.into_inner(), payload);
    assert_eq!(read_at, at);

    // The database holds the instant in the portable form, and it can look inside the payload
    // (JSON text on SQLite, jsonb on PostgreSQL).
    let (stored_at, blob_path) = match backend {
        Backend::Sqlite => ("created_at", "json_extract(payload, '$.blob_path')"),
        Backend::Postgres => (
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            "payload->>'blob_path'",
        ),
    };
    assert_eq!(
        conn.text(&format!(
            "SELECT {stored_at} AS name FROM geo_events WHERE id = {id}"
        )),
        "2026-11-27T22:27:26.123Z"
    );
    assert_eq!(
        conn.text(&format!(
            "SELECT {blob_path} AS name FROM geo_events WHERE id = {id}"
        )),
        "a/b é.bin"
    );

    // Defaults: payload `{}` and a created_at of now.
    let insert_defaults = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("deleted"),
            geo_events::model_record_id.eq(7_i64),
        ))
        .returning(geo_events::id);
    let second: i64 =
        on_conn!(&mut conn, c => insert_defaults.get_result(c)).expect("insert with defaults");
    let read_defaults = geo_events::table
        .find(second)
        .select((geo_events::payload, geo_events::created_at));
    let (p, t): (JsonValue, UtcDateTime) =
        on_conn!(&mut conn, c => read_defaults.first(c)).expect("read defaults");
    assert_eq!(p.0, serde_json::json!({}));
    assert!((Utc::now() - t.get()).num_seconds().abs() < 60);

    // Pruning the newest event must not let its id be handed out again (AUTOINCREMENT on
    // SQLite, a sequence on PostgreSQL).
    on_conn!(&mut conn, c => diesel::delete(geo_events::table).execute(c)).expect("prune");
    let insert_after_prune = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("updated"),
            geo_events::model_record_id.eq(8_i64),
        ))
        .returning(geo_events::id);
    let third: i64 =
        on_conn!(&mut conn, c => insert_after_prune.get_result(c)).expect("insert after prune");
    assert!(
        third > second,
        "id {third} reused after pruning (last was {second})"
    );

    // A payload that is not JSON is refused (a CHECK on SQLite, the jsonb type on PostgreSQL).
    let bad = conn.batch_execute(
        "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload) \
         VALUES ('sample', 'created', 1, 'not json')",
    );
    assert!(bad.is_err(), "non-JSON payload was accepted");
}

fn a_failing_migration_is_named_and_rolled_back(backend: Backend) {
    let db = TestDatabase::fresh(backend, "failing");
    let mut conn = db.connect();
    // Something already named `sample_states` makes `CREATE TABLE IF NOT EXISTS
    // "sample_states"` fail: an index on SQLite ("there is already an index named ..."), a type
    // on PostgreSQL (the table's row type would collide; IF NOT EXISTS only looks at
    // relations).
    let obstacle = match backend {
        Backend::Sqlite => {
            r#"CREATE TABLE "in_the_way" ("x" INTEGER); CREATE INDEX "sample_states" ON "in_the_way" ("x");"#
        }
        Backend::Postgres => r#"CREATE TYPE "sample_states" AS ENUM ('x')"#,
    };
    conn.batch_execute(obstacle).expect("create the obstacle");
    let err = conn.run_migrations(Role::Primary).expect_err("must fail");
    match &err {
        MigrationError::Apply {
            name, backend: b, ..
        } => {
            assert_eq!(name, "sample_primary");
            assert_eq!(*b, backend);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("sample_primary"), "{err}");
    // The migrations before it stay applied and recorded; the failing one is not recorded.
    assert_eq!(
        ledger(&mut conn),
        primary_steps(
            backend,
            &[
                "bare_primary",
                "geo_admin_primary",
                "geo_framework_primary",
                "geo_safety_primary"
            ]
        )
    );
}

#[test]
fn establish_sets_the_worker_pragmas() {
    #[derive(QueryableByName)]
    struct Num {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let db = TestDatabase::fresh(Backend::Sqlite, "pragmas");
    let mut conn = geo_diesel::connection::sqlite::establish(db.url()).expect("open SQLite file");
    let mut named = TestConnection::Sqlite(
        geo_diesel::connection::sqlite::establish(db.url()).expect("open SQLite file"),
    );
    assert_eq!(
        named.text("SELECT journal_mode AS name FROM pragma_journal_mode"),
        "wal"
    );
    let num = |conn: &mut SqliteConnection, column: &str, pragma: &str| {
        diesel::sql_query(format!("SELECT {column} AS v FROM pragma_{pragma}"))
            .get_result::<Num>(conn)
            .expect(pragma)
            .v
    };
    assert_eq!(
        num(&mut conn, "timeout", "busy_timeout"),
        i64::from(geo_diesel::connection::sqlite::BUSY_TIMEOUT_MS)
    );
    assert_eq!(num(&mut conn, "foreign_keys", "foreign_keys"), 1);
    // NORMAL is 1 (OFF 0, FULL 2).
    assert_eq!(num(&mut conn, "synchronous", "synchronous"), 1);
}

/// A write transaction that reads before it writes, raced by another connection's write
/// between the two: on SQLite a deferred `BEGIN` fails its write at once with "database is
/// locked" (the snapshot it read is stale, so the busy timeout cannot help);
/// [`WriteTransaction`] takes the write lock first, the racing writer waits, and both land.
#[test]
fn a_write_transaction_that_reads_first_is_not_refused_by_a_racing_writer() {
    use diesel::connection::SimpleConnection;
    use geo_diesel::WriteTransaction;
    #[derive(QueryableByName)]
    struct Num {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let read = |c: &mut SqliteConnection| -> QueryResult<i64> {
        diesel::sql_query("SELECT n AS v FROM counter WHERE id = 1")
            .get_result::<Num>(c)
            .map(|r| r.v)
    };
    let db = TestDatabase::fresh(Backend::Sqlite, "write_tx");
    let open =
        |url: &str| geo_diesel::connection::sqlite::establish(url).expect("open SQLite file");
    let mut a = open(db.url());
    a.batch_execute(
        "CREATE TABLE counter (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);
         INSERT INTO counter VALUES (1, 0);",
    )
    .unwrap();
    let (read_done, wait_read) = std::sync::mpsc::channel();
    let mut b = open(db.url());
    let racer = std::thread::spawn(move || {
        wait_read.recv().unwrap();
        diesel::sql_query("UPDATE counter SET n = n + 10 WHERE id = 1").execute(&mut b)
    });
    let outcome = a.write_transaction(|c| -> QueryResult<()> {
        let n = read(c)?;
        read_done.send(()).unwrap();
        // Time for the racer to try its write inside this transaction.
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Nested: a savepoint, not a second BEGIN.
        c.write_transaction(|c| {
            diesel::sql_query(format!("UPDATE counter SET n = {} WHERE id = 1", n + 1))
                .execute(c)
                .map(drop)
        })
    });
    assert!(outcome.is_ok(), "the reading writer failed: {outcome:?}");
    assert_eq!(racer.join().unwrap(), Ok(1), "the racer waited, then wrote");
    // Read 0 and wrote 1, then the racer added 10: neither write was lost.
    assert_eq!(read(&mut a), Ok(11));
}

/// Timestamps are instants: a session in another time zone neither shifts what it writes nor
/// what it reads.
#[cfg(feature = "pg-suite")]
#[test]
fn timestamps_do_not_shift_with_the_session_time_zone() {
    use chrono::DateTime;

    let (db, mut conn) = migrated(Backend::Postgres, "timezone", Role::Primary);
    conn.batch_execute("SET TIME ZONE 'America/New_York'")
        .expect("set time zone");

    // Summer and winter instants, with milliseconds.
    for text in ["2026-07-04T12:34:56.789Z", "2026-01-15T23:59:59.001Z"] {
        let at = UtcDateTime(
            DateTime::parse_from_rfc3339(text)
                .expect("parse")
                .with_timezone(&Utc),
        );
        let insert = diesel::insert_into(geo_events::table)
            .values((
                geo_events::replicable_name.eq("sample"),
                geo_events::event_name.eq("created"),
                geo_events::model_record_id.eq(1_i64),
                geo_events::created_at.eq(at),
            ))
            .returning(geo_events::id);
        let id: i64 = on_conn!(&mut conn, c => insert.get_result(c)).expect("insert");
        let read = || geo_events::table.find(id).select(geo_events::created_at);
        let back: UtcDateTime = on_conn!(&mut conn, c => read().first(c)).expect("read back");
        assert_eq!(back, at, "round trip shifted {text}");

        // The server holds the right instant, not one shifted both ways.
        let stored = conn.text(&format!(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             AS name FROM geo_events WHERE id = {id}"
        ));
        assert_eq!(stored, text);

        // A session in another zone reads the same instant.
        let mut tokyo = db.connect();
        tokyo
            .batch_execute("SET TIME ZONE 'Asia/Tokyo'")
            .expect("set time zone");
        let other: UtcDateTime =
            on_conn!(&mut tokyo, c => read().first(c)).expect("read from Tokyo");
        assert_eq!(other, at);
    }
}
