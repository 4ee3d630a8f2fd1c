//! The runtime on a real PostgreSQL server (`GEO_TEST_DATABASE_URL`; `.ci/run` starts one with
//! `scripts/pg-test-server`): the same code as on SQLite, with a primary database and a tracking
//! database per test (two fresh databases on the server), the widgets example's models, and
//! real folders.
//!
//! 1. The behaviours of the SQLite runtime suite, on PostgreSQL: create/update/delete end to
//!    end, an update during an in-flight sync, corruption caught by verification, a file missing
//!    on the primary (4 h cap), backfill, status.
//! 2. Concurrency: several `Secondary` instances (threads) and several worker processes
//!    (`geo-test-worker`, one killed with SIGKILL mid-sync) on one tracking database never
//!    download one record at the same time and lose no claim; several `PrimaryVerifier`s on one
//!    primary never checksum one record twice.
//! 3. Gap tracking under real concurrency: 10,240 events from 32 writers whose transactions
//!    commit out of id order, with the log cursor running all along.
//! 4. `#[ignore]`d figures: B5 (backfill of 1M rows) and B6 (cursor events/s) on PostgreSQL —
//!    `cargo test -p geo-tests --features pg-suite --test pg_runtime -- --ignored --nocapture`.

#![cfg(feature = "pg-suite")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_diesel::cursor::load_state;
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{
    BlobError, BlobPath, BlobReader, BlobStore, LocalBlobStore, Written,
};
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::clock::{Env, ManualClock};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};
use geo_diesel::geo_core::{Replicable, ReplicableDescriptor, Role};
use geo_diesel::registry::{self, SyncOutcome};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::sql_types::GeoTimestamp;
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_diesel::{UtcDateTime, publish_created, publish_deleted, publish_updated, run_migrations};
use geo_tests::{PgTestDb, fresh_pg_database};
use widgets::{Gadget, Widget, app, gadgets, widgets as widgets_table};

const PENDING: i16 = 0;
const STARTED: i16 = 1;
const SYNCED: i16 = 2;
const FAILED: i16 = 3;
const V_SUCCEEDED: i16 = 2;
const V_FAILED: i16 = 3;
const V_DISABLED: i16 = 4;

// ---------------------------------------------------------------------------------------------
// setup
// ---------------------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn wd() -> &'static ReplicableDescriptor {
    <Widget as Replicable>::DESCRIPTOR
}

fn gd() -> &'static ReplicableDescriptor {
    <Gadget as Replicable>::DESCRIPTOR
}

/// Deterministic pseudo-random bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sum(bytes: &[u8]) -> Vec<u8> {
    checksum_bytes(bytes).to_vec()
}

fn checksum(bytes: &[u8]) -> Checksum {
    checksum_bytes(bytes)
}

/// The concrete PostgreSQL connection of a pooled connection.
fn pg(conn: &mut PooledConn) -> &mut PgConnection {
    match conn {
        PooledConn::Pg(c) => c,
        _ => panic!("the PostgreSQL suite runs on PostgreSQL"),
    }
}

fn exec(conn: &mut PooledConn, sql: &str) {
    pg(conn)
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One registry row, every column the tests look at.
#[derive(Debug, Clone, QueryableByName)]
struct RegRow {
    #[diesel(sql_type = SmallInt)]
    state: i16,
    #[diesel(sql_type = SmallInt)]
    retry_count: i16,
    #[diesel(sql_type = Nullable<GeoTimestamp>)]
    retry_at: Option<UtcDateTime>,
    #[diesel(sql_type = Nullable<Text>)]
    last_sync_failure: Option<String>,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = SmallInt)]
    verification_retry_count: i16,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    verification_checksum_mismatched: Option<Vec<u8>>,
    #[diesel(sql_type = Bool)]
    checksum_mismatch: bool,
    #[diesel(sql_type = Bool)]
    missing_on_primary: bool,
}

/// A temporary folder for the blob stores: on tmpfs (`/dev/shm`) when there is one, where the
/// store's fsyncs cost nothing and thousands of files do not dominate the suite's time.
fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("geo-pg-runtime-");
    if shm.is_dir() {
        b.tempdir_in(shm)
    } else {
        b.tempdir()
    }
    .expect("temp dir")
}

/// A primary and a secondary on two fresh PostgreSQL databases and two temporary folders.
/// Fields drop in order: the pools and workers first, the databases last.
struct Sites {
    verifier: PrimaryVerifier,
    secondary: Arc<Secondary>,
    primary_db: DbPool,
    tracking: DbPool,
    primary_store: Arc<LocalBlobStore>,
    secondary_store: Arc<LocalBlobStore>,
    env: Env,
    clock: ManualClock,
    dir: tempfile::TempDir,
    primary_pg: PgTestDb,
    tracking_pg: PgTestDb,
}

impl Sites {
    /// Both sites with the direct source and a manual clock; `random` is the fixed jitter draw.
    fn open(config: SecondaryConfig, random: u32) -> Self {
        Self::open_with(config, random, |s| s)
    }

    /// Both sites; `wrap` may wrap the direct source in a test double.
    fn open_with(
        config: SecondaryConfig,
        random: u32,
        wrap: impl FnOnce(Arc<dyn PrimarySource>) -> Arc<dyn PrimarySource>,
    ) -> Self {
        let primary_pg = fresh_pg_database("rt_primary");
        let tracking_pg = fresh_pg_database("rt_tracking");
        let dir = temp_dir();
        let primary_db = DbPool::connect(primary_pg.url(), 6).expect("primary pool");
        let tracking = DbPool::connect(tracking_pg.url(), 6).expect("tracking pool");
        {
            let mut conn = primary_db.get().expect("primary conn");
            app::create_app_schema(&mut conn).expect("app schema");
            run_migrations(pg(&mut conn), Role::Primary).expect("primary migrations");
            let mut conn = tracking.get().expect("tracking conn");
            run_migrations(pg(&mut conn), Role::Secondary).expect("secondary migrations");
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
            PrimaryConfig {
                verification_threads: 2,
                ..PrimaryConfig::default()
            },
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
            dir,
            primary_pg,
            tracking_pg,
        }
    }

    fn direct(&self) -> Arc<DirectSource> {
        Arc::new(DirectSource::new(
            self.primary_db.clone(),
            self.primary_store.clone(),
        ))
    }

    /// Another secondary on the same tracking database and folder.
    fn new_secondary(
        &self,
        source: Arc<dyn PrimarySource>,
        env: Env,
        config: SecondaryConfig,
    ) -> Arc<Secondary> {
        Arc::new(Secondary::new(
            self.tracking.clone(),
            source,
            self.secondary_store.clone(),
            env,
            config,
        ))
    }

    fn p(&self) -> PooledConn {
        self.primary_db.get().expect("primary conn")
    }

    fn t(&self) -> PooledConn {
        self.tracking.get().expect("tracking conn")
    }

    fn now(&self) -> DateTime<Utc> {
        self.env.now()
    }

