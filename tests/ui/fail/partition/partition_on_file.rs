use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
        tenant_id -> BigInt,
        team_id -> BigInt,
        label -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    pub id: i64,
    #[replicable(file, partition)]
    pub file_path: String,
    pub tenant_id: i64,
    pub team_id: i64,
    pub label: String,
}

fn main() {
    // The stand-in replicator keeps these uses from adding errors of their own.
    let _ = WidgetReplicator::MIGRATIONS;
    let _ = <Widget as geo_diesel::geo_core::Replicable>::DESCRIPTOR;
}
