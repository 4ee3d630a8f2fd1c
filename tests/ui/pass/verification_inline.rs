//! `verification = "inline"`: the verification columns live on the model table.
use diesel::prelude::*;
use geo_diesel::geo_core::{VerificationMode, VerificationRecord};
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob", verification = "inline")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

fn state_of<R: VerificationRecord>(s: &R) -> i16 {
    s.verification_fields().state
}

fn main() {
    let d = WidgetReplicator::DESCRIPTOR;
    assert_eq!(d.verification, VerificationMode::Inline);
    assert_eq!(d.tables.verification, Some(("widgets", "id")));
    assert!(
        WidgetReplicator::MIGRATIONS
            .sqlite_primary
            .up
            .starts_with("ALTER TABLE \"widgets\" ADD COLUMN")
    );
    // The inline mapping reads the model table, its key under the model's id column.
    let q = sql(widget_verification::table
        .filter(widget_verification::widget_id.eq(1))
        .select(WidgetState::as_select()));
    assert!(
        q.contains("FROM `widgets` WHERE (`widgets`.`id` = ?)"),
        "{q}"
    );
    assert!(q.contains("`widgets`.`verification_checksum`"), "{q}");
    let _ = state_of::<WidgetState>;
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
