//! Selective sync (`#[replicable(partition)]` + `SecondaryConfig::selective_sync`) on both
//! backends: the event payloads carry the partition, the log cursor skips and counts events of
//! unselected records, the backfill lists only selected ids, status and verification count only
//! what is selected, and a changed selection adds the new records and removes the deselected
//! ones with their files — a removal beyond the guard's share only once the operator confirms.
//! `Widget` has a partition (`tenant_id`), `Gadget` none: gadgets are always replicated whole.

mod sites;

use std::sync::atomic::Ordering;

use geo_diesel::geo_core::Selection;
use geo_diesel::geo_core::safety::RemovalKind;
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::secondary::SecondaryConfig;
use geo_tests::{Backend, data};
use sites::{Sites, exec, gd, wd};
use widgets::app;

geo_tests::backend_tests! {
    payloads_carry_the_partition_from_triggers_and_publish_alike,
    the_cursor_skips_and_counts_events_of_unselected_records,
    the_backfill_lists_and_converges_on_the_selection_only,
    the_direct_source_filters_ids_by_partition,
    a_changed_selection_adds_and_removes_under_the_guard,
    a_record_moved_between_partitions_follows_the_selection,
}

/// Widget `i` of `tenant`, with its bytes.
fn widget(s: &Sites, tenant: i64, i: u64) -> (widgets::Widget, Vec<u8>) {
    let bytes = data(i, 64 + i as usize);
    let w = app::create_widget_in(
        &mut s.p(),
        s.primary_store.as_ref(),
        tenant,
        &format!("w{i}"),
        &format!("t{tenant}/{i}.bin"),
        &bytes,
    )
    .expect("create widget");
    (w, bytes)
}

fn selecting(keys: &[i64]) -> SecondaryConfig {
    SecondaryConfig::default().selective_sync(Selection::only(keys.iter().copied()))
}

/// The widget status of `s`'s secondary: (registry, synced, verified).
fn widget_status(s: &Sites) -> (Option<u64>, Option<u64>, Option<u64>) {
    let all = s.secondary.status().expect("status");
    let w = &all
        .iter()
        .find(|(d, _)| d.name == "widget")
        .expect("widget")
        .1;
    (w.registry_count, w.synced_count, w.verified_count)
}

fn payloads_carry_the_partition_from_triggers_and_publish_alike(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, _) = widget(&s, 7, 1);
    // `updated` through the Rust path (`publish_updated`), `deleted` through the trigger.
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w, b"v2").expect("update");
    app::delete_widget(&mut s.p(), s.primary_store.as_ref(), &w).expect("delete");
    let (g, _) = s.gadget(1, 10);
    let events = s.events();
    let by = |name: &str, replicable: &str| {
        events
            .iter()
            .find(|e| e.event_name == name && e.replicable_name == replicable)
            .unwrap_or_else(|| panic!("{replicable} {name}: {events:?}"))
            .payload
            .clone()
    };
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).expect("json");
    let id = w.id;
    let expected = [
        (
            "created",
            serde_json::json!({"model_record_id": id, "partition": 7}),
        ),
        (
            "updated",
            serde_json::json!({"model_record_id": id, "partition": 7}),
        ),
        (
            "deleted",
            serde_json::json!({"model_record_id": id, "blob_path": "t7/1.bin", "partition": 7}),
        ),
    ];
    for (name, want) in &expected {
        let got = by(name, "widget");
        assert_eq!(json(&got), *want, "{name}");
        if backend == Backend::Sqlite {
            // The triggers' text is byte-identical to serde_json's rendering of the Rust path.
            assert_eq!(got, want.to_string(), "{name}");
        }
    }
    // A type without a partition field writes no partition key.
    assert_eq!(
        json(&by("created", "gadget")),
        serde_json::json!({"model_record_id": g.id})
    );
}