    fn widget(&self, i: u64, len: usize) -> (Widget, Vec<u8>) {
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

    fn gadget(&self, i: u64, len: usize) -> (Gadget, Vec<u8>) {
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

    /// A widget inserted without an event (as a bulk import would): only the backfill finds it.
    fn widget_silently(&self, i: u64, len: usize) -> (i64, String, Vec<u8>) {
        let bytes = data(i, len);
        let path = format!("silent/{i}.bin");
        self.primary_store
            .write(&BlobPath::new(&path).expect("path"), &mut &bytes[..], None)
            .expect("write");
        let mut conn = self.p();
        let id: i64 = diesel::insert_into(widgets_table::table)
            .values((
                widgets_table::file_path.eq(&path),
                widgets_table::name.eq("silent"),
            ))
            .returning(widgets_table::id)
            .get_result(pg(&mut conn))
            .expect("insert widget");
        (id, path, bytes)
    }

    /// Runs the primary verifier and the secondary until both are idle (twice, so events
    /// published by either reach the other).
    fn converge(&self) {
        for _ in 0..2 {
            self.verifier.run_until_idle(20).expect("primary verifier");
            self.secondary.run_until_idle(20).expect("secondary");
        }
    }

    fn reg(&self, d: &'static ReplicableDescriptor, id: i64) -> Option<RegRow> {
        let sql = format!(
            "SELECT state, retry_count, retry_at, last_sync_failure, verification_state, \
             verification_retry_count, verification_checksum, verification_checksum_mismatched, \
             checksum_mismatch, missing_on_primary FROM \"{}\" WHERE \"{}\" = $1",
            d.tables.registry, d.tables.registry_model_id
        );
        let mut conn = self.t();
        let rows: Vec<RegRow> = sql_query(sql)
            .bind::<BigInt, _>(id)
            .load(pg(&mut conn))
            .expect("registry row");
        rows.into_iter().next()
    }

    fn tracked(&self, d: &'static ReplicableDescriptor) -> Vec<i64> {
        let sql = format!(
            "SELECT \"{k}\" AS id FROM \"{t}\" ORDER BY \"{k}\"",
            k = d.tables.registry_model_id,
            t = d.tables.registry
        );
        let mut conn = self.t();
        let rows: Vec<Id> = sql_query(sql).load(pg(&mut conn)).expect("tracked ids");
        rows.into_iter().map(|r| r.id).collect()
    }

    fn primary_ids(&self, d: &'static ReplicableDescriptor) -> Vec<i64> {
        geo_diesel::primary::all_ids(&mut self.p(), d).expect("primary ids")
    }

    fn count(&self, conn: &mut PooledConn, sql: &str) -> i64 {
        let rows: Vec<Count> = sql_query(sql)
            .load(pg(conn))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.first().map_or(0, |r| r.n)
    }

    fn event_count(&self, event_name: &str) -> i64 {
        let sql = format!(
            "SELECT COUNT(*)::BIGINT AS n FROM geo_events WHERE event_name = '{event_name}'"
        );
        self.count(&mut self.p(), &sql)
    }

    fn secondary_sum(&self, path: &str) -> Option<Checksum> {
        match std::fs::read(self.secondary_store.root().join(path)) {
            Ok(b) => Some(checksum_bytes(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("reading {path}: {e}"),
        }
    }

    /// Every primary record's file equals its secondary copy.
    fn assert_files_identical(&self) {
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
}

fn assert_synced_verified(s: &Sites, d: &'static ReplicableDescriptor, id: i64, bytes: &[u8]) {
    let row = s
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

/// Every regular file under `root`, relative to it.
fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("file type").is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(root).expect("under root").into());
            }
        }
    }
    out.sort();
    out
}

/// Polls `done` every 20 ms until it holds or `limit` passes; panics with `what` on timeout.
fn wait_until(limit: StdDuration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. the runtime suite on PostgreSQL
// ---------------------------------------------------------------------------------------------

#[test]
fn create_update_and_delete_replicate_end_to_end() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let widgets: Vec<_> = (0..4)
        .map(|i| s.widget(i, 1000 + 3000 * i as usize))
        .collect();
    let gadgets: Vec<_> = (0..3)
        .map(|i| s.gadget(i, 777 + 5000 * i as usize))
        .collect();
    s.converge();
    for (w, bytes) in &widgets {
        assert_synced_verified(&s, wd(), w.id, bytes);
        assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(bytes)));
    }
    for (g, bytes) in &gadgets {
        assert_synced_verified(&s, gd(), g.id, bytes);
        assert_eq!(s.secondary_sum(&g.blob_key), Some(checksum(bytes)));
    }

    // Update: new content at the same path.
    let (w0, old0) = &widgets[0];
    let (g0, _) = &gadgets[0];
    let new_w = data(900, 4321);
    let new_g = data(901, 1234);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), w0, &new_w).unwrap();
    app::update_gadget(&mut s.p(), s.primary_store.as_ref(), g0, &new_g).unwrap();
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.applied, 2, "{pass:?}");
    assert_eq!(s.reg(wd(), w0.id).unwrap().state, PENDING);
    assert_eq!(s.reg(gd(), g0.id).unwrap().state, PENDING);
    assert_eq!(s.secondary_sum(&w0.file_path), Some(checksum(old0)));
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    let row = s.reg(wd(), w0.id).unwrap();
    assert_eq!((row.state, row.verification_state), (SYNCED, PENDING));
    assert_eq!(row.verification_checksum, Some(sum(&new_w)));
    // The primary has not re-verified yet: verification is disabled until it has.
    assert_eq!(s.secondary.verification_pass().unwrap(), 2);
    assert_eq!(s.reg(wd(), w0.id).unwrap().verification_state, V_DISABLED);
    s.converge();
    assert_synced_verified(&s, wd(), w0.id, &new_w);
    assert_synced_verified(&s, gd(), g0.id, &new_g);
    assert_eq!(s.secondary_sum(&g0.blob_key), Some(checksum(&new_g)));

    // Delete: the registry rows and the secondary files go; the others stay.
    let (w1, _) = &widgets[1];
    let (g1, _) = &gadgets[1];
    app::delete_widget(&mut s.p(), s.primary_store.as_ref(), w1).unwrap();
    app::delete_gadget(&mut s.p(), s.primary_store.as_ref(), g1).unwrap();
    s.converge();
    assert!(s.reg(wd(), w1.id).is_none());
    assert!(s.reg(gd(), g1.id).is_none());
    assert_eq!(s.secondary_sum(&w1.file_path), None);
    assert_eq!(s.secondary_sum(&g1.blob_key), None);
    assert_eq!(
        s.tracked(wd()),
        vec![widgets[0].0.id, widgets[2].0.id, widgets[3].0.id]
    );
    assert_eq!(s.tracked(gd()), vec![gadgets[0].0.id, gadgets[2].0.id]);
    s.assert_files_identical();
    assert_eq!(all_files(s.secondary_store.root()).len(), 5);
    // Events are jsonb on PostgreSQL and carry the deleted record's blob path.
    let mut conn = s.p();
    let n = s.count(
        &mut conn,
        &format!(
            "SELECT COUNT(*)::BIGINT AS n FROM geo_events WHERE event_name = 'deleted' \
             AND payload->>'blob_path' = '{}'",
            w1.file_path
        ),
    );
    assert_eq!(n, 1);
}

#[test]
fn record_updated_while_its_sync_is_in_flight_stays_claimed_then_syncs_new_content() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let (w, old) = s.widget(1, 5000);
    s.secondary.cursor_pass().unwrap();
    let now = s.now();

    // The scheduler claims the row: a download of the old content is "in flight".
    assert_eq!(
        registry::Registry::of(wd())
            .claim_sync(&mut s.t(), 10, now)
            .unwrap(),
        vec![w.id]
    );
    assert_eq!(s.reg(wd(), w.id).unwrap().state, STARTED);

    // The record changes on the primary. The row stays `started` (no second worker may claim
    // it while the old download runs) but its claim token moves.
    let new = data(2, 7000);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w, &new).unwrap();
    s.secondary.cursor_pass().unwrap();
    assert_eq!(s.reg(wd(), w.id).unwrap().state, STARTED);
    assert!(
        registry::Registry::of(wd())
            .claim_sync(&mut s.t(), 10, now)
            .unwrap()
            .is_empty(),
        "a row with a download in flight must not be claimed twice"
    );

    // The old download finishes: its outcome is not recorded and the row goes back to pending.
    let retry = |_: i16, _: bool| now + Duration::hours(1);
    let synced = SyncOutcome::Synced {
        local: sum(&old),
        primary: None,
    };
    assert!(
        !registry::Registry::of(wd())
            .record_sync_claimed(&mut s.t(), w.id, now, &synced, &retry, now)
            .unwrap()
    );
    assert_eq!(s.reg(wd(), w.id).unwrap().state, PENDING);
    let failed = SyncOutcome::Failed {
        message: "late failure".into(),
        missing_on_primary: false,
    };
    assert!(
        !registry::Registry::of(wd())
            .record_sync(&mut s.t(), w.id, &failed, &retry, now)
            .unwrap()
    );
    assert!(
        !registry::Registry::of(wd())
            .record_sync_claimed(&mut s.t(), w.id, now, &failed, &retry, now)
            .unwrap()
    );
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(
        (row.state, row.retry_count, row.last_sync_failure),
        (PENDING, 0, None)
    );

    // The next pass fetches the new content, and verification follows the primary.
    assert_eq!(s.secondary.sync_pass().unwrap(), 1);
    assert_eq!(s.reg(wd(), w.id).unwrap().state, SYNCED);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&new)));
    s.converge();
    assert_synced_verified(&s, wd(), w.id, &new);
}

