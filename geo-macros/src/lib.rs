//! The `#[replicable]` attribute of Geo for Rust. Users reach it as `geo_diesel::replicable`,
//! where its documentation lives; this crate is an implementation detail of `geo-diesel`.
//!
//! Structure: [`replicable`] is a thin shell around `expand`; `attr`/`ast` parse, `valid`
//! validates into a model, `expand::*` generates one artefact each, `fallback` handles errors.

mod ast;
mod attr;
mod expand;
mod fallback;
mod names;
mod valid;

#[cfg(test)]
mod tests;

use darling::ast::NestedMeta;
use proc_macro2::TokenStream as TokenStream2;

/// Makes a Diesel model replicable by Geo: every file it owns is copied from the primary site to
/// every secondary, tracked in a registry and verified with checksums.
///
/// ```ignore
/// use diesel::prelude::*;
/// use geo_diesel::replicable;
///
/// diesel::table! {
///     widgets (id) {
///         id -> BigInt,
///         file_path -> Text,
///         name -> Text,
///     }
/// }
///
/// #[derive(Queryable, Selectable, Identifiable, Insertable)]
/// #[diesel(table_name = widgets)]            // the model table (else Diesel's default rule)
/// #[replicable(
///     strategy = "blob",                     // required: one file per record
///     registry = "widget_registry",          // optional: this is the default
///     verification = "separate",             // optional: "separate" (default), "inline", "none"
/// )]
/// pub struct Widget {
///     pub id: i64,                           // the primary key: a field named `id`, or
///                                            // mark another with #[replicable(id)]
///     #[replicable(file)]                    // the blob's path, relative to the store root
///     pub file_path: String,
///     pub name: String,
/// }
/// ```
///
/// The attribute may be written above or below `#[derive(...)]`. The crate using it needs
/// `diesel` as a direct dependency (the generated `diesel::table!` refers to `diesel` by name,
/// which your models do anyway) and `geo-diesel`.
///
/// # Struct keys
///
/// | key | default | meaning |
/// |---|---|---|
/// | `strategy = "blob"` | required | how data is replicated; `"blob"` is the only strategy today (`"repository"` is planned) |
/// | `registry = "..."` | `<name>_registry` | the registry table on secondaries |
/// | `name = "..."` | snake case of the struct name (`PackageFile` → `package_file`) | the replicable name in events, URLs, the feature flag `geo_<name>_replication` and metrics |
/// | `verification = "..."` | `"separate"` | `"separate"`: a `<name>_states` table keyed by the model id; `"inline"`: columns on the model table; `"none"`: no verification |
/// | `enabled_by_default = bool` | `true` | default of the feature flag `geo_<name>_replication` |
/// | `events = "..."` | `"triggers"` | how the primary captures `created`/`updated`/`deleted`: `"triggers"`: the primary's migration installs triggers on the model table (`INSERT`, `DELETE`, `UPDATE` of the file column or the id) that write `geo_events` in the changing transaction, honouring the feature flag, so Diesel's DSL, bulk updates and raw SQL are all captured and `publish_created`/`publish_deleted` do nothing; call `publish_updated` only for a file rewritten in place with no column change. `"manual"`: the application calls `publish_created`/`publish_updated`/`publish_deleted` in its transactions |
///
/// `registry` and `name` must be plain SQL identifiers (`[a-z_][a-z0-9_]*`, at most 63 bytes),
/// and so must every name derived from them.
///
/// # Field options
///
/// - `#[replicable(file)]`: on exactly one `String` field (blob strategy), the file's path
///   relative to the blob store root.
/// - `#[replicable(id)]`: on the primary-key field when it is not named `id`. The key must be
///   `i64` (SQL `BIGINT`) or `i32` (SQL `INTEGER`).
/// - `#[replicable(partition)]`: optional, on at most one field other than the id and the file:
///   the key a secondary's selective sync selects on (a tenant, a namespace;
///   `--selective-sync 3,7,12`). It must be `i16`, `i32` or `i64`, or an `Option` of one (`None`
///   is in no partition: only a secondary without a selection replicates such a record). The
///   descriptor names its column (`Tables::partition`), the replicator returns it
///   (`Replicator::partition`), and every event of the type carries it in its payload
///   (`"partition"`), from the triggers and from `publish_*` alike. Changing a record's
///   partition publishes no event: the secondaries' backfill adds or removes it.
///
/// A field's `#[diesel(column_name = ...)]` is honoured for these columns. The model table is
/// the last segment of `#[diesel(table_name = ...)]` (`crate::schema::widgets` → `widgets`), or
/// Diesel's default (snake case of the struct name + `s`) when absent.
///
/// # Generated items
///
/// For `struct Widget` with `name = "widget"` (the names are public API; items get the struct's
/// visibility):
///
/// | item | naming rule | what it is |
/// |---|---|---|
/// | `WidgetReplicator<'a>` | `<Struct>Replicator` | borrows a record; implements `geo_core::Replicator` and `geo_core::BlobReplicator`; `new(&Widget)`, `model_record(&self) -> &'a Widget` |
/// | `WidgetReplicator::DESCRIPTOR` | | `&'static geo_core::ReplicableDescriptor`: name, plural, type name, strategy, verification mode, flag default, event capture (`events`), SQL names, migrations |
/// | `WidgetReplicator::MIGRATIONS` | | `geo_core::MigrationSet`: SQL for SQLite and PostgreSQL, primary and secondary, `up` and `down` |
/// | `Widget::replicator(&self)` | | the record's `WidgetReplicator` |
/// | `impl geo_core::Replicable for Widget` | | `DESCRIPTOR`, `replicator()`, `model_record_id()` |
/// | `widget_registry` | the `registry` key | `diesel::table!` module of the registry (secondaries) |
/// | `WidgetRegistry` | `<Struct>Registry` | `Queryable + Selectable` row with every registry column |
/// | `widget_states` | `<name>_states` | `table!` module of the verification state (`verification = "separate"`) |
/// | `widget_verification` | `<name>_verification` | `table!` module mapping the verification columns of the model table (`"inline"`; `#[sql_name]` = the model table, key column = the model id) |
/// | `WidgetState` | `<Struct>State` | `Queryable + Selectable` row of either verification table; implements `geo_core::VerificationRecord` (none with `"none"`) |
/// | registration | | an `inventory` entry, so `geo_diesel::geo_core::replicables()` lists `Widget` without a hand-kept list |
///
/// SQL names (docs/SCHEMA.md has every column; `geo_diesel::geo_core::schema` lists them for
/// code): registry table `<registry>` with foreign key `<name>_id`; states table
/// `<name>_states` keyed by `<name>_id` referencing the model id; indexes
/// `index_<table>_<purpose>`, cut to 63 bytes with a stable hash suffix when longer.
///
/// # Migrations
///
/// Run the application's own migrations first (the primary's migration references the model
/// table), then Geo's, which include every registered replicable's SQL:
///
/// ```ignore
/// use geo_diesel::geo_core::Role;
/// run_app_migrations(&mut conn)?;
/// geo_diesel::run_migrations(&mut conn, Role::Primary)?;     // on the primary's database
/// geo_diesel::run_migrations(&mut tracking, Role::Secondary)?; // on a secondary's tracking database
/// ```
///
/// The SQL itself is `WidgetReplicator::MIGRATIONS.sqlite_primary.up` and so on, for use with
/// other migration tools. With `events = "triggers"` the primary's plan has one more step,
/// `widget_events_primary`, right after `widget_primary`: the triggers on the model table,
/// rendered by geo-diesel from the descriptor (`geo_diesel::primary::triggers::event_triggers`;
/// `widgets migrations print --role primary` shows them).
///
/// # Errors
///
/// Every mistake is reported at once, each on the token that is wrong: unknown keys and values
/// (with "did you mean"), duplicates, a missing `strategy`, a missing or repeated `file` field,
/// a missing or ambiguous primary key, an unsupported key type, names that are not SQL
/// identifiers, enums, tuple/unit structs, unions and generic structs.
#[proc_macro_attribute]
pub fn replicable(
    args: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(args.into(), item.into()).into()
}

