//! The replication and verification state machines: every rule as a value.
//!
//! Each rule is a function returning a [`Change`]: the allowed from-states and compare-and-set
//! conditions ([`Guard`]), the columns to set ([`Value`]) and what must follow ([`Then`]).
//! Nothing here reads a row or does I/O. geo-diesel turns a change into one conditional
//! statement — `UPDATE … SET … WHERE <key> IN (…) AND <guard>`, the `DO UPDATE` of an upsert,
//! or a claim `… WHERE <key> IN (SELECT … ORDER BY … LIMIT n [FOR UPDATE SKIP LOCKED])` — and
//! treats "0 rows updated" as "the row changed meanwhile; this result is stale".
//! [`Change::apply`] performs the same change on an in-memory row ([`RegistryFields`],
//! [`VerificationFields`]): the property tests run the rules there,
//! and a differential test in geo-tests checks that the SQL geo-diesel renders does exactly
//! the same on real SQLite.
//!
//! The behaviour is GitLab's (`replicable_registry.rb`, `verification_state.rb`,
//! `verifiable_registry.rb`), with these differences, each deliberate:
//! - a finished sync is recorded only while the row is still `started` with the same claim
//!   token (`last_synced_at`); an event that arrived during the download re-queues it instead
//!   ([`registry::requeue_changed`]) — GitLab clears the retry fields regardless;
//! - a download whose streamed checksum equals the primary's is verified at once
//!   ([`registry::synced`]), and a primary `checksum_succeeded` event verifies rows whose stored
//!   checksum already matches without reading the file again ([`registry::verified_by_event`]);
//! - a secondary verification failure forces a resync with backoff (GitLab #301244) and keeps
//!   the mismatching checksum ([`registry::verification_failed`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff::BackoffCap;
use crate::schema::Column;
use crate::state::{ReplicationState, UnknownState, VerificationState};
use crate::verification::VerificationFields;

pub mod change;
pub mod registry;
pub mod verification;

pub use change::{Change, Condition, Datum, Guard, Row, States, Then, Value};

/// The longest failure text stored (`last_sync_failure`, `verification_failure`), in characters.
pub const FAILURE_MAX_CHARS: usize = 255;

/// How long a sync may stay `started` before it is failed: 8 hours (GitLab's blob lease).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);

/// How long a verification may stay `started` before it is failed: 8 hours.
pub const VERIFICATION_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);

/// The verification failure recorded when a secondary's checksum differs from the primary's.
pub const MISMATCH_MESSAGE: &str = "Checksum does not match the primary checksum";

/// Prefix of `last_sync_failure` when a verification failure forces a resync.
pub const VERIFICATION_FAILED_PREFIX: &str = "Verification failed with: ";

/// `s` cut to at most [`FAILURE_MAX_CHARS`] characters, never inside a character.
pub fn truncate_failure(s: &str) -> String {
    match s.char_indices().nth(FAILURE_MAX_CHARS) {
        Some((byte, _)) => s[..byte].to_owned(),
        None => s.to_owned(),
    }
}

/// `"message: error"` (or just `message` without an error), cut to 255 characters.
pub fn failure_text(message: &str, error: Option<&str>) -> String {
    match error {
        Some(e) => truncate_failure(&format!("{message}: {e}")),
        None => truncate_failure(message),
    }
}

/// A duration in GitLab's words: `8 hours`, `1 hour`, `90 minutes`, `45 seconds`.
pub fn humanize_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    if secs > 0 && secs.is_multiple_of(3600) {
        plural(secs / 3600, "hour")
    } else if secs > 0 && secs.is_multiple_of(60) {
        plural(secs / 60, "minute")
    } else {
        plural(secs, "second")
    }
}

/// `"Sync timed out after 8 hours"`.
pub fn sync_timeout_message(timeout: Duration) -> String {
    format!("Sync timed out after {}", humanize_duration(timeout))
}

