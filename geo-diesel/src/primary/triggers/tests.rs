use super::*;
use geo_core::{EventCapture, Migration, MigrationSet, Strategy, Tables};

const NO_SQL: Migration = Migration { up: "", down: "" };

const fn widget(verification: VerificationMode, events: EventCapture) -> ReplicableDescriptor {
    ReplicableDescriptor {
        name: "widget",
        plural: "widgets",
        type_name: "Widget",
        strategy: Strategy::Blob,
        verification,
        enabled_by_default: true,
        events,
        tables: Tables {
            model: "widgets",
            model_id: "id",
            model_file: "file_path",
            registry: "widget_registry",
            registry_model_id: "widget_id",
            verification: match verification {
                VerificationMode::Separate => Some(("widget_states", "widget_id")),
                VerificationMode::Inline => Some(("widgets", "id")),
                VerificationMode::None => None,
            },
            partition: None,
        },
        migrations: MigrationSet {
            sqlite_primary: NO_SQL,
            sqlite_secondary: NO_SQL,
            postgres_primary: NO_SQL,
            postgres_secondary: NO_SQL,
        },
    }
}

static SEPARATE: ReplicableDescriptor = widget(VerificationMode::Separate, EventCapture::Triggers);
static INLINE: ReplicableDescriptor = widget(VerificationMode::Inline, EventCapture::Triggers);
static NONE: ReplicableDescriptor = widget(VerificationMode::None, EventCapture::Triggers);
static MANUAL: ReplicableDescriptor = widget(VerificationMode::Separate, EventCapture::Manual);

const SQLITE_CREATED: &str = r#"CREATE TRIGGER IF NOT EXISTS "geo_widget_created" AFTER INSERT ON "widgets" FOR EACH ROW
WHEN COALESCE((SELECT "enabled" FROM "geo_feature_flags" WHERE "name" = 'geo_widget_replication'), TRUE)
BEGIN
    INSERT INTO "geo_events" ("replicable_name", "event_name", "model_record_id", "payload") VALUES ('widget', 'created', NEW."id", json_object('model_record_id', NEW."id"));
    INSERT INTO "widget_states" ("widget_id") VALUES (NEW."id") ON CONFLICT ("widget_id") DO UPDATE SET "verification_state" = 0, "verification_failure" = NULL, "verification_started_at" = NULL, "verification_retry_count" = CASE WHEN "widget_states"."verification_state" = 3 THEN "widget_states"."verification_retry_count" ELSE 0 END, "verification_retry_at" = CASE WHEN "widget_states"."verification_state" = 3 THEN "widget_states"."verification_retry_at" ELSE NULL END WHERE 1 = 1;
END;
"#;

#[test]
fn sqlite_insert_trigger_publishes_created_and_marks_pending_under_the_flag() {
    let t = event_triggers(&SEPARATE, Backend::Sqlite).expect("triggers");
    assert!(t.up.starts_with(SQLITE_CREATED), "{}", t.up);
    assert_eq!(t.up.matches("CREATE TRIGGER IF NOT EXISTS").count(), 4);
    assert_eq!(
        t.down,
        "DROP TRIGGER IF EXISTS \"geo_widget_id_changed\";\n\
         DROP TRIGGER IF EXISTS \"geo_widget_updated\";\n\
         DROP TRIGGER IF EXISTS \"geo_widget_deleted\";\n\
         DROP TRIGGER IF EXISTS \"geo_widget_created\";\n"
    );
}

