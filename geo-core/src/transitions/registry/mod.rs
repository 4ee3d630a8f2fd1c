//! The rules of a secondary's registry row: replication (`pending 0 → started 1 → synced 2 |
//! failed 3`) here, and the registry's verification columns in `verification.rs`, re-exported
//! (GitLab's `replicable_registry.rb` and `verifiable_registry.rb`). Each function returns the [`Change`] geo-diesel runs as one
//! conditional statement; none reads the row first.

use chrono::{DateTime, Utc};

use super::change::{Change, Condition, Datum, Guard, States, Then, Value};
use super::{
    Claim, MISMATCH_MESSAGE, Order, SyncFailure, VERIFICATION_FAILED_PREFIX, truncate_failure,
};
use crate::backoff::BackoffCap;
use crate::schema::Column;
use crate::state::{ReplicationState as R, VerificationState as V};

use Column::*;

mod verification;
// Named, not only globbed: `Column::VerificationFailure` (a variant, globbed above) would make
// the name ambiguous.
pub use verification::VerificationFailure;
pub use verification::*;

const STARTED: States = States::Replication(&[R::Started]);
const PENDING: States = States::Replication(&[R::Pending]);
const FAILED: States = States::Replication(&[R::Failed]);
const SYNCED: States = States::Replication(&[R::Synced]);
const NOT_STARTED: States = States::Replication(&[R::Pending, R::Synced, R::Failed]);
const CLAIMABLE: States = States::Replication(&[R::Pending, R::Failed]);
const V_STARTED: States = States::Verification(&[V::Started]);
const V_NOT_STARTED: States =
    States::Verification(&[V::Pending, V::Succeeded, V::Failed, V::Disabled]);
const V_UNCOMPARED: States = States::Verification(&[V::Pending, V::Disabled]);

fn guard(states: &[States]) -> Guard {
    Guard {
        states: states.to_vec(),
        conditions: Vec::new(),
    }
}

/// `states`, and the claim token when the caller holds one (`None`: any started row).
fn claimed(states: &[States], claimed_at: Option<DateTime<Utc>>) -> Guard {
    Guard {
        states: states.to_vec(),
        conditions: claimed_at
            .map(|t| Condition::Equals(LastSyncedAt, Value::time(t)))
            .into_iter()
            .collect(),
    }
}

/// The columns a row returning to `pending` gets: every retry, failure and verification column
/// cleared.
fn pending_columns() -> Vec<(Column, Value)> {
    vec![
        (State, Value::replication(R::Pending)),
        (RetryCount, Value::small(0)),
        (RetryAt, Value::NULL),
        (LastSyncedAt, Value::NULL),
        (LastSyncFailure, Value::NULL),
        (MissingOnPrimary, Value::bool(false)),
        (VerificationState, Value::verification(V::Pending)),
        (VerificationStartedAt, Value::NULL),
        (VerificationRetryCount, Value::small(0)),
        (VerificationRetryAt, Value::NULL),
        (VerificationFailure, Value::NULL),
        (ChecksumMismatch, Value::bool(false)),
        (VerificationChecksumMismatched, Value::NULL),
    ]
}

/// An `updated` event (or a `created` one for a row that exists): the row starts over as
/// `pending`. A row whose download is in flight stays `started` — so no second worker claims it
/// and two downloads of one record never race — but its claim token (`last_synced_at`) moves to
/// `now`: the running download's compare-and-set then fails and [`requeue_changed`] sends it
/// back to `pending`, so it syncs again after the change. Applies to every row.
pub fn changed_on_primary(now: DateTime<Utc>) -> Change {
    let mut set = pending_columns();
    for (c, v) in &mut set {
        match c {
            State => *v = Value::when(STARTED, Value::Keep, v.clone()),
            LastSyncedAt => *v = Value::when(STARTED, Value::Token(now), v.clone()),
            _ => {}
        }
    }
    Change::new("marking rows pending", Guard::default(), set)
}

/// A manual resync (GitLab's `resync`): any row not `started` becomes `pending`.
pub fn resync() -> Change {
    Change::new("resyncing", guard(&[NOT_STARTED]), pending_columns())
}

fn start(now: DateTime<Utc>) -> Vec<(Column, Value)> {
    vec![
        (State, Value::replication(R::Started)),
        (LastSyncedAt, Value::time(now)),
    ]
}

