use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> Text,
        file_path -> Text,
        name -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob")]
pub struct Widget {
    pub id: String,
    #[replicable(file)]
    pub file_path: String,
    pub name: String,
}

fn main() {
    // The stand-in replicator keeps these uses from adding errors of their own.
    let _ = WidgetReplicator::MIGRATIONS;
    let _ = <Widget as geo_diesel::geo_core::Replicable>::DESCRIPTOR;
}
