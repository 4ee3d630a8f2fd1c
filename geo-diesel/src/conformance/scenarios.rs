//! The scenarios, one per generated test (GitLab's `'a blob replicator'` and
//! `'a verifiable replicator'` shared examples). Each opens fresh sites, drives them through the
//! fixture and the workers' passes, and returns the first [`Failure`]. Call one directly to
//! assert that a broken fixture fails it.

use chrono::TimeDelta;
use geo_core::backoff::{
    BackoffCap, DEFAULT_CAP, MISSING_ON_PRIMARY_CAP, delay_secs_with, max_delay_secs,
};
use geo_core::checksum::checksum_bytes;
use geo_core::{ReplicationState, Role, VerificationState};

use super::sites::{JITTER, found_bytes};
use super::{Failure, Fixture, Sites};
use crate::registry::{Action, Registry};

/// Create replicates: the fixture's create publishes `created` (checked on the primary), and
/// the secondary ends with a `synced` registry row and the same file (blake3).
pub fn create_replicates<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "create_replicates")?;
    let made = s.create(true)?;
    s.converge()?;
    s.expect_synced(&made)?;
    Ok(())
}

/// Update replicates: after the fixture's update (new content, checked on the primary, and an
/// `updated` event), the secondary ends with the new content and its checksum.
pub fn update_replicates<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "update_replicates")?;
    let mut made = s.create(true)?;
    s.converge()?;
    s.expect_synced(&made)?;
    let old = checksum_bytes(&made.content);
    s.update(&mut made)?;
    s.converge()?;
    s.expect_synced(&made).map_err(|mut e| {
        if e.found.contains(&old.to_hex()) {
            e.found
                .push_str(" (the old content: the update never reached the secondary)");
        }
        e
    })?;
    Ok(())
}

/// Delete replicates: after the fixture's delete (`deleted` published), the secondary's
/// registry row and file are gone.
pub fn delete_replicates<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "delete_replicates")?;
    let made = s.create(true)?;
    s.converge()?;
    s.expect_synced(&made)?;
    s.delete(&made)?;
    s.converge()?;
    let name = s.name(made.id, &made.path);
    if let Some(row) = s.reg(made.id)? {
        return Err(s
            .fail(
                "no registry row for the deleted record",
                format!("a row in state {:?}", row.state),
            )
            .record(name));
    }
    if let Some(sum) = s.secondary_sum(&made.path) {
        return Err(s
            .fail(
                "the secondary's file removed",
                format!("still there (blake3 {sum})"),
            )
            .record(name));
    }
    Ok(())
}

/// Primary verification: the record's state ends `succeeded` with the blake3 of its file, and
/// again with the new one after an update. With `verification = "none"`: the primary keeps no
/// state for it and checksums nothing.
pub fn primary_verification<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "primary_verification")?;
    let mut made = s.create(true)?;
    s.verifier
        .run_until_idle(20)
        .map_err(|e| s.error("the primary's verifier", e))?;
    if !s.d().verifies() {
        let row = s.primary_record(made.id)?;
        let state = row.as_ref().and_then(|r| r.verification_state);
        let sum = row.and_then(|r| r.verification_checksum);
        if state.is_some() || sum.is_some() {
            return Err(s
                .fail(
                    "no verification state (verification = \"none\")",
                    format!("{state:?}, checksum {}", found_bytes(sum.as_deref())),
                )
                .record(s.name(made.id, &made.path)));
        }
        return Ok(());
    }
    expect_primary_verified(&s, &made)?;
    s.update(&mut made)?;
    s.verifier
        .run_until_idle(20)
        .map_err(|e| s.error("the primary's verifier", e))?;
    expect_primary_verified(&s, &made)
}

fn expect_primary_verified<F: Fixture>(
    s: &Sites<'_, F>,
    made: &super::Made<F::Model>,
) -> Result<(), Failure> {
    let want = checksum_bytes(&made.content);
    let name = s.name(made.id, &made.path);
    let row = s.primary_record(made.id)?.ok_or_else(|| {
        s.fail("the record on the primary", "no such row")
            .record(name.clone())
    })?;
    if row.verification_state != Some(VerificationState::Succeeded)
        || row.verification_checksum.as_deref() != Some(&want.0[..])
    {
        return Err(s
            .fail(
                format!("verification succeeded with blake3 {want}"),
                format!(
                    "{:?} with checksum {}, failure {:?}",
                    row.verification_state,
                    found_bytes(row.verification_checksum.as_deref()),
                    row.verification_failure
                ),
            )
            .record(name));
    }
    Ok(())
}

