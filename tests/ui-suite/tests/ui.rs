//! The `#[replicable]` UI suite: what users see when they compile annotated models.
//!
//! `tests/ui/pass/*.rs` must compile and run; `tests/ui/fail/<topic>/<mistake>.rs` must fail
//! with exactly the committed `.stderr`. See `tests/ui/README.md` for the toolchain the
//! `.stderr` files were made with and how to regenerate them.
//!
//! Two separate suites on purpose: without pass cases trybuild runs `cargo check` on all failing
//! cases in one invocation, instead of one `cargo build` per case.

/// Every mistake gets exactly its one, well-placed error.
#[test]
fn ui_fail() {
    trybuild::TestCases::new().compile_fail("ui/fail/*/*.rs");
}

/// Every supported shape compiles and its generated items behave.
#[test]
fn ui_pass() {
    trybuild::TestCases::new().pass("ui/pass/*.rs");
}
