//! Two replicables in one module, and both are discovered.
use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

diesel::table! {
    categories (id) {
        id -> BigInt,
        icon_path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = categories)]
#[replicable(strategy = "blob", verification = "inline")]
pub struct Category {
    pub id: i64,
    #[replicable(file)]
    pub icon_path: String,
}

fn main() {
    let all = geo_diesel::geo_core::replicables();
    let names: Vec<_> = all.iter().map(|d| d.name).collect();
    assert!(names.is_sorted(), "{names:?}");
    let category = all
        .iter()
        .find(|d| d.name == "category")
        .expect("registered");
    assert_eq!(category.plural, "categories");
    assert!(names.contains(&"widget"), "{names:?}");
    geo_diesel::geo_core::check_replicables(&[
        WidgetReplicator::DESCRIPTOR,
        CategoryReplicator::DESCRIPTOR,
    ])
    .expect("no clashes");
    println!(
        "{}",
        sql(widget_registry::table.select(WidgetRegistry::as_select()))
    );
    println!(
        "{}",
        sql(category_registry::table.select(CategoryRegistry::as_select()))
    );
    println!(
        "{}",
        sql(widget_states::table.select(WidgetState::as_select()))
    );
    println!(
        "{}",
        sql(category_verification::table.select(CategoryState::as_select()))
    );
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
