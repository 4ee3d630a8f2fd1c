//! The migration runner, the diesel_cli writer and the framework tables on a real SQLite file.
//!
//! Two replicables are registered by hand (the `#[replicable]` attribute would generate the
//! same kind of descriptor): `sample` with a table per role, and `bare` without verification,
//! whose primary migration is empty.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{TimeZone, Utc};
use diesel::prelude::*;
use diesel::sql_types::Text;
use geo_diesel::geo_core::{
    Backend, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode,
};
use geo_diesel::schema::{geo_event_log_states, geo_events, geo_schema_migrations};
use geo_diesel::{
    JsonValue, MigrationError, UtcDateTime, migration_plan, revert_migrations, run_migrations,
    write_diesel_cli_migrations,
};
use geo_tests::sqlite_temp_file;

const NO_SQL: Migration = Migration { up: "", down: "" };

static SAMPLE: ReplicableDescriptor = ReplicableDescriptor {
    name: "sample",
    plural: "samples",
    type_name: "Sample",
    strategy: Strategy::Blob,
    verification: VerificationMode::Separate,
    enabled_by_default: true,
    tables: Tables {
        model: "samples",
        model_id: "id",
        model_file: "file_path",
        registry: "sample_registry",
        registry_model_id: "sample_id",
        verification: Some(("sample_states", "sample_id")),
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
        postgres_primary: NO_SQL,
        postgres_secondary: NO_SQL,
    },
};

static BARE: ReplicableDescriptor = ReplicableDescriptor {
    name: "bare",
    plural: "bares",
    type_name: "Bare",
    strategy: Strategy::Blob,
    verification: VerificationMode::None,
    enabled_by_default: false,
    tables: Tables {
        model: "bares",
        model_id: "id",
        model_file: "file_path",
        registry: "bare_registry",
        registry_model_id: "bare_id",
        verification: None,
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
        postgres_secondary: NO_SQL,
    },
};

geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&SAMPLE) }
geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&BARE) }

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Every user table in the SQLite file, sorted.
fn tables(conn: &mut SqliteConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )
    .load::<Named>(conn)
    .expect("list tables")
    .into_iter()
    .map(|n| n.name)
    .collect()
}

/// The DDL of every table and index, by name (what "the same schema" means here).
fn schema_sql(conn: &mut SqliteConnection) -> BTreeMap<String, String> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Text)]
        sql: String,
    }
    diesel::sql_query(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'",
    )
    .load::<Row>(conn)
    .expect("read sqlite_master")
    .into_iter()
    .map(|r| (r.name, r.sql))
    .collect()
}

fn ledger(conn: &mut SqliteConnection) -> Vec<String> {
    geo_schema_migrations::table
        .select(geo_schema_migrations::name)
        .order(geo_schema_migrations::name)
        .load(conn)
        .expect("read the ledger")
}

fn open(path: &Path) -> SqliteConnection {
    geo_diesel::connection::sqlite::establish(path).expect("open SQLite file")
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn plan_is_framework_then_replicables_in_name_order() {
    let names: Vec<String> = migration_plan(Backend::Sqlite, Role::Secondary)
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        strings(&[
            "geo_framework_secondary",
            "bare_secondary",
            "sample_secondary"
        ])
    );
}

#[test]
fn primary_migrations_apply_once_and_revert() {
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);

    let first = run_migrations(&mut conn, Role::Primary).expect("first run");
    assert_eq!(
        first.applied,
        strings(&["geo_framework_primary", "bare_primary", "sample_primary"])
    );
    assert!(first.already_applied.is_empty());
    assert!(!first.is_up_to_date());
    assert_eq!(
        tables(&mut conn),
        strings(&[
            "geo_events",
            "geo_feature_flags",
            "geo_schema_migrations",
            "sample_states"
        ])
    );
    assert_eq!(
        ledger(&mut conn),
        strings(&["bare_primary", "geo_framework_primary", "sample_primary"])
    );

    // A second run, on a new connection, applies nothing and says so.
    let mut again = open(&path);
    let second = run_migrations(&mut again, Role::Primary).expect("second run");
    assert!(second.is_up_to_date(), "{second}");
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, first.applied);
    assert!(second.to_string().contains("up to date"), "{second}");

    let reverted = revert_migrations(&mut again, Role::Primary).expect("revert");
    assert_eq!(
        reverted.reverted,
        strings(&["sample_primary", "bare_primary", "geo_framework_primary"])
    );
    assert!(reverted.dropped_ledger);
    assert_eq!(tables(&mut again), Vec::<String>::new());

    // And it can be applied again from scratch.
    let third = run_migrations(&mut again, Role::Primary).expect("re-apply");
    assert_eq!(third.applied, first.applied);
}

