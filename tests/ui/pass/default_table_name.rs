//! No `#[diesel(table_name)]`: Diesel's default rule (`PackageFile` → `package_files`).
use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    package_files (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[replicable(strategy = "blob")]
pub struct PackageFile {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

fn main() {
    let d = PackageFileReplicator::DESCRIPTOR;
    assert_eq!((d.name, d.tables.model), ("package_file", "package_files"));
    println!(
        "{}",
        sql(package_files::table.select(PackageFile::as_select()))
    );
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
