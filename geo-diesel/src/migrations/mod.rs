//! The framework migrations and the embedded migration runner.
//!
//! A database plays one [`Role`]: the primary's main database or a secondary's tracking
//! database. Its migration plan is the framework migration for that role (`geo_framework_<role>`)
//! followed by every registered replicable's migration (`<name>_<role>`) in name order; on the
//! primary, an `events = "triggers"` type's migration is followed by its event triggers
//! (`<name>_events_primary`, [`crate::primary::triggers`]), a step of its own so that a
//! database migrated before the triggers existed gets them on upgrade.
//! [`run_migrations`] applies what the ledger `geo_schema_migrations` does not record yet, each
//! migration in its own transaction, so running it again is a no-op; [`revert_migrations`] runs
//! the downs in reverse order. [`write_diesel_cli_migrations`] writes the same plan as
//! diesel_cli migration folders for applications that manage their schema with diesel_cli.
//!
//! On the primary, a replicable's migration refers to its model table: run the application's
//! own migrations first.
//!
//! Each role expects its own database. Both roles in one database work for applying, but the
//! framework `down` of either role drops the shared `geo_feature_flags` table.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use geo_core::{
    Backend, ReplicableDescriptor, Role, check_replicables, replicable::RegistryConflict,
    replicables,
};

use crate::connection::Ledger;
use crate::db::AsDbConn;
mod framework;
mod prune;

pub use framework::{
    ADMIN_MIGRATION_PREFIX, ADMIN_VERSION, FRAMEWORK_MIGRATION_PREFIX, FRAMEWORK_VERSION,
    LEASES_MIGRATION_PREFIX, LEASES_VERSION, NOTIFY_MIGRATION_PREFIX, NOTIFY_VERSION,
    SAFETY_MIGRATION_PREFIX, SAFETY_VERSION, admin_migration, framework_migration,
    leases_migration, ledger_ddl, safety_migration,
};
pub use prune::{PRUNE_MIGRATION_PREFIX, PRUNE_VERSION, prune_migration};

/// One step of a migration plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedMigration {
    /// Ledger name: `geo_framework_<role>`, `geo_admin_<role>`, `geo_safety_<role>`,
    /// `geo_leases_secondary`, `geo_notify_primary` (PostgreSQL), `geo_prune_primary`,
    /// `<replicable name>_<role>`
    /// or `<replicable name>_events_primary` (the event triggers).
    pub name: String,
    /// diesel_cli version (14 digits): [`FRAMEWORK_VERSION`] for the framework,
    /// [`ADMIN_VERSION`] for the admin tables; for a
    /// replicable `9` followed by 13 digits of a stable hash of its name. Stable, so adding a
    /// replicable never renumbers an existing folder, and starting with `9` so that diesel_cli
    /// applies it after the application's own timestamped migrations (which create the model
    /// tables the primary migration refers to). A replicable's event triggers get its version
    /// followed by `1` (15 digits), which sorts right after it and before every other
    /// replicable's in diesel's order (diesel_migrations sorts by the version string; `ls`,
    /// which sorts whole folder names, lists it before its base).
    pub version: String,
    /// Statements that apply it.
    pub up: Cow<'static, str>,
    /// Statements that revert it.
    pub down: Cow<'static, str>,
}

impl NamedMigration {
    /// The diesel_cli folder name: `<version>_<name>`.
    pub fn folder_name(&self) -> String {
        format!("{}_{}", self.version, self.name)
    }
}

/// The migrations for `backend` and `role`, in the order they are applied: the framework
/// (`geo_framework_<role>`), the admin tables (`geo_admin_<role>`), the safety tables
/// (`geo_safety_<role>`), on a secondary the scale-out tables (`geo_leases_secondary`), on a
/// PostgreSQL primary the trigger that NOTIFYs waiting event feeds (`geo_notify_primary`), on a
/// primary the pruning tables (`geo_prune_primary`, [`crate::primary::prune`]), then every
/// registered replicable in name order (each followed, on a primary, by its event
/// triggers when it has them).
pub fn migration_plan(backend: Backend, role: Role) -> Vec<NamedMigration> {
    plan_for(&replicables(), backend, role)
}

