//! The attribute below `#[derive(...)]`: the derives see the field helpers, which Diesel ignores.
use diesel::prelude::*;
use geo_diesel::geo_core::Replicable;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable, Insertable, Debug)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

fn main() {
    let w = Widget {
        id: 3,
        file_path: "f".into(),
    };
    assert_eq!(<Widget as Replicable>::model_record_id(&w), 3);
    assert_eq!(Widget::DESCRIPTOR.tables.model, "widgets");
    println!("{}", sql(widgets::table.select(Widget::as_select())));
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
