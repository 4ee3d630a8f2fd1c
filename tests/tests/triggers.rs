//! Capture by the database (`events = "triggers"`): every change to a widget row — Diesel's DSL,
//! a bulk `diesel::update`, raw SQL — publishes its event in the changing transaction, and a
//! rollback publishes nothing. Each scenario is written once and runs on SQLite (always) and
//! PostgreSQL (feature `pg-suite`), on the widgets example's primary and secondary ([`Sites`]).
//!
//! Widgets are `events = "triggers"` (separate verification); gadgets are `events = "manual"`
//! (inline verification). The inline trigger case installs the triggers of a copy of the gadget
//! descriptor with `events = "triggers"` by hand (the migration step's own SQL,
//! [`event_triggers`]), so no second model table is needed.

mod sites;

use diesel::prelude::*;
use diesel::sql_query;
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::geo_core::{EventCapture, ReplicableDescriptor, Role, parse_event};
use geo_diesel::primary::{self, triggers::event_triggers};
use geo_diesel::secondary::SecondaryConfig;
use geo_diesel::{publish_created, publish_deleted, publish_updated};
use geo_tests::{Backend, data, on_conn};
use serde_json::json;
use sites::state::*;
use sites::{Sites, exec, gd, wd};
use widgets::{Gadget, Widget, gadgets, widgets as widgets_table};

geo_tests::backend_tests! {
    an_insert_through_the_dsl_publishes_created_read_back_like_a_rust_written_event,
    a_bulk_update_of_the_file_column_publishes_one_updated_per_row,
    raw_sql_updates_and_deletes_publish,
    an_update_of_another_column_publishes_nothing,
    an_id_change_publishes_deleted_for_the_old_id_then_created_for_the_new,
    a_rolled_back_transaction_publishes_nothing,
    the_replication_flag_off_publishes_nothing_and_marks_nothing,
    a_file_change_resets_separate_verification_to_pending,
    a_file_change_resets_inline_verification_to_pending,
    publish_created_and_deleted_insert_nothing_but_publish_updated_still_publishes,
    a_manual_type_gets_no_trigger_events,
    files_repointed_with_raw_sql_reach_the_secondary_with_their_new_content,
    a_database_migrated_before_the_triggers_gets_them_on_upgrade,
}

/// Events on the primary as `(replicable, event, model id, payload)`, in id order.
fn events(s: &Sites) -> Vec<(String, String, i64, serde_json::Value)> {
    s.events()
        .into_iter()
        .map(|e| {
            let payload = serde_json::from_str(&e.payload).expect("JSON payload");
            (e.replicable_name, e.event_name, e.model_record_id, payload)
        })
        .collect()
}

fn ev(
    replicable: &str,
    event: &str,
    id: i64,
    payload: serde_json::Value,
) -> (String, String, i64, serde_json::Value) {
    (replicable.to_owned(), event.to_owned(), id, payload)
}

/// Inserts a widget row through Diesel's DSL, with no publish call.
fn insert_widget(s: &Sites, path: &str) -> Widget {
    let values = (
        widgets_table::file_path.eq(path),
        widgets_table::name.eq("t"),
    );
    on_conn!(&mut s.p(), c => diesel::insert_into(widgets_table::table)
        .values(values)
        .returning(Widget::as_returning())
        .get_result(c))
    .expect("insert widget")
}

/// Inserts a gadget row through Diesel's DSL, with no publish call.
fn insert_gadget(s: &Sites, path: &str) -> Gadget {
    let values = (gadgets::blob_key.eq(path), gadgets::label.eq("t"));
    on_conn!(&mut s.p(), c => diesel::insert_into(gadgets::table)
        .values(values)
        .returning(Gadget::as_returning())
        .get_result(c))
    .expect("insert gadget")
}