#[test]
fn file_corrupted_on_the_secondary_is_caught_by_verification_and_resynced() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let (w, bytes) = s.widget(3, 9000);
    let (g, gbytes) = s.gadget(3, 4000);
    s.converge();
    assert_synced_verified(&s, wd(), w.id, &bytes);

    let mut corrupt = bytes.clone();
    corrupt[100] ^= 0xff;
    std::fs::write(s.secondary_store.root().join(&w.file_path), &corrupt).unwrap();
    std::fs::remove_file(s.secondary_store.root().join(&g.blob_key)).unwrap();

    assert_eq!(
        registry::Registry::of(wd())
            .reverify(&mut s.t(), None)
            .unwrap(),
        1
    );
    assert_eq!(
        registry::Registry::of(gd())
            .reverify(&mut s.t(), None)
            .unwrap(),
        1
    );
    assert_eq!(s.secondary.verification_pass().unwrap(), 2);
    let now = s.now();
    let row = s.reg(wd(), w.id).unwrap();
    assert!(row.checksum_mismatch, "{row:?}");
    assert_eq!(
        row.verification_checksum_mismatched.as_deref(),
        Some(sum(&corrupt).as_slice())
    );
    assert_eq!((row.state, row.verification_state), (FAILED, V_FAILED));
    assert_eq!(row.verification_retry_count, 1);
    assert_eq!(row.retry_count, row.verification_retry_count);
    assert!(
        row.last_sync_failure
            .as_deref()
            .unwrap_or_default()
            .starts_with("Verification failed with:"),
        "{row:?}"
    );
    // FixedRandom(0): delay(1) = 1 + 15 + 0 = 16 s.
    assert_eq!(
        row.retry_at.map(UtcDateTime::get),
        Some(now + Duration::seconds(16))
    );
    let grow = s.reg(gd(), g.id).unwrap();
    assert_eq!((grow.state, grow.verification_state), (FAILED, V_FAILED));
    assert!(!grow.checksum_mismatch, "an unreadable file is no mismatch");

    // Not due yet.
    assert_eq!(s.secondary.sync_pass().unwrap(), 0);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&corrupt)));
    // After retry_at both are resynced and verified with the right content.
    s.clock.advance(Duration::seconds(17));
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    s.converge();
    assert_synced_verified(&s, wd(), w.id, &bytes);
    assert_synced_verified(&s, gd(), g.id, &gbytes);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&bytes)));
    assert_eq!(s.secondary_sum(&g.blob_key), Some(checksum(&gbytes)));
}

#[test]
fn file_missing_on_the_primary_fails_with_the_four_hour_cap() {
    // FixedRandom(29): the largest jitter, delay(1) = 1 + 15 + 29·2 = 74 s.
    let s = Sites::open(SecondaryConfig::default(), 29);
    let (w, bytes) = s.widget(7, 3000);
    let (g, _) = s.gadget(7, 3000);
    s.verifier.run_until_idle(5).unwrap();
    s.primary_store
        .delete(&BlobPath::new(&w.file_path).unwrap())
        .unwrap();
    std::fs::write(
        s.primary_store.root().join(&g.blob_key),
        b"changed behind the app's back",
    )
    .unwrap();

    s.secondary.cursor_pass().unwrap();
    exec(
        &mut s.t(),
        "UPDATE widget_registry SET retry_count = 20; UPDATE gadget_registry SET retry_count = 20;",
    );
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    let now = s.now();

    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert!(row.missing_on_primary);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("The file is missing on the Geo primary site")
    );
    assert_eq!(row.retry_count, 21);
    assert_eq!(
        row.retry_at.unwrap().get(),
        now + Duration::hours(4) + Duration::seconds(74)
    );
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut s.t())
            .unwrap()
            .missing_on_primary,
        1
    );
    // An ordinary failure (checksum mismatch) keeps the 1 h cap and stores nothing.
    let row = s.reg(gd(), g.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert!(!row.missing_on_primary);
    assert!(
        row.last_sync_failure
            .as_deref()
            .unwrap_or_default()
            .starts_with("Downloaded file checksum mismatch"),
        "{row:?}"
    );
    assert_eq!(
        row.retry_at.unwrap().get(),
        now + Duration::hours(1) + Duration::seconds(74)
    );
    assert!(all_files(s.secondary_store.root()).is_empty());

    // The file comes back; after the retry time the row syncs and the flag clears.
    s.primary_store
        .write(&BlobPath::new(&w.file_path).unwrap(), &mut &bytes[..], None)
        .unwrap();
    s.clock.advance(Duration::hours(4));
    assert_eq!(
        s.secondary.sync_pass().unwrap(),
        1,
        "only the gadget is due after 4 h"
    );
    assert_eq!(s.reg(wd(), w.id).unwrap().state, FAILED);
    s.clock.advance(Duration::seconds(75));
    assert_eq!(s.secondary.sync_pass().unwrap(), 1);
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, SYNCED, "{row:?}");
    assert!(!row.missing_on_primary);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&bytes)));
}

#[test]
fn sync_stuck_in_started_times_out() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let (w, _) = s.widget(8, 100);
    s.secondary.cursor_pass().unwrap();
    assert_eq!(
        registry::Registry::of(wd())
            .claim_sync(&mut s.t(), 10, s.now())
            .unwrap(),
        vec![w.id]
    );
    s.clock.advance(Duration::hours(8));
    assert_eq!(
        s.secondary.timeouts_pass().unwrap(),
        0,
        "8 h exactly is no timeout"
    );
    s.clock.advance(Duration::seconds(1));
    assert_eq!(s.secondary.timeouts_pass().unwrap(), 1);
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Sync timed out after 8 hours")
    );
    assert_eq!(row.retry_count, 1);
    assert_eq!(row.retry_at.unwrap().get(), s.now() + Duration::seconds(16));
}

#[test]
fn backfill_creates_rows_for_records_without_events_and_removes_orphans() {
    let s = Sites::open(
        SecondaryConfig {
            backfill_batch: 3,
            ..SecondaryConfig::default()
        },
        0,
    );
    let silent: Vec<_> = (0..7)
        .map(|i| s.widget_silently(30 + i, 1000 + i as usize))
        .collect();
    assert_eq!(s.event_count("created"), 0);
    registry::Registry::of(wd())
        .insert_missing(&mut s.t(), &[silent[6].0 + 1, 500])
        .unwrap();
    registry::Registry::of(gd())
        .insert_missing(&mut s.t(), &[3])
        .unwrap();

    let (created, removed) = s.secondary.backfill_all().unwrap();
    assert_eq!((created, removed), (7, 3));
    assert_eq!(
        s.tracked(wd()),
        silent.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    assert!(s.tracked(gd()).is_empty());
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 0));

    while s.secondary.sync_pass().unwrap() > 0 {}
    for (id, path, bytes) in &silent {
        assert_eq!(s.reg(wd(), *id).unwrap().state, SYNCED);
        assert_eq!(s.secondary_sum(path), Some(checksum(bytes)));
    }
    // The primary backfills its verification states and verifies; the secondary follows.
    s.converge();
    for (id, _, bytes) in &silent {
        assert_synced_verified(&s, wd(), *id, bytes);
    }
}

