//! The replication and verification state machines, as pure functions.
//!
//! Every transition reads the current columns of a row ([`RegistryFields`] on a secondary,
//! [`VerificationFields`] on the primary) and returns the change to make as data
//! ([`RegistryChange`], [`VerificationChange`]): a guard (the `WHERE` of a compare-and-set
//! update) and the exact column values to `SET`. Nothing here does I/O; geo-diesel turns a change
//! into `UPDATE … SET … WHERE id = ? AND <guard>` and treats "0 rows updated" as "the row changed
//! meanwhile; this result is stale". [`RegistryChange::apply_to`] does the same in memory and is
//! what the tests (and in-memory users) call.
//!
//! The behaviour is GitLab's (`replicable_registry.rb`, `verification_state.rb`,
//! `verifiable_registry.rb`):
//!
//! **Replication** (`pending 0 → started 1 → synced 2 | failed 3`), module [`replication`]:
//! - `pending` (any → pending): `retry_at = NULL`, `retry_count = 0`, `last_synced_at = NULL`.
//! - `start` (pending/synced/failed → started): `last_synced_at = now` ("last attempt started").
//!   From `started` it is refused: another sync is running.
//! - `synced` (only started → synced): clears `retry_count`, `retry_at`, `last_sync_failure`,
//!   `missing_on_primary`; verification becomes `pending` when the primary has verified the
//!   record and `disabled` when it has not. If the row is no longer `started` (an event set it
//!   back to `pending` during the sync), nothing changes: the row stays pending and is synced
//!   again ([`SyncedOutcome::NotStarted`]).
//! - `failed` (any → failed): `retry_count + 1` (saturating), `retry_at` from
//!   [`next_retry_time`], `last_sync_failure = "message: error"` cut to 255 characters,
//!   `missing_on_primary` stored (it selects the 4 h backoff cap).
//! - `resync` (synced/failed → pending).
//! - timeout: rows `started` for longer than 8 h become failed with "Sync timed out after 8
//!   hours", `retry_count = 1`.
//!
//! **Verification** (`pending 0, started 1, succeeded 2, failed 3, disabled 4`), module
//! [`verification`]: `started` (any; sets `verification_started_at`), `succeeded` (only from
//! started; stores the checksum, `verified_at = now`, clears the failure fields), `failed`
//! (any; `verification_retry_count + 1`, `verification_retry_at`, `verified_at = now`, clears
//! the checksum, failure cut to 255), `pending` (any; clears the failure fields, except that from
//! `failed` the retry count and time are kept so the backoff keeps growing), `disabled` (any).
//!
//! **On a secondary's registry**, module [`registry_verification`]: a verification failure also
//! forces replication to `failed` with `retry_count = verification_retry_count` and
//! `last_sync_failure = "Verification failed with: …"`, so the file is downloaded again with
//! growing backoff (GitLab #301244). A checksum mismatch additionally records
//! `checksum_mismatch = true` and the local checksum in `verification_checksum_mismatched`.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::backoff::{BackoffCap, next_retry_time};
use crate::checksum::{Checksum, ChecksumComparison};
use crate::clock::Env;
use crate::source::PrimaryChecksum;
use crate::state::{ReplicationState, UnknownState, VerificationState};
use crate::verification::VerificationFields;

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

