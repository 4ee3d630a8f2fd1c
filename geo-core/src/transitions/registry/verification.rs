//! The registry's verification columns on a secondary: the primary's `checksum_succeeded`,
//! secondary verification's claims and results, and a manual reverify.

use super::*;

/// The primary's `checksum_succeeded`, for synced rows whose checksum was computed while
/// downloading and never compared (verification `pending` or `disabled`): when it equals the
/// primary's (per-row value `0`), verification `succeeded` at once — no second read of the file.
pub fn verified_by_event(now: DateTime<Utc>) -> Change {
    Change::new(
        "verifying from the event",
        Guard {
            states: vec![SYNCED, V_UNCOMPARED],
            conditions: vec![Condition::Equals(VerificationChecksum, Value::PerRow(0))],
        },
        succeeded_columns(now),
    )
}

/// The primary's `checksum_succeeded`, written at `primary_at`, for every other synced row
/// this site last verified before then, or never (including `succeeded` ones: the primary
/// re-verified, so the secondary re-hashes its copy and catches bit rot). A row verified at or
/// after `primary_at` was compared with the primary's checksum of then, which is at least as new
/// as the event's: a secondary catching up a backlog reads each file once, not twice (GitLab
/// re-verifies on every such event). For a batch of events, `primary_at` is the latest of
/// their times, so a row is never skipped that one of them should re-verify.
pub fn reverify_after_event(primary_at: DateTime<Utc>) -> Change {
    Change::new(
        "marking verification pending",
        Guard {
            states: vec![SYNCED],
            conditions: vec![Condition::NullOrBefore(VerifiedAt, primary_at)],
        },
        vec![(VerificationState, Value::verification(V::Pending))],
    )
}

/// A manual reverify: synced rows not being verified become verification `pending`.
pub fn reverify() -> Change {
    Change::new(
        "reverifying",
        guard(&[SYNCED, V_NOT_STARTED]),
        vec![(VerificationState, Value::verification(V::Pending))],
    )
}

/// Secondary verification's claims, in order: synced rows with verification `pending` (never
/// verified first, then the oldest), then `failed` ones whose retry is due (by when they were
/// last verified).
pub fn verification_claims(now: DateTime<Utc>) -> [Claim; 2] {
    crate::transitions::verification::claims_where(
        &[SYNCED],
        VerifiedAt,
        ["claiming rows to verify", "claiming rows to re-verify"],
        [
            Some(crate::schema::index::PENDING_VERIFICATION),
            Some(crate::schema::index::FAILED_VERIFICATION),
        ],
        now,
    )
}

fn succeeded_columns(now: DateTime<Utc>) -> Vec<(Column, Value)> {
    vec![
        (VerificationState, Value::verification(V::Succeeded)),
        (VerifiedAt, Value::time(now)),
        (VerificationFailure, Value::NULL),
        (VerificationRetryCount, Value::small(0)),
        (VerificationRetryAt, Value::NULL),
        (ChecksumMismatch, Value::bool(false)),
        (VerificationChecksumMismatched, Value::NULL),
    ]
}

/// The local checksum equals the primary's: verification `succeeded` (synced rows being
/// verified only; a row an event changed meanwhile is left alone).
pub fn verification_succeeded(local: &[u8], now: DateTime<Utc>) -> Change {
    let mut set = vec![(
        VerificationChecksum,
        Value::Set(Datum::Bytes(local.to_vec())),
    )];
    set.extend(succeeded_columns(now));
    Change::new("recording verification", guard(&[SYNCED, V_STARTED]), set)
}

/// The primary has not verified the record yet: verification `disabled` until its
/// `checksum_succeeded` event arrives.
pub fn verification_disabled() -> Change {
    Change::new(
        "disabling verification",
        guard(&[SYNCED, V_STARTED]),
        vec![
            (VerificationState, Value::verification(V::Disabled)),
            (VerificationStartedAt, Value::NULL),
        ],
    )
}

/// Why a secondary verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationFailure {
    /// The local file's checksum (given) differs from the primary's.
    Mismatch(Vec<u8>),
    /// The file could not be read.
    Error(String),
}

/// A secondary verification failed: verification `failed` (count + 1, `verified_at = now`, the
/// failure text, the local checksum on a mismatch with `checksum_mismatch` set), and replication
/// forced to `failed` with `retry_count` = the new verification retry count and
/// `last_sync_failure = "Verification failed with: …"`, so the file is downloaded again with
/// growing backoff (GitLab #301244). Both retry times come from the new count.
pub fn verification_failed(failure: &VerificationFailure, now: DateTime<Utc>) -> Change {
    let (text, local, mismatch) = match failure {
        VerificationFailure::Mismatch(sum) => (MISMATCH_MESSAGE.to_string(), Some(sum), true),
        VerificationFailure::Error(e) => (
            truncate_failure(&format!("Error during verification: {e}")),
            None,
            false,
        ),
    };
    let local = Datum::bytes(local.cloned());
    Change {
        then: Some(Then::ScheduleRetry {
            count: VerificationRetryCount,
            at: &[VerificationRetryAt, RetryAt],
            cap: BackoffCap::Default,
        }),
        ..Change::new(
            "recording a verification failure",
            guard(&[SYNCED, V_STARTED]),
            vec![
                (VerificationState, Value::verification(V::Failed)),
                (
                    VerificationRetryCount,
                    Value::IncrementOf(VerificationRetryCount),
                ),
                (VerifiedAt, Value::time(now)),
                (VerificationFailure, Value::text(text.clone())),
                (VerificationChecksum, Value::Set(local.clone())),
                (
                    VerificationChecksumMismatched,
                    Value::Set(if mismatch { local } else { Datum::Null }),
                ),
                (ChecksumMismatch, Value::bool(mismatch)),
                (State, Value::replication(R::Failed)),
                (
                    LastSyncFailure,
                    Value::text(truncate_failure(&format!(
                        "{VERIFICATION_FAILED_PREFIX}{text}"
                    ))),
                ),
                (RetryCount, Value::IncrementOf(VerificationRetryCount)),
            ],
        )
    }
}

/// Secondary verifications `started` since before `cutoff` fail ("Verification timed out after
/// …") with `verification_retry_count = 1` and `verification_retry_at`.
pub fn verification_timed_out(
    cutoff: DateTime<Utc>,
    timeout: std::time::Duration,
    retry_at: DateTime<Utc>,
) -> Change {
    crate::transitions::verification::timed_out(cutoff, timeout, retry_at, false)
}

/// Verifications this worker claimed but could not process (or left `started` by an
/// interrupted run) go back to `pending`.
pub fn release_verification() -> Change {
    Change::new(
        "releasing verification claims",
        guard(&[V_STARTED]),
        vec![
            (VerificationState, Value::verification(V::Pending)),
            (VerificationStartedAt, Value::NULL),
        ],
    )
}
