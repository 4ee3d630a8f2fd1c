//! The replication and verification state machines: examples from GitLab's behaviour and
//! property tests over arbitrary rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use geo_core::backoff::BackoffCap;
use geo_core::checksum::{ChecksumAlgorithm, checksum_bytes};
use geo_core::clock::{Env, FixedRandom, ManualClock, SeededRandom};
use geo_core::source::PrimaryChecksum;
use geo_core::transitions::{
    FAILURE_MAX_CHARS, MISMATCH_MESSAGE, PrimaryVerification, RegistryChange, RegistryFields,
    SYNC_TIMEOUT, SyncFailure, SyncedOutcome, TransitionError, VERIFICATION_TIMEOUT,
    registry_verification, replication, truncate_failure, verification,
};
use geo_core::{ReplicationState as R, VerificationFields, VerificationState as V};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
}

fn env(random: u32) -> (Env, ManualClock) {
    Env::manual(t0(), random)
}

fn synced_outcome(f: &RegistryFields, p: PrimaryVerification) -> RegistryChange {
    match replication::synced(f, p).unwrap() {
        SyncedOutcome::Synced(c) => *c,
        SyncedOutcome::NotStarted(s) => panic!("expected started, row is {s}"),
    }
}

/// Computes a change from the row, then applies it, asserting that its guard matched.
macro_rules! apply {
    ($row:ident, $change:expr $(,)?) => {{
        let change: RegistryChange = $change;
        assert!(
            $row.apply(&change),
            "guard did not match: {change:?} on {:?}",
            $row
        );
    }};
}

#[test]
fn full_sync_cycle() {
    let (env, clock) = env(0);
    let mut row = RegistryFields::new();
    assert!(row.is_never_attempted());

    apply!(row, replication::start(&row, &env).unwrap());
    assert_eq!(row.state, R::Started.as_i16());
    assert_eq!(row.last_synced_at, Some(t0()));
    assert!(!row.is_never_attempted());

    // A second start while the first runs is refused.
    assert_eq!(
        replication::start(&row, &env),
        Err(TransitionError::NotAllowed {
            machine: "registry",
            event: "start",
            from: "started"
        })
    );

    clock.advance(TimeDelta::seconds(5));
    let failure = SyncFailure::new("Error downloading file").with_error("connection reset");
    apply!(row, replication::failed(&row, &env, &failure));
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, 1);
    assert_eq!(
        row.retry_at,
        Some(t0() + TimeDelta::seconds(5 + 16)),
        "delay(1) with jitter 0"
    );
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Error downloading file: connection reset")
    );
    assert!(!row.missing_on_primary);
    assert!(!row.is_retry_due(t0() + TimeDelta::seconds(20)));
    assert!(row.is_retry_due(t0() + TimeDelta::seconds(22)));

    apply!(row, replication::start(&row, &env).unwrap());
    let change = synced_outcome(&row, PrimaryVerification::Verified);
    apply!(row, change);
    assert_eq!(row.state, R::Synced.as_i16());
    assert_eq!(
        (row.retry_count, row.retry_at, row.last_sync_failure.clone()),
        (0, None, None)
    );
    assert_eq!(row.verification.state, V::Pending.as_i16());
}

#[test]
fn missing_on_primary_uses_four_hour_cap() {
    let (env, _) = env(29);
    let mut row = RegistryFields {
        state: R::Started.as_i16(),
        retry_count: 20,
        ..RegistryFields::new()
    };
    let failure = SyncFailure::new("The file is missing on the Geo primary site")
        .with_error("Non-success HTTP response status code 404")
        .missing_on_primary(true);
    apply!(row, replication::failed(&row, &env, &failure));
    assert!(row.missing_on_primary);
    assert_eq!(row.retry_count, 21);
    assert_eq!(row.retry_at, Some(t0() + TimeDelta::seconds(4 * 3600 + 74)));

    // The same count without the flag is capped at 1 h.
    let plain = replication::failed(&row, &env, &SyncFailure::new("x"));
    assert_eq!(
        plain.retry_at,
        Some(Some(t0() + TimeDelta::seconds(3600 + 74)))
    );
    let custom = replication::failed(
        &row,
        &env,
        &SyncFailure::new("x").with_cap(BackoffCap::Custom(Duration::from_secs(600))),
    );
    assert_eq!(custom.retry_at, Some(Some(t0() + TimeDelta::seconds(674))));

    // A successful sync clears the flag.
    apply!(row, replication::start(&row, &env).unwrap());
    apply!(
        row,
        synced_outcome(&row, PrimaryVerification::NotApplicable),
    );
    assert!(!row.missing_on_primary);
}

