//! Done when, with the real `widgets` binary (run it with `--release` for the release one):
//! 50 rows whose files are changed on the primary with one raw SQL `UPDATE` — no publish call,
//! no application code — reach the secondary with their new content. `widgets primary` and
//! `widgets secondary` run as processes over HTTP; the raw statement goes through a plain
//! Diesel `SqliteConnection` on the primary's database file, as a `sqlite3` session would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

mod common;
use common::*;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    file_path: String,
}

/// A plain connection to the primary's database file that waits for the primary's own writes.
fn connect(db: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(path(db)).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 30000;").unwrap();
    conn
}

fn widget_rows(conn: &mut SqliteConnection) -> Vec<Row> {
    diesel::sql_query("SELECT id, file_path FROM widgets ORDER BY id")
        .load(conn)
        .unwrap()
}

/// Whether the secondary's copy of `rel` holds exactly the primary's bytes.
fn same_file(primary: &Path, secondary: &Path, rel: &str) -> bool {
    match (
        std::fs::read(primary.join(rel)),
        std::fs::read(secondary.join(rel)),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[test]
fn fifty_files_repointed_with_one_raw_update_reach_the_secondary() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let site = Site::generate(&keys);
    let (pdb, pfiles) = (tmp.path().join("p.sqlite3"), tmp.path().join("pf"));
    let (sdb, sfiles) = (tmp.path().join("s.sqlite3"), tmp.path().join("sf"));
    let primary = primary("127.0.0.1:0", &pdb, &pfiles, &keys);
    // 100 records: 67 widgets (3 deleted by the seed), 33 gadgets.
    seed(&pdb, &pfiles, 100);
    let _secondary = site.secondary(&primary.addr, &sdb, &sfiles, &["--keys-file", path(&keys)]);
    let mut conn = connect(&pdb);
    let rows = widget_rows(&mut conn);
    assert!(rows.len() >= 50, "{} widgets", rows.len());
    wait_until(
        "every seeded widget's file on the secondary",
        Duration::from_secs(60),
        || {
            rows.iter()
                .all(|r| same_file(&pfiles, &sfiles, &r.file_path))
        },
    );

    // 50 new files on the primary, then one raw statement points 50 rows at them.
    let chosen: Vec<&Row> = rows.iter().take(50).collect();
    let mut expected: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for r in &chosen {
        let rel = format!("raw/{}.bin", r.id);
        let bytes: Vec<u8> = format!("new content of widget {} ", r.id)
            .bytes()
            .cycle()
            .take(3000 + r.id as usize)
            .collect();
        let full = pfiles.join(&rel);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &bytes).unwrap();
        expected.push((sfiles.join(&rel), bytes));
    }
    let updated = |conn: &mut SqliteConnection| -> i64 {
        diesel::dsl::select(diesel::dsl::sql::<BigInt>(
            "(SELECT COUNT(*) FROM geo_events WHERE event_name = 'updated')",
        ))
        .get_result(conn)
        .unwrap()
    };
    let before = updated(&mut conn);
    let last = chosen.last().unwrap().id;
    let n = diesel::sql_query(format!(
        "UPDATE widgets SET file_path = 'raw/' || id || '.bin' WHERE id <= {last}"
    ))
    .execute(&mut conn)
    .unwrap();
    assert_eq!(n, 50);
    assert_eq!(
        updated(&mut conn) - before,
        50,
        "the triggers published one `updated` per row"
    );

    wait_until(
        "the 50 repointed files on the secondary with their new content",
        Duration::from_secs(60),
        || {
            expected
                .iter()
                .all(|(p, bytes)| std::fs::read(p).is_ok_and(|b| &b == bytes))
        },
    );
    // The rows left alone still have their old file.
    for r in &rows[50..] {
        assert!(same_file(&pfiles, &sfiles, &r.file_path), "{}", r.file_path);
    }
}
