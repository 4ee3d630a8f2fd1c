//! The conformance kit on the descriptor's remaining options: `verification = "none"` (the
//! kit's scenarios then check that nothing is checksummed, that the secondary's verification is
//! `disabled`, and that an operator's resync repairs a corrupted copy) and
//! `enabled_by_default = false` (the kit turns the flag on at both sites first, and the flag
//! scenario turns it off again). The model is this binary's only replicable.

use diesel::prelude::*;
use geo_diesel::conformance::{FixtureResult, Primary};
use geo_diesel::replicable;

mod schema {
    diesel::table! {
        /// Notes: a file and no verification.
        notes (id) {
            /// Primary key.
            id -> BigInt,
            /// Blob path.
            path -> Text,
        }
    }
}
use schema::notes;

/// A replicable without verification, off until an operator turns it on.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = notes)]
#[replicable(strategy = "blob", verification = "none", enabled_by_default = false)]
pub struct Note {
    /// Primary key.
    pub id: i64,
    /// Blob path.
    #[replicable(file)]
    pub path: String,
}

const NOTES_SQL: &str = "CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, path TEXT NOT NULL)";

fn create_note(p: &mut Primary<'_>, path: &str, bytes: &[u8]) -> FixtureResult<Note> {
    p.write_file(path, bytes)?;
    Ok(diesel::insert_into(notes::table)
        .values(notes::path.eq(path))
        .returning(Note::as_returning())
        .get_result(p.conn)?)
}

geo_diesel::conformance_tests! {
    model: Note,
    schema: NOTES_SQL,
    create: create_note,
}

#[test]
fn the_kit_sees_one_replicable_without_verification_and_off_by_default() {
    let all = geo_diesel::geo_core::replicables();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(!all[0].verifies() && !all[0].enabled_by_default);
}
