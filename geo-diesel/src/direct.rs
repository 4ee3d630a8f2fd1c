//! The direct [`PrimarySource`]: a secondary that reads the primary's database (or its read
//! replica) and blob store itself. This is the embedded single-machine mode, and the
//! PostgreSQL-streaming-replica deployment GitLab uses.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use diesel::prelude::*;
use geo_core::ReplicableDescriptor;
use geo_core::blob_store::{BlobPath, BlobStore};
use geo_core::checksum::{Checksum, ChecksumAlgorithm};
use geo_core::event::Event;
use geo_core::source::{
    BlobStream, EventFeed, PrimaryChecksum, PrimaryIdentity, PrimarySource, RangedBlobStream,
    SourceError,
};

use crate::db::DbPool;
use crate::db::with_conn;
use crate::notify::EventWatch;
use crate::schema::geo_events;

/// Reads a primary directly: its database pool and its blob store.
///
/// Its [`event_feed_wait`](PrimarySource::event_feed_wait) waits on the database's
/// [`EventWatch`] (see [`crate::notify`]): it answers within a few milliseconds of the commit of
/// an event by anyone, and holds no connection while it waits.
///
/// **Pruning.** Its feed answers [`SourceError::EventsPruned`] when the primary pruned events
/// past what the reader consumed (what the log cursor noted with
/// [`note_consumed`](PrimarySource::note_consumed), else the `after` id asked for). A direct
/// secondary is known to the primary, and holds its pruning back, only when it is given a
/// name ([`DirectSource::for_secondary`]): each noted position is then recorded in the
/// primary's `geo_known_secondaries`, which needs write access to the primary database (a
/// read replica cannot; the failure is logged and the secondary is then protected by the
/// retention bound only, and recovers if it falls past it). An unnamed direct source is
/// unknown to the primary: with no other secondary known, the pruning worker prunes everything.
#[derive(Clone)]
pub struct DirectSource {
    db: DbPool,
    store: Arc<dyn BlobStore>,
    watch: EventWatch,
    secondary: Option<Arc<str>>,
    consumed: Arc<std::sync::atomic::AtomicI64>,
}

/// What [`DirectSource::consumed`] holds before the cursor noted anything.
const NOT_NOTED: i64 = i64::MIN;

impl std::fmt::Debug for DirectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSource")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

fn transient(what: &str) -> impl FnOnce(diesel::result::Error) -> SourceError + '_ {
    move |e| SourceError::transient(what.to_string(), e)
}

fn lookup(name: &str) -> Result<&'static ReplicableDescriptor, SourceError> {
    geo_core::find_replicable(name).ok_or_else(|| SourceError::UnknownReplicable {
        replicable: name.to_string(),
    })
}

type EventRow = (
    i64,
    String,
    String,
    i64,
    crate::json::JsonValue,
    crate::types::UtcDateTime,
);

fn to_event(r: EventRow) -> Event {
    Event {
        id: r.0,
        replicable_name: r.1,
        event_name: r.2,
        model_record_id: r.3,
        payload: r.4.into_inner(),
        created_at: r.5.get(),
    }
}

impl DirectSource {
    /// A source reading the primary database through `db` and its files through `store`.
    pub fn new(db: DbPool, store: Arc<dyn BlobStore>) -> Self {
        let watch = EventWatch::new(db.clone());
        DirectSource {
            db,
            store,
            watch,
            secondary: None,
            consumed: Arc::new(std::sync::atomic::AtomicI64::new(NOT_NOTED)),
        }
    }

    /// This source reads for the secondary `name`: every position the log cursor notes is
    /// recorded in the primary's `geo_known_secondaries` under that name, so the primary prunes
    /// nothing it still needs (up to the retention bound).
    #[must_use]
    pub fn for_secondary(mut self, name: &str) -> Self {
        self.secondary = Some(Arc::from(name));
        self
    }

    /// What the reader consumed, as noted, else `after`.
    fn consumed_or(&self, after: i64) -> i64 {
        match self.consumed.load(std::sync::atomic::Ordering::Relaxed) {
            NOT_NOTED => after,
            c => c,
        }
    }

    /// The watch of the primary database's events, for a server that waits on it without a
    /// thread ([`crate::notify::Listening::changed`]).
    pub fn event_watch(&self) -> &EventWatch {
        &self.watch
    }

    fn conn(&self) -> Result<crate::db::PooledConn, SourceError> {
        self.db
            .get()
            .map_err(|e| SourceError::transient("connecting to the primary database", e))
    }
}

#[derive(QueryableByName)]
struct Mark {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    mark: Option<i64>,
}