#[test]
fn status_fields_match_the_databases() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let ws: Vec<_> = (0..4).map(|i| s.widget(70 + i, 500)).collect();
    let gs: Vec<_> = (0..2).map(|i| s.gadget(70 + i, 500)).collect();
    s.primary_store
        .delete(&BlobPath::new(&ws[3].0.file_path).unwrap())
        .unwrap();
    s.converge();
    registry::Registry::of(gd())
        .resync(&mut s.t(), Some(&[gs[1].0.id]))
        .unwrap();

    let secondary: BTreeMap<_, _> = s
        .secondary
        .status()
        .unwrap()
        .into_iter()
        .map(|(d, st)| (d.name, st.to_json()))
        .collect();
    let primary: BTreeMap<_, _> = s
        .verifier
        .status()
        .unwrap()
        .into_iter()
        .map(|(d, st)| (d.name, st.to_json()))
        .collect();
    let c = registry::Registry::of(wd()).counts(&mut s.t()).unwrap();
    assert_eq!((c.registry, c.synced, c.failed, c.verified), (4, 3, 1, 3));
    assert_eq!(c.missing_on_primary, 1);
    let w = &secondary["widget"];
    assert_eq!(w["widgets_registry_count"], 4);
    assert_eq!(w["widgets_synced_count"], 3);
    assert_eq!(w["widgets_failed_count"], 1);
    assert_eq!(w["widgets_verified_count"], 3);
    assert_eq!(w["widgets_synced_in_percentage"], 75.0);
    assert_eq!(w["widgets_verified_in_percentage"], 75.0);
    let g = &secondary["gadget"];
    assert_eq!(g["gadgets_registry_count"], 2);
    assert_eq!(g["gadgets_synced_count"], 1);
    assert_eq!(g["gadgets_synced_in_percentage"], 50.0);
    let pw = &primary["widget"];
    assert_eq!(pw["widgets_count"], 4);
    assert_eq!(pw["widgets_checksum_total_count"], 4);
    assert_eq!(pw["widgets_checksummed_count"], 3);
    assert_eq!(pw["widgets_checksum_failed_count"], 1);
    let pgd = &primary["gadget"];
    assert_eq!(pgd["gadgets_count"], 2);
    assert_eq!(pgd["gadgets_checksummed_count"], 2);
}

// ---------------------------------------------------------------------------------------------
// 2. concurrency: several workers on one database
// ---------------------------------------------------------------------------------------------

/// What the watching test doubles saw: downloads (or checksums) in flight per record, how
/// often each record was started, and every overlap.
#[derive(Debug, Default)]
struct Watch {
    active: HashMap<(String, i64), usize>,
    starts: BTreeMap<(String, i64), usize>,
    overlaps: Vec<(String, i64)>,
    in_flight: usize,
    max_in_flight: usize,
}

impl Watch {
    fn start(&mut self, key: (String, i64)) {
        let active = self.active.entry(key.clone()).or_default();
        *active += 1;
        if *active > 1 {
            self.overlaps.push(key.clone());
        }
        *self.starts.entry(key).or_default() += 1;
        self.in_flight += 1;
        self.max_in_flight = self.max_in_flight.max(self.in_flight);
    }

    fn end(&mut self, key: &(String, i64)) {
        if let Some(n) = self.active.get_mut(key) {
            *n -= 1;
        }
        self.in_flight -= 1;
    }
}

fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Delegates every `PrimarySource` method but `open_blob` to `self.inner`.
macro_rules! delegate_source {
    () => {
        fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
            self.inner.events_after(after_id, limit)
        }
        fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
            self.inner.events_by_ids(ids)
        }
        fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
            self.inner.max_event_id()
        }
        fn model_ids(
            &self,
            replicable: &str,
            range: RangeInclusive<i64>,
        ) -> Result<Vec<i64>, SourceError> {
            self.inner.model_ids(replicable, range)
        }
        fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
            self.inner.max_model_id(replicable)
        }
        fn primary_checksums(
            &self,
            replicable: &str,
            ids: &[i64],
        ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
            self.inner.primary_checksums(replicable, ids)
        }
        fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
            self.inner.blob_path(replicable, id)
        }
    };
}

/// A source that records every blob download in a [`Watch`] (from `open_blob` until the
/// stream is dropped) and slows each one down by `delay`.
struct WatchingSource {
    inner: Arc<dyn PrimarySource>,
    watch: Arc<Mutex<Watch>>,
    delay: StdDuration,
}

struct WatchedReader {
    inner: Box<dyn Read + Send>,
    watch: Arc<Mutex<Watch>>,
    key: (String, i64),
    delay: Option<StdDuration>,
}

impl Read for WatchedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.delay.take() {
            std::thread::sleep(d);
        }
        self.inner.read(buf)
    }
}

impl Drop for WatchedReader {
    fn drop(&mut self) {
        lock(&self.watch).end(&self.key);
    }
}

impl PrimarySource for WatchingSource {
    delegate_source!();

    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let key = (replicable.to_string(), id);
        lock(&self.watch).start(key.clone());
        match self.inner.open_blob(replicable, id) {
            Ok(blob) => Ok(BlobStream {
                reader: Box::new(WatchedReader {
                    inner: blob.reader,
                    watch: Arc::clone(&self.watch),
                    key,
                    delay: Some(self.delay),
                }),
                size: blob.size,
                checksum: blob.checksum,
            }),
            Err(e) => {
                lock(&self.watch).end(&key);
                Err(e)
            }
        }
    }
}

/// A blob store that records every `checksum` in a [`Watch`] (keyed by path) and slows it down.
struct WatchingStore {
    inner: Arc<LocalBlobStore>,
    watch: Arc<Mutex<Watch>>,
    delay: StdDuration,
}

impl BlobStore for WatchingStore {
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
        self.inner.open(path)
    }
    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError> {
        self.inner.write(path, reader, expected)
    }
    fn delete(&self, path: &BlobPath) -> Result<bool, BlobError> {
        self.inner.delete(path)
    }
    fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
        self.inner.size(path)
    }
    fn checksum(&self, path: &BlobPath) -> Result<(Checksum, u64), BlobError> {
        let key = (path.as_str().to_string(), 0);
        lock(&self.watch).start(key.clone());
        std::thread::sleep(self.delay);
        let out = self.inner.checksum(path);
        lock(&self.watch).end(&key);
        out
    }
    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError> {
        self.inner.absolute_path(path)
    }
}

/// Creates `widgets` widgets and `gadgets` gadgets through the application; returns the
/// expected download keys.
fn create_records(s: &Sites, widgets: u64, gadgets: u64) -> BTreeSet<(String, i64)> {
    let mut keys = BTreeSet::new();
    for i in 0..widgets {
        keys.insert(("widget".to_string(), s.widget(i, 200 + i as usize).0.id));
    }
    for i in 0..gadgets {
        keys.insert(("gadget".to_string(), s.gadget(i, 300 + i as usize).0.id));
    }
    keys
}

fn synced_and_total(s: &Sites) -> (i64, i64) {
    let mut conn = s.t();
    let (w, g) = (
        registry::Registry::of(wd()).counts(&mut conn).unwrap(),
        registry::Registry::of(gd()).counts(&mut conn).unwrap(),
    );
    (w.synced + g.synced, w.registry + g.registry)
}

fn worker_config() -> SecondaryConfig {
    SecondaryConfig {
        reclaim_on_start: false,
        sync_batch: 6,
        sync_capacity: 3,
        idle_sleep: StdDuration::from_millis(10),
        ..SecondaryConfig::default()
    }
}

