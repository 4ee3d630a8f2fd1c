//! The rules of the primary's verification state (`pending 0, started 1, succeeded 2, failed 3,
//! disabled 4`) on a `<name>_states` row or the inline columns of a model row (GitLab's
//! `verification_state.rb`). Each function returns the [`Change`] geo-diesel runs.

use chrono::{DateTime, Utc};

use super::change::{Change, Condition, Datum, Guard, States, Then, Value};
use super::{Claim, Order, truncate_failure, verification_timeout_message};
use crate::backoff::BackoffCap;
use crate::schema::Column;
use crate::state::VerificationState as V;

use Column::*;

const V_STARTED: States = States::Verification(&[V::Started]);
const V_PENDING: States = States::Verification(&[V::Pending]);
const V_SUCCEEDED: States = States::Verification(&[V::Succeeded]);
const V_FAILED: States = States::Verification(&[V::Failed]);

/// `verification_pending!`: the record changed and is verified again. Clears the failure; from
/// `failed` the retry count and time are kept so the backoff keeps growing.
pub fn pending() -> Change {
    Change::new(
        "marking verification pending",
        Guard::default(),
        vec![
            (VerificationState, Value::verification(V::Pending)),
            (VerificationFailure, Value::NULL),
            (VerificationStartedAt, Value::NULL),
            (
                VerificationRetryCount,
                Value::when(V_FAILED, Value::Keep, Value::small(0)),
            ),
            (
                VerificationRetryAt,
                Value::when(V_FAILED, Value::Keep, Value::NULL),
            ),
        ],
    )
}

/// The verifier's claims, in order: `pending` (never verified first, then the oldest), then
/// `failed` whose retry is due (no retry time first, then the oldest). Claimed rows become
/// `started` with `verification_started_at = now`, the claim token.
pub fn claims(now: DateTime<Utc>) -> [Claim; 2] {
    claims_where(
        &[],
        VerificationRetryAt,
        [
            "claiming a verification batch",
            "claiming verification retries",
        ],
        [None, None],
        now,
    )
}

/// Verification claims on rows also in `states` (a registry's: synced): `pending` first, never
/// verified first, then `failed` with a due retry ordered by `failed_by`, nulls first. Shared by
/// the primary's verifier and a secondary's verification pass; `indexes` name the partial
/// indexes that hold each claim's candidates ([`Claim::index`]).
pub(super) fn claims_where(
    states: &[States],
    failed_by: Column,
    names: [&'static str; 2],
    indexes: [Option<&'static str>; 2],
    now: DateTime<Utc>,
) -> [Claim; 2] {
    let start = || {
        vec![
            (VerificationState, Value::verification(V::Started)),
            (VerificationStartedAt, Value::time(now)),
        ]
    };
    let guard = |state: States, conditions: Vec<Condition>| Guard {
        states: states.iter().copied().chain([state]).collect(),
        conditions,
    };
    [
        Claim {
            change: Change::new(names[0], guard(V_PENDING, Vec::new()), start()),
            order: vec![Order::NullsFirst(VerifiedAt), Order::Key],
            index: indexes[0],
        },
        Claim {
            change: Change::new(
                names[1],
                guard(
                    V_FAILED,
                    vec![Condition::NullOrNotAfter(VerificationRetryAt, now)],
                ),
                start(),
            ),
            order: vec![Order::NullsFirst(failed_by), Order::Key],
            index: indexes[1],
        },
    ]
}

fn claimed(started_at: DateTime<Utc>) -> Guard {
    Guard {
        states: vec![V_STARTED],
        conditions: vec![Condition::Equals(
            VerificationStartedAt,
            Value::time(started_at),
        )],
    }
}

/// A claim made at `started_at` checksummed the file: `succeeded` with the checksum,
/// `verified_at = now`, failure fields cleared. Only the same claim changes (a record changed
/// meanwhile stays `pending`).
pub fn succeeded(started_at: DateTime<Utc>, checksum: &[u8], now: DateTime<Utc>) -> Change {
    Change::new(
        "recording a checksum",
        claimed(started_at),
        vec![
            (VerificationState, Value::verification(V::Succeeded)),
            (
                VerificationChecksum,
                Value::Set(Datum::Bytes(checksum.to_vec())),
            ),
            (VerifiedAt, Value::time(now)),
            (VerificationFailure, Value::NULL),
            (VerificationRetryCount, Value::small(0)),
            (VerificationRetryAt, Value::NULL),
        ],
    )
}

/// A claim made at `started_at` failed: `failed`, count + 1, the retry time from the new count,
/// `verified_at = now`, the checksum cleared, the message cut to 255 characters.
pub fn failed(started_at: DateTime<Utc>, message: &str, now: DateTime<Utc>) -> Change {
    Change {
        then: Some(Then::ScheduleRetry {
            count: VerificationRetryCount,
            at: &[VerificationRetryAt],
            cap: BackoffCap::Default,
        }),
        ..Change::new(
            "recording a verification failure",
            claimed(started_at),
            vec![
                (VerificationState, Value::verification(V::Failed)),
                (
                    VerificationRetryCount,
                    Value::IncrementOf(VerificationRetryCount),
                ),
                (VerifiedAt, Value::time(now)),
                (VerificationChecksum, Value::NULL),
                (VerificationFailure, Value::text(truncate_failure(message))),
            ],
        )
    }
}

/// Re-verification: `succeeded` records verified before `cutoff` become `pending` again, the
/// oldest first (GitLab: every 7 days, 1,000 a batch).
pub fn reverify_due(cutoff: DateTime<Utc>) -> Claim {
    Claim {
        change: Change::new(
            "scheduling reverification",
            Guard {
                states: vec![V_SUCCEEDED],
                conditions: vec![Condition::Before(VerifiedAt, cutoff)],
            },
            vec![(VerificationState, Value::verification(V::Pending))],
        ),
        order: vec![Order::Asc(VerifiedAt), Order::Key],
        index: None,
    }
}

/// Verifications `started` since before `cutoff` (or without a start time) fail with
/// "Verification timed out after …", `verification_retry_count = 1` and `retry_at`;
/// `clear_checksum` also clears the checksum (the primary's rows).
pub fn timed_out(
    cutoff: DateTime<Utc>,
    timeout: std::time::Duration,
    retry_at: DateTime<Utc>,
    clear_checksum: bool,
) -> Change {
    let mut set = vec![
        (VerificationState, Value::verification(V::Failed)),
        (
            VerificationFailure,
            Value::text(truncate_failure(&verification_timeout_message(timeout))),
        ),
        (VerificationRetryCount, Value::small(1)),
        (VerificationRetryAt, Value::time(retry_at)),
    ];
    if clear_checksum {
        set.push((VerificationChecksum, Value::NULL));
    }
    Change::new(
        "failing verification timeouts",
        Guard {
            states: vec![V_STARTED],
            conditions: vec![Condition::NullOrBefore(VerificationStartedAt, cutoff)],
        },
        set,
    )
}