fn raw(s: &Sites, sql: &str) -> usize {
    on_conn!(&mut s.p(), c => sql_query(sql).execute(c)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn an_insert_through_the_dsl_publishes_created_read_back_like_a_rust_written_event(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let w = insert_widget(&s, "widgets/a.bin");
    // A manual type's event, written by Rust, beside it.
    let g = insert_gadget(&s, "gadgets/a.bin");
    publish_created(&mut s.p(), &g).expect("publish gadget");
    assert_eq!(
        events(&s),
        [
            ev(
                "widget",
                "created",
                w.id,
                json!({"model_record_id": w.id, "partition": 0})
            ),
            ev("gadget", "created", g.id, json!({"model_record_id": g.id})),
        ]
    );
    // The feed reads both the same way: payload, name and a timestamp of now.
    let feed = s.direct().events_after(0, 10).expect("feed");
    assert_eq!(feed.len(), 2);
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    for e in &feed {
        parse_event(e).expect("a well-formed event");
        assert!(
            e.created_at > before && e.created_at <= chrono::Utc::now(),
            "{e:?}"
        );
    }
    assert_eq!(
        feed[0].payload,
        json!({"model_record_id": w.id, "partition": 0})
    );
    if backend == Backend::Sqlite {
        // Byte-identical text to what serde_json writes for a Rust-published event.
        let texts: Vec<String> = s.events().into_iter().map(|e| e.payload).collect();
        assert_eq!(
            texts[0],
            format!(r#"{{"model_record_id":{},"partition":0}}"#, w.id)
        );
        let stamp = s.primary_number(
            "SELECT COUNT(*) AS n FROM geo_events WHERE created_at LIKE '____-__-__T__:__:__.___Z'",
        );
        assert_eq!(stamp, 2, "both timestamps in UtcDateTime's text form");
    }
    // The insert also marked the record's verification pending (a states row).
    assert_eq!(
        s.primary_row(wd(), w.id)
            .expect("states row")
            .verification_state,
        V_PENDING
    );
}

fn a_bulk_update_of_the_file_column_publishes_one_updated_per_row(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let ws: Vec<Widget> = (0..25)
        .map(|i| insert_widget(&s, &format!("bulk/{i}.bin")))
        .collect();
    let before = s.events().len();
    let update = diesel::update(widgets_table::table.filter(widgets_table::id.le(ws[19].id)))
        .set(widgets_table::file_path.eq(widgets_table::file_path.concat(".v2")));
    let n = on_conn!(&mut s.p(), c => update.execute(c)).expect("bulk update");
    assert_eq!(n, 20);
    let after = events(&s);
    let updated: Vec<i64> = after[before..]
        .iter()
        .map(|(r, e, id, p)| {
            assert_eq!((r.as_str(), e.as_str()), ("widget", "updated"));
            assert_eq!(*p, json!({"model_record_id": id, "partition": 0}));
            *id
        })
        .collect();
    let mut sorted = updated.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ws[..20].iter().map(|w| w.id).collect::<Vec<_>>());
    // Setting the column to the value it has is not a change.
    let same = diesel::update(widgets_table::table)
        .set(widgets_table::file_path.eq(widgets_table::file_path));
    on_conn!(&mut s.p(), c => same.execute(c)).expect("no-op update");
    assert_eq!(s.events().len(), after.len());
}

fn raw_sql_updates_and_deletes_publish(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let a = insert_widget(&s, "raw/a.bin");
    let b = insert_widget(&s, "raw/b.bin");
    let before = s.events().len();
    assert_eq!(
        raw(
            &s,
            &format!(
                "UPDATE widgets SET file_path = 'raw/a2.bin' WHERE id = {}",
                a.id
            )
        ),
        1
    );
    assert_eq!(
        raw(&s, &format!("DELETE FROM widgets WHERE id = {}", b.id)),
        1
    );
    assert_eq!(
        events(&s)[before..],
        [
            ev(
                "widget",
                "updated",
                a.id,
                json!({"model_record_id": a.id, "partition": 0})
            ),
            ev(
                "widget",
                "deleted",
                b.id,
                json!({"model_record_id": b.id, "blob_path": "raw/b.bin", "partition": 0})
            ),
        ]
    );
    // The same payload `publish_deleted` writes, parsed by the feed the same way.
    let feed = s.direct().events_after(0, 10).expect("feed");
    let parsed = parse_event(feed.last().expect("deleted")).expect("parses");
    assert_eq!(
        parsed.blob_path.as_ref().map(|p| p.as_str()),
        Some("raw/b.bin"),
        "{parsed:?}"
    );
}

fn an_update_of_another_column_publishes_nothing(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let w = insert_widget(&s, "other/a.bin");
    let before = s.events().len();
    let update = diesel::update(widgets_table::table.find(w.id)).set(widgets_table::name.eq("x"));
    assert_eq!(on_conn!(&mut s.p(), c => update.execute(c)).unwrap(), 1);
    raw(&s, "UPDATE widgets SET name = 'y'");
    assert_eq!(s.events().len(), before);
}

fn an_id_change_publishes_deleted_for_the_old_id_then_created_for_the_new(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let w = insert_widget(&s, "moved/a.bin");
    // The states row's foreign key refuses to let a verified record's id change under it; a
    // record with no states row (none yet, or removed) may move.
    raw(
        &s,
        &format!("DELETE FROM widget_states WHERE widget_id = {}", w.id),
    );
    let before = s.events().len();
    let new_id = w.id + 1000;
    raw(
        &s,
        &format!("UPDATE widgets SET id = {new_id} WHERE id = {}", w.id),
    );
    assert_eq!(
        events(&s)[before..],
        [
            ev(
                "widget",
                "deleted",
                w.id,
                json!({"model_record_id": w.id, "blob_path": "moved/a.bin", "partition": 0})
            ),
            ev(
                "widget",
                "created",
                new_id,
                json!({"model_record_id": new_id, "partition": 0})
            ),
        ]
    );
    assert_eq!(
        s.primary_row(wd(), new_id)
            .expect("states row")
            .verification_state,
        V_PENDING
    );
    // An id and a file change at once: still deleted (old path) + created, no `updated`.
    raw(
        &s,
        &format!("DELETE FROM widget_states WHERE widget_id = {new_id}"),
    );
    raw(
        &s,
        &format!(
            "UPDATE widgets SET id = {}, file_path = 'moved/b.bin' WHERE id = {new_id}",
            new_id + 1
        ),
    );
    let last: Vec<_> = events(&s)[before + 2..].to_vec();
    assert_eq!(
        last,
        [
            ev(
                "widget",
                "deleted",
                new_id,
                json!({"model_record_id": new_id, "blob_path": "moved/a.bin", "partition": 0})
            ),
            ev(
                "widget",
                "created",
                new_id + 1,
                json!({"model_record_id": new_id + 1, "partition": 0})
            ),
        ]
    );
}

fn a_rolled_back_transaction_publishes_nothing(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let kept = insert_widget(&s, "rb/kept.bin");
    let before = s.events().len();
    let mut conn = s.p();
    let result = on_conn!(&mut conn, c => c.transaction::<(), diesel::result::Error, _>(|c| {
        diesel::insert_into(widgets_table::table)
            .values((widgets_table::file_path.eq("rb/new.bin"), widgets_table::name.eq("t")))
            .execute(c)?;
        diesel::update(widgets_table::table.find(kept.id))
            .set(widgets_table::file_path.eq("rb/changed.bin"))
            .execute(c)?;
        diesel::delete(widgets_table::table.find(kept.id)).execute(c)?;
        Err(diesel::result::Error::RollbackTransaction)
    }));
    assert!(result.is_err());
    assert_eq!(s.events().len(), before);
    assert_eq!(s.primary_ids(wd()), [kept.id]);
    assert_eq!(
        s.primary_number("SELECT COUNT(*) AS n FROM widget_states"),
        1,
        "no states row from the rolled-back insert"
    );
}

fn the_replication_flag_off_publishes_nothing_and_marks_nothing(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    primary::set_replication_enabled(&mut s.p(), wd(), false, s.now()).unwrap();
    let w = insert_widget(&s, "flag/a.bin");
    raw(&s, "UPDATE widgets SET file_path = 'flag/b.bin'");
    raw(
        &s,
        &format!("UPDATE widgets SET id = {} WHERE id = {}", w.id + 5, w.id),
    );
    raw(&s, "DELETE FROM widgets");
    assert!(s.events().is_empty(), "{:?}", s.events());
    assert_eq!(
        s.primary_number("SELECT COUNT(*) AS n FROM widget_states"),
        0
    );
    // Back on: the next insert publishes again (the flag row, not the default, decides).
    primary::set_replication_enabled(&mut s.p(), wd(), true, s.now()).unwrap();
    let w = insert_widget(&s, "flag/c.bin");
    assert_eq!(
        events(&s),
        [ev(
            "widget",
            "created",
            w.id,
            json!({"model_record_id": w.id, "partition": 0})
        )]
    );
}

/// Checksums the record, then changes its file column and checks the rule ran: pending again,
/// failure and start cleared (what `publish_updated` does through `mark_verification_pending`).
fn verify_then_repoint(s: &Sites, d: &'static ReplicableDescriptor, id: i64, update_sql: &str) {
    s.verifier.run_until_idle(5).expect("verifier");
    assert_eq!(
        s.primary_row(d, id).expect("row").verification_state,
        V_SUCCEEDED
    );
    raw(s, update_sql);
    let row = s.primary_row(d, id).expect("row");
    assert_eq!(row.verification_state, V_PENDING, "{row:?}");
    assert_eq!(row.verification_failure, None);
    assert_eq!(
        s.event_count("updated"),
        1,
        "one updated event for {}",
        d.name
    );
}

fn a_file_change_resets_separate_verification_to_pending(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, _) = s.widget(1, 500);
    verify_then_repoint(
        &s,
        wd(),
        w.id,
        &format!(
            "UPDATE widgets SET file_path = '{}' WHERE id = {}",
            gadget_path_for_widget(&s, 2, 600),
            w.id
        ),
    );
}

/// Writes a new primary file and returns its path (the target of a repoint).
fn gadget_path_for_widget(s: &Sites, seed: u64, len: usize) -> String {
    let path = format!("repointed/{seed}.bin");
    let full = s.primary_store.root().join(&path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, data(seed, len)).unwrap();
    path
}

fn a_file_change_resets_inline_verification_to_pending(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let g = gd();
    // The gadget descriptor with triggers: its inline verification columns on `gadgets`.
    let triggered: &'static ReplicableDescriptor = Box::leak(Box::new(ReplicableDescriptor {
        name: g.name,
        plural: g.plural,
        type_name: g.type_name,
        strategy: g.strategy,
        verification: g.verification,
        enabled_by_default: g.enabled_by_default,
        events: EventCapture::Triggers,
        tables: g.tables,
        migrations: g.migrations,
    }));
    let sql = event_triggers(triggered, backend).expect("triggers");
    exec(&mut s.p(), &sql.up);
    let (gadget, _) = s.gadget(1, 500);
    // `create_gadget` published `created` itself; the trigger added its own.
    assert_eq!(s.event_count("created"), 2);
    verify_then_repoint(
        &s,
        gd(),
        gadget.id,
        &format!(
            "UPDATE gadgets SET blob_key = '{}' WHERE id = {}",
            gadget_path_for_widget(&s, 3, 700),
            gadget.id
        ),
    );
    // The pending update on the same table did not fire the file trigger again.
    assert_eq!(s.event_count("updated"), 1);
    exec(&mut s.p(), &sql.down);
    raw(&s, "UPDATE gadgets SET blob_key = 'gone.bin'");
    assert_eq!(s.event_count("updated"), 1, "the down dropped the triggers");
}

