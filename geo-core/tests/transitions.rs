//! The replication and verification state machines as values: GitLab's behaviour as worked
//! examples, then property tests of every rule applied in memory ([`Change::apply`]) to
//! arbitrary rows (every column), arbitrary clocks and seeded random sources.
//!
//! `tests/tests/rules_sql.rs` in geo-tests runs the same rules as the SQL geo-diesel renders on
//! real SQLite files and checks that both agree column by column.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use geo_core::backoff::{BackoffCap, max_delay_secs, min_delay_secs, next_retry_time};
use geo_core::checksum::checksum_bytes;
use geo_core::clock::{Env, FixedRandom, ManualClock, SeededRandom};
use geo_core::schema::Column;
use geo_core::transitions::registry::{self as reg, VerificationFailure};
use geo_core::transitions::verification as ver;
use geo_core::transitions::{
    Change, Claim, Datum, FAILURE_MAX_CHARS, MISMATCH_MESSAGE, Order, RegistryFields, Row,
    SYNC_TIMEOUT, SyncFailure, Then, VERIFICATION_FAILED_PREFIX, VERIFICATION_TIMEOUT, Value,
    failure_text, humanize_duration, sync_timeout_message, timeout_cutoff, truncate_failure,
    verification_timeout_message,
};
use geo_core::{ReplicationState as R, VerificationFields, VerificationState as V};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

/// A clock stopped at `now` and a random source that always answers `random`.
fn fixed_env(now: DateTime<Utc>, random: u32) -> Env {
    Env::new(
        Arc::new(ManualClock::new(now)),
        Arc::new(FixedRandom(random)),
    )
}

/// A clock stopped at `now` and a seeded random source.
fn seeded_env(now: DateTime<Utc>, seed: u64) -> Env {
    Env::new(
        Arc::new(ManualClock::new(now)),
        Arc::new(SeededRandom::new(seed)),
    )
}

/// Applies `change` with the per-row values `per_row`, asserting that its guard held.
#[track_caller]
fn apply<T: Row + std::fmt::Debug + Clone>(
    row: &mut T,
    change: &Change,
    per_row: &[Datum],
    env: &Env,
) {
    let before = row.clone();
    assert!(
        change.apply(row, per_row, env),
        "guard of {:?} did not hold on {before:?}",
        change.name
    );
}

/// Asserts that `change` does not apply to `row` and leaves it as it was.
#[track_caller]
fn refused<T: Row + std::fmt::Debug + Clone + PartialEq>(
    row: &T,
    change: &Change,
    per_row: &[Datum],
    env: &Env,
) {
    let mut after = row.clone();
    assert!(
        !change.apply(&mut after, per_row, env),
        "{:?} applied to {row:?}",
        change.name
    );
    assert_eq!(&after, row);
}

fn bytes(b: &[u8]) -> Datum {
    Datum::Bytes(b.to_vec())
}

/// The registry columns the rules read and write (every column but the ids and `created_at`).
const REGISTRY_COLUMNS: [Column; 17] = [
    Column::State,
    Column::RetryCount,
    Column::RetryAt,
    Column::LastSyncedAt,
    Column::LastSyncFailure,
    Column::MissingOnPrimary,
    Column::ChecksumMismatch,
    Column::VerificationChecksumMismatched,
    Column::BlobPath,
    Column::ClaimedBy,
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerificationRetryAt,
    Column::VerifiedAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

/// The verification columns of a primary's states row (or inline on a model row).
const VERIFICATION_COLUMNS: [Column; 7] = [
    Column::VerificationState,
    Column::VerificationStartedAt,
    Column::VerificationRetryAt,
    Column::VerifiedAt,
    Column::VerificationRetryCount,
    Column::VerificationChecksum,
    Column::VerificationFailure,
];

/// The columns whose value differs between `a` and `b`.
fn changed_columns(a: &dyn Row, b: &dyn Row, columns: &[Column]) -> Vec<Column> {
    columns
        .iter()
        .copied()
        .filter(|c| a.get(*c) != b.get(*c))
        .collect()
}

/// The columns `change` may write: its `set` list and the retry times its follow-up sets.
fn written_columns(change: &Change) -> Vec<Column> {
    let mut out: Vec<Column> = change.set.iter().map(|(c, _)| *c).collect();
    if let Some(Then::ScheduleRetry { at, .. }) = &change.then {
        out.extend(at.iter().copied());
    }
    out
}

/// `next_retry_time(now, n, cap)` lies within `[now + min(delay_min(n), cap + 16 s),
/// now + min(delay_max(n), cap + 74 s)]` (GitLab's `Delay` with the cap).
fn within_backoff(t: Option<DateTime<Utc>>, now: DateTime<Utc>, n: i16, cap: BackoffCap) -> bool {
    let cap = cap.duration().as_secs();
    let lo = min_delay_secs(i64::from(n)).min(cap + 16);
    let hi = max_delay_secs(i64::from(n)).min(cap + 74);
    t.is_some_and(|t| t >= now + secs(lo as i64) && t <= now + secs(hi as i64))
}

fn known_states(row: &RegistryFields) -> bool {
    row.replication_state().is_ok() && row.verification_state().is_ok()
}

fn is(state: i16, s: R) -> bool {
    state == s.as_i16()
}

fn vis(state: i16, s: V) -> bool {
    state == s.as_i16()
}

/// A row claimed at `at`: `started` with that claim token.
fn claimed_row(at: DateTime<Utc>) -> RegistryFields {
    let mut row = RegistryFields::new();
    apply(&mut row, &reg::claims(at)[0].change, &[], &fixed_env(at, 0));
    row
}

/// A synced row whose verification was claimed at `t0`.
fn synced_row_with_started_verification(sum: &[u8]) -> RegistryFields {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    apply(
        &mut row,
        &reg::synced(Some(t0()), false, true, false, t0()),
        &[bytes(sum)],
        &env,
    );
    apply(
        &mut row,
        &reg::verification_claims(t0())[0].change,
        &[],
        &env,
    );
    row
}

// ---------------------------------------------------------------------------------------------
// Replication: worked examples

#[test]
fn full_sync_cycle() {
    let env = fixed_env(t0(), 0);
    let mut row = RegistryFields::new();
    assert_eq!(row.replication_state(), Ok(R::Pending));
    assert_eq!(row.last_synced_at, None, "never attempted");

    let [first, retry] = reg::claims(t0());
    apply(&mut row, &first.change, &[], &env);
    assert_eq!(row.state, R::Started.as_i16());
    assert_eq!(row.last_synced_at, Some(t0()), "the claim token");

    // A second claim while the first runs is refused, by every claim.
    refused(&row, &first.change, &[], &env);
    refused(&row, &retry.change, &[], &env);
    refused(&row, &reg::claim_now(t0()), &[], &env);

    let at = t0() + secs(5);
    let failure = SyncFailure::new("Error downloading file").with_error("connection reset");
    apply(
        &mut row,
        &reg::sync_failed(Some(t0()), &failure),
        &[],
        &fixed_env(at, 0),
    );
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, 1);
    assert_eq!(row.retry_at, Some(at + secs(16)), "delay(1) with jitter 0");
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Error downloading file: connection reset")
    );
    assert!(!row.missing_on_primary);
    assert_eq!(row.last_synced_at, Some(t0()), "the token stays");

    // The retry is due once retry_at has passed.
    let due = |now| reg::claims(now)[1].change.guard.matches(&row, &[]);
    assert!(!due(t0() + secs(20)));
    assert!(due(t0() + secs(21)), "retry_at itself is due");
    assert!(due(t0() + secs(22)));
    assert!(
        !reg::claims(t0() + secs(22))[0]
            .change
            .guard
            .matches(&row, &[])
    );

    let t1 = t0() + secs(22);
    apply(&mut row, &reg::claims(t1)[1].change, &[], &env);
    assert_eq!(
        (row.state, row.last_synced_at),
        (R::Started.as_i16(), Some(t1))
    );
    assert_eq!(row.retry_count, 1, "a claim keeps the count");

    let sum = checksum_bytes(b"file");
    apply(
        &mut row,
        &reg::synced(Some(t1), false, true, false, t1),
        &[bytes(sum.as_bytes())],
        &env,
    );
    assert_eq!(row.state, R::Synced.as_i16());
    assert_eq!(
        (row.retry_count, row.retry_at, row.last_sync_failure.clone()),
        (0, None, None)
    );
    assert_eq!(row.verification.state, V::Pending.as_i16());
    assert_eq!(row.verification.checksum, Some(sum.to_vec()));
    assert_eq!(row.last_synced_at, Some(t1));
    // A finished sync cannot be recorded twice.
    refused(
        &row,
        &reg::synced(Some(t1), false, true, false, t1),
        &[bytes(sum.as_bytes())],
        &env,
    );
}

