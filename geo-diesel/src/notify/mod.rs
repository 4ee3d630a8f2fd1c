//! Notifications, in one place: the primary's "events changed" signal that a waiting event feed
//! awaits, and the secondary's "registry work" signal that its sync and verification workers
//! await.
//!
//! ## Events changed (primary)
//!
//! A feed read that finds nothing after its id ([`crate::direct::DirectSource`]'s
//! `event_feed_wait`, the HTTP server's `events?wait=`) waits on [`events_signal`] and reads
//! again when it changes. The signal is bumped
//!
//! - **in process**, by [`events_committed`], after the library commits an event it wrote itself
//!   (the primary verifier's `checksum_succeeded`); an application that publishes with
//!   [`publish_created`](crate::publish_created) and friends in its own transaction may call it
//!   after its commit, which spares the waiter the watch's few milliseconds;
//! - **from the database**, by an [`EventWatch`], one per primary database, which sees every
//!   commit of an event by anyone — the model-table triggers, the library, another process, raw
//!   SQL:
//!   - PostgreSQL: a statement-level trigger on `geo_events` runs `pg_notify('geo_events', '')`
//!     (migration step `geo_notify_primary`, [`crate::primary::triggers::notify_triggers`]);
//!     NOTIFY is transactional, so it is delivered at commit. The watch holds one pooled
//!     connection that `LISTEN`s on [`CHANNEL`] and reads what arrived every
//!     [`POLL_INTERVAL`] (Diesel's `notifications_iter` does not block, so the socket is
//!     checked rather than waited on; no query is sent). A lost connection is dropped and
//!     replaced; every (re)`LISTEN` bumps the signal once, so a commit made while no one
//!     listened is read by the next feed query.
//!   - SQLite: a dedicated connection to the same file checks `PRAGMA data_version` every
//!     [`POLL_INTERVAL`]; its value changes whenever another connection — in this process or
//!     another — commits. Chosen over `sqlite3_update_hook`, which sees only the changes of the
//!     connection it is installed on (so neither another process nor the application's own
//!     pool), fires before commit, and needs `unsafe` FFI, which this workspace forbids.
//!
//!   The watch runs only while someone waits: its thread starts with the first waiter, polls
//!   while there are waiters, and after [`LINGER`] without any gives its connection back and
//!   sleeps until the next one. A quiet primary with no waiting secondary does no work.
//!
//! The signal is process-wide: a change of one database wakes the waiters of every database
//! in the process, which each read once and go back to waiting (one query, only when several
//! primaries share a process).
//!
//! ## Registry work (secondary)
//!
//! [`registry_changed`] bumps [`registry_signal`]: the log cursor after applying events, the
//! backfill after creating rows, a sync or verification pass that did something, and the
//! operator's resync and reverify. A secondary's sync and verification threads wait on it
//! (with their idle timer as a fallback for rows made due by time or by another process), so a
//! new pending row is picked up at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::db::DbPool;

mod signal;
use signal::lock;
pub use signal::{Signal, events_committed, events_signal, registry_changed, registry_signal};

/// The PostgreSQL channel the `geo_events` trigger notifies.
pub const CHANNEL: &str = "geo_events";

/// How often a watching thread checks its database for a commit while someone waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How long a watch keeps its connection after the last waiter left (a secondary long-polling
/// comes back within milliseconds).
pub const LINGER: Duration = Duration::from_secs(10);

/// How long a waiting feed trusts the signal before it reads again anyway: a safety net, never
/// the way changes are normally seen.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Watches one primary database for committed events while someone waits (see the module
/// docs). Cheap to clone; the watching thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct EventWatch {
    handle: Arc<WatchHandle>,
}

impl std::fmt::Debug for EventWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWatch")
            .field("db", &self.handle.shared.db)
            .field(
                "waiters",
                &self.handle.shared.waiters.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// Closes the watch when the last [`EventWatch`] goes.
struct WatchHandle {
    shared: Arc<Shared>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_all();
    }
}

struct Shared {
    db: DbPool,
    waiters: AtomicUsize,
    state: Mutex<WatchState>,
    wake: Condvar,
}

#[derive(Default)]
struct WatchState {
    closed: bool,
    started: bool,
}