/// The highest event id ever issued: SQLite's `AUTOINCREMENT` counter (kept when events are
/// pruned) or the PostgreSQL sequence's last value; 0 before the first event.
fn high_water_mark(conn: &mut impl crate::db::AsDbConn) -> QueryResult<i64> {
    let rows: Vec<Mark> = match conn.db() {
        crate::db::DbConn::Sqlite(c) => diesel::sql_query(
            "SELECT seq AS mark FROM sqlite_sequence WHERE name = 'geo_events'",
        )
        .load(c)?,
        #[cfg(feature = "postgres")]
        crate::db::DbConn::Pg(c) => diesel::sql_query(
            "SELECT pg_sequence_last_value(pg_get_serial_sequence('geo_events', 'id')::regclass) AS mark",
        )
        .load(c)?,
    };
    Ok(rows.into_iter().find_map(|r| r.mark).unwrap_or(0))
}

/// The primary database's identity ([`crate::schema::geo_node_identity`]) and high-water mark.
pub fn primary_identity(
    conn: &mut impl crate::db::AsDbConn,
) -> QueryResult<Option<PrimaryIdentity>> {
    use crate::schema::geo_node_identity as ident;
    let identity: Option<String> = with_conn!(conn, c => ident::table
        .find(0i16)
        .select(ident::identity)
        .first(c)
        .optional()?);
    let Some(identity) = identity else {
        return Ok(None);
    };
    Ok(Some(PrimaryIdentity {
        identity,
        high_water_mark: high_water_mark(conn)?,
    }))
}

fn event_rows(
    conn: &mut impl crate::db::AsDbConn,
    after_id: i64,
    limit: usize,
) -> QueryResult<Vec<EventRow>> {
    with_conn!(conn, c => geo_events::table
        .filter(geo_events::id.gt(after_id))
        .order(geo_events::id)
        .limit(limit as i64)
        .load(c))
}

