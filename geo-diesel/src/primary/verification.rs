//! The primary's verification state (`<name>_states` rows, or the inline columns of the model
//! table): geo-core's rules ([`geo_core::transitions::verification`]) run as conditional
//! statements through [`crate::sql::Table`].

use chrono::{DateTime, Duration, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, SmallInt};
use geo_core::schema::Column;
use geo_core::transitions::verification as rules;
use geo_core::{ReplicableDescriptor, VerificationMode};

use super::{EventKind, PrimaryError, insert_event_if_enabled, q};
use crate::db::{AsDbConn, with_conn};
use crate::sql::{Sql, Table};

/// The verification table of `d` (states table or model table), if it verifies.
fn table(d: &'static ReplicableDescriptor) -> Option<Table> {
    d.tables.verification.map(|(name, key)| Table {
        name,
        key,
        row_key: key,
    })
}

/// A record claimed for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The model id.
    pub id: i64,
    /// `verification_started_at` written by the claim (the compare-and-set token).
    pub started_at: DateTime<Utc>,
}

/// Marks a record's verification `pending` (GitLab's `verification_pending!`,
/// [`rules::pending`]). Creates the states row when verification is kept in a separate table.
pub fn mark_verification_pending(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    model_record_id: i64,
) -> Result<(), PrimaryError> {
    let Some(t) = table(d) else { return Ok(()) };
    let change = rules::pending();
    let ids = [model_record_id];
    match d.verification {
        VerificationMode::Separate => t.upsert(conn, &change, &ids).map(drop),
        VerificationMode::Inline => t
            .apply(conn, &change, Some(&ids), &|_, _| Utc::now())
            .map(drop),
        VerificationMode::None => Ok(()),
    }
    .map_err(q(change.name, d))
}

/// Atomically claims up to `limit` records for verification ([`rules::claims`]): `pending`
/// first (never verified first), then `failed` whose retry is due. On PostgreSQL with `FOR
/// UPDATE SKIP LOCKED`, so concurrent workers claim disjoint rows.
pub fn claim_verification_batch(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>, PrimaryError> {
    let Some(t) = table(d) else {
        return Ok(Vec::new());
    };
    let ids = t
        .claim(conn, &rules::claims(now), limit)
        .map_err(q("claiming a verification batch", d))?;
    Ok(ids
        .into_iter()
        .map(|id| Claimed {
            id,
            started_at: now,
        })
        .collect())
}

/// Records a successful checksum for a claimed record — only while the row is still our claim
/// ([`rules::succeeded`]); a record changed meanwhile stays pending. Publishes
/// `checksum_succeeded` in the same transaction, and after the commit wakes waiting event
/// feeds ([`crate::notify::events_committed`]). Returns whether the row was updated.
pub fn record_verification_success(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    claim: &Claimed,
    checksum: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, PrimaryError> {
    let Some(t) = table(d) else { return Ok(false) };
    let change = rules::succeeded(claim.started_at, checksum, now);
    let payload =
        serde_json::json!({"model_record_id": claim.id, "checksum": hex::encode(checksum)});
    let published = with_conn!(conn, c => crate::db::WriteTransaction::write_transaction::<_, PrimaryError, _>(c, |c| {
        let done = t
            .apply(c, &change, Some(&[claim.id]), &|_, _| now)
            .map_err(q(change.name, d))?;
        if !done.is_empty() {
            insert_event_if_enabled(c, d, EventKind::ChecksumSucceeded, claim.id, &payload, now)?;
        }
        Ok(!done.is_empty())
    }))?;
    if published {
        // Committed (unless the caller wrapped this in its own transaction; then the database's
        // watch sees the commit): waiting feeds read the event now.
        crate::notify::events_committed();
    }
    Ok(published)
}

/// Records a failed verification of a claimed record ([`rules::failed`]): `failed`, retry count
/// + 1, the next retry at `retry_at(count)`, the message cut to 255 characters, checksum cleared.
pub fn record_verification_failure(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    claim: &Claimed,
    message: &str,
    retry_at: impl Fn(i16) -> DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, PrimaryError> {
    let Some(t) = table(d) else { return Ok(false) };
    let change = rules::failed(claim.started_at, message, now);
    let done = t
        .apply(conn, &change, Some(&[claim.id]), &|n, _| retry_at(n))
        .map_err(q(change.name, d))?;
    Ok(!done.is_empty())
}

/// Sets `succeeded` records verified before `now - interval` back to `pending` (at most `limit`
/// rows, the oldest first), so the primary re-checksums them. GitLab: every 7 days, 1000 rows.
pub fn reverify_due(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    interval: Duration,
    limit: i64,
    now: DateTime<Utc>,
) -> Result<usize, PrimaryError> {
    let Some(t) = table(d) else { return Ok(0) };
    let claim = rules::reverify_due(now - interval);
    Ok(t.claim(conn, std::slice::from_ref(&claim), limit)
        .map_err(q(claim.change.name, d))?
        .len())
}

/// Marks rows `started` for longer than `timeout` as failed ("Verification timed out after …").
pub fn fail_verification_timeouts(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    timeout: Duration,
    retry_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, PrimaryError> {
    let Some(t) = table(d) else { return Ok(0) };
    let timeout = timeout.to_std().unwrap_or_default();
    let cutoff = geo_core::transitions::timeout_cutoff(now, timeout);
    let change = rules::timed_out(cutoff, timeout, retry_at, true);
    Ok(t.apply(conn, &change, None, &|_, _| now)
        .map_err(q(change.name, d))?
        .len())
}

/// Creates missing `<name>_states` rows (verification pending) for model records that have
/// none, at most `limit` at a time — records inserted without `publish_created` still get
/// verified. Returns how many were created.
pub fn backfill_verification_states(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
    limit: i64,
) -> Result<usize, PrimaryError> {
    if d.verification != VerificationMode::Separate {
        return Ok(0);
    }
    let Some((st, k)) = d.tables.verification else {
        return Ok(0);
    };
    let (m, id) = (d.tables.model, d.tables.model_id);
    let mut sql = Sql::new();
    sql.push("INSERT INTO ").ident(st).push(" (").ident(k);
    sql.push(", ").ident(Column::VerificationState.name());
    sql.push(") SELECT m.").ident(id);
    sql.push(", ")
        .int(i64::from(geo_core::VerificationState::Pending.as_i16()));
    sql.push(" FROM ")
        .ident(m)
        .push(" m WHERE NOT EXISTS (SELECT 1 FROM ");
    sql.ident(st)
        .push(" s WHERE s.")
        .ident(k)
        .push(" = m.")
        .ident(id);
    sql.push(") ORDER BY m.")
        .ident(id)
        .push(" LIMIT ")
        .bind_i64(limit);
    sql.execute(conn)
        .map_err(q("backfilling verification states", d))
}

/// Verification-state rows grouped by state: `(state, count)`.
pub fn verification_groups(
    conn: &mut impl AsDbConn,
    d: &'static ReplicableDescriptor,
) -> Result<Vec<(i16, u64)>, PrimaryError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SmallInt)]
        state: i16,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let Some((table, _)) = d.tables.verification else {
        return Ok(Vec::new());
    };
    let mut sql = Sql::new();
    let vstate = Column::VerificationState.name();
    sql.push("SELECT ").ident(vstate);
    sql.push(" AS state, CAST(COUNT(*) AS BIGINT) AS n FROM ")
        .ident(table);
    sql.push(" GROUP BY ").ident(vstate);
    let rows: Vec<Row> = sql
        .load(conn)
        .map_err(q("counting verification states", d))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.state, r.n.max(0) as u64))
        .collect())
}
