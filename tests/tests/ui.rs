//! The `#[replicable]` UI suite: what users see when they compile annotated models.
//!
//! `tests/ui/pass/*.rs` must compile and run; `tests/ui/fail/<topic>/<mistake>.rs` must fail
//! with exactly the committed `.stderr`. See `tests/ui/README.md` for the toolchain the
//! `.stderr` files were made with and how to regenerate them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*/*.rs");
}
