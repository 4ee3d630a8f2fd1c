use super::*;

#[test]
fn framework_plan_comes_first_with_role_names() {
    for backend in Backend::ALL {
        for role in Role::ALL {
            let plan = plan_for(&[], backend, role);
            let leases = plan.iter().find(|m| m.name == format!("geo_leases_{role}"));
            assert_eq!(plan[2].name, format!("geo_safety_{role}"));
            match role {
                Role::Primary => {
                    // PostgreSQL also gets `geo_notify_primary`.
                    let notify = usize::from(backend == Backend::Postgres);
                    // And `geo_prune_primary`, last.
                    assert_eq!(plan.len(), 4 + notify);
                    assert!(leases.is_none());
                    let prune = plan.last().unwrap();
                    assert_eq!(prune.folder_name(), "00000000000006_geo_prune_primary");
                    assert!(
                        prune
                            .up
                            .contains(r#"CREATE TABLE IF NOT EXISTS "geo_known_secondaries""#)
                    );
                }
                Role::Secondary => {
                    assert_eq!(plan.len(), 4);
                    let leases = leases.expect("the scale-out step");
                    assert_eq!(leases.folder_name(), "00000000000004_geo_leases_secondary");
                    assert!(
                        leases
                            .up
                            .contains(r#"CREATE TABLE IF NOT EXISTS "geo_leases""#)
                    );
                }
            }
            assert_eq!(plan[0].name, format!("geo_framework_{role}"));
            assert_eq!(
                plan[0].folder_name(),
                format!("00000000000001_geo_framework_{role}")
            );
            assert_eq!(plan[1].name, format!("geo_admin_{role}"));
            assert_eq!(
                plan[1].folder_name(),
                format!("00000000000002_geo_admin_{role}")
            );
            assert!(
                plan[1]
                    .up
                    .contains(r#"CREATE TABLE IF NOT EXISTS "geo_bulk_updates""#)
            );
            assert!(
                plan[1]
                    .down
                    .contains(r#"DROP TABLE IF EXISTS "geo_bulk_updates""#)
            );
            assert_eq!(
                plan[2].folder_name(),
                format!("00000000000003_geo_safety_{role}")
            );
            let table = match role {
                Role::Primary => "geo_node_identity",
                Role::Secondary => "geo_followed_primary",
            };
            assert!(
                plan[2]
                    .up
                    .contains(&format!("CREATE TABLE IF NOT EXISTS \"{table}\""))
            );
            assert!(
                plan[2]
                    .down
                    .contains(&format!("DROP TABLE IF EXISTS \"{table}\""))
            );
        }
    }
}

#[test]
fn replicable_versions_are_stable_and_sort_after_timestamps() {
    // FNV-1a 64 of "widget" is 0xc07f0119e3154625 (computed with an independent Python
    // implementation); the version keeps its last 13 decimal digits.
    let v = replicable_version("widget");
    assert_eq!(v, "96588020049445");
    assert_eq!(v.len(), 14);
    assert!(v.as_str() > "20991231235959");
    assert_ne!(replicable_version("gadget"), v);
}

#[test]
fn sqlite_framework_sql_has_the_contract_columns() {
    let p = framework_migration(Backend::Sqlite, Role::Primary);
    assert!(p.up.contains(r#""id" INTEGER PRIMARY KEY AUTOINCREMENT"#));
    assert!(p.up.contains(r#""payload" TEXT NOT NULL DEFAULT '{}'"#));
    assert!(p.up.contains(r#"CREATE TABLE IF NOT EXISTS "geo_schema_migrations""#));
    let s = framework_migration(Backend::Postgres, Role::Secondary);
    assert!(s.up.contains(r#""detected_at" TIMESTAMPTZ NOT NULL DEFAULT now()"#));
    assert!(!s.up.contains("geo_events"));
}

static TRIGGERED: ReplicableDescriptor = ReplicableDescriptor {
    name: "widget",
    plural: "widgets",
    type_name: "Widget",
    strategy: geo_core::Strategy::Blob,
    verification: geo_core::VerificationMode::None,
    enabled_by_default: true,
    events: geo_core::EventCapture::Triggers,
    tables: geo_core::Tables {
        model: "widgets",
        model_id: "id",
        model_file: "file_path",
        registry: "widget_registry",
        registry_model_id: "widget_id",
        verification: None,
        partition: None,
    },
    migrations: geo_core::MigrationSet {
        sqlite_primary: geo_core::Migration { up: "", down: "" },
        sqlite_secondary: geo_core::Migration { up: "", down: "" },
        postgres_primary: geo_core::Migration { up: "", down: "" },
        postgres_secondary: geo_core::Migration { up: "", down: "" },
    },
};

#[test]
fn a_triggers_type_gets_its_event_step_right_after_its_primary_migration() {
    for backend in Backend::ALL {
        let plan = plan_for(&[&TRIGGERED], backend, Role::Primary);
        let names: Vec<&str> = plan.iter().map(|m| m.name.as_str()).collect();
        let mut want = vec![
            "geo_framework_primary",
            "geo_admin_primary",
            "geo_safety_primary",
        ];
        if backend == Backend::Postgres {
            // The geo_events trigger that NOTIFYs waiting feeds.
            want.push("geo_notify_primary");
        }
        want.extend([
            "geo_prune_primary",
            "widget_primary",
            "widget_events_primary",
        ]);
        assert_eq!(names, want);
        let (base, events) = (&plan[want.len() - 2], &plan[want.len() - 1]);
        assert_eq!(events.version, "965880200494451");
        assert!(events.version > base.version);
        assert!(events.version.as_str() < "96588020049446");
        assert!(events.up.contains("\"geo_events\""), "{}", events.up);
        assert!(events.down.contains("DROP TRIGGER IF EXISTS"));
        let secondary = plan_for(&[&TRIGGERED], backend, Role::Secondary);
        assert!(secondary.iter().all(|m| !m.name.contains("events")));
        assert!(secondary.iter().all(|m| !m.name.contains("notify")));
    }
}

#[test]
fn the_notify_step_is_postgres_only_and_after_every_other_framework_step() {
    let pg = plan_for(&[], Backend::Postgres, Role::Primary);
    let step = pg
        .iter()
        .find(|m| m.name == "geo_notify_primary")
        .expect("a PostgreSQL primary gets the notify step");
    assert_eq!(step.version, NOTIFY_VERSION);
    // After every framework step that came before it; only the later pruning step follows.
    assert!(
        pg.iter()
            .filter(|m| m.name.starts_with("geo_")
                && m.name != step.name
                && m.name != "geo_prune_primary")
            .all(|m| m.version < step.version)
    );
    assert!(PRUNE_VERSION > NOTIFY_VERSION);
    assert!(
        step.up.contains("pg_notify('geo_events', '')"),
        "{}",
        step.up
    );
    assert!(step.up.contains("FOR EACH STATEMENT"), "{}", step.up);
    assert!(
        step.down.contains("DROP FUNCTION IF EXISTS"),
        "{}",
        step.down
    );
    let sqlite = plan_for(&[], Backend::Sqlite, Role::Primary);
    assert!(sqlite.iter().all(|m| m.name != "geo_notify_primary"));
}
