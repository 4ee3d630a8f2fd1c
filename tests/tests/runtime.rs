//! The runtime end to end, each scenario written once and run on real SQLite files (always)
//! and on a real PostgreSQL server (feature `pg-suite`, `GEO_TEST_DATABASE_URL`): the widgets
//! example's primary (application operations that publish events in their transaction, the
//! primary verifier) and a secondary (log cursor, scheduler, downloads, backfill, verification,
//! timeouts) on two fresh databases and two folders ([`Sites`]), driven pass by pass with a
//! manual clock so every assertion is deterministic.
//!
//! Test names are `<scenario>::sqlite` and `<scenario>::postgres`. What only PostgreSQL can
//! run (several workers on one database, worker processes, commits out of id order from many
//! writers) is in `pg_runtime.rs`.

mod sites;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration as StdDuration;

use chrono::Duration;
use geo_diesel::UtcDateTime;
use geo_diesel::cursor::load_state;
use geo_diesel::geo_core::blob_store::{
    BlobError, BlobPath, BlobStore, LocalBlobStore, is_temp_file_name,
};
use geo_diesel::geo_core::source::{BlobStream, PrimarySource};
use geo_diesel::primary;
use geo_diesel::registry::{self, SyncOutcome};
use geo_diesel::secondary::SecondaryConfig;
use geo_tests::source::{HookedReader, Intercepted, Interceptor, Opened};
use geo_tests::{Backend, all_files, checksum, data, read_opt, sum};
use sites::state::*;
use sites::{Sites, exec, gd, try_exec, wd};
use widgets::app;

geo_tests::backend_tests! {
    create_update_and_delete_replicate_end_to_end,
    record_updated_while_its_sync_is_in_flight_ends_pending_then_syncs_new_content,
    file_corrupted_on_the_secondary_is_caught_by_verification_and_resynced,
    file_deleted_on_the_secondary_is_caught_by_verification_and_resynced,
    repaired_mismatch_clears_the_mismatched_checksum,
    bit_rot_on_the_secondary_is_found_by_the_reverification_cycle,
    file_missing_on_the_primary_fails_with_the_four_hour_cap,
    sync_stuck_in_started_times_out,
    event_committed_late_with_a_lower_id_is_still_applied,
    unknown_replicables_and_malformed_events_are_counted_and_skipped,
    payload_that_is_not_json_is_refused_by_the_primary_database,
    workers_crashed_mid_sync_and_restarted_converge_without_partial_files,
    backfill_creates_rows_for_records_without_events_and_removes_orphans,
    one_sync_pass_claims_fairly_from_both_types,
    concurrent_downloads_never_exceed_sync_capacity,
    sync_workers_share_sync_capacity,
    replication_flag_off_skips_events_and_syncs_and_publishes_nothing,
    primary_verification_checksums_fails_with_backoff_reverifies_and_respects_updates,
    primary_verification_timeouts_and_state_backfill,
    status_fields_match_the_databases,
    record_deleted_while_its_download_is_in_flight_leaves_no_file,
    fresh_secondary_does_not_download_again_when_the_backfill_ran_ahead_of_the_cursor,
}

// ---------------------------------------------------------------------------------------------
// 1. create, update, delete
// ---------------------------------------------------------------------------------------------

fn create_update_and_delete_replicate_end_to_end(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let widgets: Vec<_> = (0..4)
        .map(|i| s.widget(i, 1000 + 3000 * i as usize))
        .collect();
    let gadgets: Vec<_> = (0..3)
        .map(|i| s.gadget(i, 777 + 5000 * i as usize))
        .collect();
    s.converge();

    for (w, bytes) in &widgets {
        s.assert_synced_verified(wd(), w.id, bytes);
        assert_eq!(
            s.secondary_sum(&w.file_path),
            Some(checksum(bytes)),
            "widget {}",
            w.id
        );
    }
    for (g, bytes) in &gadgets {
        s.assert_synced_verified(gd(), g.id, bytes);
        assert_eq!(
            s.secondary_sum(&g.blob_key),
            Some(checksum(bytes)),
            "gadget {}",
            g.id
        );
    }

    // Update: new content at the same path.
    let (w0, old0) = &widgets[0];
    let (g0, _) = &gadgets[0];
    let new_w = data(900, 4321);
    let new_g = data(901, 1234);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), w0, &new_w).unwrap();
    app::update_gadget(&mut s.p(), s.primary_store.as_ref(), g0, &new_g).unwrap();
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.applied, 2, "{pass:?}");
    assert_eq!(s.reg(wd(), w0.id).unwrap().state, PENDING);
    assert_eq!(s.reg(gd(), g0.id).unwrap().state, PENDING);
    // Not yet synced: the secondary still has the old bytes.
    assert_eq!(s.secondary_sum(&w0.file_path), Some(checksum(old0)));
    // Synced before the primary re-verified: verification is pending, and the verification
    // pass, finding no primary checksum yet, disables it until `checksum_succeeded` arrives.
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    let row = s.reg(wd(), w0.id).unwrap();
    assert_eq!(
        (row.state, row.verification_state),
        (SYNCED, V_PENDING),
        "{row:?}"
    );
    assert_eq!(row.verification_checksum, Some(sum(&new_w)));
    assert_eq!(s.secondary.verification_pass().unwrap(), 2);
    assert_eq!(s.reg(wd(), w0.id).unwrap().verification_state, V_DISABLED);
    assert_eq!(s.reg(gd(), g0.id).unwrap().verification_state, V_DISABLED);
    s.converge();
    s.assert_synced_verified(wd(), w0.id, &new_w);
    s.assert_synced_verified(gd(), g0.id, &new_g);
    assert_eq!(s.secondary_sum(&w0.file_path), Some(checksum(&new_w)));
    assert_eq!(s.secondary_sum(&g0.blob_key), Some(checksum(&new_g)));

    // Delete: the registry row and the secondary file go; the others stay.
    let (w1, _) = &widgets[1];
    let (g1, _) = &gadgets[1];
    app::delete_widget(&mut s.p(), s.primary_store.as_ref(), w1).unwrap();
    app::delete_gadget(&mut s.p(), s.primary_store.as_ref(), g1).unwrap();
    s.converge();
    assert!(s.reg(wd(), w1.id).is_none());
    assert!(s.reg(gd(), g1.id).is_none());
    assert_eq!(s.secondary_sum(&w1.file_path), None);
    assert_eq!(s.secondary_sum(&g1.blob_key), None);
    assert_eq!(
        s.tracked(wd()),
        vec![widgets[0].0.id, widgets[2].0.id, widgets[3].0.id]
    );
    assert_eq!(s.tracked(gd()), vec![gadgets[0].0.id, gadgets[2].0.id]);
    s.assert_files_identical();
    // Exactly the live records' files remain on the secondary.
    assert_eq!(all_files(s.secondary_store.root()).len(), 5);
    // The database can look inside the payloads (jsonb on PostgreSQL, JSON text on SQLite):
    // the `deleted` event carries the deleted record's blob path.
    let blob_path = match backend {
        Backend::Sqlite => "json_extract(payload, '$.blob_path')",
        Backend::Postgres => "payload->>'blob_path'",
    };
    let deleted = s.primary_number(&format!(
        "SELECT COUNT(*) AS n FROM geo_events WHERE event_name = 'deleted' AND {blob_path} = '{}'",
        w1.file_path
    ));
    assert_eq!(deleted, 1);
}