fn the_cursor_skips_and_counts_events_of_unselected_records(backend: Backend) {
    let s = Sites::open(backend, selecting(&[1, 3]), 0);
    let mine: Vec<i64> = [(1, 1), (3, 2), (1, 3)]
        .into_iter()
        .map(|(t, i)| widget(&s, t, i).0.id)
        .collect();
    let (other, _) = widget(&s, 2, 4);
    let (g1, _) = s.gadget(1, 10);
    let (g2, _) = s.gadget(2, 10);
    // An `updated` of the unselected widget through the Rust path is skipped too.
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &other, b"v2").expect("update");

    let pass = s.secondary.cursor_pass().expect("cursor");
    assert_eq!(pass.skipped_unselected, 2, "{pass:?}");
    assert_eq!(pass.applied, 5, "{pass:?}");
    assert_eq!(s.tracked(wd()), mine);
    assert_eq!(
        s.tracked(gd()),
        vec![g1.id, g2.id],
        "gadgets have no partition"
    );
    let c = &s.secondary.cursor().counters;
    assert_eq!(c.skipped_unselected.load(Ordering::Relaxed), 2);
    assert_eq!(c.skipped(), 2);

    // Deleting the unselected widget is applied (a no-op here), never refused.
    app::delete_widget(&mut s.p(), s.primary_store.as_ref(), &other).expect("delete");
    let pass = s.secondary.cursor_pass().expect("cursor");
    assert_eq!((pass.applied, pass.skipped_unselected), (1, 0), "{pass:?}");
}

fn the_backfill_lists_and_converges_on_the_selection_only(backend: Backend) {
    let s = Sites::open(backend, selecting(&[2]), 0);
    let mut selected = Vec::new();
    let mut others = Vec::new();
    for i in 0..9 {
        let tenant = (i % 3) as i64 + 1;
        let (w, bytes) = widget(&s, tenant, i);
        if tenant == 2 {
            selected.push((w, bytes));
        } else {
            others.push(w);
        }
    }
    let (g, gbytes) = s.gadget(1, 50);
    // The backfill alone (no events): only tenant 2's widgets get rows.
    let (created, removed) = s.secondary.backfill_all().expect("backfill");
    assert_eq!((created, removed), (selected.len() + 1, 0));
    s.converge();
    let ids: Vec<i64> = selected.iter().map(|(w, _)| w.id).collect();
    assert_eq!(s.tracked(wd()), ids);
    for (w, bytes) in &selected {
        s.assert_synced_verified(wd(), w.id, bytes);
    }
    s.assert_synced_verified(gd(), g.id, &gbytes);
    for w in &others {
        assert!(s.secondary_bytes(&w.file_path).is_none(), "{}", w.file_path);
    }
    // Status (and so metrics and GraphQL counts, read from the same registries) counts only
    // the selected widgets: all of them synced and verified.
    let n = Some(selected.len() as u64);
    assert_eq!(widget_status(&s), (n, n, n));
}

fn the_direct_source_filters_ids_by_partition(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let ids: Vec<(i64, i64)> = [5, 6, 5, 7]
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, widget(&s, t, i as u64).0.id))
        .collect();
    let (g, _) = s.gadget(1, 10);
    let direct = s.direct();
    let keys = [5, 7].into_iter().collect();
    let want: Vec<i64> = ids.iter().filter(|(t, _)| *t != 6).map(|p| p.1).collect();
    assert_eq!(
        direct
            .model_ids_in_partitions("widget", 1..=1_000, &keys)
            .unwrap(),
        want
    );
    // The range still bounds the answer.
    assert_eq!(
        direct
            .model_ids_in_partitions("widget", ids[1].1..=ids[2].1, &keys)
            .unwrap(),
        vec![ids[2].1]
    );
    // A type without a partition lists every id.
    assert_eq!(
        direct
            .model_ids_in_partitions("gadget", 1..=1_000, &keys)
            .unwrap(),
        vec![g.id]
    );
}

