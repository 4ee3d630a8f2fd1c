//! What `#[replicable]` generates, checked at run time through the public names only: the
//! descriptors and their discovery, the replicator, and the generated `table!` definitions
//! against the generated DDL on a real SQLite file.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use geo_diesel::geo_core::{
    self, BlobReplicator, Replicable, Replicator, Strategy, VerificationMode, VerificationRecord,
    VerificationState,
};
use geo_diesel::replicable;

/// The application's own tables.
mod schema {
    diesel::table! {
        /// Widgets.
        widgets (id) {
            /// Id.
            id -> BigInt,
            /// Blob path.
            file_path -> Text,
            /// Name.
            name -> Text,
        }
    }

    diesel::table! {
        /// Boxes.
        boxes (code) {
            /// Id.
            code -> Integer,
            /// Blob path.
            path -> Text,
        }
    }

    diesel::table! {
        /// Categories.
        categories (id) {
            /// Id.
            id -> BigInt,
            /// Blob path.
            icon -> Text,
        }
    }
}

/// A model with every default.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = schema::widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    /// Id.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub file_path: String,
    /// Name.
    pub name: String,
}

/// An i32 key not named `id`, verification inline, flag off by default.
#[replicable(strategy = "blob", verification = "inline", enabled_by_default = false)]
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = schema::boxes)]
pub struct Box {
    /// Id.
    #[replicable(id)]
    pub code: i32,
    /// Blob path.
    #[replicable(file)]
    pub path: String,
}

/// No verification, custom names.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = schema::categories)]
#[replicable(
    strategy = "blob",
    name = "category",
    registry = "category_files_registry",
    verification = "none"
)]
pub struct Category {
    /// Id.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub icon: String,
}

fn widget() -> Widget {
    Widget {
        id: 42,
        file_path: "widgets/42/report.pdf".to_owned(),
        name: "report".to_owned(),
    }
}

#[test]
fn replicables_lists_every_model_sorted_by_name() {
    // Other crates linked into this test (the example application) may register models too:
    // check ours are there, and the order.
    let all = geo_core::replicables();
    let names: Vec<&str> = all.iter().map(|d| d.name).collect();
    assert!(names.is_sorted(), "{names:?}");
    for (name, type_name) in [
        ("box", "Box"),
        ("category", "Category"),
        ("widget", "Widget"),
    ] {
        assert!(
            all.iter()
                .any(|d| d.name == name && d.type_name == type_name),
            "{name} missing from {names:?}"
        );
    }
    let category = geo_core::find_replicable("category").expect("registered");
    assert_eq!(category.tables.registry, "category_files_registry");
    geo_core::check_replicables(&[Widget::DESCRIPTOR, Box::DESCRIPTOR, Category::DESCRIPTOR])
        .expect("no conflicts among this file's models");
}

#[test]
fn descriptor_fields() {
    let d = Widget::DESCRIPTOR;
    assert_eq!(d.name, "widget");
    assert_eq!(d.plural, "widgets");
    assert_eq!(d.type_name, "Widget");
    assert_eq!(d.strategy, Strategy::Blob);
    assert_eq!(d.verification, VerificationMode::Separate);
    assert!(d.enabled_by_default);
    assert_eq!(d.feature_flag(), "geo_widget_replication");
    let t = d.tables;
    assert_eq!(
        (t.model, t.model_id, t.model_file),
        ("widgets", "id", "file_path")
    );
    assert_eq!(
        (t.registry, t.registry_model_id),
        ("widget_registry", "widget_id")
    );
    assert_eq!(t.verification, Some(("widget_states", "widget_id")));
    assert_eq!(d.migrations, WidgetReplicator::MIGRATIONS);

    let b = <Box as Replicable>::DESCRIPTOR;
    assert_eq!((b.name, b.plural, b.type_name), ("box", "boxes", "Box"));
    assert_eq!(b.verification, VerificationMode::Inline);
    assert!(!b.enabled_by_default);
    assert_eq!(
        (b.tables.model, b.tables.model_id, b.tables.model_file),
        ("boxes", "code", "path")
    );
    assert_eq!(b.tables.verification, Some(("boxes", "code")));
    assert_eq!(b.feature_flag(), "geo_box_replication");

    let c = CategoryReplicator::DESCRIPTOR;
    assert_eq!((c.name, c.plural), ("category", "categories"));
    assert_eq!(c.tables.registry, "category_files_registry");
    assert_eq!(c.tables.verification, None);
    assert!(!c.verifies());
    assert_eq!(c.migrations.sqlite_primary.up, "");
    assert_eq!(c.migrations.postgres_primary.down, "");
}