// ---------------------------------------------------------------------------------------------
// 2. an update during an in-flight sync
// ---------------------------------------------------------------------------------------------

fn record_updated_while_its_sync_is_in_flight_ends_pending_then_syncs_new_content(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, old) = s.widget(1, 5000);
    s.secondary.cursor_pass().unwrap();
    let now = s.now();

    // The scheduler claims the row: a download of the old content is "in flight".
    let claimed = registry::Registry::of(wd())
        .claim(&mut s.t(), registry::Work::Sync, 10, now)
        .unwrap();
    assert_eq!(claimed, vec![w.id]);
    assert_eq!(s.reg(wd(), w.id).unwrap().state, STARTED);

    // The record changes on the primary. The row stays `started` (no second worker may claim
    // it while the old download runs) but its claim token moves.
    let new = data(2, 7000);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w, &new).unwrap();
    s.secondary.cursor_pass().unwrap();
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, STARTED);
    assert!(
        registry::Registry::of(wd())
            .claim(&mut s.t(), registry::Work::Sync, 10, now)
            .unwrap()
            .is_empty(),
        "a row with a download in flight must not be claimed twice"
    );

    // The old download finishes: its outcome is not recorded and the row goes back to pending.
    let retry = |_: i16, _: bool| now + Duration::hours(1);
    let synced = SyncOutcome::Synced {
        local: sum(&old),
        primary: None,
    };
    assert!(
        !registry::Registry::of(wd())
            .record_sync_claimed(&mut s.t(), w.id, now, &synced, &retry, now)
            .unwrap()
    );
    assert_eq!(s.reg(wd(), w.id).unwrap().state, PENDING);
    let failed = SyncOutcome::Failed {
        message: "late failure".into(),
        missing_on_primary: false,
    };
    assert!(
        !registry::Registry::of(wd())
            .record_sync(&mut s.t(), w.id, &failed, &retry, now)
            .unwrap()
    );
    assert!(
        !registry::Registry::of(wd())
            .record_sync_claimed(&mut s.t(), w.id, now, &failed, &retry, now)
            .unwrap()
    );
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(
        (row.state, row.retry_count, row.last_sync_failure),
        (PENDING, 0, None)
    );

    // The next pass fetches the new content, and verification follows the primary.
    assert_eq!(s.secondary.sync_pass().unwrap(), 1);
    assert_eq!(s.reg(wd(), w.id).unwrap().state, SYNCED);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&new)));
    s.converge();
    s.assert_synced_verified(wd(), w.id, &new);
}

// ---------------------------------------------------------------------------------------------
// 3. corruption on the secondary
// ---------------------------------------------------------------------------------------------

fn file_corrupted_on_the_secondary_is_caught_by_verification_and_resynced(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, bytes) = s.widget(3, 9000);
    let (g, gbytes) = s.gadget(3, 4000);
    s.converge();
    s.assert_synced_verified(wd(), w.id, &bytes);
    s.assert_synced_verified(gd(), g.id, &gbytes);

    let mut corrupt = bytes.clone();
    corrupt[100] ^= 0xff;
    std::fs::write(s.secondary_store.root().join(&w.file_path), &corrupt).unwrap();
    // At the same time the gadget's copy goes missing: both types fail in one pass.
    std::fs::remove_file(s.secondary_store.root().join(&g.blob_key)).unwrap();

    // An operator asks for reverification of the rows; the secondary re-hashes the files.
    assert_eq!(
        registry::Registry::of(wd())
            .act(&mut s.t(), registry::Action::Reverify, Some(&[w.id]))
            .unwrap(),
        1
    );
    assert_eq!(
        registry::Registry::of(gd())
            .act(&mut s.t(), registry::Action::Reverify, None)
            .unwrap(),
        1
    );
    assert_eq!(s.secondary.verification_pass().unwrap(), 2);
    let now = s.now();
    let row = s.reg(wd(), w.id).unwrap();
    assert!(row.checksum_mismatch, "{row:?}");
    assert_eq!(
        row.verification_checksum_mismatched.as_deref(),
        Some(sum(&corrupt).as_slice())
    );
    assert_eq!(row.verification_state, V_FAILED);
    assert_eq!(row.state, FAILED);
    assert_eq!(row.verification_retry_count, 1);
    assert_eq!(row.retry_count, row.verification_retry_count);
    let failure = row.last_sync_failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("Verification failed with:"),
        "{failure}"
    );
    // FixedRandom(0): delay(1) = 1 + 15 + 0 = 16 s.
    assert_eq!(
        row.retry_at.map(UtcDateTime::get),
        Some(now + Duration::seconds(16))
    );
    assert_eq!(s.secondary.counters().mismatches.load(Ordering::Relaxed), 1);
    let grow = s.reg(gd(), g.id).unwrap();
    assert_eq!(
        (grow.state, grow.verification_state),
        (FAILED, V_FAILED),
        "{grow:?}"
    );
    assert!(!grow.checksum_mismatch, "an unreadable file is no mismatch");

    // Not due yet: nothing is synced.
    assert_eq!(s.secondary.sync_pass().unwrap(), 0);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&corrupt)));

    // After retry_at both rows are resynced and verified with the right content.
    s.clock.advance(Duration::seconds(17));
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    s.converge();
    s.assert_synced_verified(wd(), w.id, &bytes);
    s.assert_synced_verified(gd(), g.id, &gbytes);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&bytes)));
    assert_eq!(s.secondary_sum(&g.blob_key), Some(checksum(&gbytes)));
}

fn file_deleted_on_the_secondary_is_caught_by_verification_and_resynced(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (g, bytes) = s.gadget(4, 3000);
    s.converge();
    s.assert_synced_verified(gd(), g.id, &bytes);
    std::fs::remove_file(s.secondary_store.root().join(&g.blob_key)).unwrap();

    registry::Registry::of(gd())
        .act(&mut s.t(), registry::Action::Reverify, None)
        .unwrap();
    assert_eq!(s.secondary.verification_pass().unwrap(), 1);
    let row = s.reg(gd(), g.id).unwrap();
    assert_eq!(
        (row.state, row.verification_state),
        (FAILED, V_FAILED),
        "{row:?}"
    );
    assert!(
        !row.checksum_mismatch,
        "an unreadable file is not a checksum mismatch"
    );
    let failure = row.last_sync_failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("Verification failed with: Error during verification"),
        "{failure}"
    );

    s.clock.advance(Duration::seconds(17));
    s.converge();
    s.assert_synced_verified(gd(), g.id, &bytes);
    assert_eq!(s.secondary_sum(&g.blob_key), Some(checksum(&bytes)));
}