#[test]
fn sync_finishing_after_a_newer_event_leaves_the_row_pending() {
    let (env, _) = env(0);
    let mut row = RegistryFields::new();
    apply!(row, replication::start(&row, &env).unwrap());
    // The worker computes its outcome from the row it claimed...
    let stale = synced_outcome(&row, PrimaryVerification::Verified);
    // ...meanwhile an `updated` event sets the row back to pending.
    apply!(row, replication::pending(&row));
    let before = row.clone();
    // The conditional update matches no row: nothing changes.
    assert!(!row.apply(&stale));
    assert_eq!(row, before);
    assert_eq!(row.state, R::Pending.as_i16());
    // And the pure function says the same when asked with the fresh row.
    assert_eq!(
        replication::synced(&row, PrimaryVerification::Verified).unwrap(),
        SyncedOutcome::NotStarted(R::Pending)
    );
}

#[test]
fn resync_only_from_synced_or_failed() {
    for state in R::ALL {
        let row = RegistryFields {
            state: state.as_i16(),
            retry_count: 4,
            retry_at: Some(t0()),
            last_synced_at: Some(t0()),
            ..RegistryFields::new()
        };
        let result = replication::resync(&row);
        match state {
            R::Synced | R::Failed => {
                let mut row = row.clone();
                apply!(row, result.unwrap());
                assert_eq!(row.state, R::Pending.as_i16());
                assert_eq!(
                    (row.retry_count, row.retry_at, row.last_synced_at),
                    (0, None, None)
                );
            }
            R::Pending | R::Started => assert!(matches!(
                result,
                Err(TransitionError::NotAllowed {
                    event: "resync",
                    ..
                })
            )),
        }
    }
}

#[test]
fn unknown_stored_state_is_an_error_not_a_panic() {
    let (env, _) = env(0);
    let row = RegistryFields {
        state: 9,
        ..RegistryFields::new()
    };
    assert!(matches!(
        replication::start(&row, &env),
        Err(TransitionError::UnknownState(_))
    ));
    assert!(matches!(
        replication::synced(&row, PrimaryVerification::Verified),
        Err(TransitionError::UnknownState(_))
    ));
    // `pending` repairs such a row.
    let mut row = row;
    apply!(row, replication::pending(&row));
    assert_eq!(row.state, R::Pending.as_i16());
}

#[test]
fn sync_timeout() {
    let (env, clock) = env(0);
    let mut row = RegistryFields::new();
    apply!(row, replication::start(&row, &env).unwrap());

    clock.advance(TimeDelta::hours(8));
    assert_eq!(replication::timed_out(&row, &env, SYNC_TIMEOUT), None);
    clock.advance(TimeDelta::seconds(1));
    let sweep = replication::sync_timeout_sweep(&env, SYNC_TIMEOUT);
    assert_eq!(sweep.started_before, t0() + TimeDelta::seconds(1));
    assert!(sweep.matches(&row));
    let change = replication::timed_out(&row, &env, SYNC_TIMEOUT).unwrap();
    apply!(row, change);
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, 1);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Sync timed out after 8 hours")
    );
    let now = t0() + TimeDelta::seconds(8 * 3600 + 1);
    assert_eq!(row.retry_at, Some(now + TimeDelta::seconds(16)));
    // Not started any more: not stuck.
    assert!(!sweep.matches(&row));
}

