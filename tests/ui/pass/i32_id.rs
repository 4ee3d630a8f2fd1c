//! An `i32` primary key: INTEGER in the states table, `i64` through the replicator.
use diesel::prelude::*;
use geo_diesel::geo_core::Replicator;
use geo_diesel::replicable;

diesel::table! {
    boxes (id) {
        id -> Integer,
        path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = boxes)]
#[replicable(strategy = "blob")]
pub struct Box {
    pub id: i32,
    #[replicable(file)]
    pub path: String,
}

fn main() {
    let b = Box {
        id: i32::MAX,
        path: "x".into(),
    };
    assert_eq!(b.replicator().model_record_id(), i64::from(i32::MAX));
    assert_eq!(BoxReplicator::DESCRIPTOR.plural, "boxes");
    assert!(
        BoxReplicator::MIGRATIONS
            .sqlite_primary
            .up
            .contains("\"box_id\" INTEGER NOT NULL PRIMARY KEY")
    );
    let s: Option<BoxState> = None;
    let _: Option<i32> = s.map(|s| s.box_id);
    println!("{}", sql(box_states::table.select(BoxState::as_select())));
}

/// The SQL Diesel builds for SQLite: proves the generated `table!` and row types fit together.
fn sql<Q>(query: Q) -> String
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>,
{
    diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
}