fn duration_to_delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn cutoff(now: DateTime<Utc>, timeout: Duration) -> DateTime<Utc> {
    now.checked_sub_signed(duration_to_delta(timeout))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event is not allowed from the current state.
    #[error("cannot {event} a {machine} in state {from}")]
    NotAllowed {
        /// `"registry"`, `"verification"` or `"registry verification"`.
        machine: &'static str,
        /// The event, e.g. `"start"`.
        event: &'static str,
        /// The current state's name.
        from: &'static str,
    },
    /// The stored state is not a known value.
    #[error(transparent)]
    UnknownState(#[from] UnknownState),
    /// A verification failure needs a message.
    #[error("a verification failure needs a non-empty message")]
    EmptyMessage,
}

/// The registry columns of one row on a secondary (see `docs/SCHEMA.md`), without the ids and
/// `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryFields {
    /// `state` (see [`ReplicationState`]).
    pub state: i16,
    /// `retry_count`.
    pub retry_count: i16,
    /// `retry_at`.
    pub retry_at: Option<DateTime<Utc>>,
    /// `last_synced_at`: when the last sync attempt started.
    pub last_synced_at: Option<DateTime<Utc>>,
    /// `last_sync_failure`, at most 255 characters.
    pub last_sync_failure: Option<String>,
    /// `missing_on_primary`: the last failure was the primary's file being gone.
    pub missing_on_primary: bool,
    /// `checksum_mismatch`: the last verification found a different checksum.
    pub checksum_mismatch: bool,
    /// `verification_checksum_mismatched`: the local checksum that did not match.
    pub verification_checksum_mismatched: Option<Vec<u8>>,
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

    /// Pending and never attempted (`last_synced_at IS NULL`): scheduled first.
    pub fn is_never_attempted(&self) -> bool {
        self.state == ReplicationState::Pending.as_i16() && self.last_synced_at.is_none()
    }

    /// Failed with a due retry (`retry_at IS NULL OR retry_at < now`): scheduled after the
    /// never-attempted rows.
    pub fn is_retry_due(&self, now: DateTime<Utc>) -> bool {
        self.state == ReplicationState::Failed.as_i16() && self.retry_at.is_none_or(|t| t < now)
    }

    /// Applies `change` if its guard matches, like a conditional `UPDATE`; returns whether it
    /// did (false = "0 rows updated").
    pub fn apply(&mut self, change: &RegistryChange) -> bool {
        change.apply_to(self)
    }
}

/// A change to verification columns: a guard and the values to set. `None` leaves a column
/// alone; `Some(None)` sets it to `NULL` (the shape of Diesel's `AsChangeset` for nullable
/// columns).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerificationChange {
    /// Apply only when `verification_state` is one of these (`None`: any state).
    pub when_state_in: Option<&'static [VerificationState]>,
    /// Apply only when `verification_started_at` still has this value (a newer verification
    /// started meanwhile otherwise, and this result is stale).
    pub when_started_at: Option<Option<DateTime<Utc>>>,
    /// New `verification_state`.
    pub state: Option<VerificationState>,
    /// New `verification_started_at`.
    pub started_at: Option<Option<DateTime<Utc>>>,
    /// New `verification_retry_at`.
    pub retry_at: Option<Option<DateTime<Utc>>>,
    /// New `verified_at`.
    pub verified_at: Option<Option<DateTime<Utc>>>,
    /// New `verification_retry_count`.
    pub retry_count: Option<i16>,
    /// New `verification_checksum`.
    pub checksum: Option<Option<Vec<u8>>>,
    /// New `verification_failure`.
    pub failure: Option<Option<String>>,
}

impl VerificationChange {
    /// Whether the guard matches `f`.
    pub fn guard_matches(&self, f: &VerificationFields) -> bool {
        let state_ok = self.when_state_in.is_none_or(|states| {
            VerificationState::from_i16(f.state).is_ok_and(|s| states.contains(&s))
        });
        let started_ok = self
            .when_started_at
            .as_ref()
            .is_none_or(|t| *t == f.started_at);
        state_ok && started_ok
    }

    /// Whether the change sets nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.started_at.is_none()
            && self.retry_at.is_none()
            && self.verified_at.is_none()
            && self.retry_count.is_none()
            && self.checksum.is_none()
            && self.failure.is_none()
    }

    fn set(&self, f: &mut VerificationFields) {
        if let Some(s) = self.state {
            f.state = s.as_i16();
        }
        if let Some(v) = self.started_at {
            f.started_at = v;
        }
        if let Some(v) = self.retry_at {
            f.retry_at = v;
        }
        if let Some(v) = self.verified_at {
            f.verified_at = v;
        }
        if let Some(v) = self.retry_count {
            f.retry_count = v;
        }
        if let Some(v) = &self.checksum {
            f.checksum.clone_from(v);
        }
        if let Some(v) = &self.failure {
            f.failure.clone_from(v);
        }
    }

    /// Applies the change if the guard matches; returns whether it did.
    pub fn apply_to(&self, f: &mut VerificationFields) -> bool {
        if !self.guard_matches(f) {
            return false;
        }
        self.set(f);
        true
    }
}