#[test]
fn verification_cycle_on_the_primary() {
    let (env, clock) = env(0);
    let mut v = VerificationFields::default();
    let sum = checksum_bytes(b"data");

    // succeeded needs started.
    assert!(matches!(
        verification::succeeded(&v, &env, &sum),
        Err(TransitionError::NotAllowed {
            from: "pending",
            ..
        })
    ));
    assert!(verification::started(&v, &env).apply_to(&mut v));
    assert_eq!(v.started_at, Some(t0()));

    clock.advance(TimeDelta::seconds(3));
    let failed = verification::failed(&v, &env, "Error during verification: EIO").unwrap();
    assert!(failed.apply_to(&mut v));
    assert_eq!(v.state, V::Failed.as_i16());
    assert_eq!(v.retry_count, 1);
    assert_eq!(v.verified_at, Some(t0() + TimeDelta::seconds(3)));
    assert_eq!(v.retry_at, Some(t0() + TimeDelta::seconds(3 + 16)));
    assert_eq!(v.checksum, None);
    assert_eq!(
        verification::failed(&v, &env, "  "),
        Err(TransitionError::EmptyMessage)
    );

    // Pending from failed keeps the backoff.
    assert!(verification::pending(&v).apply_to(&mut v));
    assert_eq!(v.state, V::Pending.as_i16());
    assert_eq!(v.retry_count, 1);
    assert!(v.retry_at.is_some());
    assert_eq!(v.failure, None);

    clock.advance(TimeDelta::seconds(60));
    assert!(verification::started(&v, &env).apply_to(&mut v));
    let ok = verification::succeeded(&v, &env, &sum).unwrap();
    assert!(ok.apply_to(&mut v));
    assert_eq!(v.state, V::Succeeded.as_i16());
    assert_eq!(v.checksum, Some(sum.to_vec()));
    assert_eq!(
        (v.retry_count, v.retry_at, v.failure.clone()),
        (0, None, None)
    );
    assert_eq!(v.verified_at, Some(t0() + TimeDelta::seconds(63)));

    assert!(verification::disabled(&v).apply_to(&mut v));
    assert_eq!(v.state, V::Disabled.as_i16());
}

#[test]
fn verification_result_is_dropped_when_a_newer_verification_started() {
    let (env, clock) = env(0);
    let mut v = VerificationFields::default();
    assert!(verification::started(&v, &env).apply_to(&mut v));
    let result = verification::succeeded(&v, &env, &checksum_bytes(b"old")).unwrap();
    // The data changed and a new verification started before the result was saved.
    clock.advance(TimeDelta::seconds(1));
    assert!(verification::started(&v, &env).apply_to(&mut v));
    let before = v.clone();
    assert!(!result.apply_to(&mut v));
    assert_eq!(v, before);
}

#[test]
fn verification_timeout() {
    let (env, clock) = env(0);
    let mut v = VerificationFields::default();
    assert!(verification::started(&v, &env).apply_to(&mut v));
    clock.advance(TimeDelta::hours(9));
    assert!(verification::is_timed_out(&v, &env, VERIFICATION_TIMEOUT));
    let change = verification::timed_out(&v, &env, VERIFICATION_TIMEOUT).unwrap();
    assert!(change.apply_to(&mut v));
    assert_eq!(v.state, V::Failed.as_i16());
    assert_eq!(
        v.failure.as_deref(),
        Some("Verification timed out after 8 hours")
    );
    assert_eq!(v.retry_count, 1);
    assert_eq!(
        verification::timed_out(&v, &env, VERIFICATION_TIMEOUT),
        None
    );
}

fn synced_row_with_started_verification(env: &Env) -> RegistryFields {
    let mut row = RegistryFields::new();
    apply!(row, replication::start(&row, env).unwrap());
    apply!(row, synced_outcome(&row, PrimaryVerification::Verified));
    apply!(row, registry_verification::started(&row, env));
    row
}

