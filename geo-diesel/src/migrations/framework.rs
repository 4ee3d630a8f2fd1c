//! The framework tables' DDL (`geo_events`, the cursor and gap tables, feature flags) and the
//! runner's ledger, for both backends.

use geo_core::{Backend, Migration, Role};

/// The ledger name prefix of the framework migrations: `geo_framework_primary`,
/// `geo_framework_secondary`. No replicable may be named `geo_framework`.
pub const FRAMEWORK_MIGRATION_PREFIX: &str = "geo_framework";

/// The diesel_cli version of the framework migration. Replicable migrations get a version
/// starting with `9` (see [`NamedMigration::version`](super::NamedMigration::version)).
pub const FRAMEWORK_VERSION: &str = "00000000000001";

/// The ledger name prefix of the admin migrations: `geo_admin_primary`, `geo_admin_secondary`
/// (the operator's durable bulk updates, `geo_bulk_updates`). No replicable may be named
/// `geo_admin`.
pub const ADMIN_MIGRATION_PREFIX: &str = "geo_admin";

/// The diesel_cli version of the admin migration: right after [`FRAMEWORK_VERSION`].
pub const ADMIN_VERSION: &str = "00000000000002";

/// The ledger name prefix of the safety migrations: `geo_safety_primary` (the primary database's
/// identity, `geo_node_identity`) and `geo_safety_secondary` (the primary a secondary follows
/// and why it halted, `geo_followed_primary`). No replicable may be named `geo_safety`.
pub const SAFETY_MIGRATION_PREFIX: &str = "geo_safety";

/// The diesel_cli version of the safety migration: right after [`ADMIN_VERSION`].
pub const SAFETY_VERSION: &str = "00000000000003";

/// The ledger name prefix of the notification step: `geo_notify_primary`, on PostgreSQL only
/// (the `geo_events` trigger that NOTIFYs waiting feeds,
/// [`crate::primary::triggers::notify_triggers`]). No replicable may be named `geo_notify`.
pub const NOTIFY_MIGRATION_PREFIX: &str = "geo_notify";

/// The diesel_cli version of the notification step: after the framework, admin, safety and
/// scale-out steps (the pruning step, added later, follows it).
pub const NOTIFY_VERSION: &str = "00000000000005";

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

/// Defines `geo_bulk_updates` in one dialect (the same table for both roles).
macro_rules! admin_sql {
    (id = $id:literal, ts = $ts:literal, now = $now:literal) => {
        concat!(
            r#"CREATE TABLE IF NOT EXISTS "geo_bulk_updates" (
    "id" "#,
            $id,
            r#",
    "replicable" VARCHAR(255) NOT NULL,
    "action" VARCHAR(32) NOT NULL,
    "filter" TEXT NOT NULL DEFAULT '{}',
    "cursor" BIGINT NOT NULL DEFAULT 0,
    "processed" BIGINT NOT NULL DEFAULT 0,
    "changed" BIGINT NOT NULL DEFAULT 0,
    "created_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            r#",
    "finished_at" "#,
            $ts,
            r#"
);
CREATE INDEX IF NOT EXISTS "index_geo_bulk_updates_on_finished_at_and_id"
    ON "geo_bulk_updates" ("finished_at", "id");
"#
        )
    };
}

const SQLITE_ADMIN: &str = admin_sql!(
    id = "INTEGER PRIMARY KEY AUTOINCREMENT",
    ts = "TEXT",
    now = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
);

const POSTGRES_ADMIN: &str = admin_sql!(
    id = "BIGSERIAL PRIMARY KEY",
    ts = "TIMESTAMPTZ",
    now = "now()"
);

const ADMIN_DOWN: &str = r#"DROP TABLE IF EXISTS "geo_bulk_updates";
"#;

/// The admin migration for `backend` (the same for both roles): `geo_bulk_updates`, the
/// progress of the operator's bulk resync and reverify jobs ([`crate::admin::bulk`]). A second
/// framework step, so databases that recorded `geo_framework_<role>` before it existed get it
/// without their first migration changing.
pub const fn admin_migration(backend: Backend, _role: Role) -> Migration {
    let up = match backend {
        Backend::Sqlite => SQLITE_ADMIN,
        Backend::Postgres => POSTGRES_ADMIN,
    };
    Migration {
        up,
        down: ADMIN_DOWN,
    }
}

/// The ledger name prefix of the scale-out migration `geo_leases_secondary` (the live secondary
/// processes, named leases and backfill positions that let several processes share one tracking
/// database; a secondary-only step). No replicable may be named `geo_leases`.
pub const LEASES_MIGRATION_PREFIX: &str = "geo_leases";

/// The diesel_cli version of the scale-out migration (`00000000000003` is the step before it).
pub const LEASES_VERSION: &str = "00000000000004";