/// Several `Secondary` instances, each with its own pool and every worker thread running, on
/// one tracking database: the scheduler's `FOR UPDATE SKIP LOCKED` claims hand each record to
/// exactly one of them.
#[test]
fn secondaries_on_one_tracking_database_never_download_one_record_at_once() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let keys = create_records(&s, 150, 50);
    s.verifier.run_until_idle(20).unwrap();
    while s.secondary.cursor_pass().unwrap().read > 0 {}
    assert_eq!(synced_and_total(&s), (0, 200));

    let watch = Arc::new(Mutex::new(Watch::default()));
    let source: Arc<dyn PrimarySource> = Arc::new(WatchingSource {
        inner: s.direct(),
        watch: Arc::clone(&watch),
        delay: StdDuration::from_millis(3),
    });
    let workers: Vec<Arc<Secondary>> = (0..4)
        .map(|_| {
            Arc::new(Secondary::new(
                DbPool::connect(s.tracking_pg.url(), 4).unwrap(),
                Arc::clone(&source),
                s.secondary_store.clone(),
                Env::system(),
                worker_config(),
            ))
        })
        .collect();
    let handles: Vec<_> = workers.iter().map(|w| w.spawn().unwrap()).collect();
    wait_until(StdDuration::from_secs(60), "every row synced", || {
        synced_and_total(&s) == (200, 200)
    });
    drop(handles);

    let watch = lock(&watch);
    assert!(watch.overlaps.is_empty(), "overlaps: {:?}", watch.overlaps);
    assert_eq!(watch.starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "downloaded more than once: {twice:?}");
    let busy = workers
        .iter()
        .filter(|w| w.counters().synced.load(Ordering::Relaxed) > 0)
        .count();
    assert!(busy >= 2, "only {busy} worker(s) synced anything");
    assert!(watch.max_in_flight > 1, "no downloads ran concurrently");
    let total: u64 = workers
        .iter()
        .map(|w| w.counters().synced.load(Ordering::Relaxed))
        .sum();
    assert_eq!(total, 200);
    // Downloads matched the primary's checksums, so every row is verified too.
    let mut conn = s.t();
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut conn)
            .unwrap()
            .verified,
        150
    );
    assert_eq!(
        registry::Registry::of(gd())
            .counts(&mut conn)
            .unwrap()
            .verified,
        50
    );
    s.assert_files_identical();
}

/// The same with records created while the workers run: every worker runs its own log cursor
/// and backfill too, as separate processes started with `Secondary::spawn` do.
#[test]
fn secondaries_running_every_worker_while_records_are_created_download_each_record_once() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let watch = Arc::new(Mutex::new(Watch::default()));
    let source: Arc<dyn PrimarySource> = Arc::new(WatchingSource {
        inner: s.direct(),
        watch: Arc::clone(&watch),
        delay: StdDuration::from_millis(3),
    });
    let workers: Vec<Arc<Secondary>> = (0..3)
        .map(|_| {
            Arc::new(Secondary::new(
                DbPool::connect(s.tracking_pg.url(), 5).unwrap(),
                Arc::clone(&source),
                s.secondary_store.clone(),
                Env::system(),
                worker_config(),
            ))
        })
        .collect();
    let handles: Vec<_> = workers.iter().map(|w| w.spawn().unwrap()).collect();
    let keys = create_records(&s, 90, 30);
    wait_until(StdDuration::from_secs(60), "every row synced", || {
        synced_and_total(&s) == (120, 120)
    });
    // Let the cursors and backfills run a little longer: a late re-application would show.
    std::thread::sleep(StdDuration::from_millis(500));
    drop(handles);

    let watch = lock(&watch);
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        watch.overlaps.is_empty() && twice.is_empty(),
        "overlapping downloads: {:?}; downloaded more than once: {twice:?}",
        watch.overlaps
    );
    assert_eq!(watch.starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    assert_eq!(synced_and_total(&s), (120, 120));
}

/// A wait that gives up after `limit`: the gate of a test double.
#[derive(Default)]
struct Flag(Mutex<bool>, Condvar);

impl Flag {
    fn set(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.1.notify_all();
    }

    fn wait(&self, limit: StdDuration) -> bool {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .1
            .wait_timeout_while(guard, limit, |set| !*set)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// A source whose `events_after` announces itself and then waits (at most 5 s) for a go.
struct GatedSource {
    inner: Arc<dyn PrimarySource>,
    reading: Arc<Flag>,
    go: Arc<Flag>,
}

impl PrimarySource for GatedSource {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.reading.set();
        self.go.wait(StdDuration::from_secs(5));
        self.inner.events_after(after_id, limit)
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids)
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        self.inner.max_event_id()
    }
    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        self.inner.model_ids(replicable, range)
    }
    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
        self.inner.max_model_id(replicable)
    }
    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        self.inner.primary_checksums(replicable, ids)
    }
    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
        self.inner.blob_path(replicable, id)
    }
    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        self.inner.open_blob(replicable, id)
    }
}

/// Two log cursors on one tracking database (two worker processes): cursor B has read the
/// cursor position and is reading events when cursor A applies the same batch, and the rows
/// are synced; B's pass must not apply the batch again (which would send every synced row
/// back to `pending` and download it again).
#[test]
fn two_log_cursors_racing_on_one_tracking_database_apply_each_event_once() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let keys = create_records(&s, 20, 0);
    let (reading, go) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
    let b = s.new_secondary(
        Arc::new(GatedSource {
            inner: s.direct(),
            reading: Arc::clone(&reading),
            go: Arc::clone(&go),
        }),
        s.env.clone(),
        SecondaryConfig::default(),
    );
    let a = &s.secondary;
    std::thread::scope(|scope| {
        let b_pass = scope.spawn(|| b.cursor_pass());
        assert!(
            reading.wait(StdDuration::from_secs(10)),
            "cursor B never read"
        );
        a.cursor_pass().unwrap();
        while a.sync_pass().unwrap() > 0 {}
        go.set();
        b_pass.join().expect("cursor B").unwrap();
    });
    while a.sync_pass().unwrap() > 0 {}

    let applied = a.cursor().counters.applied.load(Ordering::Relaxed)
        + b.cursor().counters.applied.load(Ordering::Relaxed);
    let downloads = a.counters().synced.load(Ordering::Relaxed);
    assert_eq!(
        (applied, downloads),
        (keys.len() as u64, keys.len() as u64),
        "each of the {} events must be applied once and each record downloaded once",
        keys.len()
    );
    assert_eq!(synced_and_total(&s), (20, 20));
}

/// A source whose `open_blob` of one record announces itself and then waits (at most 10 s)
/// for a release: a download held in flight.
struct HoldingSource {
    inner: Arc<dyn PrimarySource>,
    target: (String, i64),
    entered: Arc<Flag>,
    release: Arc<Flag>,
}

impl PrimarySource for HoldingSource {
    delegate_source!();

    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let blob = self.inner.open_blob(replicable, id)?;
        if (replicable, id) == (self.target.0.as_str(), self.target.1) {
            self.entered.set();
            self.release.wait(StdDuration::from_secs(10));
        }
        Ok(blob)
    }
}

