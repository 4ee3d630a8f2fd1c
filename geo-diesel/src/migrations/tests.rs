use super::*;

#[test]
fn framework_plan_comes_first_with_role_names() {
    for backend in Backend::ALL {
        for role in Role::ALL {
            let plan = plan_for(&[], backend, role);
            assert_eq!(plan.len(), 3);
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