/// A change to a registry row: guards and the values to set (see [`VerificationChange`] for the
/// `Option<Option<_>>` convention). The verification part's guard is part of the row's guard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryChange {
    /// Apply only when `state` is one of these (`None`: any state).
    pub when_state_in: Option<&'static [ReplicationState]>,
    /// New `state`.
    pub state: Option<ReplicationState>,
    /// New `retry_count`.
    pub retry_count: Option<i16>,
    /// New `retry_at`.
    pub retry_at: Option<Option<DateTime<Utc>>>,
    /// New `last_synced_at`.
    pub last_synced_at: Option<Option<DateTime<Utc>>>,
    /// New `last_sync_failure`.
    pub last_sync_failure: Option<Option<String>>,
    /// New `missing_on_primary`.
    pub missing_on_primary: Option<bool>,
    /// New `checksum_mismatch`.
    pub checksum_mismatch: Option<bool>,
    /// New `verification_checksum_mismatched`.
    pub verification_checksum_mismatched: Option<Option<Vec<u8>>>,
    /// Changes to the `verification_*` columns, with their own guard.
    pub verification: VerificationChange,
}

impl RegistryChange {
    /// Whether every guard matches `f`.
    pub fn guard_matches(&self, f: &RegistryFields) -> bool {
        let state_ok = self.when_state_in.is_none_or(|states| {
            ReplicationState::from_i16(f.state).is_ok_and(|s| states.contains(&s))
        });
        state_ok && self.verification.guard_matches(&f.verification)
    }

    /// Applies the change if every guard matches; returns whether it did.
    pub fn apply_to(&self, f: &mut RegistryFields) -> bool {
        if !self.guard_matches(f) {
            return false;
        }
        if let Some(s) = self.state {
            f.state = s.as_i16();
        }
        if let Some(v) = self.retry_count {
            f.retry_count = v;
        }
        if let Some(v) = self.retry_at {
            f.retry_at = v;
        }
        if let Some(v) = self.last_synced_at {
            f.last_synced_at = v;
        }
        if let Some(v) = &self.last_sync_failure {
            f.last_sync_failure.clone_from(v);
        }
        if let Some(v) = self.missing_on_primary {
            f.missing_on_primary = v;
        }
        if let Some(v) = self.checksum_mismatch {
            f.checksum_mismatch = v;
        }
        if let Some(v) = &self.verification_checksum_mismatched {
            f.verification_checksum_mismatched.clone_from(v);
        }
        self.verification.set(&mut f.verification);
        true
    }

    fn with_verification(mut self, v: VerificationChange) -> Self {
        self.verification = v;
        self
    }
}

/// Whether the primary has verified a record, which decides the secondary's verification state
/// after a successful sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrimaryVerification {
    /// The primary's verification succeeded: verification becomes `pending`.
    Verified,
    /// The primary has not verified it (yet): verification becomes `disabled`.
    NotVerified,
    /// The type does not verify: verification columns are left alone.
    NotApplicable,
}

impl PrimaryVerification {
    /// From the primary's state of the record, when the type verifies.
    pub fn from_primary(primary: Option<&PrimaryChecksum>) -> Self {
        match primary.and_then(PrimaryChecksum::verified_checksum) {
            Some(_) => PrimaryVerification::Verified,
            None => PrimaryVerification::NotVerified,
        }
    }
}