#[test]
fn missing_on_primary_uses_four_hour_cap() {
    let env = fixed_env(t0(), 29);
    let started = RegistryFields {
        state: R::Started.as_i16(),
        retry_count: 20,
        ..RegistryFields::new()
    };
    let failure = SyncFailure::new("The file is missing on the Geo primary site")
        .with_error("Non-success HTTP response status code 404")
        .missing_on_primary(true);
    let mut row = started.clone();
    apply(&mut row, &reg::sync_failed(None, &failure), &[], &env);
    assert!(row.missing_on_primary);
    assert_eq!(row.retry_count, 21);
    assert_eq!(row.retry_at, Some(t0() + secs(4 * 3600 + 74)));

    // The same count without the flag is capped at 1 h; a custom cap wins over both.
    let mut plain = started.clone();
    apply(
        &mut plain,
        &reg::sync_failed(None, &SyncFailure::new("x")),
        &[],
        &env,
    );
    assert_eq!(plain.retry_at, Some(t0() + secs(3600 + 74)));
    assert!(!plain.missing_on_primary);
    let mut custom = started.clone();
    let cap = BackoffCap::Custom(Duration::from_secs(600));
    apply(
        &mut custom,
        &reg::sync_failed(None, &SyncFailure::new("x").with_cap(cap)),
        &[],
        &env,
    );
    assert_eq!(custom.retry_at, Some(t0() + secs(674)));

    // A successful sync clears the flag.
    let t1 = t0() + secs(5 * 3600);
    apply(&mut row, &reg::claims(t1)[1].change, &[], &env);
    apply(
        &mut row,
        &reg::synced(Some(t1), false, false, false, t1),
        &[bytes(b"sum")],
        &env,
    );
    assert!(!row.missing_on_primary);
    assert_eq!(row.verification.state, V::Disabled.as_i16());
}

#[test]
fn sync_finishing_after_a_newer_event_is_requeued() {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    // An `updated` event at the same instant (a manual clock): the row stays started, so no
    // second worker claims it, but its token moves.
    apply(&mut row, &reg::changed_on_primary(t0()), &[], &env);
    assert_eq!(row.state, R::Started.as_i16());
    assert_eq!(row.last_synced_at, Some(t0() - TimeDelta::milliseconds(1)));
    refused(&row, &reg::claims(t0())[0].change, &[], &env);

    // The download's result is stale: neither outcome is recorded.
    let sum = [bytes(b"sum")];
    refused(
        &row,
        &reg::synced(Some(t0()), true, true, false, t0()),
        &sum,
        &env,
    );
    refused(
        &row,
        &reg::sync_failed(Some(t0()), &SyncFailure::new("x")),
        &[],
        &env,
    );
    // ...and the row goes back to pending to sync the new content.
    apply(&mut row, &reg::requeue_changed(t0()), &[], &env);
    assert_eq!((row.state, row.last_synced_at), (R::Pending.as_i16(), None));
    assert!(reg::claims(t0())[0].change.guard.matches(&row, &[]));

    // A second event later moves the token again, to `now`.
    let mut row = claimed_row(t0());
    apply(
        &mut row,
        &reg::changed_on_primary(t0() + secs(1)),
        &[],
        &env,
    );
    assert_eq!(row.last_synced_at, Some(t0() + secs(1)));
    // Requeueing needs a moved token: the claimer's own token is not stale.
    let fresh = claimed_row(t0());
    refused(&fresh, &reg::requeue_changed(t0()), &[], &env);
}

#[test]
fn changed_on_primary_starts_every_other_row_over() {
    let env = fixed_env(t0(), 0);
    for state in R::ALL {
        let before = RegistryFields {
            state: state.as_i16(),
            retry_count: 4,
            retry_at: Some(t0()),
            last_synced_at: Some(t0() - secs(60)),
            last_sync_failure: Some("boom".into()),
            missing_on_primary: true,
            checksum_mismatch: true,
            verification_checksum_mismatched: Some(vec![1; 32]),
            blob_path: Some("a/b".into()),
            claimed_by: Some("w1".into()),
            verification: VerificationFields {
                state: V::Failed.as_i16(),
                started_at: Some(t0()),
                retry_at: Some(t0()),
                verified_at: Some(t0()),
                retry_count: 3,
                checksum: Some(vec![2; 32]),
                failure: Some("bad".into()),
            },
        };
        let mut row = before.clone();
        apply(&mut row, &reg::changed_on_primary(t0()), &[], &env);
        let want_state = if state == R::Started {
            R::Started
        } else {
            R::Pending
        };
        assert_eq!(row.state, want_state.as_i16(), "from {state:?}");
        let want_token = (state == R::Started).then_some(t0());
        assert_eq!(row.last_synced_at, want_token, "from {state:?}");
        let cleared = RegistryFields {
            state: row.state,
            last_synced_at: row.last_synced_at,
            verification_checksum_mismatched: None,
            blob_path: before.blob_path.clone(),
            // The owner of a claim is only read together with `started`.
            claimed_by: before.claimed_by.clone(),
            verification: VerificationFields {
                verified_at: before.verification.verified_at,
                checksum: before.verification.checksum.clone(),
                ..VerificationFields::default()
            },
            ..RegistryFields::new()
        };
        assert_eq!(row, cleared, "from {state:?}");
    }
}

#[test]
fn resync_only_from_pending_synced_or_failed() {
    let env = fixed_env(t0(), 0);
    for state in R::ALL {
        let row = RegistryFields {
            state: state.as_i16(),
            retry_count: 4,
            retry_at: Some(t0()),
            last_synced_at: Some(t0()),
            last_sync_failure: Some("x".into()),
            ..RegistryFields::new()
        };
        match state {
            R::Pending | R::Synced | R::Failed => {
                let mut row = row.clone();
                apply(&mut row, &reg::resync(), &[], &env);
                assert_eq!(row.state, R::Pending.as_i16());
                assert_eq!(
                    (
                        row.retry_count,
                        row.retry_at,
                        row.last_synced_at,
                        row.last_sync_failure
                    ),
                    (0, None, None, None)
                );
            }
            R::Started => refused(&row, &reg::resync(), &[], &env),
        }
    }
}

#[test]
fn unknown_stored_state_is_an_error_not_a_panic() {
    let env = fixed_env(t0(), 0);
    let row = RegistryFields {
        state: 9,
        last_synced_at: Some(t0()),
        ..RegistryFields::new()
    };
    assert!(row.replication_state().is_err());
    for claim in reg::claims(t0()) {
        refused(&row, &claim.change, &[], &env);
    }
    refused(&row, &reg::claim_now(t0()), &[], &env);
    refused(
        &row,
        &reg::synced(Some(t0()), true, true, true, t0()),
        &[bytes(b"s"), Datum::Text("p".into())],
        &env,
    );
    refused(
        &row,
        &reg::sync_failed(Some(t0()), &SyncFailure::new("x")),
        &[],
        &env,
    );
    refused(&row, &reg::resync(), &[], &env);
    // An event repairs such a row.
    let mut row = row;
    apply(&mut row, &reg::changed_on_primary(t0()), &[], &env);
    assert_eq!(row.replication_state(), Ok(R::Pending));
}

#[test]
fn sync_timeout() {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    let message = sync_timeout_message(SYNC_TIMEOUT);
    assert_eq!(message, "Sync timed out after 8 hours");
    let sweep = |now: DateTime<Utc>| {
        reg::sync_timed_out(timeout_cutoff(now, SYNC_TIMEOUT), &message, now + secs(16))
    };

    // Exactly 8 hours is not stuck yet; a second later it is.
    let at = t0() + TimeDelta::hours(8);
    assert_eq!(timeout_cutoff(at, SYNC_TIMEOUT), t0());
    refused(&row, &sweep(at), &[], &env);
    let now = at + secs(1);
    apply(&mut row, &sweep(now), &[], &env);
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, 1);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Sync timed out after 8 hours")
    );
    assert_eq!(row.retry_at, Some(now + secs(16)));
    // Not started any more: not stuck.
    refused(&row, &sweep(now), &[], &env);

    // A started row without a start time is stuck too.
    let mut row = RegistryFields {
        state: R::Started.as_i16(),
        ..RegistryFields::new()
    };
    apply(&mut row, &sweep(t0()), &[], &env);
    assert_eq!(row.state, R::Failed.as_i16());
}

#[test]
fn reclaim_after_a_restart() {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    row.retry_count = 2;
    apply(&mut row, &reg::reclaim_syncs(), &[], &env);
    assert_eq!((row.state, row.last_synced_at), (R::Pending.as_i16(), None));
    assert_eq!(row.retry_count, 2, "the backoff is kept");
    refused(&row, &reg::reclaim_syncs(), &[], &env);

    let mut row = synced_row_with_started_verification(b"s");
    apply(&mut row, &reg::release_verification(), &[], &env);
    assert_eq!(row.verification.state, V::Pending.as_i16());
    assert_eq!(row.verification.started_at, None);
    assert_eq!(row.state, R::Synced.as_i16());
}

