//! The `#[replicable]` UI cases: see `tests/ui.rs` and `tests/ui/README.md`.
