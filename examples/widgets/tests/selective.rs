//! Selective sync with the real binary over HTTP: `widgets secondary --selective-sync 1,3`
//! replicates only the widgets of tenants 1 and 3 (and every gadget: they have no partition);
//! its status counts only those. Restarted with `--selective-sync 2`, the new tenant's widgets
//! come, the deselected ones (more than the guard's share) stay until `widgets backfill
//! --allow-mass-removal --selective-sync 2` removes them with their files.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde_json::Value;

mod common;
use common::*;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    file_path: String,
    #[diesel(sql_type = BigInt)]
    tenant_id: i64,
}

/// Every widget's file and tenant on the primary.
fn widgets_of(db: &Path) -> Vec<Row> {
    let mut conn = SqliteConnection::establish(path(db)).unwrap();
    diesel::sql_query("SELECT file_path, tenant_id FROM widgets ORDER BY id")
        .load(&mut conn)
        .unwrap()
}

fn status(site: &Site, addr: &str) -> Option<Value> {
    let out: Output = widgets()
        .args(["status", "--url", &format!("http://{addr}"), "--json"])
        .env("GEO_ACCESS_KEY", &site.access_key)
        .env("GEO_SECRET", &site.secret)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).ok()
}

/// The secondary's (registry, synced) widget counts.
fn widget_counts(site: &Site, addr: &str) -> (Option<u64>, Option<u64>) {
    let Some(v) = status(site, addr) else {
        return (None, None);
    };
    let s = &v["secondary"];
    (
        s["widgets_registry_count"].as_u64(),
        s["widgets_synced_count"].as_u64(),
    )
}

#[test]
fn a_secondary_replicates_its_selection_and_follows_a_changed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));
    let primary = primary("127.0.0.1:0", &pdb, &pfiles, &keys);
    seed(&pdb, &pfiles, 60);
    let rows = widgets_of(&pdb);
    let of = |tenants: &[i64]| -> Vec<&Row> {
        rows.iter()
            .filter(|r| tenants.contains(&r.tenant_id))
            .collect()
    };
    let (selected, other) = (of(&[1, 3]), of(&[2]));
    assert!(!selected.is_empty() && !other.is_empty());
    let on_secondary = |r: &Row| sfiles.join(&r.file_path).exists();

    let secondary = site.secondary(&primary.addr, &sdb, &sfiles, &["--selective-sync", "1,3"]);
    let n = selected.len() as u64;
    wait_until(
        "the selected widgets synced",
        Duration::from_secs(90),
        || widget_counts(&site, &secondary.addr) == (Some(n), Some(n)),
    );
    assert!(selected.iter().all(|r| on_secondary(r)));
    assert!(
        !other.iter().any(|r| on_secondary(r)),
        "tenant 2 stays away"
    );
    let v = status(&site, &secondary.addr).unwrap();
    let gadgets = v["secondary"]["gadgets_registry_count"].as_u64();
    assert!(gadgets > Some(0), "every gadget is replicated: {v}");
    drop(secondary);

    // Another selection: tenant 2 comes; removing tenants 1 and 3 is refused by the guard.
    let secondary = site.secondary(&primary.addr, &sdb, &sfiles, &["--selective-sync", "2"]);
    let all = rows.len() as u64;
    wait_until(
        "tenant 2's widgets synced beside the old ones",
        Duration::from_secs(90),
        || widget_counts(&site, &secondary.addr) == (Some(all), Some(all)),
    );
    let v = status(&site, &secondary.addr).unwrap();
    assert!(
        v["secondary"]["mass_removal_refused"]
            .to_string()
            .contains("widget"),
        "{v}"
    );
    assert!(selected.iter().all(|r| on_secondary(r)), "nothing lost");

    // The operator confirms.
    let url = format!("http://{}", primary.addr);
    let out = widgets()
        .args([
            "backfill",
            "--primary",
            &url,
            "--database-url",
            path(&sdb),
            "--blob-dir",
            path(&sfiles),
            "--selective-sync",
            "2",
            "--allow-mass-removal",
        ])
        .env("GEO_ACCESS_KEY", &site.access_key)
        .env("GEO_SECRET", &site.secret)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} removed", selected.len())),
        "{stdout}"
    );
    let m = other.len() as u64;
    wait_until(
        "the status counts tenant 2 only",
        Duration::from_secs(60),
        || widget_counts(&site, &secondary.addr) == (Some(m), Some(m)),
    );
    assert!(
        !selected.iter().any(|r| on_secondary(r)),
        "deselected files removed"
    );
    assert!(other.iter().all(|r| on_secondary(r)));
}