#[test]
fn replicator_of_a_record() {
    let w = widget();
    let r = w.replicator();
    assert_eq!(r.model_record_id(), 42);
    assert_eq!(r.replicable_name(), "widget");
    assert_eq!(r.blob_path(), "widgets/42/report.pdf");
    assert!(std::ptr::eq(r.model_record(), &w));
    assert!(std::ptr::eq(r.descriptor(), WidgetReplicator::DESCRIPTOR));
    assert_eq!(<Widget as Replicable>::model_record_id(&w), 42);
    assert_eq!(
        format!("{r:?}"),
        "WidgetReplicator { replicable_name: \"widget\", model_record_id: 42 }"
    );

    let b = Box {
        code: -7,
        path: "b".to_owned(),
    };
    let rb = <Box as Replicable>::replicator(&b);
    assert_eq!(rb.model_record_id(), -7_i64);
    assert_eq!(rb.blob_path(), "b");
    assert!(std::ptr::eq(rb.model_record(), &b));
}

fn sqlite() -> (tempfile::TempDir, SqliteConnection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geo.sqlite3");
    let conn = SqliteConnection::establish(path.to_str().expect("utf-8 path")).expect("open");
    (dir, conn)
}

fn table_names(conn: &mut SqliteConnection) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .load::<Name>(conn)
        .expect("list tables")
        .into_iter()
        .map(|n| n.name)
        .collect()
}

fn index_names(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .load::<Name>(conn)
    .expect("list indexes")
    .into_iter()
    .map(|n| n.name)
    .collect()
}

const APP_SCHEMA: &str = "CREATE TABLE widgets (id INTEGER PRIMARY KEY, file_path TEXT NOT NULL, name TEXT NOT NULL);\n\
     CREATE TABLE boxes (code INTEGER PRIMARY KEY, path TEXT NOT NULL);";

#[test]
fn registry_table_matches_generated_ddl() {
    let (_dir, mut conn) = sqlite();
    let m = WidgetReplicator::MIGRATIONS.sqlite_secondary;
    conn.batch_execute(m.up).expect("up");
    conn.batch_execute(m.up).expect("up is idempotent");
    assert_eq!(index_names(&mut conn, "widget_registry").len(), 8);

    conn.batch_execute(
        "INSERT INTO widget_registry (widget_id, state, retry_at, last_sync_failure, \
         verification_checksum, missing_on_primary) \
         VALUES (42, 3, '2026-11-27T22:27:26.123Z', 'connection refused', x'00ff', TRUE)",
    )
    .expect("insert");
    let rows: Vec<WidgetRegistry> = widget_registry::table
        .select(WidgetRegistry::as_select())
        .load(&mut conn)
        .expect("load with the generated table! and row type");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, 1);
    assert_eq!(row.widget_id, 42);
    assert_eq!(row.state, 3);
    assert_eq!(row.retry_count, 0);
    assert_eq!(
        row.retry_at.map(|t| t.to_sqlite_text()).as_deref(),
        Some("2026-11-27T22:27:26.123Z")
    );
    assert_eq!(row.last_synced_at, None);
    // The column default fills created_at in the text form the timestamp type reads.
    assert!(row.created_at.to_sqlite_text().ends_with('Z'));
    assert_eq!(row.last_sync_failure.as_deref(), Some("connection refused"));
    assert_eq!(row.verification_state, 0);
    assert_eq!(
        row.verification_checksum.as_deref(),
        Some(&[0x00, 0xff][..])
    );
    assert!(!row.checksum_mismatch);
    assert!(row.missing_on_primary);

    // The unique index on the foreign key holds.
    assert!(
        conn.batch_execute("INSERT INTO widget_registry (widget_id) VALUES (42)")
            .is_err()
    );

    // And the generated table! can write, too.
    diesel::update(widget_registry::table.filter(widget_registry::widget_id.eq(42)))
        .set(widget_registry::state.eq(2_i16))
        .execute(&mut conn)
        .expect("update");

    conn.batch_execute(m.down).expect("down");
    assert!(!table_names(&mut conn).contains(&"widget_registry".to_owned()));
    conn.batch_execute(m.up).expect("up again after down");
}