#[test]
fn mismatch_forces_a_resync_and_keeps_counters_after_it() {
    let (env, clock) = env(0);
    let local = checksum_bytes(b"corrupt");
    let mut row = synced_row_with_started_verification(&env);

    apply!(
        row,
        registry_verification::mismatch(&row, &env, &local).unwrap(),
    );
    assert_eq!(row.verification.state, V::Failed.as_i16());
    assert_eq!(row.verification.retry_count, 1);
    assert!(row.checksum_mismatch);
    assert_eq!(row.verification_checksum_mismatched, Some(local.to_vec()));
    assert_eq!(row.verification.checksum, Some(local.to_vec()));
    assert_eq!(row.verification.failure.as_deref(), Some(MISMATCH_MESSAGE));
    assert_eq!(row.state, R::Failed.as_i16());
    assert_eq!(row.retry_count, row.verification.retry_count);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Verification failed with: Checksum does not match the primary checksum")
    );
    assert_eq!(row.retry_at, Some(t0() + TimeDelta::seconds(16)));

    // The scheduler resyncs it; it mismatches again: both counters grow together.
    clock.advance(TimeDelta::minutes(2));
    apply!(row, replication::start(&row, &env).unwrap());
    apply!(row, synced_outcome(&row, PrimaryVerification::Verified));
    assert_eq!(row.state, R::Synced.as_i16());
    assert_eq!(row.verification.state, V::Pending.as_i16());
    assert_eq!(
        row.verification.retry_count, 1,
        "pending from failed keeps the verification retry count"
    );
    assert!(row.verification.retry_at.is_some());
    assert!(
        row.checksum_mismatch,
        "kept until a verification succeeds, as in GitLab"
    );
    apply!(row, registry_verification::started(&row, &env));
    apply!(
        row,
        registry_verification::mismatch(&row, &env, &local).unwrap(),
    );
    assert_eq!((row.retry_count, row.verification.retry_count), (2, 2));
    assert_eq!(
        row.retry_at,
        Some(t0() + TimeDelta::seconds(120 + 31)),
        "delay(2) with jitter 0"
    );

    // Finally the download is good.
    apply!(row, replication::start(&row, &env).unwrap());
    apply!(row, synced_outcome(&row, PrimaryVerification::Verified));
    apply!(row, registry_verification::started(&row, &env));
    let good = checksum_bytes(b"good");
    apply!(
        row,
        registry_verification::succeeded(&row, &env, &good).unwrap(),
    );
    assert_eq!(row.verification.state, V::Succeeded.as_i16());
    assert!(!row.checksum_mismatch);
    assert_eq!(row.verification_checksum_mismatched, None);
    assert_eq!(row.verification.retry_count, 0);
    assert_eq!(row.verification.checksum, Some(good.to_vec()));
}

#[test]
fn registry_verification_needs_a_synced_row_and_is_dropped_if_the_row_moved() {
    let (env, _) = env(0);
    let mut row = synced_row_with_started_verification(&env);
    let sum = checksum_bytes(b"x");
    let result = registry_verification::succeeded(&row, &env, &sum).unwrap();
    apply!(row, replication::pending(&row));
    assert!(
        !row.apply(&result),
        "row went pending: stale result dropped"
    );
    assert!(matches!(
        registry_verification::mismatch(&row, &env, &sum),
        Err(TransitionError::NotAllowed {
            from: "pending",
            ..
        })
    ));
}

#[test]
fn record_checksum_decides() {
    let (env, _) = env(0);
    let local = checksum_bytes(b"file");
    let row = synced_row_with_started_verification(&env);
    let primary = |state, checksum| PrimaryChecksum {
        state,
        algorithm: ChecksumAlgorithm::Blake3,
        checksum,
        verified_at: None,
    };

    let mut r = row.clone();
    apply!(
        r,
        registry_verification::record_checksum(&row, &env, &local, None).unwrap(),
    );
    assert_eq!(r.verification.state, V::Disabled.as_i16());

    let mut r = row.clone();
    let p = primary(V::Pending, None);
    apply!(
        r,
        registry_verification::record_checksum(&row, &env, &local, Some(&p)).unwrap(),
    );
    assert_eq!(r.verification.state, V::Disabled.as_i16());

    let mut r = row.clone();
    let p = primary(V::Succeeded, Some(local));
    apply!(
        r,
        registry_verification::record_checksum(&row, &env, &local, Some(&p)).unwrap(),
    );
    assert_eq!(r.verification.state, V::Succeeded.as_i16());

    let mut r = row.clone();
    let p = primary(V::Succeeded, Some(checksum_bytes(b"other")));
    apply!(
        r,
        registry_verification::record_checksum(&row, &env, &local, Some(&p)).unwrap(),
    );
    assert_eq!(r.verification.state, V::Failed.as_i16());
    assert!(r.checksum_mismatch);
    assert_eq!(r.state, R::Failed.as_i16());
}