#[test]
fn claims_by_a_process_record_it_and_only_its_rows_are_released() {
    let env = fixed_env(t0(), 0);
    let [sync, _] = reg::sync_claims(t0(), "w1");
    let mut mine = RegistryFields::new();
    apply(&mut mine, &sync.change, &[], &env);
    assert_eq!(mine.state, R::Started.as_i16());
    assert_eq!(mine.claimed_by.as_deref(), Some("w1"));
    let [other_claim, _] = reg::sync_claims(t0(), "w2");
    let mut theirs = RegistryFields::new();
    apply(&mut theirs, &other_claim.change, &[], &env);

    // w1 stopped: its row goes back to pending; w2's row is left alone.
    refused(&theirs, &reg::release_owned_syncs("w1"), &[], &env);
    apply(&mut mine, &reg::release_owned_syncs("w1"), &[], &env);
    assert_eq!(
        (mine.state, mine.last_synced_at, mine.claimed_by.clone()),
        (R::Pending.as_i16(), None, None)
    );
    refused(&mine, &reg::release_owned_syncs("w1"), &[], &env);

    // A synced row w1 claimed for verification: only its verification is released.
    let [verify, _] = reg::verification_claims_by(t0(), "w1");
    let mut row = RegistryFields {
        state: R::Synced.as_i16(),
        ..RegistryFields::new()
    };
    apply(&mut row, &verify.change, &[], &env);
    assert_eq!(row.verification.state, V::Started.as_i16());
    assert_eq!(row.claimed_by.as_deref(), Some("w1"));
    refused(&row, &reg::release_owned_syncs("w1"), &[], &env);
    refused(&row, &reg::release_owned_verifications("w2"), &[], &env);
    apply(&mut row, &reg::release_owned_verifications("w1"), &[], &env);
    assert_eq!(row.verification.state, V::Pending.as_i16());
    assert_eq!((row.state, row.claimed_by), (R::Synced.as_i16(), None));
}

#[test]
fn claims_whose_recording_failed_are_released_by_their_token() {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    refused(&row, &reg::release_claimed(t0() - secs(1)), &[], &env);
    apply(&mut row, &reg::release_claimed(t0()), &[], &env);
    assert_eq!((row.state, row.last_synced_at), (R::Pending.as_i16(), None));
    refused(&row, &reg::release_claimed(t0()), &[], &env);
}

#[test]
fn claim_orders() {
    let now = t0();
    let [sync, retry] = reg::claims(now);
    assert_eq!(sync.order, [Order::Key], "never-synced rows by id");
    assert_eq!(
        retry.order,
        [Order::NullsFirst(Column::RetryAt), Order::Key]
    );
    let [pending, failed] = reg::verification_claims(now);
    assert_eq!(
        pending.order,
        [Order::NullsFirst(Column::VerifiedAt), Order::Key]
    );
    assert_eq!(
        failed.order,
        [Order::NullsFirst(Column::VerifiedAt), Order::Key]
    );
    let [pending, failed] = ver::claims(now);
    assert_eq!(
        pending.order,
        [Order::NullsFirst(Column::VerifiedAt), Order::Key]
    );
    assert_eq!(
        failed.order,
        [Order::NullsFirst(Column::VerificationRetryAt), Order::Key]
    );
    assert_eq!(
        ver::reverify_due(now).order,
        [Order::Asc(Column::VerifiedAt), Order::Key]
    );
}

#[test]
fn blob_path_is_recorded_on_any_row() {
    let env = fixed_env(t0(), 0);
    let mut row = RegistryFields {
        state: 9,
        ..RegistryFields::new()
    };
    apply(&mut row, &reg::set_blob_path("ab/cd"), &[], &env);
    assert_eq!(row.blob_path.as_deref(), Some("ab/cd"));
    let mut row = claimed_row(t0());
    apply(
        &mut row,
        &reg::synced(Some(t0()), false, true, true, t0()),
        &[bytes(b"s"), Datum::Text("x/y".into())],
        &env,
    );
    assert_eq!(row.blob_path.as_deref(), Some("x/y"));
}

// ---------------------------------------------------------------------------------------------
// Verification on the primary: worked examples

#[test]
fn verification_cycle_on_the_primary() {
    let mut v = VerificationFields::default();
    let sum = checksum_bytes(b"data");
    let env = fixed_env(t0(), 0);

    // succeeded needs started.
    refused(&v, &ver::succeeded(t0(), sum.as_bytes(), t0()), &[], &env);
    apply(&mut v, &ver::claims(t0())[0].change, &[], &env);
    assert_eq!(v.state, V::Started.as_i16());
    assert_eq!(v.started_at, Some(t0()));

    let at = t0() + secs(3);
    let failed = ver::failed(t0(), "Error during verification: EIO", at);
    apply(&mut v, &failed, &[], &fixed_env(at, 0));
    assert_eq!(v.state, V::Failed.as_i16());
    assert_eq!(v.retry_count, 1);
    assert_eq!(v.verified_at, Some(at));
    assert_eq!(v.retry_at, Some(at + secs(16)));
    assert_eq!(v.checksum, None);
    assert_eq!(v.failure.as_deref(), Some("Error during verification: EIO"));

    // Pending from failed keeps the backoff.
    apply(&mut v, &ver::pending(), &[], &env);
    assert_eq!(v.state, V::Pending.as_i16());
    assert_eq!((v.retry_count, v.retry_at), (1, Some(at + secs(16))));
    assert_eq!((v.failure.clone(), v.started_at), (None, None));

    let t1 = t0() + secs(63);
    apply(&mut v, &ver::claims(t1)[0].change, &[], &env);
    apply(&mut v, &ver::succeeded(t1, sum.as_bytes(), t1), &[], &env);
    assert_eq!(v.state, V::Succeeded.as_i16());
    assert_eq!(v.checksum, Some(sum.to_vec()));
    assert_eq!(
        (v.retry_count, v.retry_at, v.failure.clone()),
        (0, None, None)
    );
    assert_eq!(v.verified_at, Some(t1));

    // Re-verification after the interval: verified before the cutoff only.
    refused(&v, &ver::reverify_due(t1).change, &[], &env);
    let mut again = v.clone();
    apply(
        &mut again,
        &ver::reverify_due(t1 + secs(1)).change,
        &[],
        &env,
    );
    assert_eq!(again.state, V::Pending.as_i16());
    assert_eq!(again.checksum, v.checksum, "kept until the next checksum");
}

#[test]
fn verification_result_is_dropped_when_a_newer_verification_started() {
    let env = fixed_env(t0(), 0);
    let mut v = VerificationFields::default();
    apply(&mut v, &ver::claims(t0())[0].change, &[], &env);
    let result = ver::succeeded(t0(), checksum_bytes(b"old").as_bytes(), t0());
    // The data changed and a new verification started before the result was saved.
    apply(&mut v, &ver::pending(), &[], &env);
    let t1 = t0() + secs(1);
    apply(&mut v, &ver::claims(t1)[0].change, &[], &env);
    refused(&v, &result, &[], &env);
    refused(&v, &ver::failed(t0(), "late", t1), &[], &env);
}

#[test]
fn verification_timeout() {
    let env = fixed_env(t0(), 0);
    let mut v = VerificationFields::default();
    apply(&mut v, &ver::claims(t0())[0].change, &[], &env);
    v.checksum = Some(vec![7; 32]);
    let now = t0() + TimeDelta::hours(9);
    let retry_at = now + secs(16);
    let sweep = ver::timed_out(
        timeout_cutoff(now, VERIFICATION_TIMEOUT),
        VERIFICATION_TIMEOUT,
        retry_at,
        true,
    );
    apply(&mut v, &sweep, &[], &env);
    assert_eq!(v.state, V::Failed.as_i16());
    assert_eq!(
        v.failure.as_deref(),
        Some("Verification timed out after 8 hours")
    );
    assert_eq!((v.retry_count, v.retry_at), (1, Some(retry_at)));
    assert_eq!(v.checksum, None, "the primary's sweep clears the checksum");
    refused(&v, &sweep, &[], &env);
}

// ---------------------------------------------------------------------------------------------
// Verification on a secondary's registry: worked examples

