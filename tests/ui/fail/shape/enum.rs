use geo_diesel::replicable;

#[replicable(strategy = "blob")]
pub enum Widget {
    Small { id: i64 },
}

fn main() {
    let _ = WidgetReplicator::MIGRATIONS;
}
