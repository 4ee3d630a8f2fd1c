//! The conformance kit: the tests GitLab's shared examples give a new type
//! (`it_behaves_like 'a blob replicator'`, `'a verifiable replicator'`), generated for your model
//! by one macro, [`conformance_tests!`](crate::conformance_tests).
//!
//! Enable the `conformance` feature in your dev-dependencies (normal builds pay nothing):
//!
//! ```toml
//! [dev-dependencies]
//! geo-diesel = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! and write, in `tests/conformance.rs`:
//!
//! ```ignore
//! geo_diesel::conformance_tests! {
//!     model: Invoice,
//!     schema: app::SCHEMA_SQL,  // your tables' SQL (every replicable model in the test binary)
//!     create: |p, path, bytes| app::create_invoice(p.conn, p.store, path, bytes),
//! }
//! ```
//!
//! or, to replace the default `update` or `delete` too, implement [`Fixture`] and pass it:
//! `geo_diesel::conformance_tests!(Invoice, InvoiceFixture);`.
//!
//! # What it generates
//!
//! One `#[test]` per behaviour, named after it, so a failure says which ([`scenarios`] has each
//! one's rules):
//!
//! | test | checks |
//! |---|---|
//! | `create_replicates` | the record's `created` event is published, the secondary syncs the file (same blake3) |
//! | `update_replicates` | `updated` is published; the secondary ends with the new content and its checksum |
//! | `delete_replicates` | `deleted` is published; the registry row and the secondary's file go |
//! | `primary_verification` | the primary's state row ends `succeeded` with the blake3 of the file, and again after an update; with `verification = "none"`: no state and nothing checksummed |
//! | `secondary_verification` | the registry row ends verified (`succeeded`, the primary's checksum); with `"none"`: `disabled`, the download's checksum kept |
//! | `a_mismatch_resyncs` | a corrupted secondary copy is found by reverification (`checksum_mismatch`) and resynced; with `"none"`: an operator's resync repairs it |
//! | `flag_off_publishes_and_syncs_nothing` | the replication flag off on the primary publishes no event; off on the secondary syncs nothing; back on, the backfill catches up |
//! | `missing_on_primary_fails_with_the_four_hour_cap` | a file missing on the primary fails the sync with `missing_on_primary`, and the retry delay grows to the 4-hour cap and no further |
//!
//! Every test runs on real SQLite files in a temporary folder: a primary (your schema, then
//! Geo's primary migrations) and a secondary (its tracking database and folder) in one process,
//! the secondary reading the primary through [`DirectSource`](crate::direct::DirectSource), the
//! time on a manual clock and the retry jitter fixed ([`geo_core::clock::Env::manual`]), so the
//! backoff is asserted to the second, never slept.
//!
//! # Events
//!
//! The kit changes records only through the fixture. With `events = "triggers"` (the default)
//! the table's triggers publish `created`/`deleted` and a changed file column; with
//! `events = "manual"` the fixture's `create` (your application's create) must publish
//! `created` in its transaction ([`publish_created`](crate::publish_created)). The default
//! `update` rewrites the file in place and publishes `updated`; the default `delete` deletes
//! the row, publishes `deleted` (a no-op with triggers) and removes the file — both right for
//! either mode. After every step the kit checks that the event is on the primary and says what
//! is missing when it is not.

mod failure;
mod fixture;
pub mod scenarios;
mod sites;
mod steps;

pub use failure::Failure;
pub use fixture::{
    BlobModel, Fixture, FixtureResult, FnFixture, Primary, default_delete, default_update,
};
pub use sites::Sites;
pub use steps::{Made, content};

/// Runs one scenario for `fixture` and panics with its [`Failure`], readably: which test, which
/// type, which record, what was expected and what was found. The generated tests call it.
///
/// # Panics
///
/// When the scenario fails.
pub fn run<M, F>(fixture: &F, scenario: fn(&F) -> Result<(), Failure>)
where
    M: BlobModel,
    F: Fixture<Model = M>,
{
    if let Err(failure) = scenario(fixture) {
        panic!("\n{failure}\n");
    }
}

/// Generates the conformance tests for a replicable model: one `#[test]` per behaviour
/// (see [`conformance`](crate::conformance) for the list), in the module where it is invoked.
///
/// Two forms:
///
/// ```ignore
/// // A model whose application creates it with one call (default update and delete):
/// geo_diesel::conformance_tests! {
///     model: Invoice,
///     schema: app::SCHEMA_SQL,
///     create: |p, path, bytes| app::create_invoice(p.conn, p.store, path, bytes),
/// }
///
/// // Any `impl Fixture<Model = Widget>` (a value: a unit struct, or a struct literal):
/// geo_diesel::conformance_tests!(Widget, WidgetFixture);
/// ```
///
/// Invoke it once per module; for two models in one file, put each in its own `mod`.
#[macro_export]
macro_rules! conformance_tests {
    (model: $model:ty, schema: $schema:expr, create: $create:expr $(,)?) => {
        $crate::conformance_tests!(
            $model,
            $crate::conformance::FnFixture::<$model, _>::new($schema, $create)
        );
    };
    ($model:ty, $fixture:expr $(,)?) => {
        $crate::__conformance_tests!(
            $model,
            $fixture;
            create_replicates,
            update_replicates,
            delete_replicates,
            primary_verification,
            secondary_verification,
            a_mismatch_resyncs,
            flag_off_publishes_and_syncs_nothing,
            missing_on_primary_fails_with_the_four_hour_cap,
        );
    };
}

/// The `#[test]` functions of [`conformance_tests!`]. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($model:ty, $fixture:expr; $($scenario:ident),+ $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                $crate::conformance::run::<$model, _>(
                    &$fixture,
                    $crate::conformance::scenarios::$scenario,
                );
            }
        )+
    };
}