/// `"Verification timed out after 8 hours"`.
pub fn verification_timeout_message(timeout: Duration) -> String {
    format!(
        "Verification timed out after {}",
        humanize_duration(timeout)
    )
}

/// Rows started before this are stuck (`now − timeout`, saturating).
pub fn timeout_cutoff(now: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(timeout)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How a claim orders the candidate rows before it takes the first `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Ascending by the column (`NULL`s as the backend sorts them; used for non-null columns).
    Asc(Column),
    /// Rows where the column is `NULL` first, then ascending by it.
    NullsFirst(Column),
    /// Ascending by the table's row key (the registry's `id`, the states table's model id).
    Key,
}

/// A claim: a [`Change`] applied to the first `n` matching rows in [`Order`] — atomically,
/// and on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so concurrent workers claim disjoint rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The change (its guard selects the candidates).
    pub change: Change,
    /// The order candidates are taken in.
    pub order: Vec<Order>,
    /// The suffix of the partial index that holds exactly this claim's candidates
    /// ([`crate::schema::index`]), when the table has one. SQLite is told to read it (`INDEXED
    /// BY`): without statistics its planner prefers a plain index on one guard column and reads
    /// every row in that state (every row not yet synced, for a registry's verification claim).
    pub index: Option<&'static str>,
}

/// Why a sync failed, for [`registry::sync_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFailure {
    /// What failed, e.g. "Error downloading file".
    pub message: String,
    /// The underlying error, appended as `": error"`.
    pub error: Option<String>,
    /// The primary said the file is gone (stored, and selects the 4 h cap).
    pub missing_on_primary: bool,
    /// A cap overriding the default choice.
    pub cap: Option<BackoffCap>,
}

impl SyncFailure {
    /// A failure with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        SyncFailure {
            message: message.into(),
            error: None,
            missing_on_primary: false,
            cap: None,
        }
    }

    /// With the underlying error.
    pub fn with_error(mut self, error: impl std::fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Marks the file as missing on the primary.
    pub fn missing_on_primary(mut self, missing: bool) -> Self {
        self.missing_on_primary = missing;
        self
    }

    /// With a specific backoff cap.
    pub fn with_cap(mut self, cap: BackoffCap) -> Self {
        self.cap = Some(cap);
        self
    }

    /// The stored text: `"message: error"`, at most 255 characters.
    pub fn text(&self) -> String {
        failure_text(&self.message, self.error.as_deref())
    }

    /// The backoff cap: the explicit one, else 4 h when missing on the primary, else 1 h.
    pub fn cap(&self) -> BackoffCap {
        self.cap
            .unwrap_or(BackoffCap::for_missing_on_primary(self.missing_on_primary))
    }
}

/// The columns of one registry row on a secondary (see `docs/SCHEMA.md`), without the ids and
/// `created_at`: the in-memory [`Row`] the rules are tested on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryFields {
    /// `state` (see [`ReplicationState`]).
    pub state: i16,
    /// `retry_count`.
    pub retry_count: i16,
    /// `retry_at`.
    pub retry_at: Option<DateTime<Utc>>,
    /// `last_synced_at`: when the last sync attempt started (the claim token).
    pub last_synced_at: Option<DateTime<Utc>>,
    /// `last_sync_failure`, at most 255 characters.
    pub last_sync_failure: Option<String>,
    /// `missing_on_primary`: the last failure was the primary's file being gone.
    pub missing_on_primary: bool,
    /// `checksum_mismatch`: the last verification found a different checksum.
    pub checksum_mismatch: bool,
    /// `verification_checksum_mismatched`: the local checksum that did not match.
    pub verification_checksum_mismatched: Option<Vec<u8>>,
    /// `blob_path`: where the last successful sync wrote the file.
    pub blob_path: Option<String>,
    /// `claimed_by`: the secondary process holding the row's running sync or verification.
    pub claimed_by: Option<String>,
    /// The `verification_*` columns.
    pub verification: VerificationFields,
}

