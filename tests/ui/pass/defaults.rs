//! Every default, the attribute above `#[derive(...)]`.
use diesel::prelude::*;
use geo_diesel::geo_core::{BlobReplicator, EventCapture, Replicator, VerificationMode};
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
        name -> Text,
    }
}

#[replicable(strategy = "blob")]
#[derive(Queryable, Selectable, Identifiable, Insertable)]
#[diesel(table_name = widgets)]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
    pub name: String,
}

fn main() {
    let w = Widget {
        id: 1,
        file_path: "a/b".into(),
        name: "n".into(),
    };
    let r = w.replicator();
    assert_eq!((r.model_record_id(), r.blob_path()), (1, "a/b"));
    assert_eq!(r.model_record().name, "n");
    let d = WidgetReplicator::DESCRIPTOR;
    assert_eq!(
        (d.name, d.plural, d.verification),
        ("widget", "widgets", VerificationMode::Separate)
    );
    assert!(d.enabled_by_default);
    assert_eq!(d.events, EventCapture::Triggers);
    assert!(
        WidgetReplicator::MIGRATIONS
            .sqlite_secondary
            .up
            .contains("\"widget_registry\"")
    );
    assert!(
        WidgetReplicator::MIGRATIONS
            .postgres_primary
            .up
            .contains("\"widget_states\"")
    );
    let all = geo_diesel::geo_core::replicables();
    assert!(
        all.iter()
            .any(|d| d.name == "widget" && d.type_name == "Widget")
    );
    // The generated tables and rows are usable in queries.
    println!(
        "{}",
        sql(widget_registry::table.select(WidgetRegistry::as_select()))
    );
    println!(
        "{}",
        sql(widget_states::table.select(WidgetState::as_select()))
    );
    // And the model's own derives still work.
    println!("{}", sql(widgets::table.select(Widget::as_select())));
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