/// The scheduler's claims, in the order it takes them: never-synced `pending` rows first (by
/// id), then `failed` rows whose retry is due (no retry time first, then the oldest). Claimed
/// rows become `started` with `last_synced_at = now`, the claim token.
pub fn claims(now: DateTime<Utc>) -> [Claim; 2] {
    [
        Claim {
            change: Change::new("claiming rows to sync", guard(&[PENDING]), start(now)),
            order: vec![Order::Key],
            index: None,
        },
        Claim {
            change: Change::new(
                "claiming rows to retry",
                Guard {
                    states: vec![FAILED],
                    conditions: vec![Condition::NullOrNotAfter(RetryAt, now)],
                },
                start(now),
            ),
            order: vec![Order::NullsFirst(RetryAt), Order::Key],
            index: None,
        },
    ]
}

/// `claims` taken by the secondary process `owner` (its `geo_secondary_workers` id): every
/// claimed row also gets `claimed_by = owner`, so that when the process stops heartbeating its
/// rows return to `pending` ([`release_owned_syncs`], [`release_owned_verifications`]) instead
/// of waiting for the sync timeout.
pub fn owned_by(claims: [Claim; 2], owner: &str) -> [Claim; 2] {
    claims.map(|mut claim| {
        claim.change.set.push((ClaimedBy, Value::text(owner)));
        claim
    })
}

/// The scheduler's claims ([`claims`]) by the secondary process `owner` ([`owned_by`]).
pub fn sync_claims(now: DateTime<Utc>, owner: &str) -> [Claim; 2] {
    owned_by(claims(now), owner)
}

/// Secondary verification's claims ([`verification_claims`]) by the process `owner`
/// ([`owned_by`]).
pub fn verification_claims_by(now: DateTime<Utc>, owner: &str) -> [Claim; 2] {
    owned_by(verification_claims(now), owner)
}

/// The syncs of the secondary process `owner`, which stopped (cleanly, or its heartbeat is
/// older than the lease): rows still `started` under its claim go back to `pending`. A row
/// another process claimed since carries that process's id and is left alone.
pub fn release_owned_syncs(owner: &str) -> Change {
    Change::new(
        "releasing the syncs of a stopped process",
        Guard {
            states: vec![STARTED],
            conditions: vec![Condition::Equals(ClaimedBy, Value::text(owner))],
        },
        vec![
            (State, Value::replication(R::Pending)),
            (LastSyncedAt, Value::NULL),
            (ClaimedBy, Value::NULL),
        ],
    )
}

/// The verifications of the secondary process `owner`, which stopped: rows whose verification
/// is still `started` under its claim go back to verification `pending`.
pub fn release_owned_verifications(owner: &str) -> Change {
    Change::new(
        "releasing the verifications of a stopped process",
        Guard {
            states: vec![V_STARTED],
            conditions: vec![Condition::Equals(ClaimedBy, Value::text(owner))],
        },
        vec![
            (VerificationState, Value::verification(V::Pending)),
            (VerificationStartedAt, Value::NULL),
            (ClaimedBy, Value::NULL),
        ],
    )
}

/// Claims taken at `claimed_at` whose outcome could not be recorded (the recording transaction
/// failed): rows still `started` with that claim token go back to `pending` at once, so they
/// are not stranded until the sync timeout. A row an event re-tokened meanwhile is left to
/// [`requeue_changed`].
pub fn release_claimed(claimed_at: DateTime<Utc>) -> Change {
    Change::new(
        "releasing claims whose outcome was not recorded",
        claimed(&[STARTED], Some(claimed_at)),
        vec![
            (State, Value::replication(R::Pending)),
            (LastSyncedAt, Value::NULL),
            (ClaimedBy, Value::NULL),
        ],
    )
}

/// Claims specific rows (a sync requested for them) if they are `pending` or `failed`.
pub fn claim_now(now: DateTime<Utc>) -> Change {
    Change::new("claiming rows", guard(&[CLAIMABLE]), start(now))
}

