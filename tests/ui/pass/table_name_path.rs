//! `#[diesel(table_name = crate::schema::widgets)]`: the SQL table is the last segment; the
//! model lives in its own module, private, beside generated items of the same visibility.
mod schema {
    diesel::table! {
        widgets (id) {
            id -> BigInt,
            file_path -> Text,
        }
    }
}

mod models {
    use diesel::prelude::*;
    use geo_diesel::replicable;

    #[derive(Queryable, Selectable)]
    #[diesel(table_name = crate::schema::widgets)]
    #[replicable(strategy = "blob")]
    pub(crate) struct Widget {
        pub(crate) id: i64,
        #[replicable(file)]
        pub(crate) file_path: String,
    }
}

use diesel::prelude::*;

fn main() {
    assert_eq!(models::WidgetReplicator::DESCRIPTOR.tables.model, "widgets");
    println!(
        "{}",
        sql(schema::widgets::table.select(models::Widget::as_select()))
    );
    println!(
        "{}",
        sql(models::widget_registry::table.select(models::WidgetRegistry::as_select()))
    );
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