#[test]
fn mismatch_forces_a_resync_and_keeps_counters_after_it() {
    let local = checksum_bytes(b"corrupt");
    let good = checksum_bytes(b"good");
    let env = fixed_env(t0(), 0);
    let mut row = synced_row_with_started_verification(local.as_bytes());

    let mismatch = VerificationFailure::Mismatch(local.to_vec());
    apply(
        &mut row,
        &reg::verification_failed(&mismatch, t0()),
        &[],
        &env,
    );
    assert_eq!(row.verification.state, V::Failed.as_i16());
    assert_eq!(row.verification.retry_count, 1);
    assert!(row.checksum_mismatch);
    assert_eq!(row.verification_checksum_mismatched, Some(local.to_vec()));
    assert_eq!(row.verification.checksum, Some(local.to_vec()));
    assert_eq!(row.verification.failure.as_deref(), Some(MISMATCH_MESSAGE));
    assert_eq!(row.verification.verified_at, Some(t0()));
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, row.verification.retry_count);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Verification failed with: Checksum does not match the primary checksum")
    );
    assert_eq!(row.retry_at, Some(t0() + secs(16)));
    assert_eq!(row.verification.retry_at, row.retry_at);

    // The scheduler resyncs it; the download is still corrupt (its streamed checksum differs
    // from the primary's), so verification waits for the verification pass.
    let t1 = t0() + TimeDelta::minutes(2);
    let env1 = fixed_env(t1, 0);
    apply(&mut row, &reg::claims(t1)[1].change, &[], &env1);
    apply(
        &mut row,
        &reg::synced(Some(t1), false, true, false, t1),
        &[bytes(local.as_bytes())],
        &env1,
    );
    assert_eq!(row.state, R::Synced.as_i16());
    assert_eq!(row.retry_count, 0);
    assert_eq!(row.verification.state, V::Pending.as_i16());
    assert_eq!(
        row.verification.retry_count, 1,
        "a sync keeps the verification retry count"
    );
    assert!(
        row.checksum_mismatch,
        "kept until a verification succeeds, as in GitLab"
    );
    assert_eq!(row.verification_checksum_mismatched, Some(local.to_vec()));

    // It mismatches again: both counters grow together.
    apply(
        &mut row,
        &reg::verification_claims(t1)[0].change,
        &[],
        &env1,
    );
    apply(
        &mut row,
        &reg::verification_failed(&mismatch, t1),
        &[],
        &env1,
    );
    assert_eq!((row.retry_count, row.verification.retry_count), (2, 2));
    assert_eq!(row.retry_at, Some(t1 + secs(31)), "delay(2) with jitter 0");

    // Finally the download is good and the verification pass confirms it.
    let t2 = t1 + TimeDelta::hours(1);
    let env2 = fixed_env(t2, 0);
    apply(&mut row, &reg::claims(t2)[1].change, &[], &env2);
    apply(
        &mut row,
        &reg::synced(Some(t2), false, true, false, t2),
        &[bytes(good.as_bytes())],
        &env2,
    );
    let mut at_once = row.clone();
    apply(
        &mut row,
        &reg::verification_claims(t2)[0].change,
        &[],
        &env2,
    );
    apply(
        &mut row,
        &reg::verification_succeeded(good.as_bytes(), t2),
        &[],
        &env2,
    );
    assert_eq!(row.verification.state, V::Succeeded.as_i16());
    assert!(!row.checksum_mismatch);
    assert_eq!(row.verification_checksum_mismatched, None);
    assert_eq!(row.verification.retry_count, 0);
    assert_eq!(row.verification.checksum, Some(good.to_vec()));
    assert_eq!(row.verification.verified_at, Some(t2));

    // Or the primary's checksum_succeeded confirms it without reading the file again.
    apply(
        &mut at_once,
        &reg::verified_by_event(t2),
        &[bytes(good.as_bytes())],
        &env2,
    );
    assert_eq!(at_once.verification.state, V::Succeeded.as_i16());
    assert_eq!(at_once.verification.checksum, Some(good.to_vec()));
    assert_eq!(at_once.verification.verified_at, Some(t2));
    assert_eq!(at_once.verification.retry_count, 0);
    assert!(!at_once.checksum_mismatch);
    assert_eq!(at_once.verification_checksum_mismatched, None);
    // The verification pass's claim token stays on the row it verified; the event never
    // claimed one.
    assert_eq!(row.verification.started_at, Some(t2));
    assert_eq!(at_once.verification.started_at, None);
}

#[test]
fn a_download_matching_the_primary_is_verified_at_once() {
    let env = fixed_env(t0(), 0);
    let mut row = claimed_row(t0());
    row.checksum_mismatch = true;
    row.verification_checksum_mismatched = Some(vec![1; 32]);
    row.verification.retry_count = 5;
    let sum = checksum_bytes(b"x");
    apply(
        &mut row,
        &reg::synced(Some(t0()), true, true, false, t0()),
        &[bytes(sum.as_bytes())],
        &env,
    );
    assert_eq!(row.verification.state, V::Succeeded.as_i16());
    assert_eq!(row.verification.verified_at, Some(t0()));
    assert!(!row.checksum_mismatch);
    assert_eq!(row.verification_checksum_mismatched, None);
    assert_eq!(row.verification.retry_count, 0);
}

#[test]
fn registry_verification_needs_a_synced_row_and_is_dropped_if_the_row_moved() {
    let env = fixed_env(t0(), 0);
    let sum = checksum_bytes(b"x");
    let mut row = synced_row_with_started_verification(sum.as_bytes());
    apply(&mut row, &reg::changed_on_primary(t0()), &[], &env);
    assert_eq!(row.state, R::Pending.as_i16());
    refused(
        &row,
        &reg::verification_succeeded(sum.as_bytes(), t0()),
        &[],
        &env,
    );
    refused(&row, &reg::verification_disabled(), &[], &env);
    let mismatch = VerificationFailure::Mismatch(sum.to_vec());
    refused(&row, &reg::verification_failed(&mismatch, t0()), &[], &env);
    for claim in reg::verification_claims(t0()) {
        refused(&row, &claim.change, &[], &env);
    }
}

#[test]
fn verification_outcomes_on_the_registry() {
    let env = fixed_env(t0(), 0);
    let local = checksum_bytes(b"file");
    let row = synced_row_with_started_verification(local.as_bytes());

    // The primary has not verified the record: disabled until its checksum_succeeded.
    let mut r = row.clone();
    apply(&mut r, &reg::verification_disabled(), &[], &env);
    assert_eq!(r.verification.state, V::Disabled.as_i16());
    assert_eq!(r.verification.started_at, None);
    // checksum_succeeded then verifies it when the stored checksum matches...
    let mut matched = r.clone();
    apply(
        &mut matched,
        &reg::verified_by_event(t0()),
        &[bytes(local.as_bytes())],
        &env,
    );
    assert_eq!(matched.verification.state, V::Succeeded.as_i16());
    // ...and re-verifies it when it does not.
    let other = checksum_bytes(b"other");
    refused(
        &r,
        &reg::verified_by_event(t0()),
        &[bytes(other.as_bytes())],
        &env,
    );
    let mut again = r.clone();
    apply(&mut again, &reg::reverify_after_event(t0()), &[], &env);
    assert_eq!(again.verification.state, V::Pending.as_i16());

    let mut r = row.clone();
    apply(
        &mut r,
        &reg::verification_succeeded(local.as_bytes(), t0()),
        &[],
        &env,
    );
    assert_eq!(r.verification.state, V::Succeeded.as_i16());
    // A checksum_succeeded the primary wrote before this site verified (a backlog caught up)
    // re-verifies nothing; one written after (the primary re-verified) re-hashes the copy.
    refused(&r, &reg::reverify_after_event(t0() - secs(1)), &[], &env);
    refused(&r, &reg::reverify_after_event(t0()), &[], &env);
    let mut later = r.clone();
    apply(
        &mut later,
        &reg::reverify_after_event(t0() + secs(1)),
        &[],
        &env,
    );
    assert_eq!(later.verification.state, V::Pending.as_i16());

    let mut r = row.clone();
    let error = VerificationFailure::Error("No such file".into());
    apply(&mut r, &reg::verification_failed(&error, t0()), &[], &env);
    assert_eq!(r.verification.state, V::Failed.as_i16());
    assert_eq!(
        r.verification.failure.as_deref(),
        Some("Error during verification: No such file")
    );
    assert_eq!(
        r.last_sync_failure.as_deref(),
        Some("Verification failed with: Error during verification: No such file")
    );
    assert!(!r.checksum_mismatch);
    assert_eq!(r.verification.checksum, None);
    assert_eq!(r.state, R::Failed.as_i16());

    // A manual reverify skips a verification in flight.
    refused(&row, &reg::reverify(), &[], &env);
    let mut r = row.clone();
    apply(
        &mut r,
        &reg::verification_succeeded(local.as_bytes(), t0()),
        &[],
        &env,
    );
    apply(&mut r, &reg::reverify(), &[], &env);
    assert_eq!(r.verification.state, V::Pending.as_i16());
}

#[test]
fn registry_verification_timeout() {
    let env = fixed_env(t0(), 0);
    let mut row = synced_row_with_started_verification(b"s");
    let now = t0() + TimeDelta::hours(9);
    let sweep = reg::verification_timed_out(
        timeout_cutoff(now, VERIFICATION_TIMEOUT),
        VERIFICATION_TIMEOUT,
        now + secs(16),
    );
    apply(&mut row, &sweep, &[], &env);
    assert_eq!(row.verification.state, V::Failed.as_i16());
    assert_eq!(
        row.verification.failure.as_deref(),
        Some("Verification timed out after 8 hours")
    );
    assert_eq!(row.verification.retry_count, 1);
    assert_eq!(row.verification.retry_at, Some(now + secs(16)));
    assert_eq!(
        row.state,
        R::Synced.as_i16(),
        "the sync state is left alone"
    );
    assert_eq!(
        row.verification.checksum.as_deref(),
        Some(&b"s"[..]),
        "kept"
    );
    refused(&row, &sweep, &[], &env);
}

#[test]
fn synced_verification_state_by_type() {
    let env = fixed_env(t0(), 0);
    for (at_once, verifies, want) in [
        (false, false, V::Disabled),
        (false, true, V::Pending),
        (true, false, V::Succeeded),
        (true, true, V::Succeeded),
    ] {
        let mut row = claimed_row(t0());
        apply(
            &mut row,
            &reg::synced(Some(t0()), at_once, verifies, false, t0()),
            &[bytes(b"s")],
            &env,
        );
        assert_eq!(
            row.verification.state,
            want.as_i16(),
            "{at_once} {verifies}"
        );
    }
}