/// Worker A is downloading a record when the record is updated and the cursor applies the
/// event; worker B, another process on the same tracking database, runs its scheduler while
/// A's download is still in flight. The two must not sync the record at the same time (the row
/// stays `started`, with a moved claim token), A's stale download must not be recorded, and the
/// row ends synced with the new content at the record's path.
#[test]
fn record_updated_during_a_download_is_not_downloaded_by_a_second_worker_at_the_same_time() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let (w, old) = s.widget(1, 50_000);
    s.secondary.cursor_pass().unwrap();
    let watch = Arc::new(Mutex::new(Watch::default()));
    let watched = |inner: Arc<dyn PrimarySource>| -> Arc<dyn PrimarySource> {
        Arc::new(WatchingSource {
            inner,
            watch: Arc::clone(&watch),
            delay: StdDuration::ZERO,
        })
    };
    let (entered, release) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
    let a = s.new_secondary(
        Arc::new(HoldingSource {
            inner: watched(s.direct()),
            target: ("widget".to_string(), w.id),
            entered: Arc::clone(&entered),
            release: Arc::clone(&release),
        }),
        s.env.clone(),
        worker_config(),
    );
    let b = s.new_secondary(watched(s.direct()), s.env.clone(), worker_config());
    let new = data(2, 60_000);
    std::thread::scope(|scope| {
        let a_pass = scope.spawn(|| a.sync_pass());
        assert!(
            entered.wait(StdDuration::from_secs(10)),
            "A never downloaded"
        );
        app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w, &new).unwrap();
        s.secondary.cursor_pass().unwrap();
        assert_eq!(s.reg(wd(), w.id).unwrap().state, STARTED);
        // B's scheduler runs while A's download is in flight.
        let b_synced = b.sync_pass().unwrap();
        release.set();
        a_pass.join().expect("worker A").unwrap();
        assert_eq!(b_synced, 0, "B downloaded a record A was downloading");
    });
    assert!(lock(&watch).overlaps.is_empty(), "{:?}", lock(&watch));
    // Whoever syncs it, the row ends synced with the new content at the path.
    while s.secondary.sync_pass().unwrap() > 0 {}
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, SYNCED);
    assert_eq!(row.verification_checksum, Some(sum(&new)));
    assert_ne!(sum(&old), sum(&new));
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&new)));
}

/// Several primary verification workers on one primary database: each record is checksummed
/// by exactly one of them, once, and every record ends verified with one `checksum_succeeded`.
#[test]
fn primary_verifiers_on_one_database_never_checksum_one_record_twice() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let keys = create_records(&s, 150, 60);
    let watch = Arc::new(Mutex::new(Watch::default()));
    let store: Arc<dyn BlobStore> = Arc::new(WatchingStore {
        inner: s.primary_store.clone(),
        watch: Arc::clone(&watch),
        delay: StdDuration::from_millis(2),
    });
    let verifiers: Vec<Arc<PrimaryVerifier>> = (0..3)
        .map(|_| {
            Arc::new(PrimaryVerifier::new(
                DbPool::connect(s.primary_pg.url(), 3).unwrap(),
                Arc::clone(&store),
                Env::system(),
                PrimaryConfig {
                    verification_batch: 7,
                    verification_threads: 2,
                    idle_sleep: StdDuration::from_millis(10),
                    ..PrimaryConfig::default()
                },
            ))
        })
        .collect();
    let handles: Vec<_> = verifiers.iter().map(|v| v.spawn().unwrap()).collect();
    let verified = || {
        let mut conn = s.p();
        [wd(), gd()]
            .into_iter()
            .map(|d| {
                geo_diesel::primary::verification_groups(&mut conn, d)
                    .unwrap()
                    .into_iter()
                    .filter(|(state, _)| *state == V_SUCCEEDED)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum::<u64>()
    };
    wait_until(StdDuration::from_secs(60), "every record verified", || {
        verified() == 210
    });
    drop(handles);

    let watch = lock(&watch);
    assert!(watch.overlaps.is_empty(), "overlaps: {:?}", watch.overlaps);
    assert_eq!(watch.starts.len(), keys.len());
    let twice: Vec<_> = watch.starts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "checksummed more than once: {twice:?}");
    assert!(watch.max_in_flight > 1, "no checksums ran concurrently");
    let busy = verifiers
        .iter()
        .filter(|v| v.checksummed.load(Ordering::Relaxed) > 0)
        .count();
    assert!(busy >= 2, "only {busy} verifier(s) did any work");
    let total: u64 = verifiers
        .iter()
        .map(|v| v.checksummed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(total, 210);
    assert_eq!(s.event_count("checksum_succeeded"), 210);
    let mut conn = s.p();
    let dup = s.count(
        &mut conn,
        "SELECT COUNT(*)::BIGINT AS n FROM (SELECT replicable_name, model_record_id FROM geo_events \
         WHERE event_name = 'checksum_succeeded' GROUP BY 1, 2 HAVING COUNT(*) > 1) d",
    );
    assert_eq!(dup, 0);
}

// ---------------------------------------------------------------------------------------------
// 2b. separate worker processes; one dies with SIGKILL mid-sync
// ---------------------------------------------------------------------------------------------

/// One line of the workers' shared log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LogLine {
    Ready(u32),
    Start(String, i64, u32),
    End(String, i64, u32),
    Stopped(u32),
    Killed(u32),
}

fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let pid = |s: &str| {
                s.parse::<u32>()
                    .unwrap_or_else(|_| panic!("bad pid: {line}"))
            };
            let id = |s: &str| {
                s.parse::<i64>()
                    .unwrap_or_else(|_| panic!("bad id: {line}"))
            };
            match f.as_slice() {
                ["ready", _, p] => LogLine::Ready(pid(p)),
                ["start", r, i, p] => LogLine::Start(r.to_string(), id(i), pid(p)),
                ["end", r, i, p] => LogLine::End(r.to_string(), id(i), pid(p)),
                ["stopped", p] => LogLine::Stopped(pid(p)),
                ["killed", p] => LogLine::Killed(pid(p)),
                _ => panic!("unexpected worker log line: {line:?}"),
            }
        })
        .collect()
}

/// Replays the log: downloads of one record in flight in two processes at once, and how many
/// times each record was started by each process.
#[allow(clippy::type_complexity)]
fn replay(lines: &[LogLine]) -> (Vec<String>, BTreeMap<(String, i64), Vec<u32>>) {
    let mut active: HashMap<(String, i64), BTreeSet<u32>> = HashMap::new();
    let mut starts: BTreeMap<(String, i64), Vec<u32>> = BTreeMap::new();
    let mut overlaps = Vec::new();
    for line in lines {
        match line {
            LogLine::Start(r, i, p) => {
                let set = active.entry((r.clone(), *i)).or_default();
                if !set.is_empty() {
                    overlaps.push(format!("{r} {i}: started by {p} while {set:?} had it"));
                }
                set.insert(*p);
                starts.entry((r.clone(), *i)).or_default().push(*p);
            }
            LogLine::End(r, i, p) => {
                if let Some(set) = active.get_mut(&(r.clone(), *i)) {
                    set.remove(p);
                }
            }
            LogLine::Killed(p) => {
                for set in active.values_mut() {
                    set.remove(p);
                }
            }
            LogLine::Ready(_) | LogLine::Stopped(_) => {}
        }
    }
    (overlaps, starts)
}