impl EventWatch {
    /// A watch of the primary database behind `db`. No thread runs before the first
    /// [`listen`](EventWatch::listen).
    pub fn new(db: DbPool) -> Self {
        EventWatch {
            handle: Arc::new(WatchHandle {
                shared: Arc::new(Shared {
                    db,
                    waiters: AtomicUsize::new(0),
                    state: Mutex::new(WatchState::default()),
                    wake: Condvar::new(),
                }),
            }),
        }
    }

    /// Starts waiting: the watch checks its database until the returned guard is dropped.
    /// Read the feed after this call (the guard remembers the signal's generation first), then
    /// wait on the guard.
    pub fn listen(&self) -> Listening {
        let shared = &self.handle.shared;
        let start = {
            // Counted under the lock the thread checks it under, so its wait cannot miss us.
            let mut st = lock(&shared.state);
            shared.waiters.fetch_add(1, Ordering::SeqCst);
            !std::mem::replace(&mut st.started, true)
        };
        if start {
            let s = Arc::clone(shared);
            if let Err(e) = thread::Builder::new()
                .name("geo-event-watch".into())
                .spawn(move || watch_thread(&s))
            {
                tracing::warn!(error = %e, "could not start the event watch; waiting feeds re-read every {RECHECK:?}");
            }
        } else {
            shared.wake.notify_all();
        }
        Listening {
            shared: Arc::clone(shared),
            seen: events_signal().generation(),
        }
    }

    /// Waiters now (for tests and status).
    pub fn waiters(&self) -> usize {
        self.handle.shared.waiters.load(Ordering::SeqCst)
    }
}

/// One waiter of an [`EventWatch`]; the watch keeps checking while it lives.
pub struct Listening {
    shared: Arc<Shared>,
    seen: u64,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Listening {
    /// Remembers the signal's current generation: call it right before each read of the feed.
    pub fn rearm(&mut self) {
        self.seen = events_signal().generation();
    }

    /// Blocks until something changed since the last [`rearm`](Listening::rearm) (or
    /// [`EventWatch::listen`]) or `deadline` passes; returns whether it changed.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        events_signal().wait_until(self.seen, deadline)
    }

    /// Resolves once something changed since the last [`rearm`](Listening::rearm) (wrap it in
    /// a timeout). Holds no thread while pending.
    pub async fn changed(&self) {
        events_signal().changed(self.seen).await
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.shared.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a watch checks: the backend-specific half.
enum Watcher {
    /// A dedicated connection to the SQLite file and the last `data_version` it saw.
    Sqlite {
        conn: diesel::SqliteConnection,
        version: i64,
    },
    /// A pooled PostgreSQL connection that `LISTEN`s on [`CHANNEL`].
    #[cfg(feature = "postgres")]
    Pg(crate::db::PooledConn),
}

#[derive(diesel::QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

#[derive(diesel::QueryableByName)]
struct DatabaseFile {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    file: String,
}

/// Why a watch cannot check its database.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error("primary database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("primary database: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("opening the SQLite file {file}: {source}")]
    Open {
        file: String,
        source: diesel::ConnectionError,
    },
    /// An in-memory SQLite database: no other connection sees it, nothing to watch.
    #[error("the SQLite database has no file to watch")]
    NoFile,
}

fn data_version(conn: &mut diesel::SqliteConnection) -> diesel::QueryResult<i64> {
    use diesel::RunQueryDsl;
    let rows: Vec<DataVersion> = diesel::sql_query("PRAGMA data_version").load(conn)?;
    Ok(rows.first().map_or(0, |r| r.data_version))
}

impl Watcher {
    fn open(db: &DbPool) -> Result<Self, WatchError> {
        use diesel::RunQueryDsl;
        match db {
            DbPool::Sqlite(pool) => {
                let files: Vec<DatabaseFile> =
                    diesel::sql_query("PRAGMA database_list").load(&mut *pool.get()?)?;
                let file = files
                    .into_iter()
                    .find(|f| f.name == "main")
                    .map(|f| f.file)
                    .filter(|f| !f.is_empty())
                    .ok_or(WatchError::NoFile)?;
                let mut conn = crate::connection::sqlite::establish(&file)
                    .map_err(|source| WatchError::Open { file, source })?;
                let version = data_version(&mut conn)?;
                Ok(Watcher::Sqlite { conn, version })
            }
            #[cfg(feature = "postgres")]
            DbPool::Pg(_) => {
                let mut conn = db.get()?;
                if let crate::db::DbConn::Pg(c) = crate::db::AsDbConn::db(&mut conn) {
                    diesel::sql_query(format!("LISTEN {CHANNEL}")).execute(c)?;
                }
                Ok(Watcher::Pg(conn))
            }
        }
    }