/// Why a sync failed, for [`replication::failed`].
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
    pub fn with_error(mut self, error: impl fmt::Display) -> Self {
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

fn next_count(count: i16) -> i16 {
    count.max(0).saturating_add(1)
}

/// The replication state machine of a registry row.
pub mod replication {
    use super::*;

    const FROM_STARTABLE: &[ReplicationState] = &[
        ReplicationState::Pending,
        ReplicationState::Synced,
        ReplicationState::Failed,
    ];
    const FROM_STARTED: &[ReplicationState] = &[ReplicationState::Started];
    const FROM_RESYNCABLE: &[ReplicationState] =
        &[ReplicationState::Synced, ReplicationState::Failed];

    fn to_pending() -> RegistryChange {
        RegistryChange {
            state: Some(ReplicationState::Pending),
            retry_at: Some(None),
            retry_count: Some(0),
            last_synced_at: Some(None),
            ..RegistryChange::default()
        }
    }

    /// `pending`: any state → pending; clears `retry_at`, `retry_count` and `last_synced_at`.
    /// Used when an event says the data changed (a running sync then finds the row no longer
    /// `started` and leaves it pending).
    pub fn pending(_f: &RegistryFields) -> RegistryChange {
        to_pending()
    }

    /// `start`: pending/synced/failed → started, `last_synced_at = now`. Refused from
    /// `started` (another sync holds the row). The guard makes a concurrent start lose.
    pub fn start(f: &RegistryFields, env: &Env) -> Result<RegistryChange, TransitionError> {
        let from = f.replication_state()?;
        if !FROM_STARTABLE.contains(&from) {
            return Err(TransitionError::NotAllowed {
                machine: "registry",
                event: "start",
                from: from.as_str(),
            });
        }
        Ok(RegistryChange {
            when_state_in: Some(FROM_STARTABLE),
            state: Some(ReplicationState::Started),
            last_synced_at: Some(Some(env.now())),
            ..RegistryChange::default()
        })
    }

    /// The outcome of [`synced`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum SyncedOutcome {
        /// Apply this change (guarded on `state = started`).
        Synced(Box<RegistryChange>),
        /// The row is not `started` any more (an event set it back to pending, or a timeout
        /// failed it): the finished sync is stale, nothing changes, and the row is synced again.
        NotStarted(ReplicationState),
    }

    /// `synced`: only started → synced. Clears `retry_count`, `retry_at`, `last_sync_failure`
    /// and `missing_on_primary`, and sets verification to `pending` (when the primary verified
    /// the record; from `failed` the verification retry counters are kept) or `disabled`.
    ///
    /// GitLab clears the retry fields even when the row is no longer started; here a stale
    /// sync changes nothing at all.
    pub fn synced(
        f: &RegistryFields,
        primary: PrimaryVerification,
    ) -> Result<SyncedOutcome, TransitionError> {
        let from = f.replication_state()?;
        if from != ReplicationState::Started {
            return Ok(SyncedOutcome::NotStarted(from));
        }
        let verification = match primary {
            PrimaryVerification::Verified => registry_verification::pending(f),
            PrimaryVerification::NotVerified => registry_verification::disabled(f),
            PrimaryVerification::NotApplicable => RegistryChange::default(),
        };
        Ok(SyncedOutcome::Synced(Box::new(RegistryChange {
            when_state_in: Some(FROM_STARTED),
            state: Some(ReplicationState::Synced),
            retry_count: Some(0),
            retry_at: Some(None),
            last_sync_failure: Some(None),
            missing_on_primary: Some(false),
            ..verification
        })))
    }

    /// `failed`: any state → failed. `retry_count + 1` (saturating; a negative count restarts
    /// at 1), `retry_at = next_retry_time(retry_count, cap)`, `last_sync_failure` = the failure
    /// text, `missing_on_primary` stored.
    pub fn failed(f: &RegistryFields, env: &Env, failure: &SyncFailure) -> RegistryChange {
        let count = next_count(f.retry_count);
        RegistryChange {
            state: Some(ReplicationState::Failed),
            retry_count: Some(count),
            retry_at: Some(Some(next_retry_time(
                env.now(),
                i64::from(count),
                failure.cap(),
                env.rng.as_ref(),
            ))),
            last_sync_failure: Some(Some(failure.text())),
            missing_on_primary: Some(failure.missing_on_primary),
            ..RegistryChange::default()
        }
    }

    /// `resync`: synced/failed → pending, with `pending`'s side effects.
    pub fn resync(f: &RegistryFields) -> Result<RegistryChange, TransitionError> {
        let from = f.replication_state()?;
        if !FROM_RESYNCABLE.contains(&from) {
            return Err(TransitionError::NotAllowed {
                machine: "registry",
                event: "resync",
                from: from.as_str(),
            });
        }
        Ok(RegistryChange {
            when_state_in: Some(FROM_RESYNCABLE),
            ..to_pending()
        })
    }

    /// The set-based sync timeout, as one `UPDATE` applies it to every stuck row:
    /// `WHERE state = 1 AND (last_synced_at IS NULL OR last_synced_at < started_before)`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SyncTimeoutSweep {
        /// Rows whose sync started before this are stuck.
        pub started_before: DateTime<Utc>,
        /// The change for every stuck row (guarded on `state = started`): failed,
        /// "Sync timed out after 8 hours", `retry_count = 1`, `retry_at = next_retry_time(1)`.
        pub change: RegistryChange,
    }

    impl SyncTimeoutSweep {
        /// Whether `f` is a stuck row. A `started` row without `last_synced_at` (which `start`
        /// always sets) counts as stuck, so it cannot stay started forever.
        pub fn matches(&self, f: &RegistryFields) -> bool {
            f.state == ReplicationState::Started.as_i16()
                && f.last_synced_at.is_none_or(|t| t < self.started_before)
        }
    }

    /// The sync timeout sweep for rows started more than `timeout` ago (GitLab:
    /// `fail_sync_timeouts`, every 10 minutes, [`SYNC_TIMEOUT`] = 8 h).
    pub fn sync_timeout_sweep(env: &Env, timeout: Duration) -> SyncTimeoutSweep {
        let now = env.now();
        SyncTimeoutSweep {
            started_before: cutoff(now, timeout),
            change: RegistryChange {
                when_state_in: Some(FROM_STARTED),
                state: Some(ReplicationState::Failed),
                retry_count: Some(1),
                retry_at: Some(Some(next_retry_time(
                    now,
                    1,
                    BackoffCap::Default,
                    env.rng.as_ref(),
                ))),
                last_sync_failure: Some(Some(truncate_failure(&sync_timeout_message(timeout)))),
                ..RegistryChange::default()
            },
        }
    }

    /// The timeout for one row: `Some(change)` when it is stuck in `started`.
    pub fn timed_out(f: &RegistryFields, env: &Env, timeout: Duration) -> Option<RegistryChange> {
        let sweep = sync_timeout_sweep(env, timeout);
        sweep.matches(f).then_some(sweep.change)
    }
}