fn a_changed_selection_adds_and_removes_under_the_guard(backend: Backend) {
    let s = Sites::open(backend, selecting(&[1, 2]), 0);
    let mut by_tenant: [Vec<widgets::Widget>; 3] = Default::default();
    for i in 0..15 {
        let tenant = (i % 3) as usize;
        by_tenant[tenant].push(widget(&s, tenant as i64 + 1, i).0);
    }
    s.gadget(1, 10);
    s.converge();
    assert_eq!(s.tracked(wd()).len(), 10);

    // Restarted with another selection: tenant 3 in, tenant 1 out. Removing 5 of 10 rows is
    // beyond the 10 % guard: the new records come, the old stay until the operator confirms.
    let restarted = s.new_secondary(s.direct(), selecting(&[2, 3]));
    let (created, removed) = restarted.backfill_all().expect("backfill");
    assert_eq!((created, removed), (5, 0));
    assert_eq!(s.tracked(wd()).len(), 15);
    for w in &by_tenant[0] {
        assert!(
            s.secondary_bytes(&w.file_path).is_some(),
            "kept until confirmed"
        );
    }
    let refused = restarted.mass_removal_refusals();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            refused[0].kind,
            refused[0].would_remove,
            refused[0].registry_rows
        ),
        (RemovalKind::Orphans, 5, 10)
    );

    // The operator's confirmation (`backfill --allow-mass-removal --selective-sync 2,3`).
    let confirmed = s.new_secondary(s.direct(), selecting(&[2, 3]).allow_mass_removal(true));
    assert_eq!(confirmed.backfill_all().expect("backfill"), (0, 5));
    restarted.run_until_idle(20).expect("secondary");
    let mut want: Vec<i64> = by_tenant[1..].iter().flatten().map(|w| w.id).collect();
    want.sort_unstable();
    assert_eq!(s.tracked(wd()), want);
    for w in &by_tenant[0] {
        assert!(s.reg(wd(), w.id).is_none());
        assert!(s.secondary_bytes(&w.file_path).is_none(), "{}", w.file_path);
    }
    for w in by_tenant[1..].iter().flatten() {
        let bytes = s.primary_bytes(&w.file_path).expect("primary file");
        s.assert_synced_verified(wd(), w.id, &bytes);
    }
    assert!(restarted.mass_removal_refusals().is_empty());
    assert_eq!(s.tracked(gd()).len(), 1, "gadgets untouched");

    // A change within the share needs no confirmation: with a 50 % share, dropping tenant 3
    // (5 of 10 rows) goes at once.
    let lenient = s.new_secondary(s.direct(), selecting(&[2]).max_removal_share(0.5));
    assert_eq!(lenient.backfill_all().expect("backfill"), (0, 5));
    assert_eq!(s.tracked(wd()).len(), 5);
    for w in &by_tenant[2] {
        assert!(s.secondary_bytes(&w.file_path).is_none(), "{}", w.file_path);
    }
}

fn a_record_moved_between_partitions_follows_the_selection(backend: Backend) {
    let s = Sites::open(backend, selecting(&[1]), 0);
    let (stays, _) = widget(&s, 1, 1);
    let (leaves, _) = widget(&s, 1, 2);
    let (joins, joins_bytes) = widget(&s, 2, 3);
    s.converge();
    assert_eq!(s.tracked(wd()), vec![stays.id, leaves.id]);
    // A change of the partition column publishes no event; the backfill sees it.
    exec(
        &mut s.p(),
        &format!(
            "UPDATE widgets SET tenant_id = 2 WHERE id = {}; UPDATE widgets SET tenant_id = 1 WHERE id = {}",
            leaves.id, joins.id
        ),
    );
    // Allow the one removal of two rows (the guard always allows one).
    assert_eq!(s.secondary.backfill_all().expect("backfill"), (1, 1));
    s.converge();
    assert_eq!(s.tracked(wd()), vec![stays.id, joins.id]);
    assert!(s.secondary_bytes(&leaves.file_path).is_none());
    s.assert_synced_verified(wd(), joins.id, &joins_bytes);
}
