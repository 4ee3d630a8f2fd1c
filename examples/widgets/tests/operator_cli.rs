//! The operator's path as a user takes it, with the real `widgets` binary: generate admin tokens
//! into a keys file, start `widgets primary` and `widgets secondary` with it, ask both over
//! GraphQL with `Authorization: Bearer`, and run `flags` and `resync` on the databases.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::*;

fn graphql(addr: &str, token: Option<&str>, query: &str) -> (u16, Value) {
    let body = json!({ "query": query }).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST /api/graphql HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn admin_tokens_graphql_and_cli_actions_between_two_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let admin = export(
        &run(&["keys", "generate", "--admin", "--append-to", path(&keys)]),
        "GEO_ADMIN_TOKEN",
    );
    let read = export(
        &run(&[
            "keys",
            "generate",
            "--admin",
            "--read-only",
            "--append-to",
            path(&keys),
        ]),
        "GEO_ADMIN_TOKEN",
    );
    let file = std::fs::read_to_string(&keys).unwrap();
    assert!(
        !file.contains(&admin) && !file.contains(&read),
        "only digests are kept"
    );
    assert_eq!(file.lines().filter(|l| l.starts_with("admin ")).count(), 2);

    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));
    let primary = primary("127.0.0.1:0", &pdb, &pfiles, &keys);
    seed(&pdb, &pfiles, 20);
    let secondary = site.secondary(&primary.addr, &sdb, &sfiles, &["--keys-file", path(&keys)]);
    let count = "{ geoNode { primary widgetRegistries(replicationState: SYNCED) { count } } }";
    wait_until("every widget synced", Duration::from_secs(60), || {
        let (s, body) = graphql(&secondary.addr, Some(&admin), count);
        s == 200 && body["data"]["geoNode"]["widgetRegistries"]["count"].as_i64() > Some(0) && {
            let (_, all) = graphql(
                &secondary.addr,
                Some(&admin),
                "{ geoNode { widgetRegistries { count } } }",
            );
            all["data"]["geoNode"]["widgetRegistries"]["count"]
                == body["data"]["geoNode"]["widgetRegistries"]["count"]
        }
    });
    // Who may ask: nobody without a token, the read-only token reads, only admin writes.
    assert_eq!(graphql(&secondary.addr, None, count).0, 401);
    assert_eq!(graphql(&secondary.addr, Some(&read), count).0, 200);
    let bulk = "mutation { geoRegistriesBulkUpdate(input: {registryClass: WIDGET_REGISTRY, action: RESYNC_ALL}) { errors } }";
    assert_eq!(graphql(&secondary.addr, Some(&read), bulk).0, 403);
    let (s, body) = graphql(&secondary.addr, Some(&admin), bulk);
    assert_eq!(
        (s, body["data"]["geoRegistriesBulkUpdate"]["errors"].clone()),
        (200, json!([]))
    );
    // The admin page answers on both nodes, with or without the trailing slash.
    for addr in [&primary.addr, &secondary.addr] {
        let page = get(addr, "/admin/geo");
        assert!(
            page.starts_with("HTTP/1.1 200") && page.contains("<html"),
            "{page}"
        );
        let slash = get(addr, "/admin/geo/");
        assert!(
            slash.starts_with("HTTP/1.1 308") && slash.contains("location: /admin/geo\r\n"),
            "{slash}"
        );
    }
    // The primary lists its records and their checksums.
    let (s, body) = graphql(
        &primary.addr,
        Some(&admin),
        "{ geoNode { primary widgetRecords { count } } }",
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["geoNode"]["primary"], true);
    assert!(body["data"]["geoNode"]["widgetRecords"]["count"].as_i64() > Some(0));
    // The bulk resync runs in the secondary process and it converges again.
    wait_until("resynced and synced again", Duration::from_secs(60), || {
        let (_, body) = graphql(&secondary.addr, Some(&admin), count);
        let (_, all) = graphql(
            &secondary.addr,
            Some(&admin),
            "{ geoNode { widgetRegistries { count } } }",
        );
        body["data"]["geoNode"]["widgetRegistries"]["count"]
            == all["data"]["geoNode"]["widgetRegistries"]["count"]
    });
    drop(secondary);
    // The CLI on the databases: flags on the primary, resync on the secondary.
    let flags = run(&["flags", "list", "--database-url", path(&pdb)]);
    assert!(
        flags.contains("geo_widget_replication") && flags.contains("enabled"),
        "{flags}"
    );
    run(&[
        "flags",
        "disable",
        "geo_gadget_replication",
        "--database-url",
        path(&pdb),
    ]);
    let flags = run(&["flags", "list", "--database-url", path(&pdb)]);
    let gadget = flags
        .lines()
        .find(|l| l.starts_with("geo_gadget_replication"))
        .unwrap();
    assert!(gadget.contains("disabled"), "{flags}");
    let out = run(&[
        "resync",
        "--type",
        "widget",
        "--all",
        "--database-url",
        path(&sdb),
    ]);
    assert!(out.contains("now pending"), "{out}");
    let out = widgets()
        .args([
            "resync",
            "--type",
            "widget",
            "--all",
            "--database-url",
            path(&pdb),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "resync on a primary's database is refused"
    );
}