#[test]
fn secondary_migrations_apply_once_and_revert() {
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);

    let first = run_migrations(&mut conn, Role::Secondary).expect("first run");
    assert_eq!(
        first.applied,
        strings(&[
            "geo_framework_secondary",
            "bare_secondary",
            "sample_secondary"
        ])
    );
    assert_eq!(
        tables(&mut conn),
        strings(&[
            "bare_registry",
            "geo_event_log_gaps",
            "geo_event_log_states",
            "geo_feature_flags",
            "geo_schema_migrations",
            "sample_registry",
        ])
    );
    let second = run_migrations(&mut conn, Role::Secondary).expect("second run");
    assert!(second.is_up_to_date(), "{second}");

    // The cursor table works through its `table!` with the default timestamp.
    diesel::insert_into(geo_event_log_states::table)
        .values((
            geo_event_log_states::id.eq(0),
            geo_event_log_states::event_id.eq(41_i64),
        ))
        .execute(&mut conn)
        .expect("insert cursor");
    let (event_id, updated_at): (i64, UtcDateTime) = geo_event_log_states::table
        .select((
            geo_event_log_states::event_id,
            geo_event_log_states::updated_at,
        ))
        .first(&mut conn)
        .expect("read cursor");
    assert_eq!(event_id, 41);
    assert!((Utc::now() - updated_at.get()).num_seconds().abs() < 60);

    let reverted = revert_migrations(&mut conn, Role::Secondary).expect("revert");
    assert_eq!(reverted.reverted.len(), 3);
    assert_eq!(tables(&mut conn), Vec::<String>::new());
}

#[test]
fn revert_keeps_the_ledger_for_the_other_role() {
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);
    run_migrations(&mut conn, Role::Primary).expect("primary");
    run_migrations(&mut conn, Role::Secondary).expect("secondary");
    let reverted = revert_migrations(&mut conn, Role::Secondary).expect("revert secondary");
    assert!(!reverted.dropped_ledger);
    assert_eq!(
        ledger(&mut conn),
        strings(&["bare_primary", "geo_framework_primary", "sample_primary"])
    );
    assert!(tables(&mut conn).contains(&"geo_events".to_string()));
}

#[test]
fn concurrent_runners_apply_each_migration_once() {
    let (_dir, path) = sqlite_temp_file();
    open(&path); // create the file and switch it to WAL before the race
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| run_migrations(&mut open(&path), Role::Secondary)))
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
            "geo_framework_secondary",
            "sample_secondary"
        ])
    );
}

#[test]
fn diesel_cli_folders_are_byte_identical_and_build_the_same_schema() {
    let out = tempfile::tempdir().expect("tempdir");
    for role in Role::ALL {
        let a = out.path().join(format!("a-{role}"));
        let b = out.path().join(format!("b-{role}"));
        let written_a = write_diesel_cli_migrations(&a, Backend::Sqlite, role).expect("write a");
        let written_b = write_diesel_cli_migrations(&b, Backend::Sqlite, role).expect("write b");
        let folders: Vec<String> = written_a
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            folders,
            written_b
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(folders[0], format!("00000000000001_geo_framework_{role}"));
        // `bare` has no primary SQL, so no folder on the primary.
        let expected = if role == Role::Primary { 2 } else { 3 };
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
        let mut by_hand = open(&out.path().join(format!("hand-{role}.sqlite3")));
        let mut sorted = folders.clone();
        sorted.sort();
        for folder in &sorted {
            let sql = std::fs::read_to_string(a.join(folder).join("up.sql")).expect("read up");
            diesel::connection::SimpleConnection::batch_execute(&mut by_hand, &sql)
                .unwrap_or_else(|e| panic!("{folder}/up.sql: {e}"));
        }
        let mut runner = open(&out.path().join(format!("runner-{role}.sqlite3")));
        run_migrations(&mut runner, role).expect("runner");
        assert_eq!(schema_sql(&mut by_hand), schema_sql(&mut runner));

        // And the down.sql files in reverse order remove everything but the ledger.
        for folder in sorted.iter().rev() {
            let sql = std::fs::read_to_string(a.join(folder).join("down.sql")).expect("read");
            diesel::connection::SimpleConnection::batch_execute(&mut by_hand, &sql)
                .unwrap_or_else(|e| panic!("{folder}/down.sql: {e}"));
        }
        assert_eq!(tables(&mut by_hand), strings(&["geo_schema_migrations"]));
    }
}

