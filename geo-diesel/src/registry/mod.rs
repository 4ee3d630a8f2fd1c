//! The secondary's registries: one [`Registry`] handle per replicable, whose methods run
//! geo-core's rules ([`geo_core::transitions::registry`]) against its `<name>_registry` table
//! in the tracking database. Every state change is one conditional statement built by
//! [`crate::sql::Table`]; this module decides only which rule applies and to which rows.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, SmallInt};
use geo_core::schema::Column;
use geo_core::transitions::registry as rules;
use geo_core::transitions::{Datum, SyncFailure};
use geo_core::{BackoffCap, ReplicableDescriptor, ReplicationState, VerificationState};

use crate::db::AsDbConn;
use crate::sql::{IdPathRow, IdRow, Sql, Table};

mod reads;
mod sync;
mod verification;

/// A registry query failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} in {registry}: {source}")]
#[non_exhaustive]
pub struct RegistryError {
    /// What was being done.
    pub what: &'static str,
    /// The registry table.
    pub registry: &'static str,
    /// The database error.
    #[source]
    pub source: diesel::result::Error,
}

impl From<RegistryError> for diesel::result::Error {
    fn from(e: RegistryError) -> Self {
        e.source
    }
}

/// The outcome of one download, to be recorded on its registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The file is in place. `local` is the checksum computed while writing it; `primary` the
    /// primary's checksum if the primary has verified the record (then they matched).
    Synced {
        /// Checksum of the file written.
        local: Vec<u8>,
        /// The primary's checksum, when known.
        primary: Option<Vec<u8>>,
    },
    /// The sync failed.
    Failed {
        /// `last_sync_failure` (cut to 255 characters).
        message: String,
        /// The file is missing on the primary (backoff cap 4 h).
        missing_on_primary: bool,
    },
}

/// The result of re-hashing a synced file on a secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The local checksum equals the primary's.
    Matched(Vec<u8>),
    /// The primary has not verified the record yet: verification `disabled` until its
    /// `checksum_succeeded` event arrives.
    PrimaryNotVerified,
    /// The local file differs from the primary's: record the mismatch and resync with backoff.
    Mismatch(Vec<u8>),
    /// The file could not be read (e.g. it is gone): verification failed, and the row is resynced.
    Error(String),
}

/// One successful download, for [`Registry::record_synced_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedRow {
    /// The model id.
    pub id: i64,
    /// Checksum of the file written.
    pub local: Vec<u8>,
    /// The primary's checksum, when known (then they matched).
    pub primary: Option<Vec<u8>>,
    /// Where the file was written.
    pub path: String,
}

/// Counts of one registry by state, from one grouped query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryCounts {
    /// All rows.
    pub registry: i64,
    /// `pending`.
    pub pending: i64,
    /// `started`.
    pub started: i64,
    /// `synced`.
    pub synced: i64,
    /// `failed`.
    pub failed: i64,
    /// Rows whose verification is not `disabled`.
    pub verification_total: i64,
    /// Synced rows with verification `succeeded`.
    pub verified: i64,
    /// Rows with verification `failed`.
    pub verification_failed: i64,
    /// Rows with `missing_on_primary`.
    pub missing_on_primary: i64,
}

/// What a secondary claims registry rows for ([`Registry::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Downloading the file.
    Sync,
    /// Re-hashing the synced file (secondary verification).
    Verification,
}

/// An operator's action on registry rows ([`Registry::act`]), GitLab's `resync` and `reverify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Download again: rows not `started` become `pending`.
    Resync,
    /// Verify again: synced rows not being verified become verification `pending`.
    Reverify,
}

/// The registry of one replicable on a secondary: knows its descriptor and table once.
#[derive(Debug, Clone, Copy)]
pub struct Registry {
    d: &'static ReplicableDescriptor,
    table: Table,
}

fn retry_for_sync(
    retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
) -> impl Fn(i16, BackoffCap) -> DateTime<Utc> + '_ {
    move |n, cap| retry_at(n, cap == BackoffCap::MissingOnPrimary)
}

impl Registry {
    /// The registry of `d`.
    pub const fn of(d: &'static ReplicableDescriptor) -> Self {
        Registry {
            d,
            table: Table {
                name: d.tables.registry,
                key: d.tables.registry_model_id,
                row_key: "id",
            },
        }
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &'static ReplicableDescriptor {
        self.d
    }

    /// The table the rules run against.
    pub fn table(&self) -> Table {
        self.table
    }

    fn err(&self, what: &'static str) -> impl FnOnce(diesel::result::Error) -> RegistryError {
        let registry = self.d.tables.registry;
        move |source| RegistryError {
            what,
            registry,
            source,
        }
    }

    fn apply(
        &self,
        conn: &mut impl AsDbConn,
        change: &geo_core::Change,
        ids: Option<&[i64]>,
    ) -> Result<Vec<i64>, RegistryError> {
        self.table
            .apply(conn, change, ids, &|_, _| Utc::now())
            .map_err(self.err(change.name))
    }
}