fn publish_created_and_deleted_insert_nothing_but_publish_updated_still_publishes(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let w = insert_widget(&s, "p/a.bin");
    assert_eq!(publish_created(&mut s.p(), &w).unwrap(), None);
    // A file rewritten in place: no column changes, so only `publish_updated` tells.
    let id = publish_updated(&mut s.p(), &w)
        .unwrap()
        .expect("updated event");
    assert_eq!(publish_deleted(&mut s.p(), &w).unwrap(), None);
    assert_eq!(
        events(&s),
        [
            ev(
                "widget",
                "created",
                w.id,
                json!({"model_record_id": w.id, "partition": 0})
            ),
            ev(
                "widget",
                "updated",
                w.id,
                json!({"model_record_id": w.id, "partition": 0})
            ),
        ]
    );
    assert_eq!(s.events()[1].id, id);
}

fn a_manual_type_gets_no_trigger_events(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let g = insert_gadget(&s, "m/a.bin");
    raw(&s, "UPDATE gadgets SET blob_key = 'm/b.bin'");
    raw(&s, "DELETE FROM gadgets");
    assert!(s.events().is_empty(), "{:?}", s.events());
    // Its publish calls still publish.
    assert!(publish_created(&mut s.p(), &g).unwrap().is_some());
    assert!(publish_deleted(&mut s.p(), &g).unwrap().is_some());
    assert_eq!(s.events().len(), 2);
}

