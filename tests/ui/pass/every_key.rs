//! Every struct key written out.
use diesel::prelude::*;
use geo_diesel::geo_core::{EventCapture, VerificationMode};
use geo_diesel::replicable;

diesel::table! {
    uploads (id) {
        id -> BigInt,
        path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = uploads)]
#[replicable(
    strategy = "blob",
    registry = "upload_files_registry",
    name = "upload_file",
    verification = "separate",
    enabled_by_default = true,
    events = "manual"
)]
pub struct Upload {
    pub id: i64,
    #[replicable(file)]
    pub path: String,
}

fn main() {
    let d = UploadReplicator::DESCRIPTOR;
    assert_eq!(
        (d.name, d.plural, d.type_name),
        ("upload_file", "upload_files", "Upload")
    );
    assert_eq!(d.feature_flag(), "geo_upload_file_replication");
    assert_eq!(d.verification, VerificationMode::Separate);
    assert_eq!(d.events, EventCapture::Manual);
    assert_eq!(d.tables.registry, "upload_files_registry");
    assert_eq!(d.tables.registry_model_id, "upload_file_id");
    assert_eq!(
        d.tables.verification,
        Some(("upload_file_states", "upload_file_id"))
    );
    assert!(
        UploadReplicator::MIGRATIONS
            .sqlite_secondary
            .up
            .contains("\"upload_file_id\" BIGINT NOT NULL")
    );
    println!(
        "{}",
        sql(upload_files_registry::table
            .filter(upload_files_registry::upload_file_id.eq(1))
            .select(UploadRegistry::as_select()))
    );
    println!(
        "{}",
        sql(upload_file_states::table.select(UploadState::as_select()))
    );
    assert!(geo_diesel::geo_core::find_replicable("upload_file").is_some());
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