/// [`migration_plan`] for an explicit list of replicables (already sorted by name).
pub fn plan_for(
    descriptors: &[&'static ReplicableDescriptor],
    backend: Backend,
    role: Role,
) -> Vec<NamedMigration> {
    let framework = framework_migration(backend, role);
    let mut plan = vec![NamedMigration {
        name: format!("{FRAMEWORK_MIGRATION_PREFIX}_{role}"),
        version: FRAMEWORK_VERSION.to_owned(),
        up: framework.up.into(),
        down: framework.down.into(),
    }];
    let admin = admin_migration(backend, role);
    plan.push(NamedMigration {
        name: format!("{ADMIN_MIGRATION_PREFIX}_{role}"),
        version: ADMIN_VERSION.to_owned(),
        up: admin.up.into(),
        down: admin.down.into(),
    });
    let safety = safety_migration(backend, role);
    plan.push(NamedMigration {
        name: format!("{SAFETY_MIGRATION_PREFIX}_{role}"),
        version: SAFETY_VERSION.to_owned(),
        up: safety.up.into(),
        down: safety.down.into(),
    });
    if role == Role::Secondary {
        let leases = leases_migration(backend, role);
        plan.push(NamedMigration {
            name: format!("{LEASES_MIGRATION_PREFIX}_{role}"),
            version: LEASES_VERSION.to_owned(),
            up: leases.up.into(),
            down: leases.down.into(),
        });
    }
    if role == Role::Primary
        && let Some(t) = crate::primary::triggers::notify_triggers(backend)
    {
        plan.push(NamedMigration {
            name: format!("{NOTIFY_MIGRATION_PREFIX}_{role}"),
            version: NOTIFY_VERSION.to_owned(),
            up: t.up.into(),
            down: t.down.into(),
        });
    }
    if role == Role::Primary {
        let prune = prune_migration(backend, role);
        plan.push(NamedMigration {
            name: format!("{PRUNE_MIGRATION_PREFIX}_{role}"),
            version: PRUNE_VERSION.to_owned(),
            up: prune.up.into(),
            down: prune.down.into(),
        });
    }
    for d in descriptors {
        let m = d.migration(backend, role);
        plan.push(NamedMigration {
            name: format!("{}_{role}", d.name),
            version: replicable_version(d.name),
            up: m.up.into(),
            down: m.down.into(),
        });
        if role == Role::Primary
            && let Some(t) = crate::primary::triggers::event_triggers(d, backend)
        {
            plan.push(NamedMigration {
                name: events_migration_name(d),
                version: format!("{}1", replicable_version(d.name)),
                up: t.up.into(),
                down: t.down.into(),
            });
        }
    }
    plan
}

/// The ledger name of a replicable's event-trigger step: `<name>_events_primary`.
fn events_migration_name(d: &ReplicableDescriptor) -> String {
    format!("{}_events_{}", d.name, Role::Primary)
}

/// `9` followed by 13 decimal digits of the 64-bit FNV-1a hash of `name`: stable across Rust
/// versions and platforms (unlike `std`'s hasher).
fn replicable_version(name: &str) -> String {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("9{:013}", hash % 10_u64.pow(13))
}

/// What [`run_migrations`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The backend migrated.
    pub backend: Backend,
    /// The role migrated.
    pub role: Role,
    /// Migrations applied by this run, in order.
    pub applied: Vec<String>,
    /// Migrations the ledger already recorded, left alone.
    pub already_applied: Vec<String>,
}

impl MigrationReport {
    /// True when this run applied nothing: the database was already up to date.
    pub fn is_up_to_date(&self) -> bool {
        self.applied.is_empty()
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.applied.is_empty() {
            write!(
                f,
                "{} {} database is up to date ({} migrations already applied)",
                self.backend,
                self.role,
                self.already_applied.len()
            )
        } else {
            write!(
                f,
                "{} {} database: applied {} ({} already applied)",
                self.backend,
                self.role,
                self.applied.join(", "),
                self.already_applied.len()
            )
        }
    }
}

/// What [`revert_migrations`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertReport {
    /// The backend reverted.
    pub backend: Backend,
    /// The role reverted.
    pub role: Role,
    /// Migrations reverted by this run, in order.
    pub reverted: Vec<String>,
    /// Migrations of the plan the ledger did not record, left alone.
    pub not_applied: Vec<String>,
    /// Whether the ledger was dropped because it recorded nothing any more.
    pub dropped_ledger: bool,
}

