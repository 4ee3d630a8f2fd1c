//! Crates written apart from this workspace, built with cargo exactly as a user would:
//!
//! - `tests/fixtures/standalone` depends on `geo-diesel` and `diesel`, uses only the documented
//!   generated names, and applies the migrations of both roles to real SQLite files;
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

/// Copies a fixture to a temporary directory with the real path of geo-diesel and the
/// workspace's lock file, and runs `cargo <args>` there.
fn cargo_in_fixture(name: &str, args: &[&str]) -> std::process::Output {
    let ws = workspace();
    let src = ws.join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(src.join("Cargo.toml"))
        .unwrap()
        .replace("GEO_DIESEL_PATH", ws.join("geo-diesel").to_str().unwrap());
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::copy(src.join("src/main.rs"), dir.path().join("src/main.rs")).unwrap();
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
