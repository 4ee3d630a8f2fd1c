//! The migration runner, the diesel_cli writer and the framework tables on a real PostgreSQL
//! server (`GEO_TEST_DATABASE_URL`; `.ci/run` starts one with `scripts/pg-test-server`). Each
//! test works in its own fresh database.
#![cfg(feature = "pg-suite")]

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use geo_diesel::geo_core::{
    Backend, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode,
};
use geo_diesel::schema::{
    geo_event_log_gaps, geo_events, geo_feature_flags, geo_schema_migrations,
};
use geo_diesel::{
    JsonValue, MigrationError, UtcDateTime, revert_migrations, run_migrations,
    write_diesel_cli_migrations,
};
use geo_tests::{PgTestDb, fresh_pg_database};

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
        sqlite_primary: NO_SQL,
        sqlite_secondary: NO_SQL,
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
        sqlite_secondary: NO_SQL,
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

#[derive(QueryableByName, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
}

fn tables(conn: &mut PgConnection) -> Vec<String> {
    diesel::sql_query(
        "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .load::<Named>(conn)
    .expect("list tables")
    .into_iter()
    .map(|n| n.name)
    .collect()
}

/// Every column (type, default, nullability) and index of the public schema, as text.
fn schema(conn: &mut PgConnection) -> Vec<String> {
    let mut all: Vec<String> = diesel::sql_query(
        "SELECT concat_ws(' ', table_name, column_name, data_type, coalesce(column_default, '-'), \
         is_nullable) AS name FROM information_schema.columns WHERE table_schema = 'public' \
         UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
    )
    .load::<Named>(conn)
    .expect("read the schema")
    .into_iter()
    .map(|n| n.name)
    .collect();
    all.sort();
    all
}

fn ledger(conn: &mut PgConnection) -> Vec<String> {
    geo_schema_migrations::table
        .select(geo_schema_migrations::name)
        .order(geo_schema_migrations::name)
        .load(conn)
        .expect("read the ledger")
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn migrate(db: &PgTestDb, role: Role) -> PgConnection {
    let mut conn = db.connect();
    run_migrations(&mut conn, role).expect("migrate");
    conn
}

#[test]
fn primary_migrations_apply_once_and_revert() {
    let db = fresh_pg_database("primary");
    let mut conn = db.connect();
    let first = run_migrations(&mut conn, Role::Primary).expect("first run");
    assert_eq!(first.backend, Backend::Postgres);
    assert_eq!(
        first.applied,
        strings(&["geo_framework_primary", "bare_primary", "sample_primary"])
    );
    assert_eq!(
        tables(&mut conn),
        strings(&[
            "geo_events",
            "geo_feature_flags",
            "geo_schema_migrations",
            "sample_states"
        ])
    );

    let mut again = db.connect();
    let second = run_migrations(&mut again, Role::Primary).expect("second run");
    assert!(second.is_up_to_date(), "{second}");
    assert_eq!(second.already_applied, first.applied);

    let reverted = revert_migrations(&mut again, Role::Primary).expect("revert");
    assert_eq!(
        reverted.reverted,
        strings(&["sample_primary", "bare_primary", "geo_framework_primary"])
    );
    assert!(reverted.dropped_ledger);
    assert_eq!(tables(&mut again), Vec::<String>::new());
}

#[test]
fn secondary_migrations_apply_once_and_revert() {
    let db = fresh_pg_database("secondary");
    let mut conn = db.connect();
    let first = run_migrations(&mut conn, Role::Secondary).expect("first run");
    assert_eq!(first.applied.len(), 3);
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
    assert_eq!(
        ledger(&mut conn),
        strings(&[
            "bare_secondary",
            "geo_framework_secondary",
            "sample_secondary"
        ])
    );
    assert!(
        run_migrations(&mut conn, Role::Secondary)
            .expect("second run")
            .is_up_to_date()
    );

    // Gaps and flags through their `table!`s.
    diesel::insert_into(geo_event_log_gaps::table)
        .values(geo_event_log_gaps::event_id.eq(6_i64))
        .execute(&mut conn)
        .expect("insert gap");
    diesel::insert_into(geo_feature_flags::table)
        .values((
            geo_feature_flags::name.eq("geo_sample_replication"),
            geo_feature_flags::enabled.eq(false),
        ))
        .execute(&mut conn)
        .expect("insert flag");
    let (gap, seen): (i64, UtcDateTime) = geo_event_log_gaps::table
        .select((
            geo_event_log_gaps::event_id,
            geo_event_log_gaps::detected_at,
        ))
        .first(&mut conn)
        .expect("read gap");
    assert_eq!(gap, 6);
    assert!((Utc::now() - seen.get()).num_seconds().abs() < 60);

    let reverted = revert_migrations(&mut conn, Role::Secondary).expect("revert");
    assert_eq!(reverted.reverted.len(), 3);
    assert_eq!(tables(&mut conn), Vec::<String>::new());
}

#[test]
fn concurrent_runners_apply_each_migration_once() {
    let db = fresh_pg_database("concurrent");
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| run_migrations(&mut db.connect(), Role::Secondary)))
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
        let written = write_diesel_cli_migrations(&a, Backend::Postgres, role).expect("write a");
        let again = write_diesel_cli_migrations(&b, Backend::Postgres, role).expect("write b");
        let names = |v: &[std::path::PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        let mut folders = names(&written);
        assert_eq!(folders, names(&again));
        assert_eq!(folders[0], format!("00000000000001_geo_framework_{role}"));
        for folder in &folders {
            for file in ["up.sql", "down.sql"] {
                let x = std::fs::read(a.join(folder).join(file)).expect("read a");
                let y = std::fs::read(b.join(folder).join(file)).expect("read b");
                assert_eq!(x, y, "{folder}/{file} differs between runs");
            }
        }

        folders.sort();
        let by_hand_db = fresh_pg_database("cli");
        let mut by_hand = by_hand_db.connect();
        for folder in &folders {
            let sql = std::fs::read_to_string(a.join(folder).join("up.sql")).expect("read up");
            by_hand
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{folder}/up.sql: {e}"));
        }
        let runner_db = fresh_pg_database("runner");
        let mut runner = migrate(&runner_db, role);
        let expected = schema(&mut runner);
        assert!(!expected.is_empty());
        assert_eq!(schema(&mut by_hand), expected);

        for folder in folders.iter().rev() {
            let sql = std::fs::read_to_string(a.join(folder).join("down.sql")).expect("read");
            by_hand
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{folder}/down.sql: {e}"));
        }
        assert_eq!(tables(&mut by_hand), strings(&["geo_schema_migrations"]));
    }
}