impl fmt::Display for RevertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reverted.is_empty() {
            write!(
                f,
                "{} {} database: nothing to revert",
                self.backend, self.role
            )
        } else {
            write!(
                f,
                "{} {} database: reverted {}",
                self.backend,
                self.role,
                self.reverted.join(", ")
            )
        }
    }
}

/// Why migrating failed. Every migration runs in its own transaction, so the database is left
/// with the migrations before the failing one applied and recorded, and none of the failing one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// No connection could be checked out of the pool.
    #[error("cannot migrate: no database connection: {0}")]
    Pool(diesel::r2d2::PoolError),
    /// Two registered replicables collide.
    #[error("cannot migrate: {0}")]
    Conflict(#[from] RegistryConflict),
    /// A replicable's ledger name is another's event-trigger step (`x_events` beside a
    /// triggers type `x`).
    #[error(
        "replicable `{0}` has the ledger name `{0}_primary` of the event triggers of another replicable; give it another `name`"
    )]
    EventsNameClash(&'static str),
    /// A replicable uses the name reserved for the framework migrations.
    #[error(
        "replicable `{0}` uses the name reserved for Geo's framework migrations; give it another `name`"
    )]
    ReservedName(&'static str),
    /// The ledger `geo_schema_migrations` could not be created, read or dropped.
    #[error("the migration ledger geo_schema_migrations failed on {backend}: {source}")]
    Ledger {
        /// The backend.
        backend: Backend,
        /// The database error.
        #[source]
        source: diesel::result::Error,
    },
    /// Applying a migration failed; it was rolled back.
    #[error("applying migration `{name}` on {backend} failed: {source}")]
    Apply {
        /// The migration's ledger name, e.g. `widget_primary`.
        name: String,
        /// The backend.
        backend: Backend,
        /// The database error.
        #[source]
        source: diesel::result::Error,
    },
    /// Reverting a migration failed; it was rolled back.
    #[error("reverting migration `{name}` on {backend} failed: {source}")]
    Revert {
        /// The migration's ledger name.
        name: String,
        /// The backend.
        backend: Backend,
        /// The database error.
        #[source]
        source: diesel::result::Error,
    },
}

/// Checks the registered replicables and returns them with the plan for `backend` and `role`.
fn checked_plan(backend: Backend, role: Role) -> Result<Vec<NamedMigration>, MigrationError> {
    let all = replicables();
    check_replicables(&all)?;
    if let Some(d) = all.iter().find(|d| {
        [
            FRAMEWORK_MIGRATION_PREFIX,
            ADMIN_MIGRATION_PREFIX,
            SAFETY_MIGRATION_PREFIX,
            LEASES_MIGRATION_PREFIX,
            NOTIFY_MIGRATION_PREFIX,
            PRUNE_MIGRATION_PREFIX,
        ]
        .contains(&d.name)
    }) {
        return Err(MigrationError::ReservedName(d.name));
    }
    if let Some(d) = all.iter().find(|d| {
        all.iter()
            .any(|t| t.captured_by_triggers() && format!("{}_events", t.name) == d.name)
    }) {
        return Err(MigrationError::EventsNameClash(d.name));
    }
    Ok(plan_for(&all, backend, role))
}

/// Runs `sql` unless it holds no statement (a replicable without verification has no primary
/// migration, for example).
fn execute<C: Ledger>(conn: &mut C, sql: &str) -> diesel::QueryResult<()> {
    if sql.trim().is_empty() {
        Ok(())
    } else {
        conn.batch_execute(sql)
    }
}

/// Brings the database behind `conn` up to date for `role`: creates the ledger, then applies
/// every migration of [`migration_plan`] the ledger does not record, each in its own
/// transaction. Running it again applies nothing.
///
/// Fails before touching the database when two registered replicables collide
/// ([`geo_core::check_replicables`]).
///
/// `conn` is any connection Geo runs on: a `SqliteConnection`, a `PgConnection` (feature
/// `postgres`) or a pooled one ([`crate::DbPool::migrate`] does the checkout).
pub fn run_migrations(
    conn: &mut impl AsDbConn,
    role: Role,
) -> Result<MigrationReport, MigrationError> {
    crate::db::with_conn!(conn, c => run_on(c, role))
}