/// A download claimed at `claimed_at` (`None`: whoever claimed it) succeeded. Per-row values: `0` the checksum computed while
/// writing, `1` the path written (when `with_path`). `verified_at_once`: the streamed checksum
/// equals the primary's, so verification `succeeded` now and the mismatch columns clear;
/// otherwise verification is `pending` (`disabled` for a type that does not verify) for the
/// verification pass. Only a row still `started` with this claim token changes: a row an event
/// changed meanwhile is [`requeue_changed`].
pub fn synced(
    claimed_at: Option<DateTime<Utc>>,
    verified_at_once: bool,
    verifies: bool,
    with_path: bool,
    now: DateTime<Utc>,
) -> Change {
    let vstate = match (verified_at_once, verifies) {
        (true, _) => V::Succeeded,
        (false, true) => V::Pending,
        (false, false) => V::Disabled,
    };
    let mut set = vec![
        (State, Value::replication(R::Synced)),
        (RetryCount, Value::small(0)),
        (RetryAt, Value::NULL),
        (LastSyncFailure, Value::NULL),
        (MissingOnPrimary, Value::bool(false)),
        (VerificationState, Value::verification(vstate)),
        (VerificationChecksum, Value::PerRow(0)),
        (
            VerifiedAt,
            if verified_at_once {
                Value::time(now)
            } else {
                Value::NULL
            },
        ),
        (VerificationStartedAt, Value::NULL),
        (VerificationFailure, Value::NULL),
        (VerificationRetryAt, Value::NULL),
    ];
    if verified_at_once {
        // A repaired mismatch clears its columns; otherwise they stay for verification to judge.
        set.extend([
            (ChecksumMismatch, Value::bool(false)),
            (VerificationChecksumMismatched, Value::NULL),
            (VerificationRetryCount, Value::small(0)),
        ]);
    }
    if with_path {
        set.push((BlobPath, Value::PerRow(1)));
    }
    Change::new("marking rows synced", claimed(&[STARTED], claimed_at), set)
}

/// A download claimed at `claimed_at` (`None`: whoever claimed it) failed: `failed`, `retry_count + 1`, `retry_at` from the
/// new count with the failure's cap (4 h when the file is missing on the primary),
/// `last_sync_failure` and `missing_on_primary` stored.
pub fn sync_failed(claimed_at: Option<DateTime<Utc>>, failure: &SyncFailure) -> Change {
    Change {
        then: Some(Then::ScheduleRetry {
            count: RetryCount,
            at: &[RetryAt],
            cap: failure.cap(),
        }),
        ..Change::new(
            "marking a row failed",
            claimed(&[STARTED], claimed_at),
            vec![
                (State, Value::replication(R::Failed)),
                (RetryCount, Value::IncrementOf(RetryCount)),
                (LastSyncFailure, Value::text(failure.text())),
                (MissingOnPrimary, Value::bool(failure.missing_on_primary)),
            ],
        )
    }
}

/// A finished download whose claim token moved (an event changed the record meanwhile): the
/// row goes back to `pending` and syncs again.
pub fn requeue_changed(claimed_at: DateTime<Utc>) -> Change {
    Change::new(
        "re-queueing a row changed during its download",
        Guard {
            states: vec![STARTED],
            conditions: vec![Condition::Differs(LastSyncedAt, Datum::Time(claimed_at))],
        },
        vec![
            (State, Value::replication(R::Pending)),
            (LastSyncedAt, Value::NULL),
        ],
    )
}

/// Rows `started` since before `cutoff` (or without a start time) fail with `message`,
/// `retry_count = 1` and `retry_at` (GitLab's sync timeout).
pub fn sync_timed_out(cutoff: DateTime<Utc>, message: &str, retry_at: DateTime<Utc>) -> Change {
    Change::new(
        "failing sync timeouts",
        Guard {
            states: vec![STARTED],
            conditions: vec![Condition::NullOrBefore(LastSyncedAt, cutoff)],
        },
        vec![
            (State, Value::replication(R::Failed)),
            (LastSyncFailure, Value::text(truncate_failure(message))),
            (RetryCount, Value::small(1)),
            (RetryAt, Value::time(retry_at)),
        ],
    )
}

/// A restart of the only secondary process on this tracking database: syncs left `started`
/// start over.
pub fn reclaim_syncs() -> Change {
    Change::new(
        "reclaiming interrupted syncs",
        guard(&[STARTED]),
        vec![
            (State, Value::replication(R::Pending)),
            (LastSyncedAt, Value::NULL),
        ],
    )
}

/// Records where a successful sync wrote the record's file.
pub fn set_blob_path(path: &str) -> Change {
    Change::new(
        "recording a blob path",
        Guard::default(),
        vec![(BlobPath, Value::text(path))],
    )
}