    /// Whether something was committed since the last check.
    fn check(&mut self) -> Result<bool, WatchError> {
        match self {
            Watcher::Sqlite { conn, version } => {
                let now = data_version(conn)?;
                Ok(std::mem::replace(version, now) != now)
            }
            #[cfg(feature = "postgres")]
            Watcher::Pg(conn) => {
                let crate::db::DbConn::Pg(c) = crate::db::AsDbConn::db(conn) else {
                    return Ok(false);
                };
                let mut any = false;
                for n in c.notifications_iter() {
                    n?;
                    any = true;
                }
                Ok(any)
            }
        }
    }

    /// Stops listening before the connection goes back to its pool.
    fn close(self) {
        #[cfg(feature = "postgres")]
        if let Watcher::Pg(mut conn) = self
            && let crate::db::DbConn::Pg(c) = crate::db::AsDbConn::db(&mut conn)
        {
            use diesel::RunQueryDsl;
            if diesel::sql_query("UNLISTEN *").execute(c).is_ok() {
                for _ in c.notifications_iter() {}
            }
        }
    }
}

/// The watching thread of one [`EventWatch`].
fn watch_thread(shared: &Shared) {
    let mut watcher: Option<Watcher> = None;
    let mut failures = 0u32;
    let mut last_waiter = Instant::now();
    loop {
        // Sleep until someone waits (or, with a connection open, until the linger runs out).
        {
            let mut st = lock(&shared.state);
            loop {
                if st.closed {
                    drop(st);
                    if let Some(w) = watcher.take() {
                        w.close();
                    }
                    return;
                }
                if shared.waiters.load(Ordering::SeqCst) > 0 {
                    last_waiter = Instant::now();
                    break;
                }
                let Some(w) = watcher.take() else {
                    st = shared.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                    continue;
                };
                let idle = last_waiter.elapsed();
                if idle >= LINGER {
                    drop(st);
                    w.close();
                    tracing::debug!("event watch idle: connection given back");
                    st = lock(&shared.state);
                    continue;
                }
                watcher = Some(w);
                st = shared
                    .wake
                    .wait_timeout(st, LINGER - idle)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let pause = match watcher.as_mut() {
            None => match Watcher::open(&shared.db) {
                Ok(w) => {
                    if failures > 0 {
                        tracing::info!("event watch connected again");
                    }
                    failures = 0;
                    watcher = Some(w);
                    // Anything committed before the watch looked is read by the next query.
                    events_committed();
                    POLL_INTERVAL
                }
                Err(WatchError::NoFile) => {
                    tracing::debug!("in-memory SQLite primary: no event watch");
                    return;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(error = %e, "event watch cannot connect; waiting feeds re-read every {RECHECK:?} meanwhile");
                    }
                    Duration::from_millis(100u64 << failures.min(6))
                }
            },
            Some(w) => match w.check() {
                Ok(changed) => {
                    if changed {
                        events_committed();
                    }
                    POLL_INTERVAL
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event watch lost its connection; reconnecting");
                    watcher = None;
                    failures = 1;
                    POLL_INTERVAL
                }
            },
        };
        let st = lock(&shared.state);
        if !st.closed {
            drop(
                shared
                    .wake
                    .wait_timeout(st, pause)
                    .unwrap_or_else(PoisonError::into_inner),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_sees_a_bump_and_times_out_without_one() {
        let s = Arc::new(Signal::new());
        let seen = s.generation();
        assert!(!s.wait_until(seen, Instant::now() + Duration::from_millis(20)));
        let s2 = Arc::clone(&s);
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            s2.notify();
        });
        assert!(s.wait_until(seen, Instant::now() + Duration::from_secs(10)));
        assert_ne!(s.generation(), seen);
        t.join().unwrap();
    }
}