/// After a mismatch is repaired, the stale mismatching checksum must not stay on the row.
fn repaired_mismatch_clears_the_mismatched_checksum(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, bytes) = s.widget(5, 2000);
    s.converge();
    std::fs::write(s.secondary_store.root().join(&w.file_path), b"garbage").unwrap();
    registry::Registry::of(wd())
        .act(&mut s.t(), registry::Action::Reverify, None)
        .unwrap();
    s.secondary.verification_pass().unwrap();
    assert!(
        s.reg(wd(), w.id)
            .unwrap()
            .verification_checksum_mismatched
            .is_some()
    );
    s.clock.advance(Duration::seconds(17));
    s.converge();
    s.assert_synced_verified(wd(), w.id, &bytes);
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.verification_checksum_mismatched, None, "{row:?}");
}

/// Bit rot on a secondary must be found by the regular cycle (the primary re-verifies every
/// interval and publishes `checksum_succeeded`; GitLab's secondaries then re-hash their copy),
/// without an operator asking for reverification.
fn bit_rot_on_the_secondary_is_found_by_the_reverification_cycle(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, bytes) = s.widget(6, 4000);
    s.converge();
    s.assert_synced_verified(wd(), w.id, &bytes);
    let mut corrupt = bytes.clone();
    corrupt[0] ^= 1;
    std::fs::write(s.secondary_store.root().join(&w.file_path), &corrupt).unwrap();

    // The primary's reverification interval passes (7 days); it re-checksums and publishes.
    s.clock.advance(Duration::days(8));
    let before = s.events().len();
    s.converge();
    assert!(
        s.events().len() > before,
        "the primary re-verified and published checksum_succeeded"
    );
    s.clock.advance(Duration::hours(2));
    s.converge();
    assert_eq!(
        s.secondary_sum(&w.file_path),
        Some(checksum(&bytes)),
        "the corrupted copy was never repaired"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. missing on the primary, backoff caps
// ---------------------------------------------------------------------------------------------

fn file_missing_on_the_primary_fails_with_the_four_hour_cap(backend: Backend) {
    // FixedRandom(29): the largest jitter, delay(1) = 1 + 15 + 29·2 = 74 s.
    let s = Sites::open(backend, SecondaryConfig::default(), 29);
    let (w, bytes) = s.widget(7, 3000);
    let (g, _) = s.gadget(7, 3000);
    s.verifier.run_until_idle(5).unwrap();
    // Behind the application's back: the widget's file vanishes, the gadget's changes.
    s.primary_store
        .delete(&BlobPath::new(&w.file_path).unwrap())
        .unwrap();
    std::fs::write(
        s.primary_store.root().join(&g.blob_key),
        b"changed behind the app's back",
    )
    .unwrap();

    s.secondary.cursor_pass().unwrap();
    exec(
        &mut s.t(),
        "UPDATE widget_registry SET retry_count = 20; UPDATE gadget_registry SET retry_count = 20;",
    );
    assert_eq!(s.secondary.sync_pass().unwrap(), 2);
    let now = s.now();

    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert!(row.missing_on_primary);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("The file is missing on the Geo primary site")
    );
    assert_eq!(row.retry_count, 21);
    let retry_at = row.retry_at.unwrap().get();
    assert!(
        retry_at <= now + Duration::hours(4) + Duration::seconds(74),
        "{retry_at}"
    );
    assert!(
        retry_at > now + Duration::hours(1) + Duration::seconds(74),
        "{retry_at}"
    );
    assert_eq!(retry_at, now + Duration::hours(4) + Duration::seconds(74));
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut s.t())
            .unwrap()
            .missing_on_primary,
        1
    );

    // An ordinary failure (the download does not match the primary's checksum) uses the 1 h cap,
    // and nothing is stored at the final path.
    let row = s.reg(gd(), g.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert!(!row.missing_on_primary);
    let failure = row.last_sync_failure.clone().unwrap_or_default();
    assert!(
        failure.starts_with("Downloaded file checksum mismatch"),
        "{failure}"
    );
    assert_eq!(
        row.retry_at.unwrap().get(),
        now + Duration::hours(1) + Duration::seconds(74)
    );
    assert_eq!(s.secondary_sum(&g.blob_key), None);
    assert!(all_files(s.secondary_store.root()).is_empty());

    // The file comes back; after the retry time the row syncs and the flag clears.
    s.primary_store
        .write(&BlobPath::new(&w.file_path).unwrap(), &mut &bytes[..], None)
        .unwrap();
    s.clock.advance(Duration::hours(4));
    assert_eq!(
        s.secondary.sync_pass().unwrap(),
        1,
        "only the gadget is due after 4 h"
    );
    assert_eq!(s.reg(wd(), w.id).unwrap().state, FAILED);
    s.clock.advance(Duration::seconds(75));
    assert_eq!(s.secondary.sync_pass().unwrap(), 1);
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, SYNCED, "{row:?}");
    assert!(!row.missing_on_primary);
    assert_eq!(s.secondary_sum(&w.file_path), Some(checksum(&bytes)));
}

fn sync_stuck_in_started_times_out(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w, _) = s.widget(8, 100);
    s.secondary.cursor_pass().unwrap();
    assert_eq!(
        registry::Registry::of(wd())
            .claim(&mut s.t(), registry::Work::Sync, 10, s.now())
            .unwrap(),
        vec![w.id]
    );
    // The default is a no-progress timeout of 5 minutes (no download runs for this claim, so
    // nothing arrived since it was claimed).
    s.clock.advance(Duration::minutes(5));
    assert_eq!(
        s.secondary.timeouts_pass().unwrap(),
        0,
        "exactly 5 min is not yet a timeout"
    );
    s.clock.advance(Duration::seconds(1));
    assert_eq!(s.secondary.timeouts_pass().unwrap(), 1);
    let row = s.reg(wd(), w.id).unwrap();
    assert_eq!(row.state, FAILED);
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("Sync timed out after 5 minutes")
    );
    assert_eq!(row.retry_count, 1);
    assert_eq!(row.retry_at.unwrap().get(), s.now() + Duration::seconds(16));
}

// ---------------------------------------------------------------------------------------------
// 5. out-of-order commits: event-id gaps
// ---------------------------------------------------------------------------------------------