/// The verification state machine over [`VerificationFields`] (primary state rows; the
/// registry's verification columns are changed through [`registry_verification`]).
pub mod verification {
    use super::*;

    const FROM_STARTED: &[VerificationState] = &[VerificationState::Started];

    /// `verification_started`: any → started, `verification_started_at = now`.
    pub fn started(_f: &VerificationFields, env: &Env) -> VerificationChange {
        VerificationChange {
            state: Some(VerificationState::Started),
            started_at: Some(Some(env.now())),
            ..VerificationChange::default()
        }
    }

    fn clear_failure_fields() -> VerificationChange {
        VerificationChange {
            retry_count: Some(0),
            retry_at: Some(None),
            failure: Some(None),
            ..VerificationChange::default()
        }
    }

    /// `verification_succeeded`: only from started. Stores `checksum`, `verified_at = now`,
    /// clears `verification_retry_count`, `verification_retry_at` and `verification_failure`.
    /// Guarded on the state and on `verification_started_at`, so a result computed before a newer
    /// verification started is dropped.
    pub fn succeeded(
        f: &VerificationFields,
        env: &Env,
        checksum: &Checksum,
    ) -> Result<VerificationChange, TransitionError> {
        let from = VerificationState::from_i16(f.state)?;
        if from != VerificationState::Started {
            return Err(TransitionError::NotAllowed {
                machine: "verification",
                event: "succeed",
                from: from.as_str(),
            });
        }
        Ok(VerificationChange {
            when_state_in: Some(FROM_STARTED),
            when_started_at: Some(f.started_at),
            state: Some(VerificationState::Succeeded),
            verified_at: Some(Some(env.now())),
            checksum: Some(Some(checksum.to_vec())),
            ..clear_failure_fields()
        })
    }

    /// `verification_failed`: any → failed. `verification_retry_count + 1` (saturating),
    /// `verification_retry_at = next_retry_time(count)`, `verified_at = now`, the checksum is
    /// cleared and `verification_failure = message` (cut to 255 characters). `message` must not
    /// be blank.
    pub fn failed(
        f: &VerificationFields,
        env: &Env,
        message: &str,
    ) -> Result<VerificationChange, TransitionError> {
        if message.trim().is_empty() {
            return Err(TransitionError::EmptyMessage);
        }
        let now = env.now();
        let count = next_count(f.retry_count);
        Ok(VerificationChange {
            state: Some(VerificationState::Failed),
            retry_count: Some(count),
            retry_at: Some(Some(next_retry_time(
                now,
                i64::from(count),
                BackoffCap::Default,
                env.rng.as_ref(),
            ))),
            verified_at: Some(Some(now)),
            checksum: Some(None),
            failure: Some(Some(truncate_failure(message))),
            ..VerificationChange::default()
        })
    }