#[test]
fn registry_verification_timeout() {
    let (env, clock) = env(0);
    let mut row = synced_row_with_started_verification(&env);
    clock.advance(TimeDelta::hours(9));
    let change = registry_verification::timed_out(&row, &env, VERIFICATION_TIMEOUT).unwrap();
    apply!(row, change);
    assert_eq!(row.verification.state, V::Failed.as_i16());
    assert_eq!(
        row.state,
        R::Failed.as_i16(),
        "forces a resync as in GitLab"
    );
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Verification failed with: Verification timed out after 8 hours")
    );

    // A row that is not synced any more: the stuck verification is disabled, the sync state
    // is left alone.
    let mut row = synced_row_with_started_verification(&env);
    apply!(row, replication::pending(&row));
    clock.advance(TimeDelta::hours(9));
    let change = registry_verification::timed_out(&row, &env, VERIFICATION_TIMEOUT).unwrap();
    apply!(row, change);
    assert_eq!(row.verification.state, V::Disabled.as_i16());
    assert_eq!(row.state, R::Pending.as_i16());
}

#[test]
fn synced_with_unverified_primary_disables_verification() {
    let (env, _) = env(0);
    let mut row = RegistryFields::new();
    apply!(row, replication::start(&row, &env).unwrap());
    apply!(row, synced_outcome(&row, PrimaryVerification::NotVerified),);
    assert_eq!(row.verification.state, V::Disabled.as_i16());
    assert_eq!(
        PrimaryVerification::from_primary(None),
        PrimaryVerification::NotVerified
    );
}

#[test]
fn truncation_examples() {
    assert_eq!(truncate_failure("short"), "short");
    let long = "é".repeat(300);
    let cut = truncate_failure(&long);
    assert_eq!(cut.chars().count(), 255);
    assert_eq!(cut.len(), 510, "two bytes per char, not 255 bytes");
    let f = SyncFailure::new("m".repeat(250)).with_error("0123456789");
    assert_eq!(f.text(), format!("{}: 012", "m".repeat(250)));
}

// ---------------------------------------------------------------------------------------------
// Properties

fn any_time() -> impl Strategy<Value = Option<DateTime<Utc>>> {
    prop_oneof![
        Just(None),
        (-1_000_000_000i64..1_000_000_000).prop_map(|s| Some(t0() + TimeDelta::seconds(s))),
    ]
}

fn any_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), ".{0,300}".prop_map(Some)]
}

prop_compose! {
    fn any_verification()(
        state in 0i16..5,
        started_at in any_time(),
        retry_at in any_time(),
        verified_at in any_time(),
        retry_count in 0i16..=i16::MAX,
        checksum in proptest::option::of(proptest::collection::vec(any::<u8>(), 32)),
        failure in any_text(),
    ) -> VerificationFields {
        VerificationFields { state, started_at, retry_at, verified_at, retry_count, checksum, failure }
    }
}

prop_compose! {
    fn any_row()(
        state in 0i16..4,
        retry_count in 0i16..=i16::MAX,
        retry_at in any_time(),
        last_synced_at in any_time(),
        last_sync_failure in any_text(),
        missing_on_primary in any::<bool>(),
        checksum_mismatch in any::<bool>(),
        verification_checksum_mismatched in proptest::option::of(proptest::collection::vec(any::<u8>(), 32)),
        verification in any_verification(),
    ) -> RegistryFields {
        RegistryFields {
            state, retry_count, retry_at, last_synced_at, last_sync_failure, missing_on_primary,
            checksum_mismatch, verification_checksum_mismatched, verification,
        }
    }
}

fn seeded_env(seed: u64) -> Env {
    Env::new(
        Arc::new(ManualClock::new(t0())),
        Arc::new(SeededRandom::new(seed)),
    )
}

fn within_backoff(t: Option<DateTime<Utc>>, cap: BackoffCap) -> bool {
    let upper = t0() + TimeDelta::from_std(cap.duration()).unwrap() + TimeDelta::seconds(74);
    t.is_some_and(|t| t > t0() && t <= upper)
}