fn event_committed_late_with_a_lower_id_is_still_applied(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w1, _) = s.widget(10, 100);
    assert_eq!(s.events().last().unwrap().id, 1);
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!((pass.applied, pass.cursor, pass.gaps_detected), (1, 1, 0));

    // Ids 2..=9 are taken by transactions that have not committed yet; the next one commits
    // first and gets id 10 through the application's own insert path.
    s.set_next_event_id(10);
    let (w2, _) = s.widget(11, 100);
    assert_eq!(s.events().last().unwrap().id, 10);
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(
        (pass.applied, pass.cursor, pass.gaps_detected),
        (1, 10, 8),
        "{pass:?}"
    );
    let state = load_state(&mut s.t()).unwrap();
    assert_eq!(state.gaps, (2..=9).collect::<Vec<_>>());
    assert_eq!(state.last_event_id, 10);
    assert_eq!(state.safe_position(), 1);

    // Event 5 commits late.
    let (w3, path3, bytes3) = s.widget_silently(12, 2222);
    s.insert_event(
        Some(5),
        "widget",
        "created",
        w3,
        &format!("{{\"model_record_id\":{w3}}}"),
    );
    assert!(s.reg(wd(), w3).is_none());
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(
        (pass.gaps_filled, pass.applied, pass.cursor),
        (1, 1, 10),
        "{pass:?}"
    );
    assert_eq!(s.reg(wd(), w3).map(|r| r.state), Some(PENDING));
    assert_eq!(
        load_state(&mut s.t()).unwrap().gaps,
        vec![2, 3, 4, 6, 7, 8, 9]
    );
    // Re-running finds nothing new and applies nothing twice.
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!((pass.read, pass.applied), (0, 0));

    // Gaps that never fill are dropped after the gap timeout (1 h), and counted.
    s.clock.advance(Duration::hours(1) + Duration::seconds(1));
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.gaps_expired, 7);
    assert!(load_state(&mut s.t()).unwrap().gaps.is_empty());
    let c = &s.secondary.cursor().counters;
    assert_eq!(c.gaps_detected.load(Ordering::Relaxed), 8);
    assert_eq!(c.gaps_filled.load(Ordering::Relaxed), 1);
    assert_eq!(c.gaps_expired.load(Ordering::Relaxed), 7);

    // Syncs (without the backfill) bring all three files over.
    while s.secondary.sync_pass().unwrap() > 0 {}
    for id in [w1.id, w2.id, w3] {
        assert_eq!(s.reg(wd(), id).unwrap().state, SYNCED, "widget {id}");
    }
    assert_eq!(s.secondary_sum(&path3), Some(checksum(&bytes3)));
}

// ---------------------------------------------------------------------------------------------
// 6. bad events
// ---------------------------------------------------------------------------------------------

fn unknown_replicables_and_malformed_events_are_counted_and_skipped(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    // A file the malicious delete below points at, outside the secondary's store.
    let outside = s.dir.path().join("outside.txt");
    std::fs::write(&outside, b"keep me").unwrap();
    let (victim, victim_bytes) = s.widget(20, 500);
    s.converge();
    assert_eq!(
        s.secondary_sum(&victim.file_path),
        Some(checksum(&victim_bytes))
    );
    let start = s.events().last().unwrap().id;

    s.insert_event(None, "gizmo", "created", 1, r#"{"model_record_id":1}"#);
    s.insert_event(None, "widget", "exploded", 1, r#"{"model_record_id":1}"#);
    s.insert_event(None, "widget", "created", 2, r#"{"model_record_id":3}"#);
    s.insert_event(None, "widget", "created", 4, "[1,2]");
    s.insert_event(None, "widget", "created", 5, r#"{"no_id":true}"#);
    s.insert_event(
        None,
        "widget",
        "deleted",
        victim.id,
        &format!(
            r#"{{"model_record_id":{},"blob_path":"../outside.txt"}}"#,
            victim.id
        ),
    );
    s.insert_event(
        None,
        "widget",
        "checksum_succeeded",
        victim.id,
        &format!(r#"{{"model_record_id":{},"checksum":"zz"}}"#, victim.id),
    );
    let (good, good_bytes) = s.widget(21, 600);
    let last = s.events().last().unwrap().id;

    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!(pass.read as i64, last - start);
    assert_eq!(
        (pass.applied, pass.skipped, pass.cursor),
        (1, 7, last),
        "{pass:?}"
    );
    let c = &s.secondary.cursor().counters;
    assert_eq!(c.skipped_unknown_replicable.load(Ordering::Relaxed), 1);
    assert_eq!(c.skipped_malformed.load(Ordering::Relaxed), 6);
    assert_eq!(c.skipped_disabled.load(Ordering::Relaxed), 0);
    assert_eq!(c.skipped(), 7);
    assert_eq!(load_state(&mut s.t()).unwrap().last_event_id, last);

    // Nothing of the bad events touched the registry or the files.
    assert_eq!(s.tracked(wd()), vec![victim.id, good.id]);
    assert_eq!(s.reg(wd(), victim.id).unwrap().state, SYNCED);
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert_eq!(
        s.secondary_sum(&victim.file_path),
        Some(checksum(&victim_bytes))
    );

    // The good event after them is applied and synced.
    assert_eq!(s.reg(wd(), good.id).unwrap().state, PENDING);
    s.converge();
    s.assert_synced_verified(wd(), good.id, &good_bytes);
}

/// A payload that is not JSON at all cannot even be stored (a `json_valid` check on SQLite, the
/// `jsonb` type on PostgreSQL), so it can never reach, let alone stall, the cursor.
fn payload_that_is_not_json_is_refused_by_the_primary_database(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let err = try_exec(
        &mut s.p(),
        "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, \
         created_at) VALUES ('widget', 'created', 1, 'not json{', '2026-03-01T12:00:00.000Z')",
    )
    .unwrap_err();
    let refusal = match backend {
        Backend::Sqlite => "json_valid",
        Backend::Postgres => "invalid input syntax for type json",
    };
    assert!(err.to_string().contains(refusal), "{err}");
    let (good, _) = s.widget(22, 100);
    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!((pass.applied, pass.skipped), (1, 0));
    assert_eq!(s.tracked(wd()), vec![good.id]);
}

// ---------------------------------------------------------------------------------------------
// 7. crash and restart (threaded workers)
// ---------------------------------------------------------------------------------------------

/// When `crash` is set, every reader panics at its next read (a process dying mid-download).
/// Reads are served in small chunks so downloads take many reads.
struct CrashingDownloads {
    crash: Arc<AtomicBool>,
    /// The reader of the n-th blob opened (1-based) sets `crash` after its first chunk.
    crash_at_open: usize,
    opened: AtomicUsize,
    panics: Arc<AtomicUsize>,
    crashed: Arc<(Mutex<bool>, Condvar)>,
}

struct CrashReader {
    inner: Box<dyn Read + Send>,
    crash: Arc<AtomicBool>,
    trigger: bool,
    reads: usize,
    panics: Arc<AtomicUsize>,
    crashed: Arc<(Mutex<bool>, Condvar)>,
}

impl Read for CrashReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.trigger && self.reads == 1 {
            self.crash.store(true, Ordering::SeqCst);
        }
        if self.crash.load(Ordering::SeqCst) {
            self.panics.fetch_add(1, Ordering::SeqCst);
            let (lock, cv) = &*self.crashed;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
            panic!("simulated crash in the middle of a download");
        }
        self.reads += 1;
        let n = buf.len().min(4096);
        self.inner.read(&mut buf[..n])
    }
}

impl Interceptor for CrashingDownloads {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let blob = inner.open_blob(replicable, id)?;
        let n = self.opened.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(BlobStream {
            reader: Box::new(CrashReader {
                inner: blob.reader,
                crash: Arc::clone(&self.crash),
                trigger: n == self.crash_at_open,
                reads: 0,
                panics: Arc::clone(&self.panics),
                crashed: Arc::clone(&self.crashed),
            }),
            size: blob.size,
            checksum: blob.checksum,
        })
    }
}

/// Every file at a final path on the secondary is a complete copy of the primary's file at that
/// path; returns how many temporary files there are.
fn assert_no_partial_file_at_a_final_path(s: &Sites) -> usize {
    let mut temps = 0;
    for rel in all_files(s.secondary_store.root()) {
        if rel.file_name().is_some_and(is_temp_file_name) {
            temps += 1;
            continue;
        }
        let mine = std::fs::read(s.secondary_store.root().join(&rel)).unwrap();
        let theirs = read_opt(&s.primary_store.root().join(&rel));
        assert_eq!(
            Some(checksum(&mine)),
            theirs.as_deref().map(checksum),
            "partial or foreign file at {}",
            rel.display()
        );
    }
    temps
}

fn workers_crashed_mid_sync_and_restarted_converge_without_partial_files(backend: Backend) {
    let config = SecondaryConfig::default()
        .sync_capacity(4)
        .sync_batch(8)
        .idle_sleep(StdDuration::from_millis(10));
    let s = Sites::open(backend, config.clone(), 0);
    let mut expected = Vec::new();
    for i in 0..90u64 {
        let len = 20_000 + (i as usize * 7919) % 90_000;
        if i % 3 == 0 {
            let (g, b) = s.gadget(i, len);
            expected.push((gd(), g.id, b));
        } else {
            let (w, b) = s.widget(i, len);
            expected.push((wd(), w.id, b));
        }
    }
    s.verifier.run_until_idle(10).unwrap();
    // The cursor is caught up first, so that no event moves a claimed row back to pending and
    // every crash leaves its claimed rows `started`.
    s.secondary.cursor_pass().unwrap();

    let mut total_panics = 0;
    for crash_at in [3usize, 20, 41] {
        let crashed = Arc::new((Mutex::new(false), Condvar::new()));
        let panics = Arc::new(AtomicUsize::new(0));
        let source = Intercepted::new(
            s.direct(),
            CrashingDownloads {
                crash: Arc::new(AtomicBool::new(false)),
                crash_at_open: crash_at,
                opened: AtomicUsize::new(0),
                panics: Arc::clone(&panics),
                crashed: Arc::clone(&crashed),
            },
        );
        let secondary = s.new_secondary(source, config.clone());
        let handle = secondary.spawn().unwrap();
        // Wait (bounded) until the crash happened, then stop what is left of the workers.
        {
            let (lock, cv) = &*crashed;
            let guard = lock.lock().unwrap();
            let (guard, timeout) = cv
                .wait_timeout_while(guard, StdDuration::from_secs(30), |c| !*c)
                .unwrap();
            assert!(
                *guard && !timeout.timed_out(),
                "the crash at download {crash_at} never happened"
            );
        }
        // As a crash leaves them: no clean stop's release.
        handle.abandon();
        drop(secondary);
        total_panics += panics.load(Ordering::SeqCst);
        assert_no_partial_file_at_a_final_path(&s);
        // Rows of the interrupted batch are left `started`, as after a real crash.
        assert!(both_types(&s, |c| c.started) > 0);
    }
    assert!(total_panics >= 3);

    // Restart for good: reclaim the interrupted rows, run until idle.
    let restarted = s.new_secondary(s.direct(), config);
    assert!(restarted.reclaim_interrupted().unwrap() > 0);
    restarted.run_until_idle(50).unwrap();
    s.verifier.run_until_idle(10).unwrap();
    restarted.run_until_idle(50).unwrap();

    assert_no_partial_file_at_a_final_path(&s);
    s.secondary_store
        .remove_stale_temp_files(StdDuration::ZERO)
        .unwrap();
    assert!(
        all_files(s.secondary_store.root())
            .iter()
            .all(|p| !p.file_name().is_some_and(is_temp_file_name))
    );
    for (d, id, bytes) in &expected {
        s.assert_synced_verified(d, *id, bytes);
    }
    s.assert_files_identical();
    assert_eq!(all_files(s.secondary_store.root()).len(), expected.len());
}

/// A reader failing halfway leaves nothing at the final path (new file) and the old content
/// intact (replacement), and no temporary file.
#[test]
fn blob_store_write_with_a_failing_reader_leaves_no_file_at_the_final_path() {
    struct Failing {
        left: usize,
    }
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "peer went away",
                ));
            }
            let n = buf.len().min(self.left).min(1000);
            buf[..n].fill(7);
            self.left -= n;
            Ok(n)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let path = BlobPath::new("a/b/new.bin").unwrap();
    let err = store
        .write(&path, &mut Failing { left: 5000 }, None)
        .unwrap_err();
    assert!(
        matches!(err, BlobError::Source { bytes: 5000, .. }),
        "{err}"
    );
    assert!(!store.exists(&path).unwrap());
    assert!(
        all_files(store.root()).is_empty(),
        "{:?}",
        all_files(store.root())
    );

    let old = BlobPath::new("a/b/old.bin").unwrap();
    store.write(&old, &mut &b"old content"[..], None).unwrap();
    assert!(
        store
            .write(&old, &mut Failing { left: 3000 }, None)
            .is_err()
    );
    assert_eq!(
        std::fs::read(store.root().join("a/b/old.bin")).unwrap(),
        b"old content"
    );
    assert_eq!(all_files(store.root()).len(), 1);

    // A crash (no unwinding) leaves a temporary file: the sweep removes only those.
    std::fs::write(store.root().join("a/b/.tmp_0123456789abcdef"), b"partial").unwrap();
    assert_eq!(store.remove_stale_temp_files(StdDuration::ZERO).unwrap(), 1);
    assert_eq!(
        all_files(store.root()),
        vec![std::path::PathBuf::from("a/b/old.bin")]
    );
}