#[test]
fn texts_and_durations() {
    assert_eq!(truncate_failure("short"), "short");
    let long = "é".repeat(300);
    let cut = truncate_failure(&long);
    assert_eq!(cut.chars().count(), 255);
    assert_eq!(cut.len(), 510, "two bytes per char, not 255 bytes");
    let f = SyncFailure::new("m".repeat(250)).with_error("0123456789");
    assert_eq!(f.text(), format!("{}: 012", "m".repeat(250)));
    assert_eq!(failure_text("a", None), "a");
    assert_eq!(failure_text("a", Some("b")), "a: b");
    assert_eq!(humanize_duration(Duration::from_secs(3600)), "1 hour");
    assert_eq!(humanize_duration(Duration::from_secs(5400)), "90 minutes");
    assert_eq!(humanize_duration(Duration::from_secs(60)), "1 minute");
    assert_eq!(humanize_duration(Duration::from_secs(45)), "45 seconds");
    assert_eq!(humanize_duration(Duration::from_secs(0)), "0 seconds");
    assert_eq!(
        verification_timeout_message(Duration::from_secs(90)),
        "Verification timed out after 90 seconds"
    );
    assert_eq!(
        timeout_cutoff(DateTime::<Utc>::MIN_UTC, SYNC_TIMEOUT),
        DateTime::<Utc>::MIN_UTC,
        "saturates"
    );
    assert_eq!(
        BackoffCap::for_missing_on_primary(true),
        SyncFailure::new("x").missing_on_primary(true).cap()
    );
    assert_eq!(SyncFailure::new("x").cap(), BackoffCap::Default);
}

// ---------------------------------------------------------------------------------------------
// Strategies: every column of a row, times around an arbitrary clock

const HOUR_MS: i64 = 3_600_000;

/// An arbitrary clock between 2000 and 2100, to the nanosecond.
fn any_now() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| Utc.timestamp_opt(s, ns).unwrap())
}

/// `None`, `now`, the edges the rules compare against (`now ± 1 ms`, the 8 h cutoffs), or any
/// time within about four months of `now`.
fn any_time(now: DateTime<Utc>) -> impl Strategy<Value = Option<DateTime<Utc>>> {
    let at = move |ms: i64| Some(now + TimeDelta::milliseconds(ms));
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(now)),
        2 => prop::sample::select(vec![-1, 1, -8 * HOUR_MS, -8 * HOUR_MS - 1, -8 * HOUR_MS + 1])
            .prop_map(at),
        4 => (-10_000_000_000i64..10_000_000_000).prop_map(at),
    ]
}

fn any_count() -> impl Strategy<Value = i16> {
    prop_oneof![
        4 => 0i16..5,
        1 => Just(i16::MAX),
        1 => Just(i16::MAX - 1),
        2 => any::<i16>(),
    ]
}

/// Mostly known states, sometimes a value no state has.
fn any_state(known: i16) -> impl Strategy<Value = i16> {
    prop_oneof![9 => 0..known, 1 => any::<i16>()]
}

fn any_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        ".{0,20}".prop_map(Some),
        ".{250,300}".prop_map(Some)
    ]
}

/// A checksum: none, one of two fixed ones (so rows and rules often agree), or random bytes.
fn any_sum() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(vec![0xaa; 32])),
        Just(Some(vec![0xbb; 32])),
        prop::collection::vec(any::<u8>(), 32).prop_map(Some),
    ]
}

prop_compose! {
    fn any_verification(now: DateTime<Utc>)(
        state in any_state(5),
        started_at in any_time(now),
        retry_at in any_time(now),
        verified_at in any_time(now),
        retry_count in any_count(),
        checksum in any_sum(),
        failure in any_text(),
    ) -> VerificationFields {
        VerificationFields { state, started_at, retry_at, verified_at, retry_count, checksum, failure }
    }
}

prop_compose! {
    fn any_row(now: DateTime<Utc>)(
        state in any_state(4),
        retry_count in any_count(),
        retry_at in any_time(now),
        last_synced_at in any_time(now),
        last_sync_failure in any_text(),
        missing_on_primary in any::<bool>(),
        checksum_mismatch in any::<bool>(),
        verification_checksum_mismatched in any_sum(),
        blob_path in prop_oneof![Just(None), "[a-z]{1,8}/[a-z]{1,8}".prop_map(Some)],
        claimed_by in prop_oneof![Just(None), Just(Some("a".to_string())), Just(Some("b".to_string()))],
        verification in any_verification(now),
    ) -> RegistryFields {
        RegistryFields {
            state, retry_count, retry_at, last_synced_at, last_sync_failure, missing_on_primary,
            checksum_mismatch, verification_checksum_mismatched, blob_path, claimed_by,
            verification,
        }
    }
}

/// A clock, a registry row around it and a seed for the random source.
fn registry_case() -> impl Strategy<Value = (DateTime<Utc>, RegistryFields, u64)> {
    any_now().prop_flat_map(|now| (Just(now), any_row(now), any::<u64>()))
}

/// A clock, a primary's verification row around it and a seed.
fn verification_case() -> impl Strategy<Value = (DateTime<Utc>, VerificationFields, u64)> {
    any_now().prop_flat_map(|now| (Just(now), any_verification(now), any::<u64>()))
}

/// A claim token: `pick` 0 the row's own (when it has one), else `other`.
fn token(pick: u8, own: Option<DateTime<Utc>>, other: DateTime<Utc>) -> DateTime<Utc> {
    match (pick, own) {
        (0, Some(t)) => t,
        _ => other,
    }
}

fn any_failure() -> impl Strategy<Value = SyncFailure> {
    (
        ".{1,300}",
        proptest::option::of(".{0,100}"),
        any::<bool>(),
        proptest::option::of(prop_oneof![
            Just(BackoffCap::Default),
            Just(BackoffCap::MissingOnPrimary),
            (0u64..1_000_000).prop_map(|s| BackoffCap::Custom(Duration::from_secs(s))),
        ]),
    )
        .prop_map(|(message, error, missing, cap)| {
            let mut f = SyncFailure::new(message).missing_on_primary(missing);
            if let Some(e) = error {
                f = f.with_error(e);
            }
            if let Some(cap) = cap {
                f = f.with_cap(cap);
            }
            f
        })
}

/// Every registry rule, with the per-row values it takes, for a clock `now` and a token `at`.
fn registry_rules(now: DateTime<Utc>, at: DateTime<Utc>, sum: &[u8]) -> Vec<(Change, Vec<Datum>)> {
    let per_sum = vec![bytes(sum)];
    let per_path = vec![bytes(sum), Datum::Text("ab/cd".into())];
    let cutoff = timeout_cutoff(now, SYNC_TIMEOUT);
    let mut out = vec![
        (reg::changed_on_primary(now), vec![]),
        (reg::resync(), vec![]),
        (reg::claim_now(now), vec![]),
        (reg::sync_failed(Some(at), &SyncFailure::new("x")), vec![]),
        (
            reg::sync_failed(None, &SyncFailure::new("x").missing_on_primary(true)),
            vec![],
        ),
        (reg::requeue_changed(at), vec![]),
        (reg::sync_timed_out(cutoff, "Sync timed out", now), vec![]),
        (reg::reclaim_syncs(), vec![]),
        (reg::verified_by_event(now), per_sum.clone()),
        (reg::reverify_after_event(now), vec![]),
        (reg::reverify(), vec![]),
        (reg::verification_succeeded(sum, now), vec![]),
        (reg::verification_disabled(), vec![]),
        (
            reg::verification_failed(&VerificationFailure::Mismatch(sum.to_vec()), now),
            vec![],
        ),
        (
            reg::verification_failed(&VerificationFailure::Error("e".into()), now),
            vec![],
        ),
        (
            reg::verification_timed_out(cutoff, VERIFICATION_TIMEOUT, now),
            vec![],
        ),
        (reg::release_verification(), vec![]),
        (reg::set_blob_path("ab/cd"), vec![]),
        (reg::release_owned_syncs("a"), vec![]),
        (reg::release_owned_verifications("a"), vec![]),
        (reg::release_claimed(at), vec![]),
    ];
    for token in [None, Some(at)] {
        for at_once in [false, true] {
            for verifies in [false, true] {
                out.push((
                    reg::synced(token, at_once, verifies, false, now),
                    per_sum.clone(),
                ));
                out.push((
                    reg::synced(token, at_once, verifies, true, now),
                    per_path.clone(),
                ));
            }
        }
    }
    let claims: Vec<Claim> = reg::claims(now)
        .into_iter()
        .chain(reg::verification_claims(now))
        .chain(reg::sync_claims(now, "a"))
        .chain(reg::verification_claims_by(now, "b"))
        .collect();
    out.extend(claims.into_iter().map(|c| (c.change, vec![])));
    out
}

