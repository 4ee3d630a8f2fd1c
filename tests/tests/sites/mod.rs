//! The runtime suites' fixture: a primary and a secondary of the widgets example on two fresh
//! databases of one backend and two folders, with a manual clock, and readers for what the tests
//! look at. Shared by `runtime.rs` (both backends) and `pg_runtime.rs` (PostgreSQL only).
//!
//! It lives beside the suites rather than in the `geo_tests` library because it links the
//! widgets example, whose replicables would then be registered in every test binary (the
//! migration tests register their own and count them).

// Each suite uses a part of the fixture.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_diesel::geo_core::checksum::Checksum;
use geo_diesel::geo_core::clock::{Env, ManualClock};
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::geo_core::{Backend, Replicable, ReplicableDescriptor, Role};
use geo_diesel::schema::geo_events;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::sql_types::GeoTimestamp;
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_diesel::{JsonValue, UtcDateTime};
use widgets::{Gadget, Widget, app};

use geo_tests::{TestDatabase, checksum, data, on_conn, read_opt, sum, temp_dir};

/// GitLab's replication and verification state values, as stored.
pub mod state {
    /// Replication: pending.
    pub const PENDING: i16 = 0;
    /// Replication: started.
    pub const STARTED: i16 = 1;
    /// Replication: synced.
    pub const SYNCED: i16 = 2;
    /// Replication: failed.
    pub const FAILED: i16 = 3;
    /// Verification: pending.
    pub const V_PENDING: i16 = 0;
    /// Verification: succeeded.
    pub const V_SUCCEEDED: i16 = 2;
    /// Verification: failed.
    pub const V_FAILED: i16 = 3;
    /// Verification: disabled.
    pub const V_DISABLED: i16 = 4;
}

/// The start time of every manual clock.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// The widget descriptor.
pub fn wd() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

/// The gadget descriptor.
pub fn gd() -> &'static ReplicableDescriptor {
    <Gadget as Replicable>::DESCRIPTOR
}