#[test]
fn states_table_matches_generated_ddl() {
    let (_dir, mut conn) = sqlite();
    conn.batch_execute(APP_SCHEMA).expect("app schema");
    let m = WidgetReplicator::MIGRATIONS.sqlite_primary;
    conn.batch_execute(m.up).expect("up");
    conn.batch_execute(m.up).expect("up is idempotent");
    conn.batch_execute(
        "PRAGMA foreign_keys = ON;\n\
         INSERT INTO widgets (id, file_path, name) VALUES (42, 'w/42', 'w');\n\
         INSERT INTO widget_states (widget_id, verification_state, verified_at, \
         verification_checksum) VALUES (42, 2, '2026-01-02T03:04:05.006Z', x'abcd');",
    )
    .expect("insert");
    let mut state: WidgetState = widget_states::table
        .select(WidgetState::as_select())
        .first(&mut conn)
        .expect("load");
    assert_eq!(state.widget_id, 42);
    assert_eq!(state.verification_state(), Ok(VerificationState::Succeeded));
    assert!(state.is_verified());
    assert_eq!(state.verification_checksum_hex().as_deref(), Some("abcd"));
    let fields = state.verification_fields();
    assert_eq!(
        fields.verified_at.map(|t| t.to_rfc3339()),
        Some("2026-01-02T03:04:05.006+00:00".to_owned())
    );
    assert_eq!(fields.started_at, None);
    assert_eq!(fields.retry_count, 0);

    // set_verification_fields writes back every column.
    let mut changed = fields.clone();
    changed.state = VerificationState::Failed.as_i16();
    changed.retry_at = fields.verified_at;
    changed.retry_count = 3;
    changed.failure = Some("mismatch".to_owned());
    changed.checksum = None;
    state.set_verification_fields(changed.clone());
    assert_eq!(state.verification_fields(), changed);
    assert_eq!(state.verification_state(), Ok(VerificationState::Failed));
    assert_eq!(state.verification_retry_count, 3);

    // ON DELETE CASCADE from the model table.
    conn.batch_execute("PRAGMA foreign_keys = ON; DELETE FROM widgets WHERE id = 42;")
        .expect("delete");
    assert_eq!(
        widget_states::table.count().get_result::<i64>(&mut conn),
        Ok(0)
    );

    conn.batch_execute(m.down).expect("down");
    let tables = table_names(&mut conn);
    assert!(!tables.contains(&"widget_states".to_owned()), "{tables:?}");
    assert!(tables.contains(&"widgets".to_owned()));
}

#[test]
fn inline_verification_maps_the_model_table() {
    let (_dir, mut conn) = sqlite();
    conn.batch_execute(APP_SCHEMA).expect("app schema");
    let m = BoxReplicator::MIGRATIONS.sqlite_primary;
    conn.batch_execute(m.up).expect("up");
    assert_eq!(index_names(&mut conn, "boxes").len(), 3);
    conn.batch_execute(
        "INSERT INTO boxes (code, path, verification_state, verification_failure) \
         VALUES (7, 'b/7', 3, 'boom')",
    )
    .expect("insert");
    let state: BoxState = box_verification::table
        .select(BoxState::as_select())
        .first(&mut conn)
        .expect("load through the inline mapping");
    assert_eq!(state.box_id, 7_i32);
    assert_eq!(state.verification_state(), Ok(VerificationState::Failed));
    assert_eq!(state.verification_fields().failure.as_deref(), Some("boom"));

    // The model's own table! still reads the table.
    let b: Box = schema::boxes::table
        .select(Box::as_select())
        .first(&mut conn)
        .expect("model still loads");
    assert_eq!(b.code, 7);

    conn.batch_execute(m.down).expect("down");
    assert!(index_names(&mut conn, "boxes").is_empty());
    assert!(
        conn.batch_execute("SELECT verification_state FROM boxes")
            .is_err(),
        "columns dropped"
    );
    // After down, up applies cleanly again.
    conn.batch_execute(m.up).expect("up after down");
}

#[test]
fn secondary_sql_of_several_models_applies_together() {
    let (_dir, mut conn) = sqlite();
    let ours = [Widget::DESCRIPTOR, Box::DESCRIPTOR, Category::DESCRIPTOR];
    for d in ours {
        conn.batch_execute(d.migrations.sqlite_secondary.up)
            .unwrap_or_else(|e| panic!("{}: {e}", d.name));
    }
    let tables = table_names(&mut conn);
    for t in ["widget_registry", "box_registry", "category_files_registry"] {
        assert!(
            tables.contains(&t.to_owned()),
            "{t} missing from {tables:?}"
        );
    }
    for d in ours {
        conn.batch_execute(d.migrations.sqlite_secondary.down)
            .unwrap_or_else(|e| panic!("{}: {e}", d.name));
    }
    let left: Vec<String> = table_names(&mut conn)
        .into_iter()
        .filter(|t| t != "sqlite_sequence")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
