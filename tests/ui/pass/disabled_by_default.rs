//! `enabled_by_default = false`: the replication flag starts off.
use diesel::prelude::*;
use geo_diesel::replicable;

diesel::table! {
    widgets (id) {
        id -> BigInt,
        file_path -> Text,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob", enabled_by_default = false)]
pub struct Widget {
    pub id: i64,
    #[replicable(file)]
    pub file_path: String,
}

fn main() {
    assert!(!WidgetReplicator::DESCRIPTOR.enabled_by_default);
    assert_eq!(
        WidgetReplicator::DESCRIPTOR.feature_flag(),
        "geo_widget_replication"
    );
}
