use geo_diesel::replicable;

#[replicable(strategy = "blob")]
pub struct Widget;

fn main() {
    // The stand-in replicator keeps these uses from adding errors of their own.
    let _ = WidgetReplicator::MIGRATIONS;
    let _ = <Widget as geo_diesel::geo_core::Replicable>::DESCRIPTOR;
}
