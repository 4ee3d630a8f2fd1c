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
#[replicable(strategy = "blob")]
pub struct WidgetWithAnExtraordinarilyLongNameThatKeepsGoingOnAndOnX {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
    pub name: String,
}

fn main() {
    let _ = WidgetWithAnExtraordinarilyLongNameThatKeepsGoingOnAndOnXReplicator::MIGRATIONS;
}
