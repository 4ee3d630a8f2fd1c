//! What a site tells its operator, over real loopback sockets: the Prometheus names GitLab uses
//! (every one still exported), the latency histogram keyed by matched route, the sync-duration
//! histogram, and the status from the server's typed value to the CLI's table.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use common::*;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::PrimarySource;
use geo_node::api::{NodeStatus, SiteRole};
use geo_node::auth::RequestData;
use geo_node::cli::render_status;
use geo_node::client::{HttpConfig, HttpSource, NodeClient};
use geo_node::server::{NodeState, SecondaryService, ServerHandle};

/// `(metric name, TYPE)` of every sample, from the text format.
fn exported(text: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let kind = types.get(family).cloned().unwrap_or_default();
        out.insert(name.to_owned(), kind);
    }
    out
}

/// The names and types `/metrics` exported before it went through `prometheus-client`.
const PRIMARY_NAMES: &[(&str, &str)] = &[
    ("geo_last_event_id", "gauge"),
    ("geo_docs", "gauge"),
    ("geo_docs_checksum_total", "gauge"),
    ("geo_docs_checksummed", "gauge"),
    ("geo_docs_checksum_failed", "gauge"),
    ("geo_primary_checksummed_total", "counter"),
    ("geo_primary_checksum_failed_total", "counter"),
    ("geo_primary_checksummed_bytes_total", "counter"),
    ("geo_http_requests_total", "counter"),
    ("geo_auth_failures_total", "counter"),
    ("geo_blob_bytes_served_total", "counter"),
];

const SECONDARY_NAMES: &[(&str, &str)] = &[
    ("geo_docs", "gauge"),
    ("geo_docs_registry", "gauge"),
    ("geo_docs_synced", "gauge"),
    ("geo_docs_failed", "gauge"),
    ("geo_docs_verification_total", "gauge"),
    ("geo_docs_verified", "gauge"),
    ("geo_docs_verification_failed", "gauge"),
    ("geo_cursor_last_event_id", "gauge"),
    ("geo_cursor_gaps_open", "gauge"),
    ("geo_cursor_skipped_events_total", "counter"),
    ("geo_cursor_applied_events_total", "counter"),
    ("geo_cursor_gaps_detected_total", "counter"),
    ("geo_cursor_gaps_filled_total", "counter"),
    ("geo_cursor_gaps_expired_total", "counter"),
    ("geo_sync_succeeded_total", "counter"),
    ("geo_sync_failed_total", "counter"),
    ("geo_sync_bytes_total", "counter"),
    ("geo_verification_succeeded_total", "counter"),
    ("geo_verification_mismatch_total", "counter"),
    ("geo_primary_requests_total", "counter"),
    ("geo_primary_request_errors_total", "counter"),
    ("geo_http_requests_total", "counter"),
    ("geo_auth_failures_total", "counter"),
    ("geo_blob_bytes_served_total", "counter"),
];

/// A primary with `n` verified docs, a secondary replicated from it over HTTP, and the
/// secondary's own status server (with its HTTP link).
fn replicated(tmp: &std::path::Path, n: u64) -> (Primary, ServerHandle, Vec<Doc>) {
    let primary = Primary::direct(tmp);
    let docs: Vec<Doc> = (0..n)
        .map(|i| {
            create_doc(
                &primary.db,
                primary.store.as_ref(),
                &format!("o/{i}.bin"),
                &data(i, 2000 + i as usize),
            )
        })
        .collect();
    primary.verify_all();
    let (sec, _store) = secondary(tmp, &primary.url(), &primary.creds, Env::system());
    let link = HttpSource::new(HttpConfig::new(primary.url(), primary.creds.clone()));
    let stats = link.stats();
    let source: Arc<dyn PrimarySource> = Arc::new(link);
    // The server is built before the secondary runs, as the CLI does: it times every download.
    let state = NodeState::new(
        "test-secondary",
        geo_node::KeyRing::with([primary.creds.clone()]),
    )
    .with_secondary(SecondaryService::new(sec.clone(), source).with_link(stats));
    let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 1).unwrap();
    sec.run_until_idle(20).unwrap();
    (primary, server, docs)
}

