//! Event pruning over real HTTP on loopback: two secondaries, each signing with its own access
//! key, tell the primary how far they consumed the log (`consumed=` on `events`); the primary
//! lists both with their lag in its status, prunes what both consumed, and past the lagging
//! one only by the retention bound; that one is answered `410 EVENTS_PRUNED`, recovers with a
//! full backfill plus reverification and ends converged with every file verified.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::clock::Env;
use geo_diesel::geo_core::source::SourceError;
use geo_diesel::primary::prune::{PruneConfig, prune_pass};
use geo_node::api::{ErrorBody, NodeStatus, geo_code};
use geo_node::auth::{Credentials, KeyRing, RequestData};
use geo_node::client::{HttpConfig, NodeClient};
use geo_node::server::{NodeState, PrimaryService, ServerHandle};

fn status(url: &str, creds: &Credentials) -> NodeStatus {
    NodeClient::new(HttpConfig::new(url, creds.clone()))
        .status()
        .unwrap()
}

fn event_count(p: &Primary) -> i64 {
    use diesel::prelude::*;
    use geo_diesel::schema::geo_events;
    let mut conn = p.db.get().unwrap();
    geo_events::table
        .count()
        .get_result(sqlite(&mut conn))
        .unwrap()
}

#[test]
fn two_secondaries_over_http_prune_list_lag_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["p", "a", "b"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let p = Primary::direct(&dir.path().join("p"));
    let (a_key, b_key) = (p.creds.clone(), Credentials::generate());
    let state = NodeState::new("primary", KeyRing::with([a_key.clone(), b_key.clone()]))
        .with_status_ttl(std::time::Duration::ZERO)
        .with_primary(PrimaryService::direct(
            p.db.clone(),
            p.store.clone(),
            Some(p.verifier.clone()),
        ));
    let server = ServerHandle::start("127.0.0.1:0", Arc::new(state), 2).unwrap();
    let url = server.url();
    let (a, _) = secondary(&dir.path().join("a"), &url, &a_key, Env::system());
    let (b, b_store) = secondary(&dir.path().join("b"), &url, &b_key, Env::system());
    let d = <Doc as Replicable>::DESCRIPTOR;

    let mut docs = Vec::new();
    for i in 0..5 {
        let path = format!("d/{i}.bin");
        create_doc(&p.db, p.store.as_ref(), &path, &data(i, 300 + i as usize));
        docs.push(path);
    }
    p.verify_all();
    for _ in 0..2 {
        b.run_until_idle(20).unwrap();
        a.run_until_idle(20).unwrap();
        p.verify_all();
    }
    assert!(differing(&p, &b_store).is_empty());
    // b stops here; a goes on while the primary changes.
    for i in 5..9 {
        let path = format!("d/{i}.bin");
        create_doc(&p.db, p.store.as_ref(), &path, &data(i, 300 + i as usize));
        docs.push(path);
    }
    p.verify_all();
    a.run_until_idle(20).unwrap();
    a.cursor_pass().unwrap();

    // The primary's status lists both, by access key, with their lag.
    let st = status(&url, &a_key);
    let primary = st.primary.as_ref().unwrap();
    let head = primary.last_event_id.flatten().unwrap();
    let known: Vec<(&str, i64)> = primary
        .secondaries
        .iter()
        .map(|k| (k.name.as_str(), k.events_behind))
        .collect();
    let mut expected = vec![
        (a_key.access_key.as_str(), 0),
        (b_key.access_key.as_str(), 0),
    ];
    expected.sort();
    let b_consumed = primary
        .secondaries
        .iter()
        .find(|k| k.name == b_key.access_key.as_str())
        .and_then(|k| k.consumed_event_id)
        .unwrap();
    for (name, behind) in &mut expected {
        if *name == b_key.access_key.as_str() {
            *behind = head - b_consumed;
        }
    }
    assert_eq!(known, expected, "{primary:?}");
    assert!(head - b_consumed > 0, "b lags");
    assert!(
        primary
            .secondaries
            .iter()
            .all(|k| k.seconds_since_seen < 60 && !k.stale)
    );
    let rendered = geo_node::cli::render_status(&st);
    assert!(rendered.contains("secondaries:"), "{rendered}");
    assert!(rendered.contains(&format!(
        "{}: consumed {b_consumed}",
        b_key.access_key.as_str()
    )));

    // Without a bound, only what both consumed goes.
    let unbounded = PruneConfig::default()
        .retention_age(None)
        .retention_events(None);
    let before = event_count(&p);
    let pass = prune_pass(&mut p.db.get().unwrap(), &unbounded, chrono::Utc::now()).unwrap();
    assert_eq!(pass.floor, Some(b_consumed));
    assert_eq!(event_count(&p), before - pass.deleted as i64);
    assert!(event_count(&p) >= head - b_consumed);
    // The cap (no event more than 0 ids behind the newest) prunes past b.
    let pass = prune_pass(
        &mut p.db.get().unwrap(),
        &unbounded.clone().retention_events(Some(0)),
        chrono::Utc::now(),
    )
    .unwrap();
    assert!(pass.past_floor > 0);
    assert_eq!(event_count(&p), 0);
    let st = status(&url, &a_key);
    let primary = st.primary.as_ref().unwrap();
    assert_eq!(primary.event_log_pruned_through, Some(head));
    let pruned_past: Vec<bool> = primary.secondaries.iter().map(|k| k.pruned_past).collect();
    assert_eq!(pruned_past.iter().filter(|p| **p).count(), 1, "{primary:?}");

    // A read from b's old point is answered 410 EVENTS_PRUNED, with the numbers.
    let path = format!("/api/geo/events?after={b_consumed}&consumed={b_consumed}");
    let auth = b_key.authorization(&RequestData::get(&path), chrono::Utc::now().timestamp());
    let (code, body) = raw_get(&server.addr().to_string(), &path, Some(&auth));
    assert_eq!(code, 410, "{body}");
    let body: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(body.geo_code, geo_code::EVENTS_PRUNED);
    assert_eq!(
        (body.pruned_through, body.consumed),
        (Some(head), Some(b_consumed))
    );
    // The client maps it to the typed error.
    let client = NodeClient::new(HttpConfig::new(&url, b_key.clone()));
    match client.get_json::<serde_json::Value>(&path) {
        Err(SourceError::EventsPruned {
            pruned_through,
            consumed,
        }) => assert_eq!((pruned_through, consumed), (head, b_consumed)),
        other => panic!("expected EventsPruned, got {other:?}"),
    }

    // b recovers: a full backfill plus reverification, then it converges.
    for _ in 0..3 {
        b.run_until_idle(20).unwrap();
        p.verify_all();
    }
    assert_eq!(b.counters().pruned_recoveries.load(Ordering::Relaxed), 1);
    let r = b.last_pruned_recovery().unwrap();
    assert_eq!((r.pruned_through, r.consumed), (head, b_consumed));
    assert_eq!(r.reverify, 5);
    assert_eq!(r.created, 4);
    assert!(differing(&p, &b_store).is_empty());
    let mut conn = b.tracking().get().unwrap();
    let counts = geo_diesel::registry::Registry::of(d)
        .counts(&mut conn)
        .unwrap();
    assert_eq!(counts.registry, docs.len() as i64);
    assert_eq!(counts.synced, docs.len() as i64);
    assert_eq!(counts.verified, docs.len() as i64, "{counts:?}");
    assert_eq!(b.halt().unwrap(), None);
    // b's status says it recovered; the metric counts it.
    let sec = NodeState::new("b", KeyRing::with([b_key.clone()])).with_secondary(
        geo_node::server::SecondaryService::new(
            Arc::clone(&b),
            Arc::new(geo_node::client::HttpSource::new(HttpConfig::new(
                &url,
                b_key.clone(),
            ))),
        ),
    );
    let st = geo_node::server::collect_status(&sec);
    let s = st.secondary.unwrap();
    assert_eq!(s.events_pruned_recoveries, 1);
    assert_eq!(s.last_events_pruned.unwrap().pruned_through, head);
    let metrics = geo_node::metrics::render(&sec);
    assert!(
        metrics.contains("geo_cursor_events_pruned_recoveries_total{name=\"b\"} 1"),
        "{metrics}"
    );
    drop(server);
}
