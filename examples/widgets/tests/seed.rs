//! `widgets seed` run twice on one primary: the second run's records never point at the first
//! run's files (the paths are fresh every run; only the contents follow `--seed`).

use std::collections::HashMap;

use diesel::prelude::*;
use widgets::{gadgets, widgets as widgets_table};

fn paths(url: &str) -> Vec<String> {
    let c = &mut SqliteConnection::establish(url).unwrap();
    let mut all: Vec<String> = widgets_table::table
        .select(widgets_table::file_path)
        .load(c)
        .unwrap();
    all.extend(
        gadgets::table
            .select(gadgets::blob_key)
            .load::<String>(c)
            .unwrap(),
    );
    all.sort();
    all
}

#[test]
fn a_second_seed_run_uses_new_paths_and_leaves_the_first_runs_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("primary.sqlite3").display().to_string();
    let blobs = tmp.path().join("files");
    widgets::demo::seed(&url, &blobs, 30, 1).unwrap();
    let first = paths(&url);
    let contents: HashMap<String, Vec<u8>> = first
        .iter()
        .map(|p| (p.clone(), std::fs::read(blobs.join(p)).unwrap()))
        .collect();
    // The same seed again: the same contents, never the same paths.
    widgets::demo::seed(&url, &blobs, 30, 1).unwrap();
    let all = paths(&url);
    assert_eq!(all.len(), 2 * first.len(), "both runs' records are there");
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "no two records share a path: {all:?}"
    );
    for (p, data) in &contents {
        assert_eq!(
            &std::fs::read(blobs.join(p)).unwrap(),
            data,
            "{p} was rewritten"
        );
    }
}

/// Two records share one file: deleting one on the primary keeps the file for the other;
/// deleting the last one removes it. Both types share the store, so a widget and a gadget
/// pointing at one path count too.
#[test]
fn deleting_one_of_two_records_sharing_a_file_keeps_the_file() {
    use geo_diesel::geo_core::blob_store::LocalBlobStore;
    let tmp = tempfile::tempdir().unwrap();
    let url = tmp.path().join("primary.sqlite3").display().to_string();
    let db = geo_diesel::db::DbPool::connect(&url, 1).unwrap();
    let mut conn = db.get().unwrap();
    widgets::app::create_app_schema(&mut conn).unwrap();
    geo_diesel::run_migrations(&mut conn, geo_diesel::geo_core::Role::Primary).unwrap();
    let store = LocalBlobStore::new(tmp.path().join("files")).unwrap();
    let file = tmp.path().join("files/shared/one.bin");
    let a = widgets::app::create_widget(&mut conn, &store, "a", "shared/one.bin", b"one").unwrap();
    let b = widgets::app::create_widget(&mut conn, &store, "b", "shared/one.bin", b"one").unwrap();
    let g = widgets::app::create_gadget(&mut conn, &store, "g", "shared/one.bin", b"one").unwrap();
    widgets::app::delete_widget(&mut conn, &store, &a).unwrap();
    assert!(file.exists(), "widget b and gadget g still use the file");
    widgets::app::delete_widget(&mut conn, &store, &b).unwrap();
    assert!(file.exists(), "gadget g still uses the file");
    widgets::app::delete_gadget(&mut conn, &store, &g).unwrap();
    assert!(!file.exists(), "the last record took its file with it");
}
