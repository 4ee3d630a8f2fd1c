//! Two replicables that share a registry table: the runner refuses before touching the
//! database, and the diesel_cli writer writes nothing.

use geo_diesel::geo_core::{
    Backend, EventCapture, Migration, MigrationSet, ReplicableDescriptor, Role, Strategy, Tables,
    VerificationMode,
};
use geo_diesel::{MigrationError, revert_migrations, run_migrations, write_diesel_cli_migrations};

const SQL: Migration = Migration {
    up: r#"CREATE TABLE IF NOT EXISTS "shared_registry" ("id" INTEGER PRIMARY KEY);"#,
    down: r#"DROP TABLE IF EXISTS "shared_registry";"#,
};

const fn descriptor(name: &'static str, type_name: &'static str) -> ReplicableDescriptor {
    ReplicableDescriptor {
        name,
        plural: name,
        type_name,
        strategy: Strategy::Blob,
        verification: VerificationMode::None,
        enabled_by_default: true,
        events: EventCapture::Manual,
        tables: Tables {
            model: name,
            model_id: "id",
            model_file: "path",
            registry: "shared_registry",
            registry_model_id: "model_id",
            verification: None,
            partition: None,
        },
        migrations: MigrationSet {
            sqlite_primary: SQL,
            sqlite_secondary: SQL,
            postgres_primary: SQL,
            postgres_secondary: SQL,
        },
    }
}

static ONE: ReplicableDescriptor = descriptor("one", "One");
static TWO: ReplicableDescriptor = descriptor("two", "Two");

geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&ONE) }
geo_diesel::__private::inventory::submit! { geo_diesel::__private::Registration(&TWO) }

#[test]
fn conflicting_replicables_are_refused_before_any_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("geo.sqlite3");
    let mut conn = geo_diesel::connection::sqlite::establish(&path).expect("open");

    for result in [
        run_migrations(&mut conn, Role::Secondary).map(drop),
        revert_migrations(&mut conn, Role::Secondary).map(drop),
    ] {
        match result {
            Err(MigrationError::Conflict(c)) => {
                assert_eq!((c.first, c.second), ("One", "Two"));
                assert_eq!(c.value, "shared_registry");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let tables: i64 = diesel::RunQueryDsl::get_result(
        diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        ),
        &mut conn,
    )
    .expect("count tables");
    assert_eq!(tables, 0, "the runner created tables despite the conflict");

    let out = dir.path().join("migrations");
    let err = write_diesel_cli_migrations(&out, Backend::Sqlite, Role::Primary)
        .expect_err("writer must refuse");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("shared_registry"), "{err}");
    assert!(!out.exists(), "the writer created {}", out.display());
}