// ---------------------------------------------------------------------------------------------
// 8. backfill
// ---------------------------------------------------------------------------------------------

fn backfill_creates_rows_for_records_without_events_and_removes_orphans(backend: Backend) {
    // The mass-removal guard (tests/tests/safety.rs) would refuse the first sweep (2 of 2
    // rows): this scenario is about what a sweep removes once removal is allowed.
    let s = Sites::open(
        backend,
        SecondaryConfig::default()
            .backfill_batch(3)
            .max_removal_share(1.0),
        0,
    );
    let silent: Vec<_> = (0..7)
        .map(|i| s.widget_silently(30 + i, 1000 + i as usize))
        .collect();
    assert!(s.events().is_empty());
    // Orphans: registry rows whose records do not exist on the primary, below and above the
    // primary's largest id.
    registry::Registry::of(wd())
        .insert_missing(&mut s.t(), &[silent[6].0 + 1, 500])
        .unwrap();
    registry::Registry::of(gd())
        .insert_missing(&mut s.t(), &[3])
        .unwrap();

    let (created, removed) = s.secondary.backfill_all().unwrap();
    assert_eq!((created, removed), (7, 3));
    assert_eq!(
        s.tracked(wd()),
        silent.iter().map(|x| x.0).collect::<Vec<_>>()
    );
    assert!(s.tracked(gd()).is_empty());
    assert_eq!(
        s.secondary.backfill_all().unwrap(),
        (0, 0),
        "a second sweep finds nothing"
    );

    while s.secondary.sync_pass().unwrap() > 0 {}
    for (id, path, bytes) in &silent {
        assert_eq!(s.reg(wd(), *id).unwrap().state, SYNCED);
        assert_eq!(s.secondary_sum(path), Some(checksum(bytes)));
    }
    // The primary verifies them too (state rows backfilled), and the secondary follows.
    s.converge();
    for (id, _, bytes) in &silent {
        s.assert_synced_verified(wd(), *id, bytes);
    }

    // A record removed on the primary without any event (a lost `deleted`): the backfill
    // removes its registry row and the file the sync wrote, found through `blob_path`.
    let (gone_id, gone_path, _) = &silent[2];
    assert_eq!(
        registry::Registry::of(wd())
            .blob_paths(&mut s.t(), &[*gone_id])
            .unwrap(),
        vec![(*gone_id, gone_path.clone())]
    );
    exec(
        &mut s.p(),
        &format!("DELETE FROM widgets WHERE id = {gone_id}"),
    );
    assert_eq!(s.secondary.backfill_all().unwrap(), (0, 1));
    assert!(s.reg(wd(), *gone_id).is_none());
    assert_eq!(
        s.secondary_sum(gone_path),
        None,
        "the orphan's file is removed too"
    );
    assert!(s.secondary_sum(&silent[3].1).is_some(), "other files stay");
}