#[test]
fn geo_events_round_trip_json_and_time_and_never_reuse_ids() {
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);
    run_migrations(&mut conn, Role::Primary).expect("migrate");

    let at = UtcDateTime(Utc.with_ymd_and_hms(2026, 11, 27, 22, 27, 26).unwrap())
        .get()
        .checked_add_signed(chrono::Duration::milliseconds(123))
        .map(UtcDateTime)
        .unwrap();
    let payload =
        serde_json::json!({"model_record_id": 7, "blob_path": "a/b é.bin", "n": [1, 2.5, null]});
    let id: i64 = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("created"),
            geo_events::model_record_id.eq(7_i64),
            geo_events::payload.eq(JsonValue(payload.clone())),
            geo_events::created_at.eq(at),
        ))
        .returning(geo_events::id)
        .get_result(&mut conn)
        .expect("insert event");

    let (read_payload, read_at): (JsonValue, UtcDateTime) = geo_events::table
        .find(id)
        .select((geo_events::payload, geo_events::created_at))
        .first(&mut conn)
        .expect("read event");
    assert_eq!(read_payload.into_inner(), payload);
    assert_eq!(read_at, at);
    let stored: String = diesel::sql_query("SELECT created_at AS name FROM geo_events")
        .get_result::<Named>(&mut conn)
        .expect("raw")
        .name;
    assert_eq!(stored, "2026-11-27T22:27:26.123Z");

    // Defaults: payload `{}` and a created_at in the portable text form.
    let second: i64 = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("deleted"),
            geo_events::model_record_id.eq(7_i64),
        ))
        .returning(geo_events::id)
        .get_result(&mut conn)
        .expect("insert with defaults");
    let (p, t): (JsonValue, UtcDateTime) = geo_events::table
        .find(second)
        .select((geo_events::payload, geo_events::created_at))
        .first(&mut conn)
        .expect("read defaults");
    assert_eq!(p.0, serde_json::json!({}));
    assert!((Utc::now() - t.get()).num_seconds().abs() < 60);

    // Pruning the newest event must not let its id be handed out again (AUTOINCREMENT).
    diesel::delete(geo_events::table)
        .execute(&mut conn)
        .expect("prune");
    let third: i64 = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("updated"),
            geo_events::model_record_id.eq(8_i64),
        ))
        .returning(geo_events::id)
        .get_result(&mut conn)
        .expect("insert after prune");
    assert!(
        third > second,
        "id {third} reused after pruning (last was {second})"
    );

    // Invalid JSON is refused by the column's CHECK.
    let bad = diesel::sql_query(
        "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload) \
         VALUES ('sample', 'created', 1, 'not json')",
    )
    .execute(&mut conn);
    assert!(bad.is_err(), "non-JSON payload was accepted");
}

#[test]
fn establish_sets_the_worker_pragmas() {
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    #[derive(QueryableByName)]
    struct Num {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        v: i64,
    }
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);
    let mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result::<Mode>(&mut conn)
        .expect("journal_mode");
    assert_eq!(mode.journal_mode, "wal");
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

#[test]
fn a_failing_migration_is_named_and_rolled_back() {
    let (_dir, path) = sqlite_temp_file();
    let mut conn = open(&path);
    // An index already named `sample_states` makes `CREATE TABLE IF NOT EXISTS "sample_states"`
    // fail ("there is already an index named ...").
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        r#"CREATE TABLE "in_the_way" ("x" INTEGER); CREATE INDEX "sample_states" ON "in_the_way" ("x");"#,
    )
    .expect("create the obstacle");
    let err = run_migrations(&mut conn, Role::Primary).expect_err("must fail");
    match &err {
        MigrationError::Apply { name, backend, .. } => {
            assert_eq!(name, "sample_primary");
            assert_eq!(*backend, Backend::Sqlite);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("sample_primary"), "{err}");
    // The migrations before it stay applied and recorded; the failing one is not recorded.
    assert_eq!(
        ledger(&mut conn),
        strings(&["bare_primary", "geo_framework_primary"])
    );
}