/// Secondary verification: the registry row ends `succeeded` with the primary's checksum, no
/// mismatch, a verification time. With `verification = "none"`: `disabled`, and the checksum
/// of the download kept.
pub fn secondary_verification<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "secondary_verification")?;
    let made = s.create(true)?;
    s.converge()?;
    let row = s.expect_synced(&made)?;
    let (want, ok) = if s.d().verifies() {
        (
            VerificationState::Succeeded,
            row.verified_at.is_some() && !row.checksum_mismatch,
        )
    } else {
        (VerificationState::Disabled, true)
    };
    if row.verification_state != want || !ok {
        return Err(s
            .fail(
                format!("the registry row's verification {want:?}, verified, no mismatch"),
                format!(
                    "{:?}, verified at {:?}, mismatch {}, failure {:?}",
                    row.verification_state,
                    row.verified_at,
                    row.checksum_mismatch,
                    row.verification_failure
                ),
            )
            .record(s.name(made.id, &made.path)));
    }
    Ok(())
}

/// A mismatch resyncs: a corrupted secondary copy is found by reverification
/// (`checksum_mismatch`, the row `failed` with a retry), and after the retry time it is synced
/// and verified again with the right content. With `verification = "none"` nothing verifies:
/// an operator's resync repairs the copy.
pub fn a_mismatch_resyncs<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "a_mismatch_resyncs")?;
    let made = s.create(true)?;
    s.converge()?;
    s.expect_synced(&made)?;
    let name = s.name(made.id, &made.path);
    let mut corrupt = made.content.clone();
    corrupt[0] ^= 0xff;
    let path = geo_core::blob_store::BlobPath::new(&made.path)
        .map_err(|e| s.error("the record's blob path", e))?;
    geo_core::blob_store::BlobStore::write(
        s.secondary_store.as_ref(),
        &path,
        &mut &corrupt[..],
        None,
    )
    .map_err(|e| s.error("corrupting the secondary's copy", e))?;
    let registry = Registry::of(s.d());
    let action = if s.d().verifies() {
        Action::Reverify
    } else {
        Action::Resync
    };
    registry
        .act(&mut s.t()?, action, Some(&[made.id][..]))
        .map_err(|e| s.error("the operator's action", e))?;
    if s.d().verifies() {
        s.secondary
            .verification_pass()
            .map_err(|e| s.error("the secondary's verification pass", e))?;
        let row = s.reg_row(made.id, &made.path)?;
        let bad = checksum_bytes(&corrupt);
        if !row.checksum_mismatch
            || row.verification_state != VerificationState::Failed
            || row.state != ReplicationState::Failed
            || row.verification_checksum_mismatched.as_deref() != Some(&bad.0[..])
        {
            return Err(s
                .fail(
                    format!("a checksum mismatch found (blake3 {bad}), verification failed, a resync scheduled"),
                    format!(
                        "mismatch {}, verification {:?}, state {:?}, mismatched checksum {}",
                        row.checksum_mismatch,
                        row.verification_state,
                        row.state,
                        found_bytes(row.verification_checksum_mismatched.as_deref())
                    ),
                )
                .record(name));
        }
        let retry_at = row.retry_at.ok_or_else(|| {
            s.fail("a retry time for the resync", "none")
                .record(name.clone())
        })?;
        s.clock.set(retry_at);
    }
    s.converge()?;
    let row = s.expect_synced(&made)?;
    if row.checksum_mismatch || row.verification_checksum_mismatched.is_some() {
        return Err(s
            .fail(
                "the mismatch cleared after the resync",
                format!(
                    "mismatch {}, mismatched checksum {}",
                    row.checksum_mismatch,
                    found_bytes(row.verification_checksum_mismatched.as_deref())
                ),
            )
            .record(name));
    }
    Ok(())
}

