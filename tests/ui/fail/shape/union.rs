use geo_diesel::replicable;

#[replicable(strategy = "blob")]
pub union Widget {
    id: i64,
    other: u64,
}

fn main() {
    let _ = WidgetReplicator::MIGRATIONS;
}
