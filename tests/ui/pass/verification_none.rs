//! `verification = "none"`: no primary migration, no state table or row type.
use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob", verification = "none")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

fn main() {
    let d = WidgetReplicator::DESCRIPTOR;
    assert!(!d.verifies());
    assert_eq!(d.tables.verification, None);
    assert_eq!(WidgetReplicator::MIGRATIONS.sqlite_primary.up, "");
    assert!(
        WidgetReplicator::MIGRATIONS
            .postgres_secondary
            .up
            .contains("BIGSERIAL")
    );
    println!(
        "{}",
        sql(widget_registry::table.select(WidgetRegistry::as_select()))
    );
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