/// A flag that is off publishes and syncs nothing: off on the primary, the fixture's create
/// publishes no event; off on the secondary (on at the primary), a published record is neither
/// tracked nor downloaded; back on, the backfill syncs both records.
pub fn flag_off_publishes_and_syncs_nothing<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "flag_off_publishes_and_syncs_nothing")?;
    s.set_flag(Role::Primary, false)?;
    let before = s.all_events()?;
    let quiet = s.create(false)?;
    let after = s.all_events()?;
    if after != before {
        return Err(s
            .fail(
                "no event while the flag is off on the primary",
                format!("{} event(s) published", after - before),
            )
            .record(s.name(quiet.id, &quiet.path))
            .hint("publish through geo_diesel::publish_*, which honour the flag"));
    }
    s.set_flag(Role::Primary, true)?;
    s.set_flag(Role::Secondary, false)?;
    let published = s.create(true)?;
    s.converge()?;
    for made in [&quiet, &published] {
        let row = s.reg(made.id)?;
        let file = s.secondary_sum(&made.path);
        if row.is_some() || file.is_some() {
            return Err(s
                .fail(
                    "nothing tracked or downloaded while the flag is off on the secondary",
                    format!(
                        "registry row {:?}, file {}",
                        row.map(|r| r.state),
                        file.map_or("none".into(), |c| c.to_hex())
                    ),
                )
                .record(s.name(made.id, &made.path)));
        }
    }
    s.set_flag(Role::Secondary, true)?;
    s.converge()?;
    s.expect_synced(&quiet)?;
    s.expect_synced(&published)?;
    Ok(())
}

/// A file missing on the primary fails the sync with `missing_on_primary` and GitLab's failure
/// text; each retry waits exactly the backoff of its count (fixed jitter) and the wait grows to
/// the 4-hour cap (`4 h + delay(1)`), never beyond, where an ordinary failure stops at 1 hour.
pub fn missing_on_primary_fails_with_the_four_hour_cap<F: Fixture>(f: &F) -> Result<(), Failure> {
    let mut s = Sites::open(f, "missing_on_primary_fails_with_the_four_hour_cap")?;
    let made = s.create(true)?;
    let name = s.name(made.id, &made.path);
    let path = geo_core::blob_store::BlobPath::new(&made.path)
        .map_err(|e| s.error("the record's blob path", e))?;
    geo_core::blob_store::BlobStore::delete(s.primary_store.as_ref(), &path)
        .map_err(|e| s.error("removing the primary's file", e))?;
    s.secondary
        .cursor_pass()
        .map_err(|e| s.error("the secondary's cursor pass", e))?;
    let cap = TimeDelta::from_std(MISSING_ON_PRIMARY_CAP).unwrap_or(TimeDelta::MAX)
        + TimeDelta::seconds(delay_secs_with(1, JITTER) as i64);
    let one_hour = TimeDelta::from_std(DEFAULT_CAP).unwrap_or(TimeDelta::MAX)
        + TimeDelta::seconds(max_delay_secs(1) as i64);
    let mut longest = TimeDelta::zero();
    for _ in 0..16 {
        let now = s.env.now();
        s.secondary
            .sync_pass()
            .map_err(|e| s.error("the secondary's sync pass", e))?;
        let row = s.reg_row(made.id, &made.path)?;
        let failure = row.last_sync_failure.clone().unwrap_or_default();
        if row.state != ReplicationState::Failed
            || !row.missing_on_primary
            || !failure.contains("missing on the Geo primary")
        {
            return Err(s
                .fail(
                    "the sync failed with missing_on_primary (\"The file is missing on the Geo primary site\")",
                    format!("{:?}, missing_on_primary {}, failure {failure:?}", row.state, row.missing_on_primary),
                )
                .record(name));
        }
        let expected = s
            .env
            .retry_time(now, row.retry_count, BackoffCap::MissingOnPrimary);
        let retry_at = row
            .retry_at
            .ok_or_else(|| s.fail("a retry time", "none").record(name.clone()))?;
        if retry_at != expected || retry_at - now > cap {
            return Err(s
                .fail(
                    format!(
                        "retry {} due at {expected} (backoff capped at {cap})",
                        row.retry_count
                    ),
                    format!("due at {retry_at}, {} after the failure", retry_at - now),
                )
                .record(name));
        }
        longest = longest.max(retry_at - now);
        s.clock.set(retry_at);
    }
    if longest != cap || longest <= one_hour {
        return Err(s
            .fail(
                format!("the retry wait to reach the 4-hour cap ({cap})"),
                format!("longest wait {longest}"),
            )
            .record(name));
    }
    Ok(())
}