proptest! {
    #[test]
    fn failed_always_increments_and_schedules_a_retry(
        row in any_row(),
        seed in any::<u64>(),
        missing in any::<bool>(),
        message in ".{1,200}",
        error in proptest::option::of(".{0,200}"),
    ) {
        let env = seeded_env(seed);
        let mut failure = SyncFailure::new(message.clone()).missing_on_primary(missing);
        if let Some(e) = &error {
            failure = failure.with_error(e);
        }
        let change = replication::failed(&row, &env, &failure);
        let mut after = row.clone();
        prop_assert!(after.apply(&change), "failed applies from any state");
        prop_assert_eq!(after.state, R::Failed.as_i16());
        prop_assert_eq!(after.retry_count, row.retry_count.saturating_add(1));
        prop_assert!(after.retry_count > row.retry_count || row.retry_count == i16::MAX);
        prop_assert!(within_backoff(after.retry_at, BackoffCap::for_missing_on_primary(missing)));
        prop_assert_eq!(after.missing_on_primary, missing);
        let text = after.last_sync_failure.clone().unwrap();
        let full = match &error { Some(e) => format!("{message}: {e}"), None => message.clone() };
        prop_assert!(text.chars().count() <= FAILURE_MAX_CHARS);
        prop_assert!(full.starts_with(&text));
        // Verification columns are untouched by a sync failure.
        prop_assert_eq!(after.verification, row.verification);
    }

    #[test]
    fn synced_only_from_started(row in any_row(), verified in any::<bool>()) {
        let primary = if verified { PrimaryVerification::Verified } else { PrimaryVerification::NotVerified };
        match replication::synced(&row, primary).unwrap() {
            SyncedOutcome::NotStarted(s) => prop_assert_ne!(s, R::Started),
            SyncedOutcome::Synced(change) => {
                prop_assert_eq!(row.state, R::Started.as_i16());
                let mut after = row.clone();
                prop_assert!(after.apply(&change));
                prop_assert_eq!(after.state, R::Synced.as_i16());
                prop_assert_eq!((after.retry_count, after.retry_at, after.last_sync_failure.clone()), (0, None, None));
                prop_assert!(!after.missing_on_primary);
                prop_assert_eq!(after.last_synced_at, row.last_synced_at);
                let want = if verified { V::Pending } else { V::Disabled };
                prop_assert_eq!(after.verification.state, want.as_i16());
            }
        }
        // Whatever the pure decision, a change computed for a started row never applies to a
        // row in another state.
        let started = RegistryFields { state: R::Started.as_i16(), ..row.clone() };
        if let SyncedOutcome::Synced(change) = replication::synced(&started, primary).unwrap() {
            let mut other = row.clone();
            prop_assert_eq!(other.apply(&change), row.state == R::Started.as_i16());
        }
    }

    #[test]
    fn start_allowed_exactly_from_pending_synced_failed(row in any_row(), seed in any::<u64>()) {
        let env = seeded_env(seed);
        let result = replication::start(&row, &env);
        if row.state == R::Started.as_i16() {
            prop_assert!(result.is_err());
        } else {
            let mut after = row.clone();
            prop_assert!(after.apply(&result.unwrap()));
            prop_assert_eq!(after.state, R::Started.as_i16());
            prop_assert_eq!(after.last_synced_at, Some(t0()));
            prop_assert_eq!(after.retry_count, row.retry_count);
        }
    }

    #[test]
    fn pending_resets_retry_fields_from_any_state(row in any_row()) {
        let mut after = row.clone();
        prop_assert!(after.apply(&replication::pending(&row)));
        prop_assert_eq!(after.state, R::Pending.as_i16());
        prop_assert_eq!((after.retry_count, after.retry_at, after.last_synced_at), (0, None, None));
        prop_assert_eq!(after.last_sync_failure, row.last_sync_failure);
        prop_assert_eq!(after.verification, row.verification);
    }

    #[test]
    fn verification_pending_keeps_counters_only_from_failed(v in any_verification()) {
        let mut after = v.clone();
        prop_assert!(verification::pending(&v).apply_to(&mut after));
        prop_assert_eq!(after.state, V::Pending.as_i16());
        prop_assert_eq!(after.failure.clone(), None);
        if v.state == V::Failed.as_i16() {
            prop_assert_eq!((after.retry_count, after.retry_at), (v.retry_count, v.retry_at));
        } else {
            prop_assert_eq!((after.retry_count, after.retry_at), (0, None));
        }
        prop_assert_eq!(after.checksum, v.checksum);
        prop_assert_eq!(after.verified_at, v.verified_at);
    }

    #[test]
    fn verification_failed_from_any_state(v in any_verification(), seed in any::<u64>(), message in ".{1,400}") {
        prop_assume!(!message.trim().is_empty());
        let env = seeded_env(seed);
        let mut after = v.clone();
        prop_assert!(verification::failed(&v, &env, &message).unwrap().apply_to(&mut after));
        prop_assert_eq!(after.state, V::Failed.as_i16());
        prop_assert_eq!(after.retry_count, v.retry_count.saturating_add(1));
        prop_assert!(within_backoff(after.retry_at, BackoffCap::Default));
        prop_assert_eq!(after.verified_at, Some(t0()));
        prop_assert_eq!(after.checksum.clone(), None);
        let failure = after.failure.unwrap();
        prop_assert!(failure.chars().count() <= FAILURE_MAX_CHARS);
        prop_assert!(message.starts_with(&failure));
    }

    #[test]
    fn verification_succeeded_only_from_started(v in any_verification(), seed in any::<u64>()) {
        let env = seeded_env(seed);
        let sum = checksum_bytes(&seed.to_le_bytes());
        match verification::succeeded(&v, &env, &sum) {
            Err(_) => prop_assert_ne!(v.state, V::Started.as_i16()),
            Ok(change) => {
                let mut after = v.clone();
                prop_assert!(change.apply_to(&mut after));
                prop_assert_eq!(after.state, V::Succeeded.as_i16());
                prop_assert_eq!(after.checksum, Some(sum.to_vec()));
                prop_assert_eq!(after.verified_at, Some(t0()));
                prop_assert_eq!((after.retry_count, after.retry_at, after.failure), (0, None, None));
            }
        }
    }

    #[test]
    fn registry_verification_failure_ties_retry_counts(row in any_row(), seed in any::<u64>(), mismatch in any::<bool>()) {
        let env = seeded_env(seed);
        let row = RegistryFields { state: R::Synced.as_i16(), ..row };
        let local = checksum_bytes(&seed.to_le_bytes());
        let change = if mismatch {
            registry_verification::mismatch(&row, &env, &local).unwrap()
        } else {
            registry_verification::failed(&row, &env, "Error during verification").unwrap()
        };
        let mut after = row.clone();
        prop_assert!(after.apply(&change));
        prop_assert_eq!(after.state, R::Failed.as_i16());
        prop_assert_eq!(after.verification.state, V::Failed.as_i16());
        prop_assert_eq!(after.retry_count, after.verification.retry_count);
        prop_assert_eq!(after.verification.retry_count, row.verification.retry_count.saturating_add(1));
        prop_assert!(within_backoff(after.retry_at, BackoffCap::Default));
        let text = after.last_sync_failure.clone().unwrap();
        prop_assert!(text.starts_with("Verification failed with: "));
        prop_assert_eq!(after.checksum_mismatch, mismatch || row.checksum_mismatch);
        if mismatch {
            prop_assert_eq!(after.verification_checksum_mismatched, Some(local.to_vec()));
            prop_assert_eq!(after.verification.checksum, Some(local.to_vec()));
        } else {
            prop_assert_eq!(after.verification.checksum, None);
        }
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

    #[test]
    fn fixed_jitter_gives_exact_retry_times(n in 0i16..7) {
        for (random, jitter) in [(0u32, 0i64), (29, 29)] {
            let env = Env::new(Arc::new(ManualClock::new(t0())), Arc::new(FixedRandom(random)));
            let row = RegistryFields { retry_count: n, ..RegistryFields::new() };
            let change = replication::failed(&row, &env, &SyncFailure::new("x"));
            let k = i64::from(n) + 1;
            let expected = t0() + TimeDelta::seconds(k.pow(4) + 15 + jitter * (k + 1));
            prop_assert_eq!(change.retry_at, Some(Some(expected)));
        }
    }
}