    /// `verification_pending`: any → pending. Clears the failure fields; coming from `failed`
    /// only the message is cleared, so the retry count and time keep the backoff growing.
    pub fn pending(f: &VerificationFields) -> VerificationChange {
        let base = if f.state == VerificationState::Failed.as_i16() {
            VerificationChange {
                failure: Some(None),
                ..VerificationChange::default()
            }
        } else {
            clear_failure_fields()
        };
        VerificationChange {
            state: Some(VerificationState::Pending),
            ..base
        }
    }

    /// `verification_disabled`: any → disabled.
    pub fn disabled(_f: &VerificationFields) -> VerificationChange {
        VerificationChange {
            state: Some(VerificationState::Disabled),
            ..VerificationChange::default()
        }
    }

    /// Rows whose verification started before this time are stuck.
    pub fn timeout_cutoff(env: &Env, timeout: Duration) -> DateTime<Utc> {
        cutoff(env.now(), timeout)
    }

    /// Whether `f` has been `started` longer than `timeout` (a started row without
    /// `verification_started_at` counts as stuck).
    pub fn is_timed_out(f: &VerificationFields, env: &Env, timeout: Duration) -> bool {
        f.state == VerificationState::Started.as_i16()
            && f.started_at
                .is_none_or(|t| t < timeout_cutoff(env, timeout))
    }

    /// The timeout for one row: `Some(failed("Verification timed out after 8 hours"))`,
    /// guarded on the row still being the same started verification, when it is stuck.
    pub fn timed_out(
        f: &VerificationFields,
        env: &Env,
        timeout: Duration,
    ) -> Option<VerificationChange> {
        if !is_timed_out(f, env, timeout) {
            return None;
        }
        let change = failed(f, env, &verification_timeout_message(timeout)).ok()?;
        Some(VerificationChange {
            when_state_in: Some(FROM_STARTED),
            when_started_at: Some(f.started_at),
            ..change
        })
    }
}

/// Verification transitions of a registry row on a secondary, with the registry's extra
/// effects (mismatch columns, forced resync on failure).
pub mod registry_verification {
    use super::*;

    const SYNCED: &[ReplicationState] = &[ReplicationState::Synced];

    fn only(v: VerificationChange) -> RegistryChange {
        RegistryChange::default().with_verification(v)
    }

    fn require_synced(f: &RegistryFields, event: &'static str) -> Result<(), TransitionError> {
        let from = f.replication_state()?;
        if from != ReplicationState::Synced {
            return Err(TransitionError::NotAllowed {
                machine: "registry verification",
                event,
                from: from.as_str(),
            });
        }
        Ok(())
    }

    /// Verification started (only the verification columns change).
    pub fn started(f: &RegistryFields, env: &Env) -> RegistryChange {
        only(verification::started(&f.verification, env))
    }

    /// Verification pending (e.g. on the primary's `checksum_succeeded` event, or after a
    /// sync). Like [`verification::pending`]; when not coming from `failed` it also clears
    /// `checksum_mismatch` and `verification_checksum_mismatched`.
    pub fn pending(f: &RegistryFields) -> RegistryChange {
        let v = verification::pending(&f.verification);
        if f.verification.state == VerificationState::Failed.as_i16() {
            only(v)
        } else {
            RegistryChange {
                checksum_mismatch: Some(false),
                verification_checksum_mismatched: Some(None),
                ..only(v)
            }
        }
    }

    /// Verification disabled: the primary has not verified the record, or the row is not
    /// synced.
    pub fn disabled(f: &RegistryFields) -> RegistryChange {
        only(verification::disabled(&f.verification))
    }

    /// The local checksum matched the primary's. Requires a synced row whose verification is
    /// started; clears the mismatch columns. Guarded on `state = synced` too: if an event set
    /// the row pending meanwhile, the result is stale.
    pub fn succeeded(
        f: &RegistryFields,
        env: &Env,
        local: &Checksum,
    ) -> Result<RegistryChange, TransitionError> {
        require_synced(f, "succeed")?;
        let v = verification::succeeded(&f.verification, env, local)?;
        Ok(RegistryChange {
            when_state_in: Some(SYNCED),
            checksum_mismatch: Some(false),
            verification_checksum_mismatched: Some(None),
            ..only(v)
        })
    }

