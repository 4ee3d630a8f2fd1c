//! A primary restarted on an empty database, with the real `widgets` binary over HTTP: the
//! secondary keeps every file, halts, and says why in `widgets status` (non-zero exit) and its
//! metrics; `widgets secondary --reconcile` against the real primary brings it back to healthy.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

/// Every file under `root` (relative path → bytes), temporary files excluded.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp_")
            {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The site's own scrape.
fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

impl Site {
    /// `widgets status --url …` (text, or JSON with `json`).
    fn status(&self, addr: &str, json: bool) -> Output {
        let url = format!("http://{addr}");
        let mut args = vec!["status", "--url", url.as_str()];
        if json {
            args.push("--json");
        }
        widgets()
            .args(&args)
            .env("GEO_ACCESS_KEY", &self.access_key)
            .env("GEO_SECRET", &self.secret)
            .output()
            .unwrap()
    }

    /// Whether the secondary is healthy with every registry row synced and verified.
    fn converged(&self, addr: &str) -> bool {
        let out = self.status(addr, true);
        if !out.status.success() {
            return false;
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = &v["secondary"];
        ["widgets", "gadgets"].iter().all(|p| {
            let n = |f: &str| s[format!("{p}_{f}")].as_u64();
            n("registry_count") > Some(0)
                && n("synced_count") == n("registry_count")
                && n("verified_count") == n("registry_count")
        })
    }
}

#[test]
fn a_primary_restarted_on_an_empty_database_leaves_every_file_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));

    // Seed, converge.
    let real = primary("127.0.0.1:0", &pdb, &pfiles, &keys);
    let addr = real.addr.clone();
    seed(&pdb, &pfiles, 40);
    let secondary = site.secondary(&addr, &sdb, &sfiles, &[]);
    wait_until("the secondary converged", Duration::from_secs(90), || {
        site.converged(&secondary.addr)
    });
    let kept = files(&sfiles);
    assert!(kept.len() >= 20, "{} files", kept.len());
    assert_eq!(kept, files(&pfiles), "converged: the same files");

    // The primary restarts on an empty database, on the same address.
    drop(real);
    let (edb, efiles) = (tmp.path().join("empty.sqlite3"), tmp.path().join("ef"));
    let empty = primary(&addr, &edb, &efiles, &keys);
    assert_eq!(empty.addr, addr);
    wait_until(
        "the secondary noticed the other primary",
        Duration::from_secs(90),
        || {
            let out = site.status(&secondary.addr, false);
            !out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("identity changed")
        },
    );
    // Halted (recorded in the tracking database): nothing is removed from now on. Every file
    // is still there, byte for byte, and the status and metrics say why.
    assert_eq!(files(&sfiles), kept);
    let out = site.status(&secondary.addr, true);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["health_status"], "Unhealthy");
    assert_eq!(v["secondary"]["halt"]["reason"], "identity_changed", "{v}");
    assert!(v["health"].as_str().unwrap().contains("--reconcile"), "{v}");
    let scrape = metrics(&secondary.addr);
    assert!(
        scrape.contains("\ngeo_secondary_halted{name=\"secondary\"} 1\n"),
        "{scrape}"
    );
    let before = v["secondary"]["widgets_registry_count"].clone();
    assert!(before.as_u64() > Some(0), "{v}");

    // The real primary comes back: the halt stays until the operator reconciles.
    drop(empty);
    let real = primary(&addr, &pdb, &pfiles, &keys);
    assert_eq!(real.addr, addr);
    let out = site.status(&secondary.addr, false);
    assert!(!out.status.success(), "still halted");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("identity changed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(secondary);
    let secondary = site.secondary(&addr, &sdb, &sfiles, &["--reconcile"]);
    wait_until(
        "reconciled, reverified and healthy",
        Duration::from_secs(90),
        || site.converged(&secondary.addr),
    );
    let out = site.status(&secondary.addr, true);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["secondary"].get("halt").is_none(), "{v}");
    assert_eq!(v["secondary"]["widgets_registry_count"], before);
    assert_eq!(files(&sfiles), files(&pfiles));
    let scrape = metrics(&secondary.addr);
    assert!(
        scrape.contains("\ngeo_secondary_halted{name=\"secondary\"} 0\n"),
        "{scrape}"
    );
}

/// `widgets backfill` runs one sweep under the guard and exits non-zero on a refusal;
/// `--allow-mass-removal` is the operator's confirmation and removes them.
#[test]
fn backfill_refuses_a_mass_removal_until_the_operator_allows_it() {
    use geo_diesel::geo_core::Replicable;
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));
    let real = primary("127.0.0.1:0", &pdb, &pfiles, &keys);
    seed(&pdb, &pfiles, 20);
    let secondary = site.secondary(&real.addr, &sdb, &sfiles, &[]);
    wait_until("the secondary converged", Duration::from_secs(90), || {
        site.converged(&secondary.addr)
    });
    drop(secondary);

    // Registry rows for 30 widgets the primary never had: orphans, more than 10 % of the rows.
    let d = <widgets::Widget as Replicable>::DESCRIPTOR;
    let tracking = geo_diesel::DbPool::connect(path(&sdb), 1).unwrap();
    let orphans: Vec<i64> = (1_000_000..1_000_030).collect();
    geo_diesel::registry::Registry::of(d)
        .insert_missing(&mut tracking.get().unwrap(), &orphans)
        .unwrap();
    let rows = || {
        geo_diesel::registry::Registry::of(d)
            .counts(&mut tracking.get().unwrap())
            .unwrap()
            .registry
    };
    let before = rows();

    let backfill = |extra: &[&str]| {
        let url = format!("http://{}", real.addr);
        let mut args = vec![
            "backfill",
            "--primary",
            url.as_str(),
            "--database-url",
            path(&sdb),
            "--blob-dir",
            path(&sfiles),
        ];
        args.extend_from_slice(extra);
        widgets()
            .args(&args)
            .env("GEO_ACCESS_KEY", &site.access_key)
            .env("GEO_SECRET", &site.secret)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let refused = backfill(&[]);
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{stdout}");
    assert!(
        stdout.contains("mass removal refused: widget would remove 30 of"),
        "{stdout}"
    );
    assert_eq!(rows(), before, "a refused sweep removes nothing");

    let allowed = backfill(&["--allow-mass-removal"]);
    let stdout = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        allowed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(stdout.contains("30 removed"), "{stdout}");
    assert_eq!(rows(), before - 30);
}