impl PrimarySource for DirectSource {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let rows =
            event_rows(&mut self.conn()?, after_id, limit).map_err(transient("reading events"))?;
        Ok(rows.into_iter().map(to_event).collect())
    }

    fn primary_identity(&self) -> Result<Option<PrimaryIdentity>, SourceError> {
        primary_identity(&mut self.conn()?).map_err(transient("reading the primary's identity"))
    }

    /// Records the position for the named secondary ([`DirectSource::for_secondary`]); a
    /// failure (a read-only replica) is logged, never fatal.
    fn note_consumed(&self, consumed: i64) {
        self.consumed
            .store(consumed, std::sync::atomic::Ordering::Relaxed);
        let Some(name) = &self.secondary else {
            return;
        };
        let now = chrono::Utc::now();
        let recorded = self.conn().map_err(|e| e.to_string()).and_then(|mut c| {
            crate::primary::sites::record_secondary(&mut c, name, Some(consumed), now)
                .map_err(|e| e.to_string())
        });
        if let Err(error) = recorded {
            tracing::warn!(secondary = %name, %error, "could not record this secondary's position on the primary; only the retention bound keeps its events");
        }
    }

    /// One read transaction: the events, then the identity and high-water mark (so the mark is
    /// at least every id returned, also on PostgreSQL where the sequence is not transactional),
    /// then the pruning mark (read after the events: a prune that removed one of them committed
    /// its mark with it). A reader that consumed less than the mark gets
    /// [`SourceError::EventsPruned`].
    fn event_feed(&self, after_id: i64, limit: usize) -> Result<EventFeed, SourceError> {
        let mut conn = self.conn()?;
        let (rows, primary, pruned) =
            // Read only: a deferred transaction, one snapshot for the three reads.
            with_conn!(&mut conn, c => c.transaction::<_, diesel::result::Error, _>(|c| {
                let rows = event_rows(c, after_id, limit)?;
                let primary = primary_identity(c)?;
                Ok((rows, primary, crate::primary::prune::pruned_through(c)?))
            }))
            .map_err(transient("reading the event feed"))?;
        let consumed = self.consumed_or(after_id);
        if consumed < pruned {
            return Err(SourceError::EventsPruned {
                pruned_through: pruned,
                consumed,
            });
        }
        Ok(EventFeed {
            events: rows.into_iter().map(to_event).collect(),
            primary,
        })
    }

    /// Reads the feed; while it is empty and `wait` has not passed, waits for the database's
    /// [`EventWatch`] (or an in-process [`crate::notify::events_committed`]) and reads again.
    /// No connection is held between reads.
    fn event_feed_wait(
        &self,
        after_id: i64,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<EventFeed, SourceError> {
        if wait.is_zero() {
            return self.event_feed(after_id, limit);
        }
        let deadline = Instant::now() + wait;
        let mut listening = self.watch.listen();
        loop {
            listening.rearm();
            let feed = self.event_feed(after_id, limit)?;
            let now = Instant::now();
            if !feed.events.is_empty() || now >= deadline {
                return Ok(feed);
            }
            listening.wait_until(deadline.min(now + crate::notify::RECHECK));
        }
    }

    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        let mut conn = self.conn()?;
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            let rows: Vec<EventRow> = with_conn!(&mut conn, c => geo_events::table
                .filter(geo_events::id.eq_any(chunk))
                .order(geo_events::id)
                .load(c)
                .map_err(transient("reading events by id"))?);
            out.extend(rows.into_iter().map(to_event));
        }
        Ok(out)
    }

    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        let mut conn = self.conn()?;
        with_conn!(&mut conn, c => geo_events::table
            .select(diesel::dsl::max(geo_events::id))
            .first(c)
            .map_err(transient("reading the last event id")))
    }

    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        crate::primary::model_ids(&mut conn, d, *range.start(), *range.end())
            .map_err(|e| SourceError::transient("reading model ids", e))
    }

    fn model_ids_in_partitions(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
        partitions: &std::collections::BTreeSet<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        crate::primary::model_ids_in_partitions(
            &mut conn,
            d,
            *range.start(),
            *range.end(),
            partitions,
        )
        .map_err(|e| SourceError::transient("reading model ids of selected partitions", e))
    }

    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        crate::primary::max_model_id(&mut conn, d)
            .map_err(|e| SourceError::transient("reading the max model id", e))
    }

    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(1000) {
            let rows = crate::primary::primary_checksums(&mut conn, d, chunk)
                .map_err(|e| SourceError::transient("reading primary checksums", e))?;
            for r in rows {
                let checksum = r
                    .checksum
                    .as_deref()
                    .and_then(|b| Checksum::from_bytes(b).ok());
                out.insert(
                    r.id,
                    PrimaryChecksum {
                        state: r.state,
                        algorithm: ChecksumAlgorithm::Blake3,
                        checksum,
                        verified_at: None,
                    },
                );
            }
        }
        Ok(out)
    }

    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        let rows = crate::primary::blob_paths(&mut conn, d, &[id])
            .map_err(|e| SourceError::transient("reading a blob path", e))?;
        Ok(rows.into_iter().next().map(|(_, p)| p))
    }

    fn blob_paths(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, String>, SourceError> {
        let d = lookup(replicable)?;
        let mut conn = self.conn()?;
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(1000) {
            let rows = crate::primary::blob_paths(&mut conn, d, chunk)
                .map_err(|e| SourceError::transient("reading blob paths", e))?;
            out.extend(rows);
        }
        Ok(out)
    }

    fn open_blob_at(
        &self,
        replicable: &str,
        id: i64,
        path: &BlobPath,
    ) -> Result<BlobStream, SourceError> {
        match self.store.open(path) {
            Ok(blob) => Ok(BlobStream {
                reader: blob.reader,
                size: Some(blob.size),
                checksum: None,
            }),
            Err(e) if e.is_not_found() => Err(SourceError::MissingOnPrimary {
                replicable: replicable.to_string(),
                id,
            }),
            Err(e) => Err(SourceError::transient(
                format!("opening the file of {replicable} {id}"),
                e,
            )),
        }
    }

    /// Seeks in the primary's blob store: nothing before `offset` is read. An offset past the
    /// end (the file shrank) sends the whole file.
    fn open_blob_from(
        &self,
        replicable: &str,
        id: i64,
        path: &BlobPath,
        offset: u64,
    ) -> Result<RangedBlobStream, SourceError> {
        let opened = match self.store.open_at(path, offset) {
            Ok(blob) if blob.size < offset => {
                return Ok(RangedBlobStream {
                    stream: self.open_blob_at(replicable, id, path)?,
                    start: 0,
                });
            }
            Ok(blob) => blob,
            Err(e) if e.is_not_found() => {
                return Err(SourceError::MissingOnPrimary {
                    replicable: replicable.to_string(),
                    id,
                });
            }
            Err(e) => {
                return Err(SourceError::transient(
                    format!("opening the file of {replicable} {id}"),
                    e,
                ));
            }
        };
        Ok(RangedBlobStream {
            stream: BlobStream {
                reader: opened.reader,
                size: Some(opened.size - offset),
                checksum: None,
            },
            start: offset,
        })
    }

    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let Some(path) = self.blob_path(replicable, id)? else {
            return Err(SourceError::RecordNotFound {
                replicable: replicable.to_string(),
                id,
            });
        };
        let path = BlobPath::new(&path)
            .map_err(|e| SourceError::other(format!("{replicable} {id} has a bad blob path"), e))?;
        self.open_blob_at(replicable, id, &path)
    }
}
