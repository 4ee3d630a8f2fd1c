//! The conformance kit fails a type whose `#[replicable(file)]` marks the wrong column: the
//! record's file is written at its path, but Geo reads the title as the blob path, so
//! `create_replicates` fails on the primary with the hint to check the attribute — and so does
//! every scenario, since none can sync a file Geo cannot find. The model is this binary's only
//! replicable.

use diesel::prelude::*;
use geo_diesel::conformance::{FixtureResult, FnFixture, Primary, scenarios};
use geo_diesel::replicable;

mod schema {
    diesel::table! {
        /// Memos: a title and a file.
        memos (id) {
            /// Primary key.
            id -> BigInt,
            /// Display title.
            title -> Text,
            /// Blob path.
            path -> Text,
        }
    }
}
use schema::memos;

/// A memo whose file attribute sits on the title by mistake.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = memos)]
#[replicable(strategy = "blob")]
pub struct Memo {
    /// Primary key.
    pub id: i64,
    /// Display title — wrongly marked as the file.
    #[replicable(file)]
    pub title: String,
    /// The real blob path.
    pub path: String,
}

const MEMOS_SQL: &str = "CREATE TABLE memos (id INTEGER PRIMARY KEY NOT NULL, \
                         title TEXT NOT NULL, path TEXT NOT NULL)";

fn create_memo(p: &mut Primary<'_>, path: &str, bytes: &[u8]) -> FixtureResult<Memo> {
    p.write_file(path, bytes)?;
    Ok(diesel::insert_into(memos::table)
        .values((memos::title.eq("minutes"), memos::path.eq(path)))
        .returning(Memo::as_returning())
        .get_result(p.conn)?)
}

#[test]
fn a_file_attribute_on_the_wrong_column_fails_create_replicates_with_the_hint() {
    let fixture = FnFixture::new(MEMOS_SQL, create_memo);
    let failure = scenarios::create_replicates(&fixture).expect_err("the wrong column passed");
    let text = failure.to_string();
    assert_eq!(failure.scenario, "create_replicates", "{text}");
    for needle in [
        "record:   memo 1, file minutes",
        "the primary's file at \"minutes\"",
        "found:    no file",
        "is #[replicable(file)] on the field that holds the blob path?",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    for scenario in [
        scenarios::update_replicates,
        scenarios::secondary_verification,
        scenarios::missing_on_primary_fails_with_the_four_hour_cap,
    ] {
        let f = scenario(&fixture).expect_err("a scenario passed with the wrong column");
        assert!(f.to_string().contains("no file"), "{f}");
    }
}