/// Three worker processes (`geo-test-worker`, each running `Secondary::spawn`) on one tracking
/// database; the first is killed with SIGKILL while a download is in flight. The others never
/// download a record the victim (or another live worker) is downloading, and once the
/// victim's claims time out they take them over: every row ends synced.
#[test]
fn worker_processes_share_the_work_and_finish_the_claims_of_a_killed_one() {
    let s = Sites::open(SecondaryConfig::default(), 0);
    let keys = create_records(&s, 90, 30);
    s.verifier.run_until_idle(20).unwrap();
    while s.secondary.cursor_pass().unwrap().read > 0 {}
    assert_eq!(synced_and_total(&s), (0, 120));

    let log_path = s.dir.path().join("workers.log");
    let stop = s.dir.path().join("stop");
    std::fs::write(&log_path, b"").unwrap();
    let base_ms = Utc::now().timestamp_millis().to_string();
    let spawn_worker = |n: usize| {
        let out = std::fs::File::create(s.dir.path().join(format!("worker-{n}.err"))).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_geo-test-worker"))
            .args(["--tracking", s.tracking_pg.url()])
            .args(["--primary", s.primary_pg.url()])
            .arg("--primary-files")
            .arg(s.primary_store.root())
            .arg("--secondary-files")
            .arg(s.secondary_store.root())
            .arg("--log")
            .arg(&log_path)
            .arg("--stop")
            .arg(&stop)
            // 30× time: the 60 s sync timeout is 2 s, the 16 s retry half a second.
            .args(["--warp-base-ms", &base_ms, "--warp-factor", "30"])
            .args(["--sync-timeout-s", "60", "--download-delay-ms", "40"])
            .args(["--sync-batch", "4", "--sync-capacity", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start geo-test-worker")
    };
    let log = || parse_log(&std::fs::read_to_string(&log_path).unwrap());

    // The victim starts first; once it downloads, the others start; then it is killed while a
    // download of its is in flight.
    let mut victim = spawn_worker(0);
    let vpid = victim.id();
    let open_download = |lines: &[LogLine]| {
        let mut open = BTreeSet::new();
        for l in lines {
            match l {
                LogLine::Start(r, i, p) if *p == vpid => {
                    open.insert((r.clone(), *i));
                }
                LogLine::End(r, i, p) if *p == vpid => {
                    open.remove(&(r.clone(), *i));
                }
                _ => {}
            }
        }
        open
    };
    wait_until(
        StdDuration::from_secs(30),
        "the victim's first download",
        || !open_download(&log()).is_empty(),
    );
    let mut others: Vec<_> = (1..3).map(spawn_worker).collect();
    wait_until(
        StdDuration::from_secs(30),
        "the other workers' first downloads",
        || {
            let lines = log();
            let started: BTreeSet<u32> = lines
                .iter()
                .filter_map(|l| match l {
                    LogLine::Start(_, _, p) => Some(*p),
                    _ => None,
                })
                .collect();
            started.len() == 3
        },
    );
    wait_until(
        StdDuration::from_secs(10),
        "a victim download in flight",
        || !open_download(&log()).is_empty(),
    );
    victim.kill().expect("SIGKILL the victim");
    victim.wait().expect("reap the victim");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .unwrap();
        f.write_all(format!("killed {vpid}\n").as_bytes()).unwrap();
    }

    let finished = Instant::now();
    let mut outcome = Ok(());
    while synced_and_total(&s) != (120, 120) {
        if finished.elapsed() > StdDuration::from_secs(60) {
            outcome = Err(synced_and_total(&s));
            break;
        }
        std::thread::sleep(StdDuration::from_millis(50));
    }
    std::fs::write(&stop, b"").unwrap();
    for child in &mut others {
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() > StdDuration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(StdDuration::from_millis(20));
        }
    }
    let stderr: String = (0..3)
        .map(|n| std::fs::read_to_string(s.dir.path().join(format!("worker-{n}.err"))).unwrap())
        .collect();
    assert_eq!(
        outcome,
        Ok(()),
        "not every row synced (synced, total); worker stderr:\n{stderr}"
    );

    let lines = log();
    let (overlaps, starts) = replay(&lines);
    assert!(overlaps.is_empty(), "overlapping downloads: {overlaps:#?}");
    assert_eq!(starts.keys().cloned().collect::<BTreeSet<_>>(), keys);
    // Records the victim never touched were downloaded exactly once; records it had started
    // at most once more, by a survivor that took over its timed-out claim.
    let mut taken_over = 0;
    for (key, pids) in &starts {
        let by_victim = pids.iter().filter(|p| **p == vpid).count();
        let by_others = pids.len() - by_victim;
        assert!(
            by_victim <= 1,
            "{key:?} started {by_victim} times by the victim"
        );
        if by_victim == 0 {
            assert_eq!(by_others, 1, "{key:?} downloaded by {pids:?}");
        } else {
            assert!(by_others <= 1, "{key:?} downloaded by {pids:?}");
            taken_over += by_others;
        }
    }
    assert!(
        taken_over >= 1,
        "no claim of the killed worker was taken over by a survivor"
    );
    let stopped = lines
        .iter()
        .filter(|l| matches!(l, LogLine::Stopped(_)))
        .count();
    assert_eq!(
        stopped, 2,
        "the two survivors stop cleanly; stderr:\n{stderr}"
    );
    assert_eq!(synced_and_total(&s), (120, 120));
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 3. gap tracking: concurrent writers committing out of id order
// ---------------------------------------------------------------------------------------------

/// A tiny xorshift generator (the tests crate has no `rand`).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one writer thread changed on the primary: events published, records created and
/// deleted.
#[derive(Debug, Default)]
struct Changes {
    events: usize,
    created: usize,
    deleted: usize,
}

/// One writer: `ops` transactions on its own connection, each writing a record change and its
/// event, then sleeping 0–20 ms before the commit, so a transaction holding event id N often
/// commits after N+1 was read. Creates widgets and gadgets, updates some, deletes some.
fn writer(s: &Sites, n: u64, ops: usize) -> Changes {
    let mut conn = PgConnection::establish(s.primary_pg.url()).expect("writer connection");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (n + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let store = s.primary_store.as_ref();
    let mut live_w: Vec<Widget> = Vec::new();
    let mut live_g: Vec<Gadget> = Vec::new();
    let mut out = Changes::default();
    // The files are test setup, not the system under test: written without the store's fsyncs.
    let put = |path: &str, bytes: &[u8]| {
        let full = store.root().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, bytes).expect("write file");
    };
    for k in 0..ops {
        let delay = StdDuration::from_millis(rng.below(21));
        let widget = k % 2 == 0;
        if matches!(k % 10, 7 | 9) && !live_w.is_empty() {
            // Delete the oldest widget (its `created` committed long ago).
            let w = live_w.remove(0);
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                diesel::delete(widgets_table::table.find(w.id)).execute(c)?;
                publish_deleted(c, &w).expect("publish deleted");
                std::thread::sleep(delay);
                Ok(())
            })
            .expect("delete transaction");
            store
                .delete(&BlobPath::new(&w.file_path).unwrap())
                .expect("delete file");
            out.deleted += 1;
        } else if matches!(k % 10, 4 | 5 | 8) && !live_g.is_empty() {
            // Update a random gadget: new content, then `updated`.
            let g = &live_g[rng.below(live_g.len() as u64) as usize];
            put(
                &g.blob_key,
                &data(rng.below(u64::MAX), 64 + rng.below(200) as usize),
            );
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                publish_updated(c, g).expect("publish updated");
                std::thread::sleep(delay);
                Ok(())
            })
            .expect("update transaction");
        } else {
            let bytes = data(n * 1_000_000 + k as u64, 64 + rng.below(200) as usize);
            let path = format!("gap/{n}/{}/{k}.bin", if widget { "w" } else { "g" });
            put(&path, &bytes);
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                if widget {
                    let w: Widget = diesel::insert_into(widgets_table::table)
                        .values((
                            widgets_table::file_path.eq(&path),
                            widgets_table::name.eq("gap"),
                        ))
                        .returning(Widget::as_returning())
                        .get_result(c)?;
                    publish_created(c, &w).expect("publish created");
                    std::thread::sleep(delay);
                    live_w.push(w);
                } else {
                    let g: Gadget = diesel::insert_into(gadgets::table)
                        .values((gadgets::blob_key.eq(&path), gadgets::label.eq("gap")))
                        .returning(Gadget::as_returning())
                        .get_result(c)?;
                    publish_created(c, &g).expect("publish created");
                    std::thread::sleep(delay);
                    live_g.push(g);
                }
                Ok(())
            })
            .expect("create transaction");
            out.created += 1;
        }
        out.events += 1;
    }
    out
}

