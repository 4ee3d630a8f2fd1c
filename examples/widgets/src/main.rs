//! The widgets example application.
fn main() {}
