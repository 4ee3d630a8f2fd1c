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

/// Counts the queries diesel runs on connections to one database file, as the database layer
/// sees them (diesel's `Instrumentation` on every connection this process opens).
mod queries {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use diesel::connection::{Instrumentation, InstrumentationEvent};

    static WATCHED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static COUNT: AtomicU64 = AtomicU64::new(0);

    struct Counter {
        counting: bool,
    }

    impl Instrumentation for Counter {
        fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
            match event {
                InstrumentationEvent::StartEstablishConnection { url, .. } => {
                    self.counting = WATCHED.lock().unwrap().iter().any(|w| w == url);
                }
                InstrumentationEvent::StartQuery { .. } if self.counting => {
                    COUNT.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    }

    fn counter() -> Option<Box<dyn Instrumentation>> {
        Some(Box::new(Counter { counting: false }))
    }

    /// Counts the queries of connections opened from now on to `url`.
    pub fn watch(url: &str) {
        WATCHED.lock().unwrap().push(url.to_owned());
        diesel::connection::set_default_instrumentation(counter).unwrap();
    }

    /// Queries counted so far.
    pub fn count() -> u64 {
        COUNT.load(Ordering::SeqCst)
    }
}

/// A scrape loop at 200 requests a second, `/metrics` and `GET /api/geo/status` in turn, for
/// `secs`: the number of answers that were 200.
fn scrape_loop(server: &ServerHandle, creds: &geo_node::Credentials, secs: f64) -> usize {
    let addr = server.addr().to_string();
    let started = std::time::Instant::now();
    let n = (secs * 200.0) as u32;
    let mut ok = 0;
    for i in 0..n {
        let at = started + std::time::Duration::from_millis(5) * i;
        if let Some(wait) = at.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let code = if i % 2 == 0 {
            raw_get(&addr, "/metrics", None).0
        } else {
            let path = "/api/geo/status";
            let auth = creds.authorization(&RequestData::get(path), Utc::now().timestamp());
            raw_get(&addr, path, Some(&auth)).0
        };
        ok += usize::from(code == 200);
    }
    ok
}

#[test]
fn any_scrape_rate_costs_one_status_read_per_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    queries::watch(&tmp.path().join("primary.sqlite3").display().to_string());
    let primary = Primary::direct(tmp.path());
    for i in 0..5 {
        create_doc(&primary.db, primary.store.as_ref(), &format!("s/{i}"), b"x");
    }
    primary.verify_all();
    let serve = |ttl: std::time::Duration| {
        let state = NodeState::new("scraped", geo_node::KeyRing::with([primary.creds.clone()]))
            .with_primary(geo_node::PrimaryService::direct(
                primary.db.clone(),
                primary.store.clone(),
                Some(primary.verifier.clone()),
            ))
            .with_status_ttl(ttl);
        ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap()
    };
    let server = serve(geo_node::server::DEFAULT_STATUS_TTL);

    // What one fresh status read costs (the admin page's path: not cached).
    let before = queries::count();
    let fresh = geo_node::server::collect_status(server.state());
    let one_read = queries::count() - before;
    assert!(fresh.is_healthy(), "{fresh:?}");
    assert!(one_read >= 1, "the counter sees the status queries");
    let again = queries::count();
    geo_node::server::collect_status(server.state());
    assert_eq!(
        queries::count() - again,
        one_read,
        "a status read is stable"
    );

    // 2.5 s at 200 a second with the default TTL (10 s): one read in all.
    let before = queries::count();
    let ok = scrape_loop(&server, &primary.creds, 2.5);
    let during = queries::count() - before;
    eprintln!(
        "200/s for 2.5 s (500 scrapes, TTL 10 s): {during} queries; one status read is {one_read}"
    );
    assert_eq!(ok, 500, "every scrape answered");
    assert!(
        during <= one_read,
        "{during} queries > one read ({one_read})"
    );
    // The cached answers are the database's: the counts are there.
    let (_, text) = raw_get(&server.addr().to_string(), "/metrics", None);
    assert!(text.contains("geo_docs{name=\"scraped\"} 5\n"), "{text}");
    server.stop();

    // With a TTL of 500 ms, the same loop reads at most once per TTL.
    let server = serve(std::time::Duration::from_millis(500));
    let before = queries::count();
    let ok = scrape_loop(&server, &primary.creds, 2.5);
    let during = queries::count() - before;
    eprintln!("200/s for 2.5 s, TTL 500 ms: {during} queries");
    assert_eq!(ok, 500);
    assert!(during <= 6 * one_read, "{during} > 6 reads of {one_read}");
    assert!(during > one_read, "the cache expires: {during}");
}

#[test]
fn metrics_on_their_own_listener_and_not_on_the_main_one() {
    let tmp = tempfile::tempdir().unwrap();
    let primary = Primary::direct(tmp.path());
    create_doc(&primary.db, primary.store.as_ref(), "m/1", b"x");
    primary.verify_all();
    let state = || {
        Arc::new(
            NodeState::new("metered", geo_node::KeyRing::with([primary.creds.clone()]))
                .with_primary(geo_node::PrimaryService::direct(
                    primary.db.clone(),
                    primary.store.clone(),
                    Some(primary.verifier.clone()),
                )),
        )
    };
    let options = geo_node::server::ServeOptions::new().metrics_listen("127.0.0.1:0");
    let server = ServerHandle::start_with("127.0.0.1:0", state(), options).unwrap();
    let maddr = server
        .metrics_addr()
        .expect("a metrics listener")
        .to_string();
    assert_ne!(maddr, server.addr().to_string());
    assert_eq!(
        server.metrics_url().unwrap(),
        format!("http://{maddr}/metrics")
    );
    let (code, text) = raw_get(&maddr, "/metrics", None);
    assert_eq!(code, 200);
    assert!(text.contains("geo_docs{name=\"metered\"} 1\n"), "{text}");
    // Nothing else there, and no /metrics on the main listener.
    let path = "/api/geo/status";
    let auth = primary
        .creds
        .authorization(&RequestData::get(path), Utc::now().timestamp());
    assert_eq!(raw_get(&maddr, path, Some(&auth)).0, 404);
    let main = server.addr().to_string();
    assert_eq!(raw_get(&main, "/metrics", None).0, 404);
    assert_eq!(raw_get(&main, path, Some(&auth)).0, 200);
    // The scrapes are counted like any request.
    let (_, text) = raw_get(&maddr, "/metrics", None);
    assert!(
        text.contains(
            "geo_http_requests_total{name=\"metered\",endpoint=\"metrics\",code=\"200\"} 1\n"
        ),
        "{text}"
    );
    server.stop();

    // Without --metrics-listen, a main listener that is not on loopback serves no /metrics.
    let server = ServerHandle::start("0.0.0.0:0", state(), 1).unwrap();
    assert_eq!(server.metrics_url(), None);
    let local = format!("127.0.0.1:{}", server.addr().port());
    assert_eq!(raw_get(&local, "/metrics", None).0, 404);
    assert_eq!(raw_get(&local, path, Some(&auth)).0, 200);
    // On loopback, it does (as the tests and a single-machine setup scrape it).
    let server = ServerHandle::start("127.0.0.1:0", state(), 1).unwrap();
    assert_eq!(
        server.metrics_url().unwrap(),
        format!("http://{}/metrics", server.addr())
    );
    assert_eq!(raw_get(&server.addr().to_string(), "/metrics", None).0, 200);
}
