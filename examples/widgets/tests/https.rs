//! The README's two-process commands over HTTPS, with the real `widgets` binary and a CA made in
//! the test: `widgets primary --tls-cert … --tls-key …`, `widgets secondary --primary https://…
//! --ca-file ca.pem`, `widgets seed`, and `widgets status` until every record is synced and
//! verified; a secondary without the CA syncs nothing and its status says `certificate`.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

#[path = "../../../geo-node/tests/common/tls.rs"]
#[allow(dead_code)]
mod tls;

/// `widgets primary` over HTTPS with the test CA's server certificate.
fn https_primary(
    db: &std::path::Path,
    files: &std::path::Path,
    keys: &std::path::Path,
    ca: &tls::TestCa,
) -> Node {
    Node::start(
        &[
            "primary",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            path(db),
            "--blob-dir",
            path(files),
            "--keys-file",
            path(keys),
            "--tls-cert",
            path(&ca.cert_pem),
            "--tls-key",
            path(&ca.key_pem),
        ],
        &[],
    )
}

/// `widgets status --url <url> --json` with the site's key and `extra` flags.
fn status(site: &Site, url: &str, extra: &[&str]) -> Output {
    widgets()
        .args(["status", "--url", url, "--json"])
        .args(extra)
        .env("GEO_ACCESS_KEY", &site.access_key)
        .env("GEO_SECRET", &site.secret)
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn the_two_process_commands_work_over_https_with_a_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let ca = tls::TestCa::new(&tmp.path().join("pki"));
    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));

    let primary = https_primary(&pdb, &pfiles, &keys, &ca);
    let url = primary.addr.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    seed(&pdb, &pfiles, 40);
    let sec = site.secondary_of(&url, &sdb, &sfiles, &["--ca-file", path(&ca.ca_pem)]);
    let sec_url = format!("http://{}", sec.addr);
    let mut last = Value::Null;
    wait_until(
        "the secondary converged over HTTPS",
        Duration::from_secs(90),
        || {
            let out = status(&site, &sec_url, &[]);
            last = json(&out);
            let s = &last["secondary"];
            out.status.success()
                && ["widgets", "gadgets"].iter().all(|p| {
                    let n = |f: &str| s[format!("{p}_{f}")].as_u64();
                    n("registry_count") > Some(0)
                        && n("synced_count") == n("registry_count")
                        && n("verified_count") == n("registry_count")
                })
        },
    );
    let link = &last["secondary"]["primary_link"];
    assert!(link["requests"].as_u64() > Some(0), "{last}");
    assert_eq!(link["errors"], 0, "{last}");
    // Every file arrived, byte for byte.
    for entry in walk(&pfiles) {
        assert_eq!(
            std::fs::read(pfiles.join(&entry)).unwrap(),
            std::fs::read(sfiles.join(&entry)).unwrap_or_default(),
            "{entry}"
        );
    }

    // `status` reaches the primary over HTTPS with the CA, and refuses it without.
    let out = status(&site, &url, &["--ca-file", path(&ca.ca_pem)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)["role"], "primary");
    let out = status(&site, &url, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");

    // A secondary without the CA: nothing synced, and its status says why.
    let (ndb, nfiles) = (tmp.path().join("n.sqlite3"), tmp.path().join("nf"));
    let untrusting = site.secondary_of(&url, &ndb, &nfiles, &[]);
    let untrusting_url = format!("http://{}", untrusting.addr);
    let mut last = Value::Null;
    wait_until(
        "the secondary without the CA reports the certificate",
        Duration::from_secs(60),
        || {
            last = json(&status(&site, &untrusting_url, &[]));
            last["secondary"]["primary_link"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("certificate"))
        },
    );
    assert_eq!(
        last["secondary"]["widgets_synced_count"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{last}"
    );
    assert!(walk(&nfiles).is_empty(), "nothing synced without the CA");

    // Plain HTTP to a host that is not loopback is refused at start, naming the flag.
    let out = widgets()
        .args([
            "secondary",
            "--primary",
            "http://primary.example:8080",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            path(&tmp.path().join("x.sqlite3")),
            "--blob-dir",
            path(&tmp.path().join("xf")),
        ])
        .env("GEO_ACCESS_KEY", &site.access_key)
        .env("GEO_SECRET", &site.secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-insecure-http"), "{err}");
}

/// Every file under `root`, as paths relative to it (nothing when it does not exist).
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