/// Defines the scale-out tables of the secondary role in one dialect.
macro_rules! leases_sql {
    (ts = $ts:literal, now = $now:literal) => {
        concat!(
            r#"CREATE TABLE IF NOT EXISTS "geo_secondary_workers" (
    "id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "host" VARCHAR(255) NOT NULL,
    "pid" BIGINT NOT NULL,
    "started_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            r#",
    "heartbeat_at" "#,
            $ts,
            r#" NOT NULL
);
CREATE INDEX IF NOT EXISTS "index_geo_secondary_workers_on_heartbeat_at"
    ON "geo_secondary_workers" ("heartbeat_at");
CREATE TABLE IF NOT EXISTS "geo_leases" (
    "name" VARCHAR(255) NOT NULL PRIMARY KEY,
    "owner" VARCHAR(64) NOT NULL,
    "expires_at" "#,
            $ts,
            r#" NOT NULL
);
CREATE TABLE IF NOT EXISTS "geo_backfill_positions" (
    "replicable_name" VARCHAR(255) NOT NULL PRIMARY KEY,
    "next_id" BIGINT NOT NULL,
    "updated_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            "\n);\n"
        )
    };
}

/// Defines the safety tables in one dialect; `$random` is an expression giving 32 random hex
/// digits.
macro_rules! safety_sql {
    (ts = $ts:literal, now = $now:literal, random = $random:literal) => {
        (
            // primary up: the identity, created once with the table.
            concat!(
                r#"CREATE TABLE IF NOT EXISTS "geo_node_identity" (
    "id" SMALLINT NOT NULL PRIMARY KEY DEFAULT 0 CHECK ("id" = 0),
    "identity" VARCHAR(64) NOT NULL,
    "created_at" "#,
                $ts,
                " NOT NULL DEFAULT ",
                $now,
                r#"
);
INSERT INTO "geo_node_identity" ("id", "identity")
    SELECT 0, "#,
                $random,
                r#"
    WHERE NOT EXISTS (SELECT 1 FROM "geo_node_identity");
"#
            ),
            // secondary up
            concat!(
                r#"CREATE TABLE IF NOT EXISTS "geo_followed_primary" (
    "id" SMALLINT NOT NULL PRIMARY KEY DEFAULT 0 CHECK ("id" = 0),
    "identity" VARCHAR(64),
    "halt" TEXT,
    "updated_at" "#,
                $ts,
                " NOT NULL DEFAULT ",
                $now,
                r#"
);
"#
            ),
        )
    };
}

const SQLITE_LEASES: &str =
    leases_sql!(ts = "TEXT", now = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))");

const POSTGRES_LEASES: &str = leases_sql!(ts = "TIMESTAMPTZ", now = "now()");

const LEASES_DOWN: &str = r#"DROP TABLE IF EXISTS "geo_backfill_positions";
DROP TABLE IF EXISTS "geo_leases";
DROP TABLE IF EXISTS "geo_secondary_workers";
"#;

/// The scale-out migration for `backend` and `role`. Secondary: `geo_secondary_workers` (each
/// running process and its heartbeat; the owner recorded in a registry row's `claimed_by`),
/// `geo_leases` (named leases: one active log cursor, one backfill) and
/// `geo_backfill_positions` (where the backfill of each replicable continues). Primary: no
/// statements ([`super::migration_plan`] has the step on a secondary only).
pub const fn leases_migration(backend: Backend, role: Role) -> Migration {
    match role {
        Role::Primary => Migration { up: "", down: "" },
        Role::Secondary => Migration {
            up: match backend {
                Backend::Sqlite => SQLITE_LEASES,
                Backend::Postgres => POSTGRES_LEASES,
            },
            down: LEASES_DOWN,
        },
    }
}

const SQLITE_SAFETY: (&str, &str) = safety_sql!(
    ts = "TEXT",
    now = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
    random = "lower(hex(randomblob(16)))"
);

const POSTGRES_SAFETY: (&str, &str) = safety_sql!(
    ts = "TIMESTAMPTZ",
    now = "now()",
    random = "replace(gen_random_uuid()::text, '-', '')"
);

/// The safety migration for `backend` and `role`: on the primary `geo_node_identity`, one row
/// holding a random identity created once with the database (a primary restarted on an empty
/// or another database has another one); on a secondary `geo_followed_primary`, the identity
/// it follows and, while it is halted, why (JSON of [`geo_core::safety::SafetyHalt`]).
pub const fn safety_migration(backend: Backend, role: Role) -> Migration {
    let (primary, secondary) = match backend {
        Backend::Sqlite => SQLITE_SAFETY,
        Backend::Postgres => POSTGRES_SAFETY,
    };
    match role {
        Role::Primary => Migration {
            up: primary,
            down: "DROP TABLE IF EXISTS \"geo_node_identity\";\n",
        },
        Role::Secondary => Migration {
            up: secondary,
            down: "DROP TABLE IF EXISTS \"geo_followed_primary\";\n",
        },
    }
}

/// The DDL creating the ledger `geo_schema_migrations` on `backend`.
pub const fn ledger_ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => SQLITE_LEDGER,
        Backend::Postgres => POSTGRES_LEDGER,
    }
}