#[test]
fn deleted_carries_the_old_path_in_serde_json_key_order() {
    // serde_json (no `preserve_order`) writes keys sorted: the text SQLite stores is the text
    // `publish_deleted` stores.
    let rust = serde_json::json!({"model_record_id": 5, "blob_path": "a/b"}).to_string();
    assert_eq!(rust, r#"{"blob_path":"a/b","model_record_id":5}"#);
    let t = event_triggers(&SEPARATE, Backend::Sqlite).expect("triggers");
    assert!(t.up.contains(
        r#"VALUES ('widget', 'deleted', OLD."id", json_object('blob_path', OLD."file_path", 'model_record_id', OLD."id"))"#
    ));
    let pg = event_triggers(&SEPARATE, Backend::Postgres).expect("triggers");
    assert!(pg.up.contains(
        r#"jsonb_build_object('blob_path', OLD."file_path", 'model_record_id', OLD."id")"#
    ));
}

#[test]
fn updates_fire_only_when_the_file_or_the_id_changes() {
    let t = event_triggers(&SEPARATE, Backend::Sqlite).expect("triggers");
    assert!(t.up.contains(
        "AFTER UPDATE OF \"file_path\" ON \"widgets\" FOR EACH ROW\n\
         WHEN OLD.\"id\" = NEW.\"id\" AND OLD.\"file_path\" IS NOT NEW.\"file_path\" AND COALESCE("
    ));
    assert!(
        t.up.contains("AFTER UPDATE OF \"id\" ON \"widgets\" FOR EACH ROW\nWHEN OLD.\"id\" IS NOT NEW.\"id\" AND COALESCE(")
    );
    let pg = event_triggers(&SEPARATE, Backend::Postgres).expect("triggers");
    assert!(pg.up.contains(
        r#"AFTER UPDATE OF "file_path", "id" ON "widgets"
    FOR EACH ROW WHEN (OLD."file_path" IS DISTINCT FROM NEW."file_path" OR OLD."id" IS DISTINCT FROM NEW."id")"#
    ));
    assert!(pg.up.contains("LANGUAGE plpgsql AS $geo$\n"));
    assert!(pg.up.contains("\n$geo$;\n"));
    assert_eq!(
        pg.down,
        "DROP TRIGGER IF EXISTS \"geo_widget_file_events\" ON \"widgets\";\n\
         DROP TRIGGER IF EXISTS \"geo_widget_events\" ON \"widgets\";\n\
         DROP FUNCTION IF EXISTS \"geo_widget_events\"();\n"
    );
}

#[test]
fn pending_is_the_rule_rendered_for_each_verification_mode() {
    let row = RowRef::new_row("id");
    let pending = rules::pending();
    let separate = Table {
        name: "widget_states",
        key: "widget_id",
        row_key: "widget_id",
    }
    .upsert_row_sql(&pending, row)
    .to_literal_sql(Backend::Postgres);
    let inline = Table {
        name: "widgets",
        key: "id",
        row_key: "id",
    }
    .update_row_sql(&pending, row)
    .to_literal_sql(Backend::Postgres);
    let s = event_triggers(&SEPARATE, Backend::Postgres)
        .expect("triggers")
        .up;
    let i = event_triggers(&INLINE, Backend::Postgres)
        .expect("triggers")
        .up;
    let n = event_triggers(&NONE, Backend::Postgres)
        .expect("triggers")
        .up;
    // created, moved (id change), updated.
    assert_eq!(s.matches(&separate).count(), 3, "{s}");
    assert_eq!(i.matches(&inline).count(), 3, "{i}");
    assert!(!n.contains("verification_state"), "{n}");
    assert!(
        inline.ends_with(r#"WHERE "widgets"."id" = NEW."id""#),
        "{inline}"
    );
    // The inline update never sets the columns the file trigger watches: no recursion.
    assert!(!inline.contains(r#""file_path" ="#) && !inline.contains(r#"SET "id""#));
}

#[test]
fn a_manual_type_gets_no_triggers_and_long_names_stay_within_63_bytes() {
    assert_eq!(event_triggers(&MANUAL, Backend::Sqlite), None);
    assert_eq!(event_triggers(&MANUAL, Backend::Postgres), None);
    static LONG: ReplicableDescriptor = ReplicableDescriptor {
        name: "a_replicable_name_that_is_long_enough_to_overflow_sixty_three",
        ..widget(VerificationMode::None, EventCapture::Triggers)
    };
    let a = object_name(&LONG, "id_changed");
    let b = object_name(&LONG, "created");
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b);
    assert_eq!(object_name(&SEPARATE, "created"), "geo_widget_created");
}

#[test]
fn a_partitioned_type_writes_its_partition_key_in_every_payload() {
    static PARTITIONED: ReplicableDescriptor = ReplicableDescriptor {
        tables: Tables {
            partition: Some("tenant_id"),
            ..SEPARATE.tables
        },
        ..widget(VerificationMode::Separate, EventCapture::Triggers)
    };
    let sqlite = event_triggers(&PARTITIONED, Backend::Sqlite)
        .expect("triggers")
        .up;
    assert_eq!(
        sqlite
            .matches(r#"json_object('model_record_id', NEW."id", 'partition', NEW."tenant_id")"#)
            .count(),
        3,
        "created, updated, created after an id change: {sqlite}"
    );
    assert_eq!(
        sqlite
            .matches(
                r#"json_object('blob_path', OLD."file_path", 'model_record_id', OLD."id", 'partition', OLD."tenant_id")"#
            )
            .count(),
        2,
        "deleted, deleted before an id change: {sqlite}"
    );
    let pg = event_triggers(&PARTITIONED, Backend::Postgres)
        .expect("triggers")
        .up;
    assert!(
        pg.contains(
            r#"jsonb_build_object('model_record_id', NEW."id", 'partition', NEW."tenant_id")"#
        ),
        "{pg}"
    );
    // Without a partition field, no key.
    let plain = event_triggers(&SEPARATE, Backend::Sqlite)
        .expect("triggers")
        .up;
    assert!(!plain.contains("partition"), "{plain}");
}
