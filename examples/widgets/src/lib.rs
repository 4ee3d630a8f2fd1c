//! The widgets example application: two replicable blob models on a Diesel database.
//!
//! `Widget` keeps its verification state in a separate `widget_states` table (the default);
//! `Gadget` keeps it inline on the `gadgets` table — two types coexisting, each with one
//! attribute.

use diesel::prelude::*;
use geo_diesel::replicable;

pub mod app;
pub mod bench;
pub mod demo;
pub mod pg;

/// The application's own tables, as it would write them for Diesel anyway.
pub mod schema {
    diesel::table! {
        /// Widgets: a name and a file.
        widgets (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path relative to the blob store root.
            file_path -> Text,
            /// Display name.
            name -> Text,
            /// The tenant owning the widget: what `--selective-sync` selects on.
            tenant_id -> BigInt,
        }
    }

    diesel::table! {
        /// Gadgets: a label and a file.
        gadgets (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path relative to the blob store root.
            blob_key -> Text,
            /// Display label.
            label -> Text,
        }
    }
}

pub use schema::{gadgets, widgets};

/// A widget and its file. Replicated with the blob strategy; verification state in
/// `widget_states`; its events are written by triggers on `widgets` (the default
/// `events = "triggers"`), so no code publishes `created` or `deleted`. Its `tenant_id` is the
/// partition selective sync selects on; `Gadget` has none, so every secondary has every gadget.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = widgets)]
#[replicable(strategy = "blob", registry = "widget_registry")]
pub struct Widget {
    /// Primary key.
    pub id: i64,
    /// Where the blob lives, relative to the blob store root.
    #[replicable(file)]
    pub file_path: String,
    /// Display name.
    pub name: String,
    /// The tenant owning the widget (default 0): a secondary started with
    /// `--selective-sync 3,7` replicates only the widgets of tenants 3 and 7.
    #[replicable(partition)]
    pub tenant_id: i64,
}

/// A gadget and its file. Verification columns live inline on `gadgets`; its events are
/// published by the application's own `publish_*` calls (`events = "manual"`), so the example
/// exercises both ways of capturing changes.
#[replicable(strategy = "blob", verification = "inline", events = "manual")]
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable)]
#[diesel(table_name = gadgets)]
pub struct Gadget {
    /// Primary key.
    pub id: i64,
    /// Where the blob lives, relative to the blob store root.
    #[replicable(file)]
    pub blob_key: String,
    /// Display label.
    pub label: String,
}
