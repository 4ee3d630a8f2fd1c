//! The kit's sites: a primary and a secondary on SQLite files in a temporary folder, one
//! process, a manual clock and a fixed jitter; and the steps and reads the scenarios use, each
//! returning a readable [`Failure`].

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_core::checksum::Checksum;
use geo_core::clock::{Env, ManualClock};
use geo_core::{Replicable, ReplicableDescriptor, Role};

use super::{Failure, Fixture};
use crate::admin::RegistryRecord;
use crate::admin::records::{RecordRow, get_record};
use crate::db::{DbPool, PooledConn};
use crate::direct::DirectSource;
use crate::primary::{EventKind, blob_paths};
use crate::registry::Registry;
use crate::schema::geo_events;
use crate::secondary::{Secondary, SecondaryConfig};
use crate::verifier::{PrimaryConfig, PrimaryVerifier};

/// The jitter draw of every kit clock (`rand(0..30)` answers this): the largest, so the 4-hour
/// cap is asserted at its widest.
pub const JITTER: u32 = 29;

/// A primary and a secondary for one scenario of one fixture. Fields drop in order: workers
/// and pools before the folder.
pub struct Sites<'f, F: Fixture> {
    /// The fixture under test.
    pub fixture: &'f F,
    /// The scenario running (for failures).
    pub scenario: &'static str,
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
    /// Clock and jitter shared by both sites.
    pub env: Env,
    /// Moves the time.
    pub clock: ManualClock,
    pub(super) next: u64,
    _dir: tempfile::TempDir,
}

fn start_time() -> DateTime<Utc> {
    // Whole seconds: the databases store microseconds, and the backoff is compared exactly.
    Utc.timestamp_opt(Utc::now().timestamp(), 0)
        .single()
        .unwrap_or_else(Utc::now)
}

