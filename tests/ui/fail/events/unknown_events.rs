use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
        name -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob", events = "trigger")]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
    pub name: String,
}

fn main() {
    // The stand-in replicator keeps these uses from adding errors of their own.
    let _ = WidgetReplicator::MIGRATIONS;
    let _ = <Widget as geo_diesel::geo_core::Replicable>::DESCRIPTOR;
}
