//! The conformance kit on the example's two models, through the application's own operations
//! (`widgets::app`): `Widget` (events by triggers, a separate states table) and `Gadget`
//! (events published by the application, verification inline). Each module holds the eight
//! generated tests, e.g. `widget::update_replicates`.

use diesel::SqliteConnection;
use geo_diesel::conformance::{Fixture, FixtureResult, Primary};
use widgets::{Gadget, Widget, app};

/// Widgets as the application creates, rewrites and deletes them.
struct Widgets;

impl Fixture for Widgets {
    type Model = Widget;

    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()> {
        Ok(app::create_app_schema(conn)?)
    }

    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8]) -> FixtureResult<Widget> {
        Ok(app::create_widget(p.conn, p.store, "kit", path, content)?)
    }

    fn update(&self, p: &mut Primary<'_>, w: &Widget, content: &[u8]) -> FixtureResult<()> {
        Ok(app::update_widget(p.conn, p.store, w, content)?)
    }

    fn delete(&self, p: &mut Primary<'_>, w: &Widget) -> FixtureResult<()> {
        Ok(app::delete_widget(p.conn, p.store, w)?)
    }
}

/// Gadgets as the application creates, rewrites and deletes them (each publishing its event).
struct Gadgets;

impl Fixture for Gadgets {
    type Model = Gadget;

    fn schema(&self, conn: &mut SqliteConnection) -> FixtureResult<()> {
        Ok(app::create_app_schema(conn)?)
    }

    fn create(&self, p: &mut Primary<'_>, path: &str, content: &[u8]) -> FixtureResult<Gadget> {
        Ok(app::create_gadget(p.conn, p.store, "kit", path, content)?)
    }

    fn update(&self, p: &mut Primary<'_>, g: &Gadget, content: &[u8]) -> FixtureResult<()> {
        Ok(app::update_gadget(p.conn, p.store, g, content)?)
    }

    fn delete(&self, p: &mut Primary<'_>, g: &Gadget) -> FixtureResult<()> {
        Ok(app::delete_gadget(p.conn, p.store, g)?)
    }
}

mod widget {
    geo_diesel::conformance_tests!(widgets::Widget, super::Widgets);
}

mod gadget {
    geo_diesel::conformance_tests!(widgets::Gadget, super::Gadgets);
}

/// The short form with the defaults (`update` rewrites in place and publishes, `delete` deletes
/// the row, publishes and removes the file) on the manual-events type: the defaults publish
/// what `events = "manual"` needs.
mod gadget_defaults {
    geo_diesel::conformance_tests! {
        model: widgets::Gadget,
        schema: widgets::app::app_schema_sql(geo_diesel::geo_core::Backend::Sqlite),
        create: |p, path, bytes| widgets::app::create_gadget(p.conn, p.store, "kit", path, bytes),
    }
}