fn run_on<C: Ledger>(conn: &mut C, role: Role) -> Result<MigrationReport, MigrationError> {
    let backend = conn.backend();
    let plan = checked_plan(backend, role)?;
    conn.migration_transaction(|c| c.batch_execute(ledger_ddl(backend)))
        .map_err(|source| MigrationError::Ledger { backend, source })?;

    let mut report = MigrationReport {
        backend,
        role,
        applied: Vec::new(),
        already_applied: Vec::new(),
    };
    for m in plan {
        let applied = conn
            .migration_transaction(|c| {
                if c.migration_applied(&m.name)? {
                    return Ok(false);
                }
                execute(c, &m.up)?;
                c.record_migration(&m.name)?;
                Ok(true)
            })
            .map_err(|source| MigrationError::Apply {
                name: m.name.clone(),
                backend,
                source,
            })?;
        if applied {
            tracing::info!(migration = %m.name, %backend, %role, "applied migration");
            report.applied.push(m.name);
        } else {
            report.already_applied.push(m.name);
        }
    }
    Ok(report)
}

/// Reverts what [`run_migrations`] applied for `role`: runs the `down` of every recorded
/// migration of the plan in reverse order, each in its own transaction, and drops the ledger
/// once it records nothing. Migrations of replicables no longer compiled in are left alone
/// (and keep the ledger alive).
pub fn revert_migrations(
    conn: &mut impl AsDbConn,
    role: Role,
) -> Result<RevertReport, MigrationError> {
    crate::db::with_conn!(conn, c => revert_on(c, role))
}

fn revert_on<C: Ledger>(conn: &mut C, role: Role) -> Result<RevertReport, MigrationError> {
    let backend = conn.backend();
    let plan = checked_plan(backend, role)?;
    let ledger = |source| MigrationError::Ledger { backend, source };
    conn.migration_transaction(|c| c.batch_execute(ledger_ddl(backend)))
        .map_err(ledger)?;

    let mut report = RevertReport {
        backend,
        role,
        reverted: Vec::new(),
        not_applied: Vec::new(),
        dropped_ledger: false,
    };
    for m in plan.into_iter().rev() {
        let reverted = conn
            .migration_transaction(|c| {
                if !c.migration_applied(&m.name)? {
                    return Ok(false);
                }
                execute(c, &m.down)?;
                c.forget_migration(&m.name)?;
                Ok(true)
            })
            .map_err(|source| MigrationError::Revert {
                name: m.name.clone(),
                backend,
                source,
            })?;
        if reverted {
            tracing::info!(migration = %m.name, %backend, %role, "reverted migration");
            report.reverted.push(m.name);
        } else {
            report.not_applied.push(m.name);
        }
    }
    report.dropped_ledger = conn
        .migration_transaction(|c| {
            if c.recorded_migration_count()? == 0 {
                c.batch_execute(r#"DROP TABLE IF EXISTS "geo_schema_migrations""#)?;
                Ok(true)
            } else {
                Ok(false)
            }
        })
        .map_err(ledger)?;
    Ok(report)
}

/// Writes [`migration_plan`] as diesel_cli migration folders `<dir>/<version>_<name>/` with
/// `up.sql` and `down.sql`, creating `dir` if needed, and returns the folders in plan order.
///
/// The output is byte-identical between runs and stable when replicables are added (see
/// [`NamedMigration::version`]). A replicable with no SQL for this role gets no folder.
/// Existing files of the same names are overwritten; nothing else in `dir` is touched.
///
/// Fails with [`io::ErrorKind::InvalidInput`] when registered replicables collide.
pub fn write_diesel_cli_migrations(
    dir: &Path,
    backend: Backend,
    role: Role,
) -> io::Result<Vec<PathBuf>> {
    let plan =
        checked_plan(backend, role).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut written = Vec::new();
    for m in plan {
        if m.up.trim().is_empty() && m.down.trim().is_empty() {
            continue;
        }
        let folder = dir.join(m.folder_name());
        std::fs::create_dir_all(&folder)?;
        for (file, sql) in [("up.sql", &m.up), ("down.sql", &m.down)] {
            let mut text = format!(
                "-- {} ({backend}, {role}), generated by geo-diesel; do not edit.\n{sql}",
                m.name
            );
            if !text.ends_with('\n') {
                text.push('\n');
            }
            std::fs::write(folder.join(file), text)?;
        }
        written.push(folder);
    }
    Ok(written)
}

#[cfg(test)]
mod tests;