impl RegistryFields {
    /// A new registry row as the backfill inserts it: pending, never attempted.
    pub fn new() -> Self {
        RegistryFields::default()
    }

    /// The replication state.
    pub fn replication_state(&self) -> Result<ReplicationState, UnknownState> {
        ReplicationState::from_i16(self.state)
    }

    /// The verification state.
    pub fn verification_state(&self) -> Result<VerificationState, UnknownState> {
        VerificationState::from_i16(self.verification.state)
    }
}

fn small(d: Datum) -> i16 {
    match d {
        Datum::SmallInt(n) => n,
        _ => 0,
    }
}

fn time(d: Datum) -> Option<DateTime<Utc>> {
    match d {
        Datum::Time(t) => Some(t),
        _ => None,
    }
}

fn text(d: Datum) -> Option<String> {
    match d {
        Datum::Text(s) => Some(s),
        _ => None,
    }
}

fn bytes(d: Datum) -> Option<Vec<u8>> {
    match d {
        Datum::Bytes(b) => Some(b),
        _ => None,
    }
}

impl Row for VerificationFields {
    fn get(&self, column: Column) -> Datum {
        match column {
            Column::VerificationState => Datum::SmallInt(self.state),
            Column::VerificationStartedAt => Datum::time(self.started_at),
            Column::VerificationRetryAt => Datum::time(self.retry_at),
            Column::VerifiedAt => Datum::time(self.verified_at),
            Column::VerificationRetryCount => Datum::SmallInt(self.retry_count),
            Column::VerificationChecksum => Datum::bytes(self.checksum.clone()),
            Column::VerificationFailure => Datum::text(self.failure.clone()),
            _ => Datum::Null,
        }
    }

    fn set(&mut self, column: Column, value: Datum) {
        match column {
            Column::VerificationState => self.state = small(value),
            Column::VerificationStartedAt => self.started_at = time(value),
            Column::VerificationRetryAt => self.retry_at = time(value),
            Column::VerifiedAt => self.verified_at = time(value),
            Column::VerificationRetryCount => self.retry_count = small(value),
            Column::VerificationChecksum => self.checksum = bytes(value),
            Column::VerificationFailure => self.failure = text(value),
            _ => {}
        }
    }
}

impl Row for RegistryFields {
    fn get(&self, column: Column) -> Datum {
        match column {
            Column::State => Datum::SmallInt(self.state),
            Column::RetryCount => Datum::SmallInt(self.retry_count),
            Column::RetryAt => Datum::time(self.retry_at),
            Column::LastSyncedAt => Datum::time(self.last_synced_at),
            Column::LastSyncFailure => Datum::text(self.last_sync_failure.clone()),
            Column::MissingOnPrimary => Datum::Bool(self.missing_on_primary),
            Column::ChecksumMismatch => Datum::Bool(self.checksum_mismatch),
            Column::VerificationChecksumMismatched => {
                Datum::bytes(self.verification_checksum_mismatched.clone())
            }
            Column::BlobPath => Datum::text(self.blob_path.clone()),
            Column::ClaimedBy => Datum::text(self.claimed_by.clone()),
            other => self.verification.get(other),
        }
    }

    fn set(&mut self, column: Column, value: Datum) {
        match column {
            Column::State => self.state = small(value),
            Column::RetryCount => self.retry_count = small(value),
            Column::RetryAt => self.retry_at = time(value),
            Column::LastSyncedAt => self.last_synced_at = time(value),
            Column::LastSyncFailure => self.last_sync_failure = text(value),
            Column::MissingOnPrimary => self.missing_on_primary = value == Datum::Bool(true),
            Column::ChecksumMismatch => self.checksum_mismatch = value == Datum::Bool(true),
            Column::VerificationChecksumMismatched => {
                self.verification_checksum_mismatched = bytes(value);
            }
            Column::BlobPath => self.blob_path = text(value),
            Column::ClaimedBy => self.claimed_by = text(value),
            other => self.verification.set(other, value),
        }
    }
}