#[test]
fn timestamps_do_not_shift_with_the_session_time_zone() {
    let db = fresh_pg_database("timezone");
    let mut conn = migrate(&db, Role::Primary);
    conn.batch_execute("SET TIME ZONE 'America/New_York'")
        .expect("set time zone");

    // Summer and winter instants, with milliseconds.
    for text in ["2026-07-04T12:34:56.789Z", "2026-01-15T23:59:59.001Z"] {
        let at = UtcDateTime(
            DateTime::parse_from_rfc3339(text)
                .expect("parse")
                .with_timezone(&Utc),
        );
        let id: i64 = diesel::insert_into(geo_events::table)
            .values((
                geo_events::replicable_name.eq("sample"),
                geo_events::event_name.eq("created"),
                geo_events::model_record_id.eq(1_i64),
                geo_events::created_at.eq(at),
            ))
            .returning(geo_events::id)
            .get_result(&mut conn)
            .expect("insert");
        let back: UtcDateTime = geo_events::table
            .find(id)
            .select(geo_events::created_at)
            .first(&mut conn)
            .expect("read back");
        assert_eq!(back, at, "round trip shifted {text}");

        // The server holds the right instant, not one shifted both ways.
        let stored = diesel::sql_query(format!(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             AS name FROM geo_events WHERE id = {id}"
        ))
        .get_result::<Named>(&mut conn)
        .expect("server text");
        assert_eq!(stored.name, text);

        // A session in another zone reads the same instant.
        let mut tokyo = db.connect();
        tokyo
            .batch_execute("SET TIME ZONE 'Asia/Tokyo'")
            .expect("set time zone");
        let other: UtcDateTime = geo_events::table
            .find(id)
            .select(geo_events::created_at)
            .first(&mut tokyo)
            .expect("read from Tokyo");
        assert_eq!(other, at);
    }
}

#[test]
fn geo_events_round_trip_jsonb_and_never_reuse_ids() {
    let db = fresh_pg_database("events");
    let mut conn = migrate(&db, Role::Primary);
    let payload =
        serde_json::json!({"model_record_id": 7, "blob_path": "a/b é.bin", "n": [1, 2.5, null]});
    let first: i64 = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("created"),
            geo_events::model_record_id.eq(7_i64),
            geo_events::payload.eq(JsonValue(payload.clone())),
        ))
        .returning(geo_events::id)
        .get_result(&mut conn)
        .expect("insert");
    let read: JsonValue = geo_events::table
        .find(first)
        .select(geo_events::payload)
        .first(&mut conn)
        .expect("read payload");
    assert_eq!(read.0, payload);
    // It is real jsonb: the server can look inside it.
    let path = diesel::sql_query(format!(
        "SELECT payload->>'blob_path' AS name FROM geo_events WHERE id = {first}"
    ))
    .get_result::<Named>(&mut conn)
    .expect("jsonb operator");
    assert_eq!(path.name, "a/b é.bin");

    let second: i64 = diesel::insert_into(geo_events::table)
        .values((
            geo_events::replicable_name.eq("sample"),
            geo_events::event_name.eq("deleted"),
            geo_events::model_record_id.eq(7_i64),
        ))
        .returning(geo_events::id)
        .get_result(&mut conn)
        .expect("insert with defaults");
    let default_payload: JsonValue = geo_events::table
        .find(second)
        .select(geo_events::payload)
        .first(&mut conn)
        .expect("read default");
    assert_eq!(default_payload.0, serde_json::json!({}));

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
    assert!(third > second, "id {third} reused after pruning");
}

#[test]
fn a_failing_migration_is_named_and_rolled_back() {
    let db = fresh_pg_database("failing");
    let mut conn = db.connect();
    // A type holding the name makes `CREATE TABLE IF NOT EXISTS "sample_states"` fail (the
    // table's row type would collide; IF NOT EXISTS only looks at relations).
    conn.batch_execute(r#"CREATE TYPE "sample_states" AS ENUM ('x')"#)
        .expect("create the obstacle");
    let err = run_migrations(&mut conn, Role::Primary).expect_err("must fail");
    match &err {
        MigrationError::Apply { name, backend, .. } => {
            assert_eq!(name, "sample_primary");
            assert_eq!(*backend, Backend::Postgres);
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_eq!(
        ledger(&mut conn),
        strings(&["bare_primary", "geo_framework_primary"])
    );
}