    /// Forces the resync that follows a verification failure: replication `failed` with
    /// `retry_count` = the new `verification_retry_count`, `retry_at` from it, and
    /// `last_sync_failure = "Verification failed with: <failure>"`.
    fn with_resync(
        v: VerificationChange,
        env: &Env,
        when: &'static [ReplicationState],
    ) -> RegistryChange {
        let count = v.retry_count.unwrap_or(1);
        let failure = v.failure.clone().flatten().unwrap_or_default();
        RegistryChange {
            when_state_in: Some(when),
            state: Some(ReplicationState::Failed),
            retry_count: Some(count),
            retry_at: Some(Some(next_retry_time(
                env.now(),
                i64::from(count),
                BackoffCap::Default,
                env.rng.as_ref(),
            ))),
            last_sync_failure: Some(Some(truncate_failure(&format!(
                "{VERIFICATION_FAILED_PREFIX}{failure}"
            )))),
            ..only(v)
        }
    }

    /// Verification failed (the local file could not be read, say): verification `failed` as
    /// in [`verification::failed`], and replication forced to `failed` so the file is downloaded
    /// again (GitLab #301244). Requires a synced row.
    pub fn failed(
        f: &RegistryFields,
        env: &Env,
        message: &str,
    ) -> Result<RegistryChange, TransitionError> {
        require_synced(f, "fail verification of")?;
        let v = verification::failed(&f.verification, env, message)?;
        Ok(with_resync(v, env, SYNCED))
    }

    /// The local checksum differs from the primary's: like [`failed`] with
    /// "Checksum does not match the primary checksum", plus `checksum_mismatch = true` and the
    /// local checksum in both `verification_checksum` and `verification_checksum_mismatched`.
    pub fn mismatch(
        f: &RegistryFields,
        env: &Env,
        local: &Checksum,
    ) -> Result<RegistryChange, TransitionError> {
        require_synced(f, "record a mismatch of")?;
        let v = verification::failed(&f.verification, env, MISMATCH_MESSAGE)?;
        let v = VerificationChange {
            checksum: Some(Some(local.to_vec())),
            ..v
        };
        Ok(RegistryChange {
            checksum_mismatch: Some(true),
            verification_checksum_mismatched: Some(Some(local.to_vec())),
            ..with_resync(v, env, SYNCED)
        })
    }

    /// Records the result of checksumming a synced file: `disabled` when the primary has not
    /// verified the record, `succeeded` when the checksums match, [`mismatch`] when they
    /// differ, and `disabled` when they were made with different algorithms (nothing can be
    /// concluded until the primary re-checksums).
    pub fn record_checksum(
        f: &RegistryFields,
        env: &Env,
        local: &Checksum,
        primary: Option<&PrimaryChecksum>,
    ) -> Result<RegistryChange, TransitionError> {
        let Some(primary) = primary.filter(|p| p.verified_checksum().is_some()) else {
            return Ok(disabled(f));
        };
        let theirs = primary
            .verified_checksum()
            .map(Checksum::to_vec)
            .unwrap_or_default();
        match local.compare(primary.algorithm, &theirs) {
            ChecksumComparison::Match => succeeded(f, env, local),
            ChecksumComparison::Mismatch => mismatch(f, env, local),
            ChecksumComparison::Incomparable => Ok(disabled(f)),
        }
    }

    /// The verification timeout of a registry row. A stuck verification of a synced row fails
    /// (and so forces a resync, as in GitLab); of a row that is not synced, it is disabled.
    pub fn timed_out(f: &RegistryFields, env: &Env, timeout: Duration) -> Option<RegistryChange> {
        let v = verification::timed_out(&f.verification, env, timeout)?;
        if f.state == ReplicationState::Synced.as_i16() {
            Some(with_resync(v, env, SYNCED))
        } else {
            let d = verification::disabled(&f.verification);
            Some(only(VerificationChange {
                when_state_in: v.when_state_in,
                when_started_at: v.when_started_at,
                ..d
            }))
        }
    }
}

pub use replication::{SyncTimeoutSweep, SyncedOutcome};
