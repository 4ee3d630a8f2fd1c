//! A primary key not named `id`, marked `#[replicable(id)]`, and a file column renamed with
//! `#[diesel(column_name = ...)]`.
use diesel::prelude::*;
use geo_diesel::geo_core::{BlobReplicator, Replicator};
use geo_diesel::replicable;

diesel::table! {
    package_files (file_id) {
        file_id -> BigInt,
        path -> Text,
    }
}

#[derive(Queryable, Selectable, Identifiable)]
#[diesel(table_name = package_files, primary_key(file_id))]
#[replicable(strategy = "blob")]
pub struct PackageFile {
    #[replicable(id)]
    pub file_id: i64,
    #[replicable(file)]
    #[diesel(column_name = path)]
    pub file_path: String,
}

fn main() {
    let f = PackageFile {
        file_id: 9,
        file_path: "p".into(),
    };
    let r = f.replicator();
    assert_eq!((r.model_record_id(), r.blob_path()), (9, "p"));
    let t = PackageFileReplicator::DESCRIPTOR.tables;
    assert_eq!(
        (t.model, t.model_id, t.model_file),
        ("package_files", "file_id", "path")
    );
    assert_eq!(PackageFileReplicator::DESCRIPTOR.plural, "package_files");
    assert!(
        PackageFileReplicator::MIGRATIONS
            .sqlite_primary
            .up
            .contains("REFERENCES \"package_files\" (\"file_id\")")
    );
    println!(
        "{}",
        sql(package_file_states::table.select(PackageFileState::as_select()))
    );
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