impl<'f, F: Fixture> Sites<'f, F> {
    /// The replicable under test.
    pub fn d(&self) -> &'static ReplicableDescriptor {
        <F::Model as Replicable>::DESCRIPTOR
    }

    /// A failure of this scenario: `expected`, but `found`.
    pub fn fail(&self, expected: impl Into<String>, found: impl Into<String>) -> Failure {
        Failure::new(self.scenario, self.d(), expected, found)
    }

    /// A failure for an error of `step`.
    pub fn error(&self, step: &str, e: impl std::fmt::Display) -> Failure {
        self.fail(format!("{step} to succeed"), format!("error: {e}"))
    }

    /// Opens both sites for `scenario`: the fixture's schema and Geo's primary migrations on the
    /// primary, the secondary migrations on the tracking database. A type whose flag is off by
    /// default (`enabled_by_default = false`) gets it turned on at both sites, as an operator
    /// would before replicating it.
    pub fn open(fixture: &'f F, scenario: &'static str) -> Result<Self, Failure> {
        let d = <F::Model as Replicable>::DESCRIPTOR;
        let err = |step: &str, e: &dyn std::fmt::Display| {
            Failure::new(
                scenario,
                d,
                format!("{step} to succeed"),
                format!("error: {e}"),
            )
        };
        let dir = tempfile::Builder::new()
            .prefix("geo-conformance-")
            .tempdir()
            .map_err(|e| err("creating a temporary folder", &e))?;
        let url = |name: &str| dir.path().join(name).display().to_string();
        let primary_db = DbPool::connect(&url("primary.sqlite3"), 4)
            .map_err(|e| err("opening the primary database", &e))?;
        let tracking = DbPool::connect(&url("tracking.sqlite3"), 4)
            .map_err(|e| err("opening the tracking database", &e))?;
        {
            let mut conn = primary_db
                .get()
                .map_err(|e| err("connecting to the primary", &e))?;
            fixture
                .schema(sqlite(&mut conn))
                .map_err(|e| err("the fixture's schema", &e))?;
            crate::run_migrations(&mut conn, Role::Primary)
                .map_err(|e| err("Geo's primary migrations", &e))?;
            tracking
                .migrate(Role::Secondary)
                .map_err(|e| err("Geo's secondary migrations", &e))?;
        }
        let store = |name: &str| {
            LocalBlobStore::new(dir.path().join(name))
                .map(Arc::new)
                .map_err(|e| err("creating a blob store", &e))
        };
        let primary_store = store("primary-files")?;
        let secondary_store = store("secondary-files")?;
        let (env, clock) = Env::manual(start_time(), JITTER);
        let verifier = PrimaryVerifier::new(
            primary_db.clone(),
            primary_store.clone(),
            env.clone(),
            PrimaryConfig::default(),
        );
        let source = Arc::new(DirectSource::new(primary_db.clone(), primary_store.clone()));
        let secondary = Arc::new(Secondary::new(
            tracking.clone(),
            source,
            secondary_store.clone(),
            env.clone(),
            SecondaryConfig::default(),
        ));
        let sites = Sites {
            fixture,
            scenario,
            verifier,
            secondary,
            primary_db,
            tracking,
            primary_store,
            secondary_store,
            env,
            clock,
            next: 0,
            _dir: dir,
        };
        if !d.enabled_by_default {
            sites.set_flag(Role::Primary, true)?;
            sites.set_flag(Role::Secondary, true)?;
        }
        Ok(sites)
    }

    /// A primary connection.
    pub fn p(&self) -> Result<PooledConn, Failure> {
        self.primary_db
            .get()
            .map_err(|e| self.error("connecting to the primary", e))
    }

    /// A tracking connection.
    pub fn t(&self) -> Result<PooledConn, Failure> {
        self.tracking
            .get()
            .map_err(|e| self.error("connecting to the tracking database", e))
    }

    /// Turns the type's replication flag on or off at one site.
    pub fn set_flag(&self, site: Role, enabled: bool) -> Result<(), Failure> {
        let mut conn = match site {
            Role::Primary => self.p()?,
            Role::Secondary => self.t()?,
        };
        crate::primary::set_replication_enabled(&mut conn, self.d(), enabled, self.env.now())
            .map_err(|e| self.error("setting the replication flag", e))
    }

    /// Runs the primary's verifier and the secondary until both are idle, twice (so what one
    /// publishes reaches the other).
    pub fn converge(&self) -> Result<(), Failure> {
        for _ in 0..2 {
            self.verifier
                .run_until_idle(20)
                .map_err(|e| self.error("the primary's verifier", e))?;
            self.secondary
                .run_until_idle(20)
                .map_err(|e| self.error("the secondary's passes", e))?;
        }
        Ok(())
    }

    /// How many `kind` events the primary holds for record `id` of this type.
    pub fn events(&self, id: i64, kind: EventKind) -> Result<i64, Failure> {
        let mut conn = self.p()?;
        geo_events::table
            .filter(geo_events::replicable_name.eq(self.d().name))
            .filter(geo_events::event_name.eq(kind.as_str()))
            .filter(geo_events::model_record_id.eq(id))
            .count()
            .get_result(sqlite(&mut conn))
            .map_err(|e| self.error("counting events", e))
    }

    /// How many events of this type the primary holds.
    pub fn all_events(&self) -> Result<i64, Failure> {
        let mut conn = self.p()?;
        geo_events::table
            .filter(geo_events::replicable_name.eq(self.d().name))
            .count()
            .get_result(sqlite(&mut conn))
            .map_err(|e| self.error("counting events", e))
    }

    /// The file column of record `id` on the primary (`None`: no such record).
    pub fn primary_path(&self, id: i64) -> Result<Option<String>, Failure> {
        let rows = blob_paths(&mut self.p()?, self.d(), &[id])
            .map_err(|e| self.error("reading the primary's record", e))?;
        Ok(rows.into_iter().next().map(|(_, p)| p))
    }

    /// The checksum of the primary's file at `path` (`None`: absent or unreadable).
    pub fn primary_sum(&self, path: &str) -> Option<Checksum> {
        sum_of(self.primary_store.as_ref(), path)
    }

    /// The checksum of the secondary's file at `path` (`None`: absent or unreadable).
    pub fn secondary_sum(&self, path: &str) -> Option<Checksum> {
        sum_of(self.secondary_store.as_ref(), path)
    }

    /// The registry row of record `id`.
    pub fn reg(&self, id: i64) -> Result<Option<RegistryRecord>, Failure> {
        Registry::of(self.d())
            .get_by_model_id(&mut self.t()?, id)
            .map_err(|e| self.error("reading the registry row", e))
    }

    /// The registry row of record `id`; a failure naming it when there is none.
    pub fn reg_row(&self, id: i64, path: &str) -> Result<RegistryRecord, Failure> {
        self.reg(id)?.ok_or_else(|| {
            self.fail(
                "a registry row on the secondary",
                "no row: the secondary never heard of the record",
            )
            .record(self.name(id, path))
        })
    }

    /// Record `id` with its verification state on the primary.
    pub fn primary_record(&self, id: i64) -> Result<Option<RecordRow>, Failure> {
        get_record(&mut self.p()?, self.d(), id)
            .map_err(|e| self.error("reading the primary's verification state", e))
    }

    /// `widget 3, file widgets/3.bin`.
    pub fn name(&self, id: i64, path: &str) -> String {
        format!("{} {id}, file {path}", self.d().name)
    }
}

/// The concrete SQLite connection of a kit pool (the kit opens SQLite files only).
pub(super) fn sqlite(conn: &mut PooledConn) -> &mut SqliteConnection {
    match conn {
        PooledConn::Sqlite(c) => c,
        #[cfg(feature = "postgres")]
        PooledConn::Pg(_) => unreachable!("the conformance kit opens SQLite files only"),
    }
}

pub(super) fn sum_of(store: &dyn BlobStore, path: &str) -> Option<Checksum> {
    let p = BlobPath::new(path).ok()?;
    store.checksum(&p).ok().map(|(c, _)| c)
}

pub(super) fn found_sum(got: Option<Checksum>) -> String {
    match got {
        Some(c) => format!("blake3 {c}"),
        None => "no file".to_owned(),
    }
}

/// `blake3 <hex>` or `none`.
pub fn found_bytes(b: Option<&[u8]>) -> String {
    match b {
        Some(b) => format!("blake3 {}", hex::encode(b)),
        None => "none".to_owned(),
    }
}