/// The whole attribute on `proc_macro2` tokens: parse, validate, then expand (or fall back).
/// Never panics on user input; output is a pure function of the input.
pub(crate) fn expand(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let item: syn::Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => {
            let mut out = item;
            out.extend(e.to_compile_error());
            return out;
        }
    };
    match analyze(args, item) {
        (input, Ok(model)) => expand::expand(&input.stripped, &model),
        (input, Err(errors)) => fallback::expand(&input, errors.write_errors()),
    }
}

/// Parses and validates: the read item, and the model or every error found.
pub(crate) fn analyze(
    args: TokenStream2,
    item: syn::Item,
) -> (ast::Input, Result<valid::Model, darling::Error>) {
    let mut errors = darling::Error::accumulator();
    let nested = errors
        .handle(NestedMeta::parse_meta_list(args).map_err(darling::Error::from))
        .unwrap_or_default();
    let struct_args = attr::parse_struct_args(&nested, &mut errors);
    let input = ast::parse_input(item, &mut errors);
    let model = valid::validate(struct_args, &input, &mut errors);
    let result = match (errors.finish(), model) {
        (Ok(()), Some(model)) => Ok(model),
        (Err(e), _) => Err(e),
        // Validation returns no model only after reporting why; keep a message regardless.
        (Ok(()), None) => Err(darling::Error::custom(
            "#[replicable] could not read this item",
        )),
    };
    (input, result)
}
