//! Crates written apart from this workspace, built with cargo exactly as a user would:
//!
//! - `tests/fixtures/standalone` depends on `geo-diesel` and `diesel`, uses only the documented
//!   generated names, and applies the migrations of both roles to real SQLite files; its
//!   `tests/conformance.rs` runs the conformance kit's eight tests from one macro call (the
//!   README's "Add a data type");
//! - `tests/fixtures/no-diesel` depends on `geo-diesel` alone and must fail with Diesel's
//!   "unresolved import `diesel`" — the README's answer to "do I need `diesel` by name?" (yes).
//!
//! Both reuse the workspace's `Cargo.lock` (so no network is needed) and one target directory
//! under `target/standalone`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copies `from` into `to`, folders included.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies a fixture to a temporary directory with the real path of geo-diesel and the
/// workspace's lock file, and runs `cargo <args>` there.
fn cargo_in_fixture(name: &str, args: &[&str]) -> std::process::Output {
    let ws = workspace();
    let src = ws.join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&src, dir.path());
    let manifest = std::fs::read_to_string(src.join("Cargo.toml"))
        .unwrap()
        .replace("GEO_DIESEL_PATH", ws.join("geo-diesel").to_str().unwrap());
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(ws.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let out = Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", ws.join("target/standalone"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    drop(dir);
    out
}

#[test]
fn a_crate_written_apart_compiles_finds_every_generated_item_and_migrates() {
    let out = cargo_in_fixture("standalone", &["run", "-q"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "standalone crate failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("standalone ok: [\"invoice\"]"), "{stdout}");
}

#[test]
fn the_conformance_kit_runs_its_eight_tests_in_a_crate_written_apart() {
    let out = cargo_in_fixture("standalone", &["test", "--test", "conformance"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the kit's tests failed in the standalone crate:\n{stdout}\n{stderr}"
    );
    for test in [
        "create_replicates",
        "update_replicates",
        "delete_replicates",
        "primary_verification",
        "secondary_verification",
        "a_mismatch_resyncs",
        "flag_off_publishes_and_syncs_nothing",
        "missing_on_primary_fails_with_the_four_hour_cap",
    ] {
        assert!(
            stdout.contains(&format!("test {test} ... ok")),
            "{test} did not run and pass:\n{stdout}"
        );
    }
    assert!(stdout.contains("test result: ok. 8 passed"), "{stdout}");
}

#[test]
fn a_crate_without_diesel_by_name_gets_diesels_unresolved_import_error() {
    let out = cargo_in_fixture("no-diesel", &["check", "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "compiled without diesel by name?\n{stderr}"
    );
    assert!(
        stderr.contains("unresolved import `diesel`") || stderr.contains("could not find `diesel`"),
        "unexpected error:\n{stderr}"
    );
}
