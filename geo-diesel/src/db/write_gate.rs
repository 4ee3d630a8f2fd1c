//! One writer at a time per SQLite file within this process, queued on a lock instead of in
//! SQLite's busy handler.
//!
//! SQLite lets one connection write at a time. A connection that finds the write lock taken
//! waits in its busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, … ms between tries and so
//! misses a lock released in between: two busy threads of one process (the log cursor writing
//! registry rows, the scheduler claiming and recording) spent more time asleep than writing
//! (B2 with the workers: 1.6 s, 0.84 s of it CPU, about 1.7 s of busy-handler sleeps across the
//! threads). Write transactions of one process take this gate first and are woken the moment
//! it is free.
//!
//! The gate only orders this process's writers: other processes still meet at SQLite's lock and
//! its busy timeout, and a writer that waited the whole busy timeout for the gate goes on to
//! SQLite's lock as before. It is reentrant, so a thread that holds it and opens a second
//! connection to the same file meets SQLite's lock, as it would without the gate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use diesel::SqliteConnection;
use parking_lot::ReentrantMutex;

type Gate = ReentrantMutex<()>;

/// The gates by database file (the main database's absolute path, as SQLite names it).
static GATES: Mutex<BTreeMap<String, Weak<Gate>>> = Mutex::new(BTreeMap::new());

/// `SELECT file FROM pragma_database_list WHERE name = 'main'`, as a query type with a static
/// id so that Diesel keeps its prepared statement (asked at every write transaction).
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
struct MainFile;

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for MainFile {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("SELECT file FROM pragma_database_list WHERE name = 'main'");
        Ok(())
    }
}

impl diesel::query_builder::Query for MainFile {
    type SqlType = diesel::sql_types::Text;
}

impl diesel::RunQueryDsl<SqliteConnection> for MainFile {}

/// The gate of `conn`'s database file; `None` for an in-memory or temporary database (one
/// connection's own) or when SQLite cannot say.
fn gate_of(conn: &mut SqliteConnection) -> Option<Arc<Gate>> {
    use diesel::RunQueryDsl;
    let file: String = MainFile.get_result(conn).ok()?;
    if file.is_empty() {
        return None;
    }
    let mut gates = GATES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(gate) = gates.get(&file).and_then(Weak::upgrade) {
        return Some(gate);
    }
    // Files whose connections are all gone leave a dead entry: drop those with each new one.
    gates.retain(|_, g| g.strong_count() > 0);
    let gate = Arc::new(Gate::new(()));
    gates.insert(file, Arc::downgrade(&gate));
    Some(gate)
}

/// Runs `f` (a write transaction on `conn`) holding its file's gate: waiting at most the busy
/// timeout for it, then going on without it.
pub(crate) fn gated<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&mut SqliteConnection) -> T,
) -> T {
    let gate = gate_of(conn);
    let _held = gate.as_deref().and_then(|g| {
        g.try_lock_for(Duration::from_millis(u64::from(
            crate::connection::sqlite::BUSY_TIMEOUT_MS,
        )))
    });
    f(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::WriteTransaction;
    use diesel::connection::SimpleConnection;

    #[test]
    fn one_gate_per_file_none_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let open =
            |name: &str| crate::connection::sqlite::establish(dir.path().join(name)).unwrap();
        let (mut a1, mut a2, mut b) = (open("a.db"), open("a.db"), open("b.db"));
        let (g1, g2, gb) = (
            gate_of(&mut a1).unwrap(),
            gate_of(&mut a2).unwrap(),
            gate_of(&mut b).unwrap(),
        );
        assert!(
            Arc::ptr_eq(&g1, &g2),
            "two connections to one file share its gate"
        );
        assert!(!Arc::ptr_eq(&g1, &gb), "another file has its own");
        let mut memory = diesel::Connection::establish(":memory:").unwrap();
        assert!(gate_of(&mut memory).is_none());
    }

    /// A writer of this process waits at the gate, not in SQLite's busy handler: with no busy
    /// timeout at all, the second writer would fail at once with "database is locked".
    #[test]
    fn a_second_writer_waits_at_the_gate_instead_of_failing_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let mut first = crate::connection::sqlite::establish(&path).unwrap();
        first.batch_execute("CREATE TABLE t (v INTEGER)").unwrap();
        let mut second = crate::connection::sqlite::establish(&path).unwrap();
        second.batch_execute("PRAGMA busy_timeout = 0").unwrap();
        let (entered, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                first
                    .write_transaction::<_, diesel::result::Error, _>(|c| {
                        c.batch_execute("INSERT INTO t VALUES (1)")?;
                        entered.wait();
                        go.wait();
                        std::thread::sleep(Duration::from_millis(50));
                        Ok(())
                    })
                    .unwrap();
            });
            entered.wait();
            go.wait();
            // The first holds SQLite's write lock for 50 ms more.
            second
                .write_transaction::<_, diesel::result::Error, _>(|c| {
                    c.batch_execute("INSERT INTO t VALUES (2)")
                })
                .expect("waited at the gate");
        });
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query("SELECT COUNT(*) AS n FROM t")
            .get_result(&mut second)
            .unwrap();
        assert_eq!(n.n, 2);
    }
}