/// Every rule of the primary's verification state.
fn verification_rules(now: DateTime<Utc>, at: DateTime<Utc>, sum: &[u8]) -> Vec<Change> {
    let cutoff = timeout_cutoff(now, VERIFICATION_TIMEOUT);
    let mut out = vec![
        ver::pending(),
        ver::succeeded(at, sum, now),
        ver::failed(at, "x", now),
        ver::reverify_due(now).change,
        ver::timed_out(cutoff, VERIFICATION_TIMEOUT, now, true),
        ver::timed_out(cutoff, VERIFICATION_TIMEOUT, now, false),
    ];
    out.extend(ver::claims(now).into_iter().map(|c| c.change));
    out
}

// ---------------------------------------------------------------------------------------------
// Properties of every rule

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A rule that does not apply changes nothing; one that applies writes only the columns it
    /// names, and never leaves a state column with a value no state has (unless the row had
    /// one and the rule does not touch that column).
    #[test]
    fn every_registry_rule_writes_only_its_columns_and_known_states(
        (now, row, seed) in registry_case(),
        pick in 0u8..2,
        other in any_now(),
        sum in prop_oneof![Just(vec![0xaa; 32]), prop::collection::vec(any::<u8>(), 32)],
    ) {
        let at = token(pick, row.last_synced_at, other);
        for (change, per_row) in registry_rules(now, at, &sum) {
            let env = seeded_env(now, seed);
            let mut after = row.clone();
            let applied = change.apply(&mut after, &per_row, &env);
            prop_assert_eq!(applied, change.guard.matches(&row, &per_row), "{}", change.name);
            if !applied {
                prop_assert_eq!(&after, &row, "{}", change.name);
                continue;
            }
            let written = written_columns(&change);
            for c in changed_columns(&row, &after, &REGISTRY_COLUMNS) {
                prop_assert!(written.contains(&c), "{} changed {:?}", change.name, c);
            }
            if written.contains(&Column::State) {
                prop_assert!(after.replication_state().is_ok(), "{}: {:?}", change.name, after);
            }
            if written.contains(&Column::VerificationState) {
                prop_assert!(after.verification_state().is_ok(), "{}: {:?}", change.name, after);
            }
            if known_states(&row) {
                prop_assert!(known_states(&after), "{}: {:?}", change.name, after);
            }
            let failures = [after.last_sync_failure.as_deref(), after.verification.failure.as_deref()];
            for (c, text) in [Column::LastSyncFailure, Column::VerificationFailure].into_iter().zip(failures) {
                if written.contains(&c) {
                    prop_assert!(text.is_none_or(|t| t.chars().count() <= FAILURE_MAX_CHARS));
                }
            }
        }
    }

    #[test]
    fn every_verification_rule_writes_only_its_columns_and_known_states(
        (now, v, seed) in verification_case(),
        pick in 0u8..2,
        other in any_now(),
        sum in prop::collection::vec(any::<u8>(), 32),
    ) {
        let at = token(pick, v.started_at, other);
        for change in verification_rules(now, at, &sum) {
            let env = seeded_env(now, seed);
            let mut after = v.clone();
            let applied = change.apply(&mut after, &[], &env);
            if !applied {
                prop_assert_eq!(&after, &v, "{}", change.name);
                continue;
            }
            let written = written_columns(&change);
            for c in changed_columns(&v, &after, &VERIFICATION_COLUMNS) {
                prop_assert!(written.contains(&c), "{} changed {:?}", change.name, c);
            }
            if written.contains(&Column::VerificationState) {
                prop_assert!(V::from_i16(after.state).is_ok(), "{}: {:?}", change.name, after);
            }
            if written.contains(&Column::VerificationFailure) {
                prop_assert!(after.failure.as_ref().is_none_or(|t| t.chars().count() <= FAILURE_MAX_CHARS));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Replication

    #[test]
    fn synced_applies_only_to_started_rows_holding_the_token(
        (now, row, seed) in registry_case(),
        pick in 0u8..3,
        other in any_now(),
        at_once in any::<bool>(),
        verifies in any::<bool>(),
        with_path in any::<bool>(),
        sum in prop::collection::vec(any::<u8>(), 32),
    ) {
        let claimed_at = match pick {
            2 => None,
            p => Some(token(p, row.last_synced_at, other)),
        };
        let change = reg::synced(claimed_at, at_once, verifies, with_path, now);
        let per_row = [bytes(&sum), Datum::Text("x/y".into())];
        let mut after = row.clone();
        let applied = change.apply(&mut after, &per_row, &seeded_env(now, seed));
        let holds = claimed_at.is_none_or(|t| row.last_synced_at == Some(t));
        prop_assert_eq!(applied, is(row.state, R::Started) && holds);
        if !applied {
            prop_assert_eq!(after, row);
            return Ok(());
        }
        prop_assert_eq!(after.state, R::Synced.as_i16());
        prop_assert_eq!((after.retry_count, after.retry_at, after.last_sync_failure.clone()), (0, None, None));
        prop_assert!(!after.missing_on_primary);
        prop_assert_eq!(after.last_synced_at, row.last_synced_at);
        let want = match (at_once, verifies) {
            (true, _) => V::Succeeded,
            (false, true) => V::Pending,
            (false, false) => V::Disabled,
        };
        prop_assert_eq!(after.verification.state, want.as_i16());
        prop_assert_eq!(after.verification.checksum.as_deref(), Some(sum.as_slice()));
        prop_assert_eq!(after.verification.verified_at, at_once.then_some(now));
        prop_assert_eq!(after.verification.started_at, None);
        prop_assert_eq!(after.verification.failure.clone(), None);
        prop_assert_eq!(after.verification.retry_at, None);
        if at_once {
            prop_assert!(!after.checksum_mismatch);
            prop_assert_eq!(after.verification_checksum_mismatched, None);
            prop_assert_eq!(after.verification.retry_count, 0);
        } else {
            prop_assert_eq!(after.checksum_mismatch, row.checksum_mismatch);
            prop_assert_eq!(after.verification_checksum_mismatched, row.verification_checksum_mismatched);
            prop_assert_eq!(after.verification.retry_count, row.verification.retry_count);
        }
        let path = if with_path { Some("x/y".to_string()) } else { row.blob_path.clone() };
        prop_assert_eq!(after.blob_path, path);
    }

    #[test]
    fn sync_failed_increments_and_schedules_a_retry(
        (now, row, seed) in registry_case(),
        pick in 0u8..3,
        other in any_now(),
        failure in any_failure(),
    ) {
        let claimed_at = match pick {
            2 => None,
            p => Some(token(p, row.last_synced_at, other)),
        };
        let change = reg::sync_failed(claimed_at, &failure);
        let mut after = row.clone();
        let applied = change.apply(&mut after, &[], &seeded_env(now, seed));
        let holds = claimed_at.is_none_or(|t| row.last_synced_at == Some(t));
        prop_assert_eq!(applied, is(row.state, R::Started) && holds);
        if !applied {
            prop_assert_eq!(after, row);
            return Ok(());
        }
        prop_assert_eq!(after.state, R::Failed.as_i16());
        prop_assert_eq!(after.retry_count, row.retry_count.saturating_add(1));
        let cap = failure.cap();
        let want_cap = failure.cap.unwrap_or(BackoffCap::for_missing_on_primary(failure.missing_on_primary));
        prop_assert_eq!(cap, want_cap);
        prop_assert!(within_backoff(after.retry_at, now, after.retry_count, cap),
            "retry_at {:?} for n={} cap={:?} now={}", after.retry_at, after.retry_count, cap, now);
        prop_assert_eq!(after.missing_on_primary, failure.missing_on_primary);
        let text = after.last_sync_failure.clone().unwrap();
        let full = match &failure.error { Some(e) => format!("{}: {e}", failure.message), None => failure.message.clone() };
        prop_assert!(text.chars().count() <= FAILURE_MAX_CHARS);
        prop_assert!(full.starts_with(&text));
        prop_assert_eq!(text.chars().count(), full.chars().count().min(FAILURE_MAX_CHARS));
        // The token and the verification columns are untouched by a sync failure.
        prop_assert_eq!(after.last_synced_at, row.last_synced_at);
        prop_assert_eq!(&after.verification, &row.verification);
        prop_assert_eq!(after.checksum_mismatch, row.checksum_mismatch);
    }

    #[test]
    fn fixed_jitter_gives_exact_retry_times(now in any_now(), n in 0i16..7, jitter in 0u32..30) {
        let row = RegistryFields { state: R::Started.as_i16(), retry_count: n, ..RegistryFields::new() };
        let mut after = row.clone();
        prop_assert!(reg::sync_failed(None, &SyncFailure::new("x")).apply(&mut after, &[], &fixed_env(now, jitter)));
        let k = i64::from(n) + 1;
        let expected = now + secs(k.pow(4) + 15 + i64::from(jitter) * (k + 1));
        prop_assert_eq!(after.retry_at, Some(expected));
        let by_backoff = next_retry_time(now, k, BackoffCap::Default, &FixedRandom(jitter));
        prop_assert_eq!(after.retry_at, Some(by_backoff));
    }

    #[test]
    fn changed_on_primary_keeps_a_started_row_started_with_a_new_token(
        (now, row, seed) in registry_case(),
    ) {
        let mut after = row.clone();
        prop_assert!(reg::changed_on_primary(now).apply(&mut after, &[], &seeded_env(now, seed)), "applies to every row");
        if is(row.state, R::Started) {
            prop_assert_eq!(after.state, R::Started.as_i16());
            let token = after.last_synced_at.unwrap();
            prop_assert_ne!(Some(token), row.last_synced_at, "the running download's token is stale");
            prop_assert!(token == now || token == now - TimeDelta::milliseconds(1));
        } else {
            prop_assert_eq!(after.state, R::Pending.as_i16());
            prop_assert_eq!(after.last_synced_at, None);
        }
        prop_assert_eq!((after.retry_count, after.retry_at, after.last_sync_failure.clone()), (0, None, None));
        prop_assert!(!after.missing_on_primary && !after.checksum_mismatch);
        prop_assert_eq!(after.verification_checksum_mismatched.clone(), None);
        prop_assert_eq!(after.verification.state, V::Pending.as_i16());
        prop_assert_eq!(
            (after.verification.started_at, after.verification.retry_count, after.verification.retry_at, after.verification.failure.clone()),
            (None, 0, None, None)
        );
        // What the last download left stays: its checksum, when it was verified, its path.
        prop_assert_eq!(&after.verification.checksum, &row.verification.checksum);
        prop_assert_eq!(after.verification.verified_at, row.verification.verified_at);
        prop_assert_eq!(&after.blob_path, &row.blob_path);
    }

    #[test]
    fn resync_starts_every_row_not_started_over((now, row, seed) in registry_case()) {
        let mut after = row.clone();
        let applied = reg::resync().apply(&mut after, &[], &seeded_env(now, seed));
        let not_started = [R::Pending, R::Synced, R::Failed].iter().any(|s| is(row.state, *s));
        prop_assert_eq!(applied, not_started);
        if applied {
            let mut by_event = row.clone();
            prop_assert!(reg::changed_on_primary(now).apply(&mut by_event, &[], &seeded_env(now, seed)));
            prop_assert_eq!(after, by_event, "a resync does what an event does to a row not started");
        }
    }

    #[test]
    fn a_stopped_process_releases_exactly_its_started_rows((now, row, seed) in registry_case()) {
        let env = seeded_env(now, seed);
        let owned = row.claimed_by.as_deref() == Some("a");
        let mut after = row.clone();
        let syncs = is(row.state, R::Started) && owned;
        prop_assert_eq!(reg::release_owned_syncs("a").apply(&mut after, &[], &env), syncs);
        if syncs {
            let want = RegistryFields { state: R::Pending.as_i16(), last_synced_at: None, claimed_by: None, ..row.clone() };
            prop_assert_eq!(&after, &want);
        }
        let mut after = row.clone();
        let verifications = vis(row.verification.state, V::Started) && owned;
        prop_assert_eq!(reg::release_owned_verifications("a").apply(&mut after, &[], &env), verifications);
        if verifications {
            prop_assert_eq!(after.verification.state, V::Pending.as_i16());
            prop_assert_eq!(after.state, row.state);
        }
        // A claim by a process records it, whatever the row held before.
        for claim in reg::sync_claims(now, "b").into_iter().chain(reg::verification_claims_by(now, "b")) {
            let mut after = row.clone();
            if claim.change.apply(&mut after, &[], &env) {
                prop_assert_eq!(after.claimed_by.as_deref(), Some("b"));
            }
        }
    }

    #[test]
    fn claims_select_exactly_pending_and_due_failed_rows((now, row, seed) in registry_case()) {
        let env = seeded_env(now, seed);
        let [sync, retry] = reg::claims(now);
        let due = is(row.state, R::Failed) && row.retry_at.is_none_or(|t| t <= now);
        for (change, selects) in [
            (&sync.change, is(row.state, R::Pending)),
            (&retry.change, due),
            (&reg::claim_now(now), is(row.state, R::Pending) || is(row.state, R::Failed)),
        ] {
            let mut after = row.clone();
            prop_assert_eq!(change.apply(&mut after, &[], &env), selects, "{}", change.name);
            if selects {
                let want = RegistryFields { state: R::Started.as_i16(), last_synced_at: Some(now), ..row.clone() };
                prop_assert_eq!(after, want);
            }
        }
    }

    #[test]
    fn requeue_needs_a_moved_token((now, row, seed) in registry_case(), pick in 0u8..2, other in any_now()) {
        let at = token(pick, row.last_synced_at, other);
        let mut after = row.clone();
        let applied = reg::requeue_changed(at).apply(&mut after, &[], &seeded_env(now, seed));
        let moved = row.last_synced_at.is_some_and(|t| t != at);
        prop_assert_eq!(applied, is(row.state, R::Started) && moved);
        if applied {
            prop_assert_eq!(after, RegistryFields { state: R::Pending.as_i16(), last_synced_at: None, ..row });
        }
    }

    #[test]
    fn timeouts_select_only_stuck_started_rows(
        (now, row, seed) in registry_case(),
        message in ".{0,300}",
        retry_at in any_now(),
    ) {
        let env = seeded_env(now, seed);
        let cutoff = timeout_cutoff(now, SYNC_TIMEOUT);
        let mut after = row.clone();
        let applied = reg::sync_timed_out(cutoff, &message, retry_at).apply(&mut after, &[], &env);
        let stuck = row.last_synced_at.is_none_or(|t| t < now - TimeDelta::hours(8));
        prop_assert_eq!(applied, is(row.state, R::Started) && stuck);
        if applied {
            let want = RegistryFields {
                state: R::Failed.as_i16(),
                retry_count: 1,
                retry_at: Some(retry_at),
                last_sync_failure: Some(truncate_failure(&message)),
                ..row.clone()
            };
            prop_assert_eq!(after, want);
        }

        let cutoff = timeout_cutoff(now, VERIFICATION_TIMEOUT);
        let mut after = row.clone();
        let sweep = reg::verification_timed_out(cutoff, VERIFICATION_TIMEOUT, retry_at);
        let applied = sweep.apply(&mut after, &[], &env);
        let stuck = row.verification.started_at.is_none_or(|t| t < now - TimeDelta::hours(8));
        prop_assert_eq!(applied, vis(row.verification.state, V::Started) && stuck);
        if applied {
            let want = VerificationFields {
                state: V::Failed.as_i16(),
                retry_count: 1,
                retry_at: Some(retry_at),
                failure: Some("Verification timed out after 8 hours".into()),
                ..row.verification.clone()
            };
            prop_assert_eq!(after, RegistryFields { verification: want, ..row });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Verification on a secondary's registry

    #[test]
    fn registry_verification_results_only_from_synced_and_started(
        (now, row, seed) in registry_case(),
        mismatch in any::<bool>(),
        error in ".{0,300}",
        sum in prop::collection::vec(any::<u8>(), 32),
    ) {
        let env = seeded_env(now, seed);
        let verifying = is(row.state, R::Synced) && vis(row.verification.state, V::Started);

        let mut ok = row.clone();
        prop_assert_eq!(reg::verification_succeeded(&sum, now).apply(&mut ok, &[], &env), verifying);
        let mut disabled = row.clone();
        prop_assert_eq!(reg::verification_disabled().apply(&mut disabled, &[], &env), verifying);
        let failure = if mismatch { VerificationFailure::Mismatch(sum.clone()) } else { VerificationFailure::Error(error.clone()) };
        let mut failed = row.clone();
        prop_assert_eq!(reg::verification_failed(&failure, now).apply(&mut failed, &[], &env), verifying);
        if !verifying {
            return Ok(());
        }

        prop_assert_eq!(ok.verification.state, V::Succeeded.as_i16());
        prop_assert_eq!(ok.verification.checksum.as_deref(), Some(sum.as_slice()));
        prop_assert_eq!(ok.verification.verified_at, Some(now));
        prop_assert_eq!((ok.verification.retry_count, ok.verification.retry_at, ok.verification.failure.clone()), (0, None, None));
        prop_assert!(!ok.checksum_mismatch);
        prop_assert_eq!(ok.verification_checksum_mismatched, None);
        prop_assert_eq!(ok.verification.started_at, row.verification.started_at, "kept");
        prop_assert_eq!((ok.state, ok.retry_count, ok.retry_at), (row.state, row.retry_count, row.retry_at));

        prop_assert_eq!(disabled.verification.state, V::Disabled.as_i16());
        prop_assert_eq!(disabled.verification.started_at, None);

        prop_assert_eq!(failed.state, R::Failed.as_i16());
        prop_assert_eq!(failed.verification.state, V::Failed.as_i16());
        let n = row.verification.retry_count.saturating_add(1);
        prop_assert_eq!((failed.retry_count, failed.verification.retry_count), (n, n));
        prop_assert!(within_backoff(failed.retry_at, now, n, BackoffCap::Default), "{:?}", failed.retry_at);
        prop_assert_eq!(failed.verification.retry_at, failed.retry_at, "one draw for both");
        prop_assert_eq!(failed.verification.verified_at, Some(now));
        prop_assert_eq!(failed.checksum_mismatch, mismatch);
        let vtext = failed.verification.failure.clone().unwrap();
        let text = failed.last_sync_failure.clone().unwrap();
        prop_assert!(vtext.chars().count() <= FAILURE_MAX_CHARS && text.chars().count() <= FAILURE_MAX_CHARS);
        let full = format!("{VERIFICATION_FAILED_PREFIX}{vtext}");
        prop_assert!(full.starts_with(&text));
        if mismatch {
            prop_assert_eq!(vtext, MISMATCH_MESSAGE);
            prop_assert_eq!(failed.verification_checksum_mismatched.as_deref(), Some(sum.as_slice()));
            prop_assert_eq!(failed.verification.checksum.as_deref(), Some(sum.as_slice()));
        } else {
            let full = format!("Error during verification: {error}");
            prop_assert!(full.starts_with(&vtext));
            prop_assert_eq!(failed.verification_checksum_mismatched, None);
            prop_assert_eq!(failed.verification.checksum, None);
        }
        prop_assert_eq!(failed.last_synced_at, row.last_synced_at);
        prop_assert_eq!(failed.missing_on_primary, row.missing_on_primary);
    }

    #[test]
    fn registry_verification_claims_and_events(
        (now, row, seed) in registry_case(),
        sum in any_sum(),
    ) {
        let env = seeded_env(now, seed);
        let synced = is(row.state, R::Synced);
        let vstate = row.verification.state;
        let [pending, failed] = reg::verification_claims(now);
        let due = vis(vstate, V::Failed) && row.verification.retry_at.is_none_or(|t| t <= now);
        for (change, selects) in [(&pending.change, synced && vis(vstate, V::Pending)), (&failed.change, synced && due)] {
            let mut after = row.clone();
            prop_assert_eq!(change.apply(&mut after, &[], &env), selects, "{}", change.name);
            if selects {
                let v = VerificationFields { state: V::Started.as_i16(), started_at: Some(now), ..row.verification.clone() };
                prop_assert_eq!(after, RegistryFields { verification: v, ..row.clone() });
            }
        }

        let per_row = [Datum::bytes(sum.clone())];
        let mut after = row.clone();
        let uncompared = vis(vstate, V::Pending) || vis(vstate, V::Disabled);
        let equal = sum.is_some() && row.verification.checksum == sum;
        prop_assert_eq!(reg::verified_by_event(now).apply(&mut after, &per_row, &env), synced && uncompared && equal);

        let mut after = row.clone();
        let before_event = row.verification.verified_at.is_none_or(|t| t < now);
        prop_assert_eq!(reg::reverify_after_event(now).apply(&mut after, &[], &env), synced && before_event);
        if synced && before_event {
            let v = VerificationFields { state: V::Pending.as_i16(), ..row.verification.clone() };
            prop_assert_eq!(after, RegistryFields { verification: v.clone(), ..row.clone() });
        }
        let mut manual = row.clone();
        let not_started = [V::Pending, V::Succeeded, V::Failed, V::Disabled].iter().any(|s| vis(vstate, *s));
        prop_assert_eq!(reg::reverify().apply(&mut manual, &[], &env), synced && not_started);

        let mut after = row.clone();
        prop_assert_eq!(reg::release_verification().apply(&mut after, &[], &env), vis(vstate, V::Started));
    }

    // -----------------------------------------------------------------------------------------
    // Verification on the primary

    #[test]
    fn verification_pending_keeps_counters_only_from_failed((now, v, seed) in verification_case()) {
        let mut after = v.clone();
        prop_assert!(ver::pending().apply(&mut after, &[], &seeded_env(now, seed)), "applies to every row");
        prop_assert_eq!(after.state, V::Pending.as_i16());
        prop_assert_eq!((after.failure.clone(), after.started_at), (None, None));
        if vis(v.state, V::Failed) {
            prop_assert_eq!((after.retry_count, after.retry_at), (v.retry_count, v.retry_at));
        } else {
            prop_assert_eq!((after.retry_count, after.retry_at), (0, None));
        }
        prop_assert_eq!(&after.checksum, &v.checksum);
        prop_assert_eq!(after.verified_at, v.verified_at);
    }

    #[test]
    fn verification_succeeded_and_failed_only_from_the_same_claim(
        (now, v, seed) in verification_case(),
        pick in 0u8..2,
        other in any_now(),
        message in ".{0,400}",
        sum in prop::collection::vec(any::<u8>(), 32),
    ) {
        let at = token(pick, v.started_at, other);
        let env = seeded_env(now, seed);
        let ours = vis(v.state, V::Started) && v.started_at == Some(at);

        let mut ok = v.clone();
        prop_assert_eq!(ver::succeeded(at, &sum, now).apply(&mut ok, &[], &env), ours);
        let mut failed = v.clone();
        prop_assert_eq!(ver::failed(at, &message, now).apply(&mut failed, &[], &env), ours);
        if !ours {
            prop_assert_eq!((&ok, &failed), (&v, &v));
            return Ok(());
        }
        let want = VerificationFields {
            state: V::Succeeded.as_i16(),
            checksum: Some(sum.clone()),
            verified_at: Some(now),
            failure: None,
            retry_count: 0,
            retry_at: None,
            ..v.clone()
        };
        prop_assert_eq!(ok, want);

        prop_assert_eq!(failed.state, V::Failed.as_i16());
        prop_assert_eq!(failed.retry_count, v.retry_count.saturating_add(1));
        prop_assert!(within_backoff(failed.retry_at, now, failed.retry_count, BackoffCap::Default));
        prop_assert_eq!(failed.verified_at, Some(now));
        prop_assert_eq!(failed.checksum, None);
        prop_assert_eq!(failed.started_at, v.started_at);
        let text = failed.failure.unwrap();
        prop_assert!(text.chars().count() <= FAILURE_MAX_CHARS);
        prop_assert!(message.starts_with(&text));
        prop_assert_eq!(text.chars().count(), message.chars().count().min(FAILURE_MAX_CHARS));
    }

    #[test]
    fn verification_claims_reverification_and_timeouts(
        (now, v, seed) in verification_case(),
        clear in any::<bool>(),
        retry_at in any_now(),
    ) {
        let env = seeded_env(now, seed);
        let [pending, failed] = ver::claims(now);
        let due = vis(v.state, V::Failed) && v.retry_at.is_none_or(|t| t <= now);
        for (change, selects) in [(&pending.change, vis(v.state, V::Pending)), (&failed.change, due)] {
            let mut after = v.clone();
            prop_assert_eq!(change.apply(&mut after, &[], &env), selects, "{}", change.name);
            if selects {
                prop_assert_eq!(after, VerificationFields { state: V::Started.as_i16(), started_at: Some(now), ..v.clone() });
            }
        }

        let cutoff = now - TimeDelta::days(7);
        let mut after = v.clone();
        let old = vis(v.state, V::Succeeded) && v.verified_at.is_some_and(|t| t < cutoff);
        prop_assert_eq!(ver::reverify_due(cutoff).change.apply(&mut after, &[], &env), old);
        if old {
            prop_assert_eq!(after, VerificationFields { state: V::Pending.as_i16(), ..v.clone() });
        }

        let cutoff = timeout_cutoff(now, VERIFICATION_TIMEOUT);
        let mut after = v.clone();
        let sweep = ver::timed_out(cutoff, VERIFICATION_TIMEOUT, retry_at, clear);
        let stuck = vis(v.state, V::Started) && v.started_at.is_none_or(|t| t < now - TimeDelta::hours(8));
        prop_assert_eq!(sweep.apply(&mut after, &[], &env), stuck);
        if stuck {
            let want = VerificationFields {
                state: V::Failed.as_i16(),
                failure: Some("Verification timed out after 8 hours".into()),
                retry_count: 1,
                retry_at: Some(retry_at),
                checksum: if clear { None } else { v.checksum.clone() },
                ..v.clone()
            };
            prop_assert_eq!(after, want);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Values

    #[test]
    fn a_token_always_differs_from_the_one_it_replaces(now in any_now(), old in any_time(t0()), same in any::<bool>()) {
        let old = if same { Some(now) } else { old };
        let row = RegistryFields { last_synced_at: old, ..RegistryFields::new() };
        let new = Value::Token(now).evaluate(Column::LastSyncedAt, &row, &[]);
        prop_assert_ne!(new.clone(), Datum::time(old));
        prop_assert!(new == Datum::Time(now) || new == Datum::Time(now - TimeDelta::milliseconds(1)));
    }

    #[test]
    fn increments_saturate(n in any::<i16>()) {
        let row = RegistryFields { retry_count: n, ..RegistryFields::new() };
        let new = Value::IncrementOf(Column::RetryCount).evaluate(Column::RetryCount, &row, &[]);
        prop_assert_eq!(new, Datum::SmallInt(n.saturating_add(1)));
    }

    #[test]
    fn truncation_never_splits_a_char(s in any::<String>(), pad in 0usize..400) {
        let long = format!("{}{s}", "ß".repeat(pad));
        let cut = truncate_failure(&long);
        prop_assert!(cut.chars().count() <= FAILURE_MAX_CHARS);
        prop_assert!(long.starts_with(&cut), "a prefix on a char boundary");
        if long.chars().count() <= FAILURE_MAX_CHARS {
            prop_assert_eq!(cut, long);
        } else {
            prop_assert_eq!(cut.chars().count(), FAILURE_MAX_CHARS);
        }
    }
}