// ---------------------------------------------------------------------------------------------
// 9. fairness and the concurrency limit
// ---------------------------------------------------------------------------------------------

fn one_sync_pass_claims_fairly_from_both_types(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default().sync_batch(10), 0);
    for i in 0..12 {
        s.widget(i, 100);
        s.gadget(i, 100);
    }
    s.secondary.cursor_pass().unwrap();
    assert_eq!(s.secondary.sync_pass().unwrap(), 10);
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut s.t())
            .unwrap()
            .synced,
        5
    );
    assert_eq!(
        registry::Registry::of(gd())
            .counts(&mut s.t())
            .unwrap()
            .synced,
        5
    );

    // A type that cannot use its share leaves it to the other.
    let s = Sites::open(backend, SecondaryConfig::default().sync_batch(10), 0);
    for i in 0..12 {
        s.widget(i, 100);
    }
    for i in 0..3 {
        s.gadget(i, 100);
    }
    s.secondary.cursor_pass().unwrap();
    assert_eq!(s.secondary.sync_pass().unwrap(), 10);
    assert_eq!(
        registry::Registry::of(wd())
            .counts(&mut s.t())
            .unwrap()
            .synced,
        7
    );
    assert_eq!(
        registry::Registry::of(gd())
            .counts(&mut s.t())
            .unwrap()
            .synced,
        3
    );
}

/// A registry count of the widget and gadget types together.
fn both_types(s: &Sites, count: impl Fn(&registry::RegistryCounts) -> i64) -> i64 {
    [wd(), gd()]
        .into_iter()
        .map(|d| count(&registry::Registry::of(d).counts(&mut s.t()).unwrap()))
        .sum()
}

/// (open, peak) readers, and a condition variable signalled on every change.
type Gauge = Arc<(Mutex<(usize, usize)>, Condvar)>;

/// Counts readers open at once; the first reads wait (bounded) until two are open, so a
/// working limit of 2 is reached deterministically.
struct CountingDownloads {
    gauge: Gauge,
}

impl Interceptor for CountingDownloads {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let blob = inner.open_blob(replicable, id)?;
        {
            let (lock, cv) = &*self.gauge;
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            g.0 += 1;
            g.1 = g.1.max(g.0);
            cv.notify_all();
        }
        let (first, last) = (Arc::clone(&self.gauge), Arc::clone(&self.gauge));
        Ok(HookedReader::wrap(blob, |r| {
            r.before_first_read(move || {
                let (lock, cv) = &*first;
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                let _ =
                    cv.wait_timeout_while(guard, StdDuration::from_secs(10), |(_, peak)| *peak < 2);
            })
            .on_drop(move || {
                let (lock, cv) = &*last;
                lock.lock().unwrap_or_else(|p| p.into_inner()).0 -= 1;
                cv.notify_all();
            })
        }))
    }
}

fn concurrent_downloads_never_exceed_sync_capacity(backend: Backend) {
    let state = Arc::new((Mutex::new((0usize, 0usize)), Condvar::new()));
    let st = Arc::clone(&state);
    let config = SecondaryConfig::default().sync_capacity(2).sync_batch(10);
    let s = Sites::open_with(backend, config, 0, move |inner| {
        Intercepted::new(inner, CountingDownloads { gauge: st })
    });
    for i in 0..9 {
        s.widget(i, 30_000);
        s.gadget(i, 30_000);
    }
    s.secondary.run_until_idle(10).unwrap();
    let (open, peak) = *state.0.lock().unwrap();
    assert_eq!(open, 0);
    assert_eq!(
        peak, 2,
        "at most sync_capacity = 2 downloads at once, and the limit is used"
    );
    assert_eq!(both_types(&s, |c| c.synced), 18);
    s.assert_files_identical();
}

/// The spawned scheduler runs `sync_workers` passes at once, and their downloads share
/// `sync_capacity`: with passes of 2 rows and 3 workers, three passes (6 downloads) are ready
/// together and still at most 2 downloads are open.
fn sync_workers_share_sync_capacity(backend: Backend) {
    let state = Arc::new((Mutex::new((0usize, 0usize)), Condvar::new()));
    let st = Arc::clone(&state);
    let config = SecondaryConfig::default()
        .sync_capacity(2)
        .sync_batch(2)
        .sync_workers(3)
        .idle_sleep(StdDuration::from_millis(10));
    let s = Sites::open_with(backend, config, 0, move |inner| {
        Intercepted::new(inner, CountingDownloads { gauge: st })
    });
    for i in 0..9 {
        s.widget(i, 30_000);
        s.gadget(i, 30_000);
    }
    let synced = || both_types(&s, |c| c.synced);
    let handle = s.secondary.spawn().unwrap();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
    while synced() < 18 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 18 synced",
            synced()
        );
        std::thread::sleep(StdDuration::from_millis(20));
    }
    handle.stop();
    let (open, peak) = *state.0.lock().unwrap();
    assert_eq!(open, 0);
    assert_eq!(
        peak, 2,
        "at most sync_capacity = 2 downloads across the workers"
    );
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 10. feature flag
// ---------------------------------------------------------------------------------------------