/// At least 10,000 events from 32 concurrent writers whose transactions commit out of id
/// order, with the log cursor running all along: every event is applied exactly once, the
/// registries hold exactly the live records, every gap detected is filled, and the cursor ends
/// at the last event with no gap open.
#[test]
fn out_of_order_commits_from_concurrent_writers_are_all_applied_exactly_once() {
    const WRITERS: u64 = 32;
    const OPS: usize = 320;
    let s = Sites::open(SecondaryConfig::default(), 0);
    let writers_done = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    let max_open_gaps = AtomicUsize::new(0);
    let started = Instant::now();
    let changes: Changes = std::thread::scope(|scope| {
        let cursor = scope.spawn(|| {
            loop {
                // Read before the pass: a pass that started before the last commit proves
                // nothing about the end of the log.
                let writers_finished = writers_done.load(Ordering::Acquire);
                let pass = s.secondary.cursor_pass().expect("cursor pass");
                passes.fetch_add(1, Ordering::Relaxed);
                let state = load_state(&mut s.t()).expect("cursor state");
                max_open_gaps.fetch_max(state.gaps.len(), Ordering::Relaxed);
                if writers_finished && pass.read == 0 && state.gaps.is_empty() {
                    break;
                }
                assert!(
                    started.elapsed() < StdDuration::from_secs(120),
                    "the cursor never caught up: {state:?}"
                );
                if pass.read == 0 {
                    std::thread::sleep(StdDuration::from_millis(5));
                }
            }
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let s = &s;
                scope.spawn(move || writer(s, n, OPS))
            })
            .collect();
        let mut changes = Changes::default();
        for w in writers {
            let c = w.join().expect("writer");
            changes.events += c.events;
            changes.created += c.created;
            changes.deleted += c.deleted;
        }
        writers_done.store(true, Ordering::Release);
        cursor.join().expect("cursor");
        changes
    });
    let events = changes.events;
    let writing = started.elapsed();

    let mut conn = s.p();
    let total = s.count(&mut conn, "SELECT COUNT(*)::BIGINT AS n FROM geo_events");
    let max_id = s.count(&mut conn, "SELECT MAX(id)::BIGINT AS n FROM geo_events");
    drop(conn);
    assert_eq!(total as usize, events);
    assert!(events >= 10_000, "{events} events");
    assert_eq!(
        max_id, total,
        "no event id was skipped (no transaction rolled back)"
    );

    let state = load_state(&mut s.t()).unwrap();
    assert_eq!(
        state.last_event_id, max_id,
        "the cursor ends at the last event"
    );
    assert!(state.gaps.is_empty(), "gaps left open: {:?}", state.gaps);
    let c = &s.secondary.cursor().counters;
    let (applied, detected, filled, expired) = (
        c.applied.load(Ordering::Relaxed),
        c.gaps_detected.load(Ordering::Relaxed),
        c.gaps_filled.load(Ordering::Relaxed),
        c.gaps_expired.load(Ordering::Relaxed),
    );
    eprintln!(
        "{events} events from {WRITERS} writers in {writing:?}; {} cursor passes; gaps detected \
         {detected}, filled {filled}, at most {} open at once",
        passes.load(Ordering::Relaxed),
        max_open_gaps.load(Ordering::Relaxed)
    );
    assert_eq!(applied, events as u64, "every event applied exactly once");
    assert_eq!(c.skipped(), 0);
    assert!(
        detected > 0,
        "no commit was ever out of order: the test proves nothing"
    );
    assert_eq!(filled, detected, "every gap filled");
    assert_eq!(expired, 0);

    // The registries hold exactly the live records, each once, all pending.
    for d in [wd(), gd()] {
        assert_eq!(s.tracked(d), s.primary_ids(d), "{}", d.name);
    }
    let (w, g) = (
        registry::Registry::of(wd()).counts(&mut s.t()).unwrap(),
        registry::Registry::of(gd()).counts(&mut s.t()).unwrap(),
    );
    assert_eq!((w.pending, g.pending), (w.registry, g.registry));
    assert_eq!(
        (w.registry + g.registry) as usize,
        changes.created - changes.deleted,
        "{changes:?}"
    );

    // Pending → synced, with the primary's content; nothing moves back afterwards.
    let syncing = Instant::now();
    while s.secondary.sync_pass().unwrap() > 0 {}
    eprintln!(
        "synced {} rows in {:?}",
        w.registry + g.registry,
        syncing.elapsed()
    );
    assert_eq!(
        synced_and_total(&s),
        (w.registry + g.registry, w.registry + g.registry)
    );
    assert_eq!(s.secondary.cursor_pass().unwrap().read, 0);
    assert_eq!(
        synced_and_total(&s),
        (w.registry + g.registry, w.registry + g.registry)
    );
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 4. figures: B5 and B6 on PostgreSQL
// ---------------------------------------------------------------------------------------------

/// B5 (backfill of 1M rows) and B6 (log-cursor events per second) on this PostgreSQL server.
/// Aims: backfill of 1M ≤ 8 s; cursor ≥ 20,000 events/s. Prints the figures.
#[test]
#[ignore = "a measurement, not a test: run with --ignored --nocapture"]
fn figures_b5_backfill_and_b6_cursor_on_postgres() {
    const B5_ROWS: i64 = 1_000_000;
    const B6_EVENTS: i64 = 200_000;
    let s = Sites::open(SecondaryConfig::default(), 0);
    exec(
        &mut s.p(),
        &format!(
            "INSERT INTO widgets (file_path, name) SELECT 'b5/' || g || '.bin', 'b5' \
             FROM generate_series(1, {B5_ROWS}) g; ANALYZE widgets;"
        ),
    );
    for batch in [10_000i64, 50_000] {
        exec(&mut s.t(), "TRUNCATE widget_registry, gadget_registry");
        let sec = s.new_secondary(
            s.direct(),
            s.env.clone(),
            SecondaryConfig {
                backfill_batch: batch,
                ..SecondaryConfig::default()
            },
        );
        let t = Instant::now();
        let (created, removed) = sec.backfill_all().unwrap();
        let took = t.elapsed();
        assert_eq!((created, removed), (B5_ROWS as usize, 0));
        println!(
            "B5 PostgreSQL: backfill_all of {B5_ROWS} rows, backfill_batch {batch}: {:.2} s ({:.0} rows/s)",
            took.as_secs_f64(),
            B5_ROWS as f64 / took.as_secs_f64()
        );
    }

    // Where the time goes: reading the primary's ids, and inserting the rows (set-based, as
    // the backfill does); the floor is one INSERT … SELECT on the server.
    exec(&mut s.t(), "TRUNCATE widget_registry");
    let direct = s.direct();
    let t = Instant::now();
    let mut ids = Vec::with_capacity(B5_ROWS as usize);
    for from in (1..=B5_ROWS).step_by(10_000) {
        ids.extend(direct.model_ids("widget", from..=from + 9_999).unwrap());
    }
    let read = t.elapsed();
    let t = Instant::now();
    registry::Registry::of(wd())
        .insert_missing(&mut s.t(), &ids)
        .unwrap();
    let insert = t.elapsed();
    exec(&mut s.t(), "TRUNCATE widget_registry");
    let t = Instant::now();
    exec(
        &mut s.t(),
        &format!(
            "INSERT INTO widget_registry (widget_id) SELECT g FROM generate_series(1, {B5_ROWS}) g"
        ),
    );
    println!(
        "B5 PostgreSQL breakdown: reading 1M primary ids {:.2} s; registry::insert_missing of 1M ids {:.2} s; \
         floor (one INSERT … SELECT of 1M registry rows) {:.2} s",
        read.as_secs_f64(),
        insert.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    exec(
        &mut s.p(),
        &format!(
            "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) \
             SELECT 'widget', 'created', g, jsonb_build_object('model_record_id', g), now() \
             FROM generate_series(1, {B6_EVENTS}) g"
        ),
    );
    for batch in [1000usize, 5000] {
        exec(
            &mut s.t(),
            "TRUNCATE widget_registry, gadget_registry, geo_event_log_states, geo_event_log_gaps",
        );
        let sec = s.new_secondary(
            s.direct(),
            s.env.clone(),
            SecondaryConfig {
                cursor_batch: batch,
                ..SecondaryConfig::default()
            },
        );
        let t = Instant::now();
        let mut read = 0;
        loop {
            let p = sec.cursor_pass().unwrap();
            read += p.read;
            if p.read == 0 {
                break;
            }
        }
        let took = t.elapsed();
        assert_eq!(read, B6_EVENTS as usize);
        println!(
            "B6 PostgreSQL: cursor_pass over {B6_EVENTS} created events, cursor_batch {batch}: {:.2} s ({:.0} events/s)",
            took.as_secs_f64(),
            B6_EVENTS as f64 / took.as_secs_f64()
        );
    }
}
