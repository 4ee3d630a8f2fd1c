//! The conformance kit can fail: fixtures broken in one way each make the scenario that covers
//! that behaviour return a failure naming the record and saying what was expected, while the
//! scenarios that do not cover it still pass with the same fixture.

use diesel::SqliteConnection;
use diesel::prelude::*;
use geo_diesel::conformance::{self, Failure, Fixture, FixtureResult, Primary, scenarios};
use geo_diesel::{JsonValue, UtcDateTime};
use widgets::{Gadget, Widget, app, gadgets};

/// How a fixture is broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// `update` returns without touching the file.
    UpdateWritesNothing,
    /// `update` rewrites the file in place but publishes no `updated` event.
    UpdateDoesNotPublish,
    /// `delete` removes the file but leaves the row.
    DeleteKeepsTheRow,
}

struct BrokenWidgets(Broken);

impl Fixture for BrokenWidgets {
    type Model = Widget;

    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()> {
        Ok(app::create_app_schema(conn)?)
    }

    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8]) -> FixtureResult<Widget> {
        Ok(app::create_widget(
            p.conn, p.store, "broken", path, content,
        )?)
    }

    fn update(&self, p: &mut Primary<'_>, w: &Widget, content: &[u8]) -> FixtureResult<()> {
        match self.0 {
            Broken::UpdateWritesNothing => Ok(()),
            Broken::UpdateDoesNotPublish => p.write_file(&w.file_path, content),
            Broken::DeleteKeepsTheRow => Ok(app::update_widget(p.conn, p.store, w, content)?),
        }
    }

    fn delete(&self, p: &mut Primary<'_>, w: &Widget) -> FixtureResult<()> {
        match self.0 {
            Broken::DeleteKeepsTheRow => {
                let path = geo_diesel::geo_core::blob_store::BlobPath::new(&w.file_path)?;
                p.store.delete(&path)?;
                Ok(())
            }
            _ => Ok(app::delete_widget(p.conn, p.store, w)?),
        }
    }
}

/// How a gadget fixture (`events = "manual"`) is broken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BrokenCreate {
    /// The row is inserted without `publish_created`.
    NoEvent,
    /// The file is written somewhere other than the file column says.
    FileElsewhere,
    /// The event is written straight into `geo_events`, past the replication flag.
    EventPastTheFlag,
}

struct BrokenGadgets(BrokenCreate);

impl Fixture for BrokenGadgets {
    type Model = Gadget;

    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()> {
        Ok(app::create_app_schema(conn)?)
    }

    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8]) -> FixtureResult<Gadget> {
        let written = match self.0 {
            BrokenCreate::FileElsewhere => format!("{path}.elsewhere"),
            _ => path.to_owned(),
        };
        p.write_file(&written, content)?;
        let g: Gadget = diesel::insert_into(gadgets::table)
            .values((gadgets::blob_key.eq(path), gadgets::label.eq("broken")))
            .returning(Gadget::as_returning())
            .get_result(p.conn)?;
        match self.0 {
            BrokenCreate::NoEvent => {}
            BrokenCreate::FileElsewhere => {
                geo_diesel::publish_created(p.conn, &g)?;
            }
            BrokenCreate::EventPastTheFlag => {
                use geo_diesel::schema::geo_events as e;
                diesel::insert_into(e::table)
                    .values((
                        e::replicable_name.eq("gadget"),
                        e::event_name.eq("created"),
                        e::model_record_id.eq(g.id),
                        e::payload.eq(JsonValue(serde_json::json!({"model_record_id": g.id}))),
                        e::created_at.eq(UtcDateTime(chrono::Utc::now())),
                    ))
                    .execute(p.conn)?;
            }
        }
        Ok(g)
    }
}

fn failure(result: Result<(), Failure>) -> Failure {
    match result {
        Ok(()) => panic!("the broken fixture passed"),
        Err(f) => f,
    }
}

fn assert_mentions(f: &Failure, scenario: &str, needles: &[&str]) {
    let text = f.to_string();
    assert_eq!(f.scenario, scenario, "{text}");
    assert!(f.record.is_some(), "no record named:\n{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from:\n{text}");
    }
}

#[test]
fn an_update_that_does_not_change_the_file_fails_update_replicates_only() {
    let f = BrokenWidgets(Broken::UpdateWritesNothing);
    let fail = failure(scenarios::update_replicates(&f));
    assert_mentions(
        &fail,
        "update_replicates",
        &[
            "new content",
            "(the old content)",
            "widget 1, file conformance/widget/1.bin",
        ],
    );
    // The step the kit checks first also breaks primary verification's second half.
    assert_eq!(
        failure(scenarios::primary_verification(&f)).scenario,
        "primary_verification"
    );
    scenarios::create_replicates(&f).expect("create is not broken");
    scenarios::delete_replicates(&f).expect("delete is not broken");
}

#[test]
fn an_update_that_publishes_nothing_fails_with_the_publish_updated_hint() {
    let f = BrokenWidgets(Broken::UpdateDoesNotPublish);
    let fail = failure(scenarios::update_replicates(&f));
    assert_mentions(
        &fail,
        "update_replicates",
        &["`updated` event", "publish_updated"],
    );
    scenarios::create_replicates(&f).expect("create is not broken");
}

#[test]
fn a_delete_that_keeps_the_row_fails_delete_replicates() {
    let f = BrokenWidgets(Broken::DeleteKeepsTheRow);
    let fail = failure(scenarios::delete_replicates(&f));
    assert_mentions(
        &fail,
        "delete_replicates",
        &["gone from the primary", "still there"],
    );
    scenarios::update_replicates(&f).expect("update is not broken");
}

#[test]
fn a_manual_create_without_publish_created_fails_create_replicates() {
    let f = BrokenGadgets(BrokenCreate::NoEvent);
    let fail = failure(scenarios::create_replicates(&f));
    assert_mentions(
        &fail,
        "create_replicates",
        &["`created` event", "events = \"manual\"", "publish_created"],
    );
}

#[test]
fn a_file_written_where_the_file_column_does_not_point_fails_create_replicates() {
    let f = BrokenGadgets(BrokenCreate::FileElsewhere);
    let fail = failure(scenarios::create_replicates(&f));
    assert_mentions(
        &fail,
        "create_replicates",
        &["the primary's file at", "no file"],
    );
}

#[test]
fn an_event_written_past_the_flag_fails_flag_off_publishes_and_syncs_nothing() {
    let f = BrokenGadgets(BrokenCreate::EventPastTheFlag);
    let fail = failure(scenarios::flag_off_publishes_and_syncs_nothing(&f));
    assert_mentions(
        &fail,
        "flag_off_publishes_and_syncs_nothing",
        &["no event while the flag is off", "1 event(s) published"],
    );
    // With the flag on, the hand-written event is a good `created` event.
    scenarios::create_replicates(&f).expect("the event is there");
}

#[test]
fn a_generated_test_panics_with_the_readable_failure() {
    let f = BrokenWidgets(Broken::UpdateWritesNothing);
    let panic = std::panic::catch_unwind(|| conformance::run(&f, scenarios::update_replicates))
        .expect_err("the broken fixture passed");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("conformance test `update_replicates` failed for Widget (`widget`: events = \"triggers\", verification = \"separate\")"),
        "{text}"
    );
    assert!(text.contains("  record:   widget 1"), "{text}");
    assert!(text.contains("  expected: "), "{text}");
    assert!(text.contains("  found:    "), "{text}");
}
