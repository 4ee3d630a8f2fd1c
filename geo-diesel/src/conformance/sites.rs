//! The kit's sites: a primary and a secondary on SQLite files in a temporary folder, one
//! process, a manual clock and a fixed jitter; and the steps and reads the scenarios use, each
//! returning a readable [`Failure`].

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use diesel::prelude::*;
use geo_core::blob_store::{BlobPath, BlobStore, LocalBlobStore};
use geo_core::checksum::{Checksum, checksum_bytes};
use geo_core::clock::{Env, ManualClock};
use geo_core::{Replicable, ReplicableDescriptor, Role};

use super::{BlobModel, Failure, Fixture, Primary};
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
    next: u64,
    _dir: tempfile::TempDir,
}

/// What a `create` step made: the record, its id, its file and the content written.
pub struct Made<M> {
    /// The record the fixture returned.
    pub model: M,
    /// Its id.
    pub id: i64,
    /// Its file, as the primary database holds it now.
    pub path: String,
    /// The content it was given.
    pub content: Vec<u8>,
}

/// Deterministic content: `len` pseudo-random bytes from `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
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

    /// Runs the fixture's `step` (`what`, for a failure) with the primary's connection and store.
    fn with_primary<T>(
        &self,
        what: &str,
        step: impl FnOnce(&mut Primary<'_>) -> super::FixtureResult<T>,
    ) -> Result<T, Failure> {
        let mut conn = self.p()?;
        let mut p = Primary {
            conn: sqlite(&mut conn),
            store: self.primary_store.as_ref(),
        };
        step(&mut p).map_err(|e| self.error(what, e))
    }

    /// The fixture's `create` with fresh content; checks the record and its file on the
    /// primary and, when `expect_event`, its `created` event.
    pub fn create(&mut self, expect_event: bool) -> Result<Made<F::Model>, Failure> {
        self.next += 1;
        let n = self.next;
        let path = format!("conformance/{}/{n}.bin", self.d().name);
        let data = content(n, 3000 + 1000 * n as usize);
        let model = self.with_primary("the fixture's create", |p| {
            self.fixture.create(p, &path, &data)
        })?;
        let id = model.model_record_id();
        let file = model.file();
        let name = self.name(id, &file);
        match self.primary_path(id)? {
            None => {
                return Err(self
                    .fail("the new record in the primary's model table", "no such row")
                    .record(name)
                    .hint("create must insert the record (and commit) before it returns"));
            }
            Some(p) if p != file => {
                return Err(self
                    .fail(
                        format!("the model table's file column to hold {file:?}"),
                        format!("{p:?}"),
                    )
                    .record(name)
                    .hint("is #[replicable(file)] on the field that holds the blob path?"));
            }
            Some(_) => {}
        }
        let want = checksum_bytes(&data);
        let got = self.primary_sum(&file);
        if got != Some(want) {
            return Err(self
                .fail(
                    format!(
                        "the primary's file at {file:?} with the content given (blake3 {want})"
                    ),
                    found_sum(got),
                )
                .record(name)
                .hint("create must write the record's file, at the path its file column holds"));
        }
        if expect_event {
            self.expect_event(id, &file, EventKind::Created)?;
        }
        Ok(Made {
            model,
            id,
            path: file,
            content: data,
        })
    }

    /// The fixture's `update` with new content; checks the file on the primary and the
    /// `updated` event. Returns the record with its file as the primary now holds it.
    pub fn update(&mut self, made: &mut Made<F::Model>) -> Result<(), Failure> {
        self.next += 1;
        let data = content(self.next + 1_000, 2000 + 700 * self.next as usize);
        let before = self.events(made.id, EventKind::Updated)?;
        let model = &made.model;
        self.with_primary("the fixture's update", |p| {
            self.fixture.update(p, model, &data)
        })?;
        let name = self.name(made.id, &made.path);
        let path = self.primary_path(made.id)?.ok_or_else(|| {
            self.fail(
                "the record to remain on the primary after update",
                "no such row",
            )
            .record(name.clone())
        })?;
        let want = checksum_bytes(&data);
        let got = self.primary_sum(&path);
        if got != Some(want) {
            let old = (got == Some(checksum_bytes(&made.content))).then_some(" (the old content)");
            return Err(self
                .fail(
                    format!("the primary's file at {path:?} with the new content (blake3 {want})"),
                    format!("{}{}", found_sum(got), old.unwrap_or_default()),
                )
                .record(self.name(made.id, &path))
                .hint("update must write the new content to the record's file"));
        }
        let after = self.events(made.id, EventKind::Updated)?;
        if after <= before {
            return Err(self
                .fail(
                    "an `updated` event for the record on the primary",
                    "none was published",
                )
                .record(self.name(made.id, &path))
                .hint(
                    "a file rewritten under the same path changes no column: call \
                     geo_diesel::publish_updated in the update (with events = \"triggers\" too)",
                ));
        }
        made.path = path;
        made.content = data;
        Ok(())
    }

    /// The fixture's `delete`; checks the record is gone on the primary and its `deleted`
    /// event.
    pub fn delete(&mut self, made: &Made<F::Model>) -> Result<(), Failure> {
        let model = &made.model;
        self.with_primary("the fixture's delete", |p| self.fixture.delete(p, model))?;
        let name = self.name(made.id, &made.path);
        if let Some(p) = self.primary_path(made.id)? {
            return Err(self
                .fail(
                    "the record gone from the primary's model table",
                    format!("still there (file {p:?})"),
                )
                .record(name));
        }
        self.expect_event(made.id, &made.path, EventKind::Deleted)
    }

    fn expect_event(&self, id: i64, path: &str, kind: EventKind) -> Result<(), Failure> {
        if self.events(id, kind)? > 0 {
            return Ok(());
        }
        let call = match kind {
            EventKind::Created => "publish_created",
            EventKind::Deleted => "publish_deleted",
            _ => "publish_updated",
        };
        Err(self
            .fail(
                format!("a `{}` event for the record on the primary", kind.as_str()),
                "none was published",
            )
            .record(self.name(id, path))
            .hint(if self.d().captured_by_triggers() {
                "events = \"triggers\": are Geo's primary migrations (the triggers) applied after the schema?".to_owned()
            } else {
                format!(
                    "events = \"manual\": the fixture must call geo_diesel::{call} in the \
                     transaction that changes the record"
                )
            }))
    }

    /// The record is synced on the secondary with `made`'s content: registry row `synced`
    /// without failure, the registry's checksum and the secondary's file both the blake3 of it.
    pub fn expect_synced(&self, made: &Made<F::Model>) -> Result<RegistryRecord, Failure> {
        let name = self.name(made.id, &made.path);
        let row = self.reg_row(made.id, &made.path)?;
        let want = checksum_bytes(&made.content);
        if row.state != geo_core::ReplicationState::Synced {
            return Err(self
                .fail(
                    "the registry row synced",
                    format!("{:?}, failure {:?}", row.state, row.last_sync_failure),
                )
                .record(name));
        }
        let got = self.secondary_sum(&made.path);
        if got != Some(want) {
            return Err(self
                .fail(
                    format!(
                        "the secondary's file at {:?} with the primary's content (blake3 {want})",
                        made.path
                    ),
                    found_sum(got),
                )
                .record(name));
        }
        if row.verification_checksum.as_deref() != Some(&want.0[..]) {
            return Err(self
                .fail(
                    format!("the registry's checksum to be blake3 {want}"),
                    found_bytes(row.verification_checksum.as_deref()),
                )
                .record(name));
        }
        Ok(row)
    }
}

/// The concrete SQLite connection of a kit pool (the kit opens SQLite files only).
fn sqlite(conn: &mut PooledConn) -> &mut SqliteConnection {
    match conn {
        PooledConn::Sqlite(c) => c,
        #[cfg(feature = "postgres")]
        PooledConn::Pg(_) => unreachable!("the conformance kit opens SQLite files only"),
    }
}

fn sum_of(store: &dyn BlobStore, path: &str) -> Option<Checksum> {
    let p = BlobPath::new(path).ok()?;
    store.checksum(&p).ok().map(|(c, _)| c)
}

fn found_sum(got: Option<Checksum>) -> String {
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