fn replication_flag_off_skips_events_and_syncs_and_publishes_nothing(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    primary::set_replication_enabled(&mut s.t(), gd(), false, s.now()).unwrap();
    assert!(!primary::replication_enabled(&mut s.t(), gd()).unwrap());
    assert!(primary::replication_enabled(&mut s.t(), wd()).unwrap());
    let (w, wb) = s.widget(40, 300);
    let (g, gb) = s.gadget(40, 300);

    let pass = s.secondary.cursor_pass().unwrap();
    assert_eq!((pass.applied, pass.skipped), (1, 1), "{pass:?}");
    assert_eq!(
        s.secondary
            .cursor()
            .counters
            .skipped_disabled
            .load(Ordering::Relaxed),
        1
    );
    assert!(s.tracked(gd()).is_empty());

    // A gadget row that exists anyway is not synced while the flag is off; neither does the
    // backfill create rows for the type.
    registry::Registry::of(gd())
        .insert_missing(&mut s.t(), &[g.id])
        .unwrap();
    s.converge();
    assert_eq!(s.reg(gd(), g.id).unwrap().state, PENDING);
    assert_eq!(s.secondary_sum(&g.blob_key), None);
    s.assert_synced_verified(wd(), w.id, &wb);

    // On the primary, the flag off means no event.
    primary::set_replication_enabled(&mut s.p(), gd(), false, s.now()).unwrap();
    let before = s.events().len();
    let (g2, g2b) = s.gadget(41, 300);
    assert_eq!(s.events().len(), before, "{:?}", s.events().last());
    primary::set_replication_enabled(&mut s.p(), gd(), true, s.now()).unwrap();
    let (w2, w2b) = s.widget(41, 300);
    assert_eq!(s.events().len(), before + 1);

    // Flag back on at the secondary: the backfill catches up on what the events missed.
    primary::set_replication_enabled(&mut s.t(), gd(), true, s.now()).unwrap();
    s.converge();
    s.assert_synced_verified(gd(), g.id, &gb);
    s.assert_synced_verified(gd(), g2.id, &g2b);
    s.assert_synced_verified(wd(), w2.id, &w2b);
    s.assert_files_identical();
}

// ---------------------------------------------------------------------------------------------
// 11. primary verification
// ---------------------------------------------------------------------------------------------

fn primary_verification_checksums_fails_with_backoff_reverifies_and_respects_updates(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (w1, w1b) = s.widget(50, 3000);
    let (w2, w2b) = s.widget(51, 3000);
    let (g1, g1b) = s.gadget(50, 3000);
    s.primary_store
        .delete(&BlobPath::new(&w2.file_path).unwrap())
        .unwrap();
    let events_before = s.events().len();

    assert_eq!(s.verifier.verification_pass().unwrap(), 3);
    let now = s.now();
    for (d, id, bytes) in [(wd(), w1.id, &w1b), (gd(), g1.id, &g1b)] {
        let row = s.primary_row(d, id).unwrap();
        assert_eq!(
            row.verification_state, V_SUCCEEDED,
            "{} {id}: {row:?}",
            d.name
        );
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(sum(bytes).as_slice())
        );
        assert_eq!(row.verified_at.map(UtcDateTime::get), Some(now));
        assert_eq!(row.verification_failure, None);
    }
    let events = s.events();
    let published: Vec<_> = events[events_before..]
        .iter()
        .map(|e| {
            (
                e.replicable_name.as_str(),
                e.event_name.as_str(),
                e.model_record_id,
            )
        })
        .collect();
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&("widget", "checksum_succeeded", w1.id)));
    assert!(published.contains(&("gadget", "checksum_succeeded", g1.id)));
    let ev = events
        .iter()
        .find(|e| {
            e.replicable_name == "widget"
                && e.event_name == "checksum_succeeded"
                && e.model_record_id == w1.id
        })
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&ev.payload).unwrap();
    assert_eq!(
        payload["checksum"],
        serde_json::json!(checksum(&w1b).to_hex())
    );

    // The missing file: failed with backoff (delay(1) = 16 s with jitter 0).
    let row = s.primary_row(wd(), w2.id).unwrap();
    assert_eq!(row.verification_state, V_FAILED);
    assert_eq!(row.verification_retry_count, 1);
    assert_eq!(
        row.verification_retry_at.map(UtcDateTime::get),
        Some(now + Duration::seconds(16))
    );
    assert_eq!(row.verification_checksum, None);
    assert!(
        row.verification_failure
            .as_deref()
            .unwrap_or_default()
            .starts_with("Error during verification"),
        "{row:?}"
    );
    assert_eq!(s.verifier.verification_pass().unwrap(), 0, "not due yet");
    s.primary_store
        .write(&BlobPath::new(&w2.file_path).unwrap(), &mut &w2b[..], None)
        .unwrap();
    s.clock.advance(Duration::seconds(16));
    assert_eq!(s.verifier.verification_pass().unwrap(), 1);
    let row = s.primary_row(wd(), w2.id).unwrap();
    assert_eq!(
        (row.verification_state, row.verification_retry_count),
        (V_SUCCEEDED, 0)
    );

    // Reverification after the interval (7 days).
    // w1 and g1 were verified at t0, w2 16 s later.
    s.clock.advance(Duration::days(7) - Duration::seconds(16));
    assert_eq!(
        s.verifier.maintenance_pass().unwrap(),
        0,
        "exactly the interval is not yet due"
    );
    s.clock.advance(Duration::seconds(17));
    assert_eq!(s.verifier.maintenance_pass().unwrap(), 3);
    assert_eq!(
        s.primary_row(wd(), w1.id).unwrap().verification_state,
        PENDING
    );
    assert_eq!(
        s.primary_row(gd(), g1.id).unwrap().verification_state,
        PENDING
    );
    assert_eq!(s.verifier.verification_pass().unwrap(), 3);
    let later = s.now();
    for (d, id) in [(wd(), w1.id), (wd(), w2.id), (gd(), g1.id)] {
        let row = s.primary_row(d, id).unwrap();
        assert_eq!(row.verification_state, V_SUCCEEDED);
        assert_eq!(row.verified_at.map(UtcDateTime::get), Some(later));
    }

    // A record updated while it is being checksummed stays pending.
    let claims = primary::claim_verification_batch(&mut s.p(), wd(), 10, later).unwrap();
    assert!(claims.is_empty(), "nothing pending");
    let newer = data(52, 999);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w1, &newer).unwrap();
    s.clock.advance(Duration::seconds(1));
    let claims = primary::claim_verification_batch(&mut s.p(), wd(), 10, s.now()).unwrap();
    assert_eq!(claims.iter().map(|c| c.id).collect::<Vec<_>>(), vec![w1.id]);
    let newest = data(53, 1001);
    app::update_widget(&mut s.p(), s.primary_store.as_ref(), &w1, &newest).unwrap();
    assert!(
        !primary::record_verification_success(&mut s.p(), wd(), &claims[0], &sum(&newer), s.now())
            .unwrap()
    );
    assert_eq!(
        s.primary_row(wd(), w1.id).unwrap().verification_state,
        PENDING
    );
    assert!(
        !primary::record_verification_failure(
            &mut s.p(),
            wd(),
            &claims[0],
            "late",
            |_| s.now(),
            s.now()
        )
        .unwrap()
    );
    assert_eq!(s.verifier.verification_pass().unwrap(), 1);
    let row = s.primary_row(wd(), w1.id).unwrap();
    assert_eq!(row.verification_state, V_SUCCEEDED);
    assert_eq!(row.verification_checksum, Some(sum(&newest)));
}

fn primary_verification_timeouts_and_state_backfill(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let (id, _, _) = s.widget_silently(60, 100);
    assert!(
        s.primary_row(wd(), id).is_none(),
        "no states row without publish_created"
    );
    assert_eq!(s.verifier.maintenance_pass().unwrap(), 1);
    assert_eq!(s.primary_row(wd(), id).unwrap().verification_state, PENDING);
    let claims = primary::claim_verification_batch(&mut s.p(), wd(), 10, s.now()).unwrap();
    assert_eq!(claims.len(), 1);
    s.clock.advance(Duration::hours(8) + Duration::seconds(1));
    assert_eq!(s.verifier.maintenance_pass().unwrap(), 1);
    let row = s.primary_row(wd(), id).unwrap();
    assert_eq!(row.verification_state, V_FAILED);
    assert_eq!(
        row.verification_failure.as_deref(),
        Some("Verification timed out after 8 hours")
    );
}

