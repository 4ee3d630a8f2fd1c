//! The framework tables' DDL (`geo_events`, the cursor and gap tables, feature flags) and the
//! runner's ledger, for both backends.

use geo_core::{Backend, Migration, Role};

/// The ledger name prefix of the framework migrations: `geo_framework_primary`,
/// `geo_framework_secondary`. No replicable may be named `geo_framework`.
pub const FRAMEWORK_MIGRATION_PREFIX: &str = "geo_framework";

/// The diesel_cli version of the framework migration. Replicable migrations get a version
/// starting with `9` (see [`NamedMigration::version`](super::NamedMigration::version)).
pub const FRAMEWORK_VERSION: &str = "00000000000001";

/// The DDL of the runner's ledger in one dialect (timestamp type, current-time default).
macro_rules! ledger_sql {
    ($ts:literal, $now:literal) => {
        concat!(
            r#"CREATE TABLE IF NOT EXISTS "geo_schema_migrations" (
    "name" VARCHAR(255) NOT NULL PRIMARY KEY,
    "applied_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            "\n);"
        )
    };
}

const SQLITE_LEDGER: &str = ledger_sql!("TEXT", "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))");
const POSTGRES_LEDGER: &str = ledger_sql!("TIMESTAMPTZ", "now()");

/// The tables both roles create first: the runner's ledger and `geo_feature_flags`.
macro_rules! both_roles_sql {
    ($ts:literal, $now:literal) => {
        concat!(
            ledger_sql!($ts, $now),
            "\n",
            r#"CREATE TABLE IF NOT EXISTS "geo_feature_flags" (
    "name" VARCHAR(255) NOT NULL PRIMARY KEY,
    "enabled" BOOLEAN NOT NULL,
    "updated_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            "\n);"
        )
    };
}

/// Defines the framework SQL of one backend from its dialect pieces, so the two backends can't
/// drift apart in table or column names.
macro_rules! framework_sql {
    (id = $id:literal, ts = $ts:literal, now = $now:literal, json = $json:literal) => {
        (
            // primary up
            concat!(
                both_roles_sql!($ts, $now),
                r#"
CREATE TABLE IF NOT EXISTS "geo_events" (
    "id" "#,
                $id,
                r#",
    "replicable_name" VARCHAR(255) NOT NULL,
    "event_name" VARCHAR(255) NOT NULL,
    "model_record_id" BIGINT NOT NULL,
    "payload" "#,
                $json,
                r#",
    "created_at" "#,
                $ts,
                " NOT NULL DEFAULT ",
                $now,
                r#"
);
CREATE INDEX IF NOT EXISTS "index_geo_events_on_replicable_name_and_model_record_id"
    ON "geo_events" ("replicable_name", "model_record_id");
"#
            ),
            // primary down
            r#"DROP TABLE IF EXISTS "geo_events";
DROP TABLE IF EXISTS "geo_feature_flags";
"#,
            // secondary up
            concat!(
                both_roles_sql!($ts, $now),
                r#"
CREATE TABLE IF NOT EXISTS "geo_event_log_states" (
    "id" SMALLINT NOT NULL PRIMARY KEY DEFAULT 0 CHECK ("id" >= 0),
    "event_id" BIGINT NOT NULL,
    "updated_at" "#,
                $ts,
                " NOT NULL DEFAULT ",
                $now,
                r#"
);
CREATE TABLE IF NOT EXISTS "geo_event_log_gaps" (
    "event_id" BIGINT NOT NULL PRIMARY KEY,
    "detected_at" "#,
                $ts,
                " NOT NULL DEFAULT ",
                $now,
                r#"
);
CREATE INDEX IF NOT EXISTS "index_geo_event_log_gaps_on_detected_at"
    ON "geo_event_log_gaps" ("detected_at");
"#
            ),
            // secondary down
            r#"DROP TABLE IF EXISTS "geo_event_log_gaps";
DROP TABLE IF EXISTS "geo_event_log_states";
DROP TABLE IF EXISTS "geo_feature_flags";
"#,
        )
    };
}

const SQLITE: (&str, &str, &str, &str) = framework_sql!(
    id = "INTEGER PRIMARY KEY AUTOINCREMENT",
    ts = "TEXT",
    now = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
    json = "TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(\"payload\"))"
);

const POSTGRES: (&str, &str, &str, &str) = framework_sql!(
    id = "BIGSERIAL PRIMARY KEY",
    ts = "TIMESTAMPTZ",
    now = "now()",
    json = "JSONB NOT NULL DEFAULT '{}'::jsonb"
);

/// The framework migration (Geo's own tables) for `backend` and `role`.
///
/// Primary: `geo_events`, `geo_feature_flags`; secondary: `geo_event_log_states`,
/// `geo_event_log_gaps`, `geo_feature_flags`. Both create the ledger `geo_schema_migrations`
/// (their `down` leaves it to the runner, which drops it once it records nothing).
pub const fn framework_migration(backend: Backend, role: Role) -> Migration {
    let (pu, pd, su, sd) = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    match role {
        Role::Primary => Migration { up: pu, down: pd },
        Role::Secondary => Migration { up: su, down: sd },
    }
}

/// The DDL creating the ledger `geo_schema_migrations` on `backend`.
pub const fn ledger_ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => SQLITE_LEDGER,
        Backend::Postgres => POSTGRES_LEDGER,
    }
}