fn files_repointed_with_raw_sql_reach_the_secondary_with_their_new_content(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let ws: Vec<_> = (0..10)
        .map(|i| s.widget(i, 300 + 50 * i as usize))
        .collect();
    s.converge();
    for (w, bytes) in &ws {
        s.assert_synced_verified(wd(), w.id, bytes);
    }
    // New files beside the old ones, then one raw statement repoints every row.
    let mut new = Vec::new();
    for (w, _) in &ws {
        let path = format!("v2/{}.bin", w.id);
        let bytes = data(10_000 + w.id as u64, 400);
        let full = s.primary_store.root().join(&path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, &bytes).unwrap();
        new.push((w.id, path, bytes));
    }
    assert_eq!(
        raw(&s, "UPDATE widgets SET file_path = 'v2/' || id || '.bin'"),
        ws.len()
    );
    s.converge();
    for (id, path, bytes) in &new {
        s.assert_synced_verified(wd(), *id, bytes);
        assert_eq!(
            s.secondary_bytes(path).as_deref(),
            Some(&bytes[..]),
            "{path}"
        );
    }
}

fn a_database_migrated_before_the_triggers_gets_them_on_upgrade(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    // As a database migrated by a release without triggers: no step in the ledger, none in
    // the schema.
    let sql = event_triggers(wd(), backend).expect("widgets use triggers");
    exec(&mut s.p(), &sql.down);
    exec(
        &mut s.p(),
        "DELETE FROM geo_schema_migrations WHERE name = 'widget_events_primary'",
    );
    insert_widget(&s, "old/a.bin");
    assert!(s.events().is_empty());
    let report =
        on_conn!(&mut s.p(), c => geo_diesel::run_migrations(c, Role::Primary)).expect("upgrade");
    assert_eq!(report.applied, ["widget_events_primary"]);
    let w = insert_widget(&s, "old/b.bin");
    assert_eq!(
        events(&s),
        [ev(
            "widget",
            "created",
            w.id,
            json!({"model_record_id": w.id, "partition": 0})
        )]
    );
    // Reverting the primary drops them again: a leftover trigger would fail the delete below,
    // writing columns the stand-in `geo_events` does not have.
    on_conn!(&mut s.p(), c => geo_diesel::revert_migrations(c, Role::Primary)).expect("revert");
    exec(
        &mut s.p(),
        "CREATE TABLE IF NOT EXISTS geo_events (id INTEGER)",
    );
    raw(&s, "DELETE FROM widgets");
    assert_eq!(s.primary_number("SELECT COUNT(*) AS n FROM geo_events"), 0);
}