/// Runs SQL statements on a pooled connection.
///
/// # Panics
///
/// When they fail.
pub fn exec(conn: &mut PooledConn, sql: &str) {
    try_exec(conn, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs SQL statements on a pooled connection and returns the database's answer.
pub fn try_exec(conn: &mut PooledConn, sql: &str) -> QueryResult<()> {
    on_conn!(conn, c => c.batch_execute(sql))
}

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

/// The number a query returns in its column `n` (0 for SQL `NULL` or no row).
///
/// # Panics
///
/// When the query fails.
pub fn number(conn: &mut PooledConn, sql: &str) -> i64 {
    let rows: Vec<Number> =
        on_conn!(conn, c => sql_query(sql).load(c)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.first().and_then(|r| r.n).unwrap_or(0)
}

/// One registry row, every column the tests look at.
#[derive(Debug, Clone, QueryableByName)]
pub struct RegRow {
    /// Replication state.
    #[diesel(sql_type = SmallInt)]
    pub state: i16,
    /// Retry count.
    #[diesel(sql_type = SmallInt)]
    pub retry_count: i16,
    /// Next retry.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub retry_at: Option<UtcDateTime>,
    /// Last sync attempt.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub last_synced_at: Option<UtcDateTime>,
    /// Failure text.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_sync_failure: Option<String>,
    /// Verification state.
    #[diesel(sql_type = SmallInt)]
    pub verification_state: i16,
    /// Verification retry count.
    #[diesel(sql_type = SmallInt)]
    pub verification_retry_count: i16,
    /// Next verification retry.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub verification_retry_at: Option<UtcDateTime>,
    /// Verified at.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub verified_at: Option<UtcDateTime>,
    /// Local checksum.
    #[diesel(sql_type = Nullable<Binary>)]
    pub verification_checksum: Option<Vec<u8>>,
    /// The mismatching local checksum.
    #[diesel(sql_type = Nullable<Binary>)]
    pub verification_checksum_mismatched: Option<Vec<u8>>,
    /// Mismatch flag.
    #[diesel(sql_type = Bool)]
    pub checksum_mismatch: bool,
    /// Verification failure text.
    #[diesel(sql_type = Nullable<Text>)]
    pub verification_failure: Option<String>,
    /// Missing on the primary.
    #[diesel(sql_type = Bool)]
    pub missing_on_primary: bool,
}

/// One primary verification row (states table or inline columns).
#[derive(Debug, Clone, QueryableByName)]
pub struct PrimaryRow {
    /// Verification state.
    #[diesel(sql_type = SmallInt)]
    pub verification_state: i16,
    /// Retry count.
    #[diesel(sql_type = SmallInt)]
    pub verification_retry_count: i16,
    /// Next retry.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub verification_retry_at: Option<UtcDateTime>,
    /// Verified at.
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    pub verified_at: Option<UtcDateTime>,
    /// Checksum.
    #[diesel(sql_type = Nullable<Binary>)]
    pub verification_checksum: Option<Vec<u8>>,
    /// Failure text.
    #[diesel(sql_type = Nullable<Text>)]
    pub verification_failure: Option<String>,
}

/// A stored event.
#[derive(Debug, Clone, QueryableByName)]
pub struct EventRow {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Replicable.
    #[diesel(sql_type = Text)]
    pub replicable_name: String,
    /// Event.
    #[diesel(sql_type = Text)]
    pub event_name: String,
    /// Model id.
    #[diesel(sql_type = BigInt)]
    pub model_record_id: i64,
    /// Payload text.
    #[diesel(sql_type = Text)]
    pub payload: String,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// A primary and a secondary on two fresh databases of one backend and two folders, with a
/// manual clock shared by both. Fields drop in order: workers and pools first, the databases
/// and the folder last.
pub struct Sites {
    /// The primary's verification workers.
    pub verifier: PrimaryVerifier,
    /// The secondary.
    pub secondary: Arc<Secondary>,
    /// The primary database.
    pub primary_db: DbPool,
    /// The secondary's tracking database.
    pub tracking: DbPool,
    /// The primary's files.
    pub primary_store: Arc<LocalBlobStore>,
    /// The secondary's files.
    pub secondary_store: Arc<LocalBlobStore>,
    /// Clock and random source shared by both sites.
    pub env: Env,
    /// Moves the time.
    pub clock: ManualClock,
    /// The primary database itself (its URL for more pools, connections, processes).
    pub primary_database: TestDatabase,
    /// The tracking database itself.
    pub tracking_database: TestDatabase,
    /// Holds both blob stores (`primary-files/`, `secondary-files/`) and whatever else a test
    /// puts there.
    pub dir: tempfile::TempDir,
}

impl Sites {
    /// Both sites on `backend` with the direct source; `random` is the fixed jitter draw.
    pub fn open(backend: Backend, config: SecondaryConfig, random: u32) -> Self {
        Self::open_with(backend, config, random, |s| s)
    }

    /// Both sites on `backend`; `wrap` may wrap the direct source in a test double.
    ///
    /// # Panics
    ///
    /// When a database, a migration or a folder cannot be made.
    pub fn open_with(
        backend: Backend,
        config: SecondaryConfig,
        random: u32,
        wrap: impl FnOnce(Arc<dyn PrimarySource>) -> Arc<dyn PrimarySource>,
    ) -> Self {
        let primary_database = TestDatabase::fresh(backend, "rt_primary");
        let tracking_database = TestDatabase::fresh(backend, "rt_tracking");
        let dir = temp_dir();
        let primary_db = primary_database.pool(8);
        let tracking = tracking_database.pool(8);
        {
            let mut conn = primary_db.get().expect("primary conn");
            app::create_app_schema(&mut conn).expect("app schema");
            on_conn!(&mut conn, c => geo_diesel::run_migrations(c, Role::Primary))
                .expect("primary migrations");
            let mut conn = tracking.get().expect("tracking conn");
            on_conn!(&mut conn, c => geo_diesel::run_migrations(c, Role::Secondary))
                .expect("secondary migrations");
        }
        let primary_store =
            Arc::new(LocalBlobStore::new(dir.path().join("primary-files")).expect("store"));
        let secondary_store =
            Arc::new(LocalBlobStore::new(dir.path().join("secondary-files")).expect("store"));
        let (env, clock) = Env::manual(t0(), random);
        let verifier = PrimaryVerifier::new(
            primary_db.clone(),
            primary_store.clone(),
            env.clone(),
            PrimaryConfig::default().verification_threads(2),
        );
        let direct: Arc<dyn PrimarySource> =
            Arc::new(DirectSource::new(primary_db.clone(), primary_store.clone()));
        let secondary = Arc::new(Secondary::new(
            tracking.clone(),
            wrap(direct),
            secondary_store.clone(),
            env.clone(),
            config,
        ));
        Sites {
            verifier,
            secondary,
            primary_db,
            tracking,
            primary_store,
            secondary_store,
            env,
            clock,
            primary_database,
            tracking_database,
            dir,
        }
    }

    /// The backend of both databases.
    pub fn backend(&self) -> Backend {
        self.primary_database.backend()
    }

    /// The direct source reading this primary.
    pub fn direct(&self) -> Arc<DirectSource> {
        Arc::new(DirectSource::new(
            self.primary_db.clone(),
            self.primary_store.clone(),
        ))
    }

    /// Another secondary on the same tracking database, folder and clock (a restart, or a
    /// second worker).
    pub fn new_secondary(
        &self,
        source: Arc<dyn PrimarySource>,
        config: SecondaryConfig,
    ) -> Arc<Secondary> {
        Arc::new(Secondary::new(
            self.tracking.clone(),
            source,
            self.secondary_store.clone(),
            self.env.clone(),
            config,
        ))
    }

    /// A primary connection.
    pub fn p(&self) -> PooledConn {
        self.primary_db.get().expect("primary conn")
    }

    /// A tracking connection.
    pub fn t(&self) -> PooledConn {
        self.tracking.get().expect("tracking conn")
    }

    /// The current (manual) time.
    pub fn now(&self) -> DateTime<Utc> {
        self.env.now()
    }

    /// Creates widget number `i` with `len` bytes through the application.
    pub fn widget(&self, i: u64, len: usize) -> (Widget, Vec<u8>) {
        let bytes = data(i, len);
        let w = app::create_widget(
            &mut self.p(),
            self.primary_store.as_ref(),
            &format!("w{i}"),
            &format!("widgets/{:02}/{i}.bin", i % 7),
            &bytes,
        )
        .expect("create widget");
        (w, bytes)
    }

    /// Creates gadget number `i` with `len` bytes through the application.
    pub fn gadget(&self, i: u64, len: usize) -> (Gadget, Vec<u8>) {
        let bytes = data(i + 1_000_000, len);
        let g = app::create_gadget(
            &mut self.p(),
            self.primary_store.as_ref(),
            &format!("g{i}"),
            &format!("gadgets/{i}.bin"),
            &bytes,
        )
        .expect("create gadget");
        (g, bytes)
    }

    /// Inserts a widget row and its file without publishing anything (as an import that
    /// predates the triggers, or ran with replication off, would leave it): only the backfill
    /// finds it. The insert trigger is kept quiet by turning the type's replication flag off
    /// for this one transaction. Returns its id, path and bytes.
    pub fn widget_silently(&self, i: u64, len: usize) -> (i64, String, Vec<u8>) {
        use geo_diesel::schema::geo_feature_flags as flags;
        use widgets::widgets::dsl;
        let bytes = data(i, len);
        let path = format!("silent/{i}.bin");
        self.primary_store
            .write(&BlobPath::new(&path).expect("path"), &mut &bytes[..], None)
            .expect("write");
        let flag = wd().feature_flag();
        let mut conn = self.p();
        let id: i64 = on_conn!(&mut conn, c => c.transaction::<_, diesel::result::Error, _>(|c| {
            let before: Option<bool> = flags::table
                .find(&flag)
                .select(flags::enabled)
                .first(c)
                .optional()?;
            diesel::insert_into(flags::table)
                .values((flags::name.eq(&flag), flags::enabled.eq(false)))
                .on_conflict(flags::name)
                .do_update()
                .set(flags::enabled.eq(false))
                .execute(c)?;
            let id = diesel::insert_into(dsl::widgets)
                .values((dsl::file_path.eq(&path), dsl::name.eq("silent")))
                .returning(dsl::id)
                .get_result(c)?;
            match before {
                Some(enabled) => diesel::update(flags::table.find(&flag))
                    .set(flags::enabled.eq(enabled))
                    .execute(c)?,
                None => diesel::delete(flags::table.find(&flag)).execute(c)?,
            };
            Ok(id)
        }))
        .expect("insert widget silently");
        (id, path, bytes)
    }

    /// Writes an event straight into `geo_events` (as a buggy or hostile writer could), with
    /// the given id or the next one; returns its id.
    pub fn insert_event(
        &self,
        id: Option<i64>,
        replicable: &str,
        event: &str,
        model_id: i64,
        payload: &str,
    ) -> i64 {
        let payload: serde_json::Value = serde_json::from_str(payload).expect("JSON payload");
        let values = (
            geo_events::replicable_name.eq(replicable),
            geo_events::event_name.eq(event),
            geo_events::model_record_id.eq(model_id),
            geo_events::payload.eq(JsonValue(payload)),
            geo_events::created_at.eq(UtcDateTime(self.now())),
        );
        let mut conn = self.p();
        let inserted = match id {
            Some(id) => {
                let insert = diesel::insert_into(geo_events::table)
                    .values((geo_events::id.eq(id), values))
                    .returning(geo_events::id);
                on_conn!(&mut conn, c => insert.get_result(c))
            }
            None => {
                let insert = diesel::insert_into(geo_events::table)
                    .values(values)
                    .returning(geo_events::id);
                on_conn!(&mut conn, c => insert.get_result(c))
            }
        };
        inserted.expect("insert event")
    }

    /// Moves the event id sequence so that the next event the application writes gets `next`
    /// (as if the ids below it were taken by transactions that have not committed yet).
    pub fn set_next_event_id(&self, next: i64) {
        let sql = match self.backend() {
            Backend::Sqlite => {
                format!(
                    "UPDATE sqlite_sequence SET seq = {} WHERE name = 'geo_events'",
                    next - 1
                )
            }
            Backend::Postgres => format!(
                "SELECT setval(pg_get_serial_sequence('geo_events', 'id'), {})",
                next - 1
            ),
        };
        exec(&mut self.p(), &sql);
    }

    /// Runs the primary verifier and the secondary until both are idle (twice, so events
    /// published by either reach the other).
    pub fn converge(&self) {
        for _ in 0..2 {
            self.verifier.run_until_idle(20).expect("primary verifier");
            self.secondary.run_until_idle(20).expect("secondary");
        }
    }

    /// The registry row of `id`, if any.
    pub fn reg(&self, d: &'static ReplicableDescriptor, id: i64) -> Option<RegRow> {
        let sql = format!(
            "SELECT state, retry_count, retry_at, last_synced_at, last_sync_failure, \
             verification_state, verification_retry_count, verification_retry_at, verified_at, \
             verification_checksum, verification_checksum_mismatched, checksum_mismatch, \
             verification_failure, missing_on_primary FROM \"{}\" WHERE \"{}\" = {id}",
            d.tables.registry, d.tables.registry_model_id
        );
        let rows: Vec<RegRow> =
            on_conn!(&mut self.t(), c => sql_query(&sql).load(c)).expect("registry row");
        rows.into_iter().next()
    }

    /// The model ids tracked by a registry, ascending.
    pub fn tracked(&self, d: &'static ReplicableDescriptor) -> Vec<i64> {
        let sql = format!(
            "SELECT \"{k}\" AS id FROM \"{t}\" ORDER BY \"{k}\"",
            k = d.tables.registry_model_id,
            t = d.tables.registry
        );
        let rows: Vec<Id> =
            on_conn!(&mut self.t(), c => sql_query(&sql).load(c)).expect("tracked ids");
        rows.into_iter().map(|r| r.id).collect()
    }

    /// Every record id of `d` on the primary, ascending.
    pub fn primary_ids(&self, d: &'static ReplicableDescriptor) -> Vec<i64> {
        geo_diesel::primary::all_ids(&mut self.p(), d).expect("primary ids")
    }

    /// The primary's verification row of `id` (states table or inline columns).
    pub fn primary_row(&self, d: &'static ReplicableDescriptor, id: i64) -> Option<PrimaryRow> {
        let (table, key) = d.tables.verification.expect("type verifies");
        let sql = format!(
            "SELECT verification_state, verification_retry_count, verification_retry_at, \
             verified_at, verification_checksum, verification_failure FROM \"{table}\" \
             WHERE \"{key}\" = {id}"
        );
        let rows: Vec<PrimaryRow> =
            on_conn!(&mut self.p(), c => sql_query(&sql).load(c)).expect("primary row");
        rows.into_iter().next()
    }

    /// Every event on the primary, in id order.
    pub fn events(&self) -> Vec<EventRow> {
        let sql = "SELECT id, replicable_name, event_name, model_record_id, \
                   CAST(payload AS TEXT) AS payload FROM geo_events ORDER BY id";
        on_conn!(&mut self.p(), c => sql_query(sql).load(c)).expect("events")
    }

    /// How many events named `event_name` the primary holds.
    pub fn event_count(&self, event_name: &str) -> i64 {
        self.primary_number(&format!(
            "SELECT COUNT(*) AS n FROM geo_events WHERE event_name = '{event_name}'"
        ))
    }

    /// The number a query on the primary returns in its column `n`.
    pub fn primary_number(&self, sql: &str) -> i64 {
        number(&mut self.p(), sql)
    }

    /// The bytes of a secondary file, `None` when absent.
    pub fn secondary_bytes(&self, path: &str) -> Option<Vec<u8>> {
        read_opt(&self.secondary_store.root().join(path))
    }

    /// The checksum of a secondary file, `None` when absent (readable in assertion messages).
    pub fn secondary_sum(&self, path: &str) -> Option<Checksum> {
        self.secondary_bytes(path).map(|b| checksum(&b))
    }

    /// The bytes of a primary file, `None` when absent.
    pub fn primary_bytes(&self, path: &str) -> Option<Vec<u8>> {
        read_opt(&self.primary_store.root().join(path))
    }

    /// Every primary record's file exists and equals its secondary copy (blake3 of both).
    pub fn assert_files_identical(&self) {
        let mut conn = self.p();
        for d in [wd(), gd()] {
            let ids = geo_diesel::primary::all_ids(&mut conn, d).expect("ids");
            for chunk in ids.chunks(1000) {
                for (id, path) in
                    geo_diesel::primary::blob_paths(&mut conn, d, chunk).expect("paths")
                {
                    let p = BlobPath::new(&path).expect("path");
                    let a = self.primary_store.checksum(&p).map(|x| x.0).ok();
                    let b = self.secondary_store.checksum(&p).map(|x| x.0).ok();
                    assert!(a.is_some(), "{} {id}: primary file {path} missing", d.name);
                    assert_eq!(a, b, "{} {id}: secondary copy of {path} differs", d.name);
                }
            }
        }
    }

    /// The registry row of `id` is synced and verified with the checksum of `bytes`, with no
    /// mismatch, no missing flag and no failure.
    pub fn assert_synced_verified(&self, d: &'static ReplicableDescriptor, id: i64, bytes: &[u8]) {
        use state::{SYNCED, V_SUCCEEDED};
        let row = self
            .reg(d, id)
            .unwrap_or_else(|| panic!("{} {id}: no registry row", d.name));
        assert_eq!(row.state, SYNCED, "{} {id}: {row:?}", d.name);
        assert_eq!(
            row.verification_state, V_SUCCEEDED,
            "{} {id}: {row:?}",
            d.name
        );
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(sum(bytes).as_slice()),
            "{} {id}",
            d.name
        );
        assert!(
            !row.checksum_mismatch && !row.missing_on_primary,
            "{} {id}: {row:?}",
            d.name
        );
        assert_eq!(row.last_sync_failure, None);
    }

    /// (synced, total) registry rows over both types.
    pub fn synced_and_total(&self) -> (i64, i64) {
        let mut conn = self.t();
        let w = geo_diesel::registry::Registry::of(wd())
            .counts(&mut conn)
            .expect("widget counts");
        let g = geo_diesel::registry::Registry::of(gd())
            .counts(&mut conn)
            .expect("gadget counts");
        (w.synced + g.synced, w.registry + g.registry)
    }
}