#[test]
fn every_metric_name_of_before_is_still_exported_with_its_type() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, sec_server, _) = replicated(tmp.path(), 5);
    // Something for each site's own counters.
    let client = NodeClient::new(HttpConfig::new(sec_server.url(), primary.creds.clone()));
    client.status().unwrap();
    for (site, addr, names) in [
        ("primary", primary.addr(), PRIMARY_NAMES),
        ("secondary", sec_server.addr().to_string(), SECONDARY_NAMES),
    ] {
        let (code, text) = raw_get(&addr, "/metrics", None);
        assert_eq!(code, 200);
        let got = exported(&text);
        for (name, kind) in names {
            assert_eq!(
                got.get(*name).map(String::as_str),
                Some(*kind),
                "{site}: {name} missing or of another type in\n{text}"
            );
        }
    }
    let (_, text) = raw_get(&sec_server.addr().to_string(), "/metrics", None);
    assert!(
        text.contains("geo_docs_synced{name=\"test-secondary\"} 5\n"),
        "{text}"
    );
    // Every reason is there from the start.
    assert!(
        text.contains("geo_auth_failures_total{name=\"test-secondary\",reason=\"expired\"} 0\n"),
        "{text}"
    );
}

#[test]
fn sync_durations_are_a_histogram_per_replicable() {
    let tmp = tempfile::tempdir().unwrap();
    let (_primary, sec_server, _) = replicated(tmp.path(), 4);
    let (_, text) = raw_get(&sec_server.addr().to_string(), "/metrics", None);
    assert!(
        text.contains("# TYPE geo_sync_duration_seconds histogram\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "geo_sync_duration_seconds_count{name=\"test-secondary\",replicable=\"doc\",result=\"synced\"} 4\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "geo_sync_duration_seconds_bucket{name=\"test-secondary\",replicable=\"doc\",result=\"synced\",le=\"+Inf\"} 4\n"
        ),
        "{text}"
    );
}

#[test]
fn request_latency_is_kept_per_matched_route_never_per_raw_path() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    let a = create_doc(&primary.db, primary.store.as_ref(), "l/a", b"aaaa");
    let b = create_doc(&primary.db, primary.store.as_ref(), "l/b", b"bbbb");
    let gone = insert_doc(&primary.db, "l/gone");
    let addr = primary.addr();
    let now = Utc::now().timestamp();
    let get = |id: i64| {
        let path = format!("/api/geo/retrieve/doc/{id}");
        let auth = primary
            .creds
            .authorization(&RequestData::blob("doc", id), now);
        raw_get(&addr, &path, Some(&auth)).0
    };
    assert_eq!((get(a.id), get(b.id), get(a.id)), (200, 200, 200));
    assert_eq!(get(gone.id), 404);
    // Refused before the handler: still the route's answer.
    assert_eq!(
        raw_get(&addr, &format!("/api/geo/retrieve/doc/{}", a.id), None).0,
        401
    );
    // No route: not counted at all.
    assert_eq!(raw_get(&addr, "/api/geo/nothing/here", None).0, 404);
    let (_, text) = raw_get(&addr, "/metrics", None);
    let series = |code: u16| {
        format!(
            "geo_http_request_duration_seconds_count{{name=\"test-primary\",\
             route=\"/api/geo/retrieve/{{replicable}}/{{id}}\",method=\"GET\",code=\"{code}\"}}"
        )
    };
    assert!(text.contains(&format!("{} 3\n", series(200))), "{text}");
    assert!(text.contains(&format!("{} 1\n", series(404))), "{text}");
    assert!(text.contains(&format!("{} 1\n", series(401))), "{text}");
    assert!(
        text.contains("# TYPE geo_http_request_duration_seconds histogram\n"),
        "{text}"
    );
    assert!(!text.contains("/api/geo/retrieve/doc/"), "{text}");
    assert!(!text.contains("nothing"), "{text}");
    // The request counter is kept by the same middleware, with the endpoint names of before.
    assert!(
        text.contains(
            "geo_http_requests_total{name=\"test-primary\",endpoint=\"retrieve\",code=\"200\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "geo_http_requests_total{name=\"test-primary\",endpoint=\"retrieve\",code=\"404\"} 1\n"
        ),
        "{text}"
    );
    let m = primary.server.as_ref().unwrap().state().metrics();
    assert_eq!(
        (m.requests("retrieve", 200), m.requests("retrieve", 401)),
        (3, 1)
    );
    assert_eq!(m.bytes_served(), 12);
}

#[test]
fn status_round_trip_from_the_server_to_the_cli_table() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, sec_server, _) = replicated(tmp.path(), 3);
    // On the wire: GitLab's field names, flat per role.
    let path = "/api/geo/status";
    let auth = primary
        .creds
        .authorization(&RequestData::get(path), Utc::now().timestamp());
    let (code, body) = raw_get(&sec_server.addr().to_string(), path, Some(&auth));
    assert_eq!(code, 200, "{body}");
    let wire: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = &wire["secondary"];
    for (field, value) in [
        ("docs_count", serde_json::json!(3)),
        ("docs_registry_count", serde_json::json!(3)),
        ("docs_synced_count", serde_json::json!(3)),
        ("docs_verified_count", serde_json::json!(3)),
        ("docs_synced_in_percentage", serde_json::json!(100.0)),
        ("docs_checksummed_count", serde_json::Value::Null),
        ("open_gaps_count", serde_json::json!(0)),
        ("open_gaps", serde_json::json!([])),
        ("cursor_skipped_events_count", serde_json::json!(0)),
    ] {
        assert_eq!(s[field], value, "{field} in {body}");
    }
    assert_eq!(s["cursor_last_event_id"], s["last_event_id"], "{body}");
    assert!(
        s["primary_link"]["requests"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert_eq!(wire["role"], "secondary");
    assert_eq!(wire["health_status"], "Healthy");
    assert!(wire.get("primary").is_none());

    // The client reads the same type the server built.
    let typed: NodeStatus = serde_json::from_str(&body).unwrap();
    let st = NodeClient::new(HttpConfig::new(sec_server.url(), primary.creds.clone()))
        .status()
        .unwrap();
    assert_eq!(st.role, SiteRole::Secondary);
    assert_eq!(st.replicables, typed.replicables);
    assert_eq!(
        st.secondary.as_ref().unwrap().replicables,
        typed.secondary.as_ref().unwrap().replicables
    );
    assert!(st.uptime_seconds >= typed.uptime_seconds);

    // And the table the `status` command prints.
    let table = render_status(&st);
    let last = st.secondary.as_ref().unwrap().last_event_id.unwrap();
    let expected = format!(
        "test-secondary (secondary): Healthy\n\
         secondary:\n  \
         last_event_id: {last}\n  \
         cursor_last_event_id: {last}\n  \
         open_gaps_count: 0\n  \
         cursor_skipped_events_count: 0\n  \
         docs_count: 3\n  \
         docs_failed_count: 0\n  \
         docs_registry_count: 3\n  \
         docs_synced_count: 3\n  \
         docs_synced_in_percentage: 100.0\n  \
         docs_verification_failed_count: 0\n  \
         docs_verification_total_count: 3\n  \
         docs_verified_count: 3\n  \
         docs_verified_in_percentage: 100.0\n\
         replicables: doc\n"
    );
    assert_eq!(table, expected);

    // The primary's side, typed the same way.
    let pst = NodeClient::new(HttpConfig::new(primary.url(), primary.creds.clone()))
        .status()
        .unwrap();
    let table = render_status(&pst);
    assert!(
        table.starts_with("test-primary (primary): Healthy\nprimary:\n  last_event_id: "),
        "{table}"
    );
    assert!(table.contains("\n  docs_checksummed_count: 3\n"), "{table}");
    assert!(!table.contains("docs_synced_count"), "{table}");
}
