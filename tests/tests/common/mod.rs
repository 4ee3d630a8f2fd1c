//! Shared setup of the runtime suites: a primary and a secondary on real SQLite files and
//! folders (the widgets example's schema and models), a manual clock, and registry readers.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Binary, Bool, Nullable, SmallInt, Text};
use geo_diesel::db::{DbPool, PooledConn};
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};
use geo_diesel::geo_core::clock::{Env, ManualClock};
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::geo_core::{Replicable, ReplicableDescriptor, Role};
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_diesel::sql_types::GeoTimestamp;
use geo_diesel::verifier::{PrimaryConfig, PrimaryVerifier};
use geo_diesel::{UtcDateTime, run_migrations};
use widgets::{Gadget, Widget, app};

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

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
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

/// The blake3 checksum of `bytes` as stored.
pub fn sum(bytes: &[u8]) -> Vec<u8> {
    checksum_bytes(bytes).to_vec()
}

/// The concrete SQLite connection of a pooled connection.
pub fn sqlite(conn: &mut PooledConn) -> &mut SqliteConnection {
    match conn {
        PooledConn::Sqlite(c) => c,
        #[allow(unreachable_patterns)]
        _ => panic!("the runtime suites run on SQLite"),
    }
}

/// Runs raw SQL statements.
pub fn exec(conn: &mut PooledConn, sql: &str) {
    sqlite(conn)
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
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

/// A primary and a secondary on SQLite files in a temporary directory, with a manual clock.
pub struct Sites {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
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
    /// The primary's verification workers.
    pub verifier: PrimaryVerifier,
    /// The secondary.
    pub secondary: Arc<Secondary>,
}

impl Sites {
    /// Both sites with the direct source; `random` is the fixed jitter draw.
    pub fn open(config: SecondaryConfig, random: u32) -> Self {
        Self::open_with(config, random, |s| s)
    }

    /// Both sites; `wrap` may wrap the direct source in a test double.
    pub fn open_with(
        config: SecondaryConfig,
        random: u32,
        wrap: impl FnOnce(Arc<dyn PrimarySource>) -> Arc<dyn PrimarySource>,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("geo-runtime-")
            .tempdir()
            .expect("temp dir");
        let primary_db =
            DbPool::connect(&dir.path().join("primary.sqlite3").display().to_string(), 8)
                .expect("primary pool");
        let tracking = DbPool::connect(
            &dir.path().join("secondary.sqlite3").display().to_string(),
            8,
        )
        .expect("tracking pool");
        {
            let mut conn = primary_db.get().expect("primary conn");
            app::create_app_schema(&mut conn).expect("app schema");
            run_migrations(sqlite(&mut conn), Role::Primary).expect("primary migrations");
            let mut conn = tracking.get().expect("tracking conn");
            run_migrations(sqlite(&mut conn), Role::Secondary).expect("secondary migrations");
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
            dir,
            primary_db,
            tracking,
            primary_store,
            secondary_store,
            env,
            clock,
            verifier,
            secondary,
        }
    }

    /// The direct source reading this primary.
    pub fn direct(&self) -> Arc<DirectSource> {
        Arc::new(DirectSource::new(
            self.primary_db.clone(),
            self.primary_store.clone(),
        ))
    }

    /// A new secondary on the same tracking database and folder (a restart).
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
            "SELECT state, retry_count, retry_at, last_synced_at, last_sync_failure, verification_state, \
             verification_retry_count, verification_retry_at, verified_at, verification_checksum, \
             verification_checksum_mismatched, checksum_mismatch, verification_failure, missing_on_primary \
             FROM \"{}\" WHERE \"{}\" = ?",
            d.tables.registry, d.tables.registry_model_id
        );
        let mut conn = self.t();
        let rows: Vec<RegRow> = sql_query(sql)
            .bind::<BigInt, _>(id)
            .load(sqlite(&mut conn))
            .expect("registry row");
        rows.into_iter().next()
    }

    /// The model ids tracked by a registry, ascending.
    pub fn tracked(&self, d: &'static ReplicableDescriptor) -> Vec<i64> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = BigInt)]
            id: i64,
        }
        let sql = format!(
            "SELECT \"{k}\" AS id FROM \"{t}\" ORDER BY \"{k}\"",
            k = d.tables.registry_model_id,
            t = d.tables.registry
        );
        let mut conn = self.t();
        let rows: Vec<Id> = sql_query(sql).load(sqlite(&mut conn)).expect("tracked ids");
        rows.into_iter().map(|r| r.id).collect()
    }

    /// The primary's verification row of `id` (states table or inline columns).
    pub fn primary_row(&self, d: &'static ReplicableDescriptor, id: i64) -> Option<PrimaryRow> {
        let (table, key) = d.tables.verification.expect("type verifies");
        let sql = format!(
            "SELECT verification_state, verification_retry_count, verification_retry_at, verified_at, \
             verification_checksum, verification_failure FROM \"{table}\" WHERE \"{key}\" = ?"
        );
        let mut conn = self.p();
        let rows: Vec<PrimaryRow> = sql_query(sql)
            .bind::<BigInt, _>(id)
            .load(sqlite(&mut conn))
            .expect("primary row");
        rows.into_iter().next()
    }

    /// Every event on the primary, in id order.
    pub fn events(&self) -> Vec<EventRow> {
        let mut conn = self.p();
        sql_query("SELECT id, replicable_name, event_name, model_record_id, CAST(payload AS TEXT) AS payload FROM geo_events ORDER BY id")
            .load(sqlite(&mut conn))
            .expect("events")
    }

    /// The bytes of a secondary file, `None` when absent.
    pub fn secondary_bytes(&self, path: &str) -> Option<Vec<u8>> {
        read_opt(&self.secondary_store.root().join(path))
    }

    /// The checksum of a secondary file, `None` when absent (readable in assertion messages).
    pub fn secondary_sum(&self, path: &str) -> Option<Checksum> {
        self.secondary_bytes(path).map(|b| checksum_bytes(&b))
    }

    /// The bytes of a primary file, `None` when absent.
    pub fn primary_bytes(&self, path: &str) -> Option<Vec<u8>> {
        read_opt(&self.primary_store.root().join(path))
    }

    /// Every primary record's file equals its secondary copy (blake3 of both), and no other
    /// regular file than those (and temp files, listed separately) is in the secondary tree.
    pub fn assert_files_identical(&self) {
        let mut conn = self.p();
        for d in [wd(), gd()] {
            let ids = geo_diesel::primary::all_ids(&mut conn, d).expect("ids");
            for (id, path) in geo_diesel::primary::blob_paths(&mut conn, d, &ids).expect("paths") {
                let p = BlobPath::new(&path).expect("path");
                let a = self.primary_store.checksum(&p).map(|x| x.0).ok();
                let b = self.secondary_store.checksum(&p).map(|x| x.0).ok();
                assert!(a.is_some(), "{} {id}: primary file {path} missing", d.name);
                assert_eq!(a, b, "{} {id}: secondary copy of {path} differs", d.name);
            }
        }
    }
}

/// Reads a file, `None` when it does not exist.
pub fn read_opt(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Every regular file under `root`, as paths relative to it.
pub fn all_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(root)
                        .expect("under root")
                        .to_path_buf(),
                );
            }
        }
    }
    out.sort();
    out
}

/// The checksum type of `bytes`.
pub fn checksum(bytes: &[u8]) -> Checksum {
    checksum_bytes(bytes)
}
