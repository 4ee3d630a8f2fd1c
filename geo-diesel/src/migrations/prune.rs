//! The pruning step of the primary role (`geo_prune_primary`): the secondaries the primary
//! knows and how far each consumed the event log (`geo_known_secondaries`), and how far the
//! log has been pruned (`geo_event_prune_state`). See [`crate::primary::prune`].

use geo_core::{Backend, Migration, Role};

/// The ledger name prefix of the pruning step: `geo_prune_primary` (a primary-only step). No
/// replicable may be named `geo_prune`.
pub const PRUNE_MIGRATION_PREFIX: &str = "geo_prune";

/// The diesel_cli version of the pruning step: after the notification step
/// (`00000000000005`).
pub const PRUNE_VERSION: &str = "00000000000006";

/// Defines the pruning tables in one dialect.
macro_rules! prune_sql {
    (ts = $ts:literal, now = $now:literal) => {
        concat!(
            r#"CREATE TABLE IF NOT EXISTS "geo_known_secondaries" (
    "name" VARCHAR(255) NOT NULL PRIMARY KEY,
    "consumed_event_id" BIGINT,
    "first_seen_at" "#,
            $ts,
            " NOT NULL DEFAULT ",
            $now,
            r#",
    "last_seen_at" "#,
            $ts,
            r#" NOT NULL
);
CREATE TABLE IF NOT EXISTS "geo_event_prune_state" (
    "id" SMALLINT NOT NULL PRIMARY KEY DEFAULT 0 CHECK ("id" = 0),
    "pruned_through" BIGINT NOT NULL,
    "pruned_at" "#,
            $ts,
            r#" NOT NULL
);
"#
        )
    };
}

const SQLITE_PRUNE: &str = prune_sql!(ts = "TEXT", now = "(strftime('%Y-%m-%dT%H:%M:%fZ','now'))");

const POSTGRES_PRUNE: &str = prune_sql!(ts = "TIMESTAMPTZ", now = "now()");

const PRUNE_DOWN: &str = r#"DROP TABLE IF EXISTS "geo_event_prune_state";
DROP TABLE IF EXISTS "geo_known_secondaries";
"#;

/// The pruning migration for `backend` and `role`. Primary: `geo_known_secondaries` (one row
/// per secondary that read the event feed: its name, the event id below which it needs
/// nothing, when it was first and last seen) and `geo_event_prune_state` (one row: the highest
/// event id pruned). Secondary: no statements ([`super::migration_plan`] has the step on a
/// primary only).
pub const fn prune_migration(backend: Backend, role: Role) -> Migration {
    match role {
        Role::Secondary => Migration { up: "", down: "" },
        Role::Primary => Migration {
            up: match backend {
                Backend::Sqlite => SQLITE_PRUNE,
                Backend::Postgres => POSTGRES_PRUNE,
            },
            down: PRUNE_DOWN,
        },
    }
}