// ---------------------------------------------------------------------------------------------
// 12. status
// ---------------------------------------------------------------------------------------------

fn status_fields_match_the_databases(backend: Backend) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    let ws: Vec<_> = (0..4).map(|i| s.widget(70 + i, 500)).collect();
    let gs: Vec<_> = (0..2).map(|i| s.gadget(70 + i, 500)).collect();
    // One widget's file is missing on the primary: it fails on both sides.
    s.primary_store
        .delete(&BlobPath::new(&ws[3].0.file_path).unwrap())
        .unwrap();
    s.converge();
    // One gadget row left pending on the secondary.
    registry::Registry::of(gd())
        .act(&mut s.t(), registry::Action::Resync, Some(&[gs[1].0.id]))
        .unwrap();

    let secondary: BTreeMap<_, _> = s
        .secondary
        .status()
        .unwrap()
        .into_iter()
        .map(|(d, st)| (d.name, st))
        .collect();
    let primary: BTreeMap<_, _> = s
        .verifier
        .status()
        .unwrap()
        .into_iter()
        .map(|(d, st)| (d.name, st))
        .collect();
    assert_eq!(
        secondary.keys().copied().collect::<Vec<_>>(),
        vec!["gadget", "widget"]
    );

    let w = &secondary["widget"];
    let c = registry::Registry::of(wd()).counts(&mut s.t()).unwrap();
    assert_eq!((c.registry, c.synced, c.failed, c.verified), (4, 3, 1, 3));
    assert_eq!(c.missing_on_primary, 1);
    assert_eq!(w.registry_count, Some(c.registry as u64));
    assert_eq!(w.synced_count, Some(c.synced as u64));
    assert_eq!(w.failed_count, Some(c.failed as u64));
    assert_eq!(w.verified_count, Some(c.verified as u64));
    assert_eq!(
        w.verification_failed_count,
        Some(c.verification_failed as u64)
    );
    let json = w.to_json();
    assert_eq!(json["widgets_registry_count"], 4);
    assert_eq!(json["widgets_synced_count"], 3);
    assert_eq!(json["widgets_failed_count"], 1);
    assert_eq!(json["widgets_verified_count"], 3);
    assert_eq!(json["widgets_synced_in_percentage"], 75.0);
    assert_eq!(json["widgets_verified_in_percentage"], 75.0);
    assert_eq!(
        json["widgets_checksummed_count"],
        serde_json::Value::Null,
        "a primary-only field"
    );

    let g = secondary["gadget"].to_json();
    assert_eq!(g["gadgets_registry_count"], 2);
    assert_eq!(g["gadgets_synced_count"], 1);
    assert_eq!(g["gadgets_synced_in_percentage"], 50.0);

    let pw = primary["widget"].to_json();
    assert_eq!(pw["widgets_count"], 4);
    assert_eq!(pw["widgets_checksum_total_count"], 4);
    assert_eq!(pw["widgets_checksummed_count"], 3);
    assert_eq!(pw["widgets_checksum_failed_count"], 1);
    assert_eq!(
        pw["widgets_registry_count"],
        serde_json::Value::Null,
        "a secondary-only field"
    );
    let pg = primary["gadget"].to_json();
    assert_eq!(pg["gadgets_count"], 2);
    assert_eq!(pg["gadgets_checksummed_count"], 2);
    for key in [
        "count",
        "checksum_total_count",
        "checksummed_count",
        "checksum_failed_count",
        "registry_count",
        "synced_count",
        "failed_count",
        "verification_total_count",
        "verified_count",
        "verification_failed_count",
        "synced_in_percentage",
        "verified_in_percentage",
    ] {
        assert!(
            json.contains_key(&format!("widgets_{key}")),
            "widgets_{key}"
        );
        assert!(pg.contains_key(&format!("gadgets_{key}")), "gadgets_{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// a record deleted while its download is in flight
// ---------------------------------------------------------------------------------------------

/// A closure run once, shared between the test and the source.
type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// Runs `hook` once, at the first read of the blob of widget `target`.
struct HookedDownload {
    target: i64,
    hook: Hook,
}

impl Interceptor for HookedDownload {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let blob = inner.open_blob(replicable, id)?;
        if (replicable, id) != ("widget", self.target) {
            return Ok(blob);
        }
        let hook = Arc::clone(&self.hook);
        Ok(HookedReader::wrap(blob, |r| {
            r.before_first_read(move || {
                let f = hook.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(f) = f {
                    f();
                }
            })
        }))
    }
}

fn record_deleted_while_its_download_is_in_flight_leaves_no_file(backend: Backend) {
    let hook: Hook = Arc::new(Mutex::new(None));
    let h = Arc::clone(&hook);
    // The first widget created gets id 1.
    let s = Sites::open_with(backend, SecondaryConfig::default(), 0, move |inner| {
        Intercepted::new(inner, HookedDownload { target: 1, hook: h })
    });
    let (w, _) = s.widget(80, 50_000);
    assert_eq!(w.id, 1);
    s.secondary.cursor_pass().unwrap();
    {
        let secondary = Arc::clone(&s.secondary);
        let db = s.primary_db.clone();
        let store = Arc::clone(&s.primary_store);
        let w = w.clone();
        *hook.lock().unwrap() = Some(Box::new(move || {
            let mut conn = db.get().unwrap();
            app::delete_widget(&mut conn, store.as_ref(), &w).unwrap();
            secondary.cursor_pass().unwrap();
        }));
    }
    s.secondary.sync_pass().unwrap();
    assert!(
        hook.lock().unwrap().is_none(),
        "the hook ran during the download"
    );
    assert!(s.reg(wd(), w.id).is_none());
    s.converge();
    assert_eq!(
        s.secondary_sum(&w.file_path),
        None,
        "the deleted record's file was left on the secondary"
    );
}

// ---------------------------------------------------------------------------------------------
// a new secondary whose backfill ran ahead of its cursor
// ---------------------------------------------------------------------------------------------

fn fresh_secondary_does_not_download_again_when_the_backfill_ran_ahead_of_the_cursor(
    backend: Backend,
) {
    let s = Sites::open(backend, SecondaryConfig::default(), 0);
    for i in 0..5 {
        s.widget(90 + i, 10_000);
    }
    // With the threaded workers the backfill and the scheduler may run before the cursor has
    // replayed the log; here that order is forced.
    assert_eq!(s.secondary.backfill_all().unwrap(), (5, 0));
    while s.secondary.sync_pass().unwrap() > 0 {}
    assert_eq!(s.secondary.counters().bytes.load(Ordering::Relaxed), 50_000);
    s.secondary.cursor_pass().unwrap();
    while s.secondary.sync_pass().unwrap() > 0 {}
    assert_eq!(
        s.secondary.counters().bytes.load(Ordering::Relaxed),
        50_000,
        "files were downloaded again"
    );
}
