//! The secondary's registries: one [`Registry`] handle per replicable, whose methods run
//! geo-core's rules ([`geo_core::transitions::registry`]) against its `<name>_registry` table
//! in the tracking database. Every state change is one conditional statement built by
//! [`crate::sql::Table`]; this module decides only which rule applies and to which rows.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, SmallInt, Text};
use geo_core::transitions::registry as rules;
use geo_core::transitions::{Datum, SyncFailure};
use geo_core::{BackoffCap, ReplicableDescriptor, ReplicationState, VerificationState};

use crate::db::AsDbConn;
use crate::sql::{IdRow, Sql, Table};

/// A registry query failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} in {registry}: {source}")]
#[non_exhaustive]
pub struct RegistryError {
    /// What was being done.
    pub what: &'static str,
    /// The registry table.
    pub registry: &'static str,
    /// The database error.
    #[source]
    pub source: diesel::result::Error,
}

impl From<RegistryError> for diesel::result::Error {
    fn from(e: RegistryError) -> Self {
        e.source
    }
}

/// The outcome of one download, to be recorded on its registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The file is in place. `local` is the checksum computed while writing it; `primary` the
    /// primary's checksum if the primary has verified the record (then they matched).
    Synced {
        /// Checksum of the file written.
        local: Vec<u8>,
        /// The primary's checksum, when known.
        primary: Option<Vec<u8>>,
    },
    /// The sync failed.
    Failed {
        /// `last_sync_failure` (cut to 255 characters).
        message: String,
        /// The file is missing on the primary (backoff cap 4 h).
        missing_on_primary: bool,
    },
}

/// The result of re-hashing a synced file on a secondary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The local checksum equals the primary's.
    Matched(Vec<u8>),
    /// The primary has not verified the record yet: verification `disabled` until its
    /// `checksum_succeeded` event arrives.
    PrimaryNotVerified,
    /// The local file differs from the primary's: record the mismatch and resync with backoff.
    Mismatch(Vec<u8>),
    /// The file could not be read (e.g. it is gone): verification failed, and the row is resynced.
    Error(String),
}

/// One successful download, for [`Registry::record_synced_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedRow {
    /// The model id.
    pub id: i64,
    /// Checksum of the file written.
    pub local: Vec<u8>,
    /// The primary's checksum, when known (then they matched).
    pub primary: Option<Vec<u8>>,
    /// Where the file was written.
    pub path: String,
}

/// Counts of one registry by state, from one grouped query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryCounts {
    /// All rows.
    pub registry: i64,
    /// `pending`.
    pub pending: i64,
    /// `started`.
    pub started: i64,
    /// `synced`.
    pub synced: i64,
    /// `failed`.
    pub failed: i64,
    /// Rows whose verification is not `disabled`.
    pub verification_total: i64,
    /// Synced rows with verification `succeeded`.
    pub verified: i64,
    /// Rows with verification `failed`.
    pub verification_failed: i64,
    /// Rows with `missing_on_primary`.
    pub missing_on_primary: i64,
}

/// The registry of one replicable on a secondary: knows its descriptor and table once.
#[derive(Debug, Clone, Copy)]
pub struct Registry {
    d: &'static ReplicableDescriptor,
    table: Table,
}

fn retry_for_sync(
    retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
) -> impl Fn(i16, BackoffCap) -> DateTime<Utc> + '_ {
    move |n, cap| retry_at(n, cap == BackoffCap::MissingOnPrimary)
}

impl Registry {
    /// The registry of `d`.
    pub const fn of(d: &'static ReplicableDescriptor) -> Self {
        Registry {
            d,
            table: Table {
                name: d.tables.registry,
                key: d.tables.registry_model_id,
                row_key: "id",
            },
        }
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &'static ReplicableDescriptor {
        self.d
    }

    /// The table the rules run against.
    pub fn table(&self) -> Table {
        self.table
    }

    fn err(&self, what: &'static str) -> impl FnOnce(diesel::result::Error) -> RegistryError {
        let registry = self.d.tables.registry;
        move |source| RegistryError {
            what,
            registry,
            source,
        }
    }

    fn apply(
        &self,
        conn: &mut impl AsDbConn,
        change: &geo_core::Change,
        ids: Option<&[i64]>,
    ) -> Result<Vec<i64>, RegistryError> {
        self.table
            .apply(conn, change, ids, &|_, _| Utc::now())
            .map_err(self.err(change.name))
    }

    /// Creates registry rows for `ids` as `pending`, or starts existing rows over as `pending`
    /// (an `updated` event); see [`rules::changed_on_primary`]. Uses the system clock.
    pub fn upsert_pending(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<usize, RegistryError> {
        self.upsert_pending_at(conn, ids, Utc::now())
    }

    /// [`Registry::upsert_pending`] at time `now` (the new claim token of in-flight rows).
    pub fn upsert_pending_at(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<usize, RegistryError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let change = rules::changed_on_primary(now);
        self.table
            .upsert(conn, &change, &ids)
            .map_err(self.err(change.name))
    }

    /// Inserts registry rows for `ids` that have none (the backfill); existing rows are
    /// untouched. One bound parameter per 50,000 ids: a JSON array expanded by `json_each` on
    /// SQLite, a `bigint[]` expanded by `unnest` on PostgreSQL.
    pub fn insert_missing(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<usize, RegistryError> {
        let (t, k) = (self.table.name, self.table.key);
        let mut n = 0;
        for chunk in ids.chunks(50_000) {
            let mut sql = Sql::new();
            sql.push("INSERT INTO ")
                .ident(t)
                .push(" (")
                .ident(k)
                .push(") ");
            sql.id_set(chunk).push(" WHERE true ON CONFLICT (").ident(k);
            sql.push(") DO NOTHING");
            n += sql
                .execute(conn)
                .map_err(self.err("inserting missing rows"))?;
        }
        Ok(n)
    }

    /// Deletes the registry rows of `ids`.
    pub fn delete_rows(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<usize, RegistryError> {
        let mut n = 0;
        for chunk in ids.chunks(crate::sql::CHUNK) {
            let mut sql = Sql::new();
            sql.push("DELETE FROM ")
                .ident(self.table.name)
                .push(" WHERE ")
                .ident(self.table.key)
                .push(" IN (")
                .ints(chunk.iter().copied())
                .push(")");
            n += sql.execute(conn).map_err(self.err("deleting rows"))?;
        }
        Ok(n)
    }

    /// The model ids tracked in `[from, to]`, ascending.
    pub fn tracked_ids(
        &self,
        conn: &mut impl AsDbConn,
        from: i64,
        to: i64,
    ) -> Result<Vec<i64>, RegistryError> {
        let k = self.table.key;
        let mut sql = Sql::new();
        sql.push("SELECT ")
            .ident(k)
            .push(" AS id FROM ")
            .ident(self.table.name);
        sql.push(" WHERE ")
            .ident(k)
            .push(" BETWEEN ")
            .bind_i64(from);
        sql.push(" AND ").bind_i64(to).push(" ORDER BY ").ident(k);
        let rows: Vec<IdRow> = sql.load(conn).map_err(self.err("reading tracked ids"))?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// The largest tracked model id.
    pub fn max_tracked_id(&self, conn: &mut impl AsDbConn) -> Result<Option<i64>, RegistryError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
            n: Option<i64>,
        }
        let mut sql = Sql::new();
        sql.push("SELECT MAX(")
            .ident(self.table.key)
            .push(") AS n FROM ");
        sql.ident(self.table.name);
        let rows: Vec<Row> = sql.load(conn).map_err(self.err("reading the max id"))?;
        Ok(rows.first().and_then(|r| r.n))
    }

    /// After a primary `checksum_succeeded`: see [`Registry::on_checksum_succeeded_batch`].
    pub fn on_checksum_succeeded(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        checksum: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), RegistryError> {
        self.on_checksum_succeeded_batch(conn, &[(id, checksum.map(<[u8]>::to_vec))], now)
    }

    /// The primary's `checksum_succeeded` for many records: rows whose stored checksum equals the
    /// primary's are verified at once ([`rules::verified_by_event`]); every other synced row
    /// becomes verification `pending` ([`rules::reverify_after_event`]). Returns
    /// (verified, pending).
    pub fn on_checksum_succeeded_batch(
        &self,
        conn: &mut impl AsDbConn,
        rows: &[(i64, Option<Vec<u8>>)],
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), RegistryError> {
        let with_sum: Vec<(i64, Vec<Datum>)> = rows
            .iter()
            .filter_map(|(id, s)| s.as_ref().map(|s| (*id, vec![Datum::Bytes(s.clone())])))
            .collect();
        let change = rules::verified_by_event(now);
        let verified: BTreeSet<i64> = self
            .table
            .apply_batch(conn, &change, &with_sum)
            .map_err(self.err(change.name))?
            .into_iter()
            .collect();
        let rest: Vec<i64> = rows
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !verified.contains(id))
            .collect();
        let pending = if rest.is_empty() {
            0
        } else {
            self.apply(conn, &rules::reverify_after_event(), Some(&rest))?
                .len()
        };
        Ok((verified.len(), pending))
    }

    /// Claims up to `limit` rows to sync ([`rules::claims`]): never-synced first, then failed
    /// with a due retry. They become `started` with `last_synced_at = now`.
    pub fn claim_sync(
        &self,
        conn: &mut impl AsDbConn,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, RegistryError> {
        self.table
            .claim(conn, &rules::claims(now), limit)
            .map_err(self.err("claiming rows to sync"))
    }

    /// Moves specific rows to `started` if they are `pending` or `failed`. Returns the ids
    /// claimed.
    pub fn claim_ids(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, RegistryError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.apply(conn, &rules::claim_now(now), Some(ids))
    }

    /// Records the outcome of a sync claimed at `claimed_at` (the `now` given to
    /// [`Registry::claim_sync`]): only while the row is `started` with that claim token. When an
    /// event moved the token during the download, nothing is recorded and the row goes back to
    /// `pending` ([`rules::requeue_changed`]). `retry_at(n, missing_on_primary)` gives the next
    /// retry time for the n-th failure. Returns whether the outcome was recorded.
    pub fn record_sync_claimed(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        claimed_at: DateTime<Utc>,
        outcome: &SyncOutcome,
        retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let recorded = self.record(conn, id, Some(claimed_at), outcome, retry_at, now)?;
        if !recorded {
            self.apply(conn, &rules::requeue_changed(claimed_at), Some(&[id]))?;
        }
        Ok(recorded)
    }

    /// Records the outcome of a sync only if the row is still `started`, whoever claimed it
    /// (no claim-token check; prefer [`Registry::record_sync_claimed`]). Returns whether the
    /// row changed.
    pub fn record_sync(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        outcome: &SyncOutcome,
        retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.record(conn, id, None, outcome, retry_at, now)
    }

    fn record(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        claimed_at: Option<DateTime<Utc>>,
        outcome: &SyncOutcome,
        retry_at: &dyn Fn(i16, bool) -> DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        Ok(match outcome {
            SyncOutcome::Synced { local, primary } => {
                let at_once = primary.as_deref() == Some(local.as_slice());
                let change = rules::synced(claimed_at, at_once, self.d.verifies(), false, now);
                let row = [(id, vec![Datum::Bytes(local.clone())])];
                !self
                    .table
                    .apply_batch(conn, &change, &row)
                    .map_err(self.err(change.name))?
                    .is_empty()
            }
            SyncOutcome::Failed {
                message,
                missing_on_primary,
            } => {
                let failure =
                    SyncFailure::new(message.clone()).missing_on_primary(*missing_on_primary);
                let change = rules::sync_failed(claimed_at, &failure);
                !self
                    .table
                    .apply(conn, &change, Some(&[id]), &retry_for_sync(retry_at))
                    .map_err(self.err(change.name))?
                    .is_empty()
            }
        })
    }

    /// Records many successful downloads claimed at `claimed_at` in one statement per 200 rows,
    /// with the effects of [`Registry::record_sync_claimed`] plus the blob path. Returns the ids
    /// recorded; for the others the caller falls back to [`Registry::record_sync_claimed`].
    pub fn record_synced_batch(
        &self,
        conn: &mut impl AsDbConn,
        claimed_at: DateTime<Utc>,
        rows: &[SyncedRow],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, RegistryError> {
        let mut done = Vec::with_capacity(rows.len());
        for at_once in [true, false] {
            let group: Vec<(i64, Vec<Datum>)> = rows
                .iter()
                .filter(|r| (r.primary.as_deref() == Some(r.local.as_slice())) == at_once)
                .map(|r| {
                    (
                        r.id,
                        vec![Datum::Bytes(r.local.clone()), Datum::Text(r.path.clone())],
                    )
                })
                .collect();
            if group.is_empty() {
                continue;
            }
            let change = rules::synced(Some(claimed_at), at_once, self.d.verifies(), true, now);
            done.extend(
                self.table
                    .apply_batch(conn, &change, &group)
                    .map_err(self.err(change.name))?,
            );
        }
        Ok(done)
    }

    /// Rows `started` for longer than `timeout` become failed ("Sync timed out after …") with
    /// `retry_count = 1` and `retry_at = retry_at`.
    pub fn fail_sync_timeouts(
        &self,
        conn: &mut impl AsDbConn,
        timeout: Duration,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize, RegistryError> {
        let timeout = timeout.to_std().unwrap_or_default();
        let message = geo_core::transitions::sync_timeout_message(timeout);
        let cutoff = geo_core::transitions::timeout_cutoff(now, timeout);
        let change = rules::sync_timed_out(cutoff, &message, retry_at);
        Ok(self.apply(conn, &change, None)?.len())
    }

    /// Claims up to `limit` synced rows for secondary verification ([`rules::verification_claims`]).
    pub fn claim_verification(
        &self,
        conn: &mut impl AsDbConn,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, RegistryError> {
        self.table
            .claim(conn, &rules::verification_claims(now), limit)
            .map_err(self.err("claiming rows to verify"))
    }

    /// Records a secondary verification result on a synced row being verified. A mismatch or an
    /// unreadable file also moves the row to replication `failed` with `retry_count =
    /// verification_retry_count`, so it is downloaded again with growing backoff.
    pub fn record_verification(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        outcome: &VerifyOutcome,
        retry_at: &dyn Fn(i16) -> DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let change = match outcome {
            VerifyOutcome::Matched(sum) => rules::verification_succeeded(sum, now),
            VerifyOutcome::PrimaryNotVerified => rules::verification_disabled(),
            VerifyOutcome::Mismatch(sum) => {
                rules::verification_failed(&rules::VerificationFailure::Mismatch(sum.clone()), now)
            }
            VerifyOutcome::Error(e) => {
                rules::verification_failed(&rules::VerificationFailure::Error(e.clone()), now)
            }
        };
        let changed = self
            .table
            .apply(conn, &change, Some(&[id]), &|n, _| retry_at(n))
            .map_err(self.err(change.name))?;
        Ok(!changed.is_empty())
    }

    /// Rows verification-`started` for longer than `timeout` become verification failed.
    pub fn fail_verification_timeouts(
        &self,
        conn: &mut impl AsDbConn,
        timeout: Duration,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize, RegistryError> {
        let timeout = timeout.to_std().unwrap_or_default();
        let cutoff = geo_core::transitions::timeout_cutoff(now, timeout);
        let change = rules::verification_timed_out(cutoff, timeout, retry_at);
        Ok(self.apply(conn, &change, None)?.len())
    }

    /// Manual resync: rows not `started` become `pending` (all rows when `ids` is `None`).
    pub fn resync(
        &self,
        conn: &mut impl AsDbConn,
        ids: Option<&[i64]>,
    ) -> Result<usize, RegistryError> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        Ok(self.apply(conn, &rules::resync(), ids)?.len())
    }

    /// Manual reverify: synced rows become verification `pending`.
    pub fn reverify(
        &self,
        conn: &mut impl AsDbConn,
        ids: Option<&[i64]>,
    ) -> Result<usize, RegistryError> {
        if ids.is_some_and(<[i64]>::is_empty) {
            return Ok(0);
        }
        Ok(self.apply(conn, &rules::reverify(), ids)?.len())
    }

    /// Row counts grouped by `(state, verification_state)` (one grouped query), as
    /// [`geo_core::status::ReplicableStatus::secondary`] takes them.
    pub fn state_groups(
        &self,
        conn: &mut impl AsDbConn,
    ) -> Result<Vec<(i16, i16, u64)>, RegistryError> {
        Ok(self
            .groups(conn)?
            .into_iter()
            .map(|g| (g.state, g.verification_state, g.n.max(0) as u64))
            .collect())
    }

    fn groups(&self, conn: &mut impl AsDbConn) -> Result<Vec<Group>, RegistryError> {
        let mut sql = Sql::new();
        sql.push("SELECT state, verification_state, CAST(SUM(CASE WHEN missing_on_primary THEN 1 ELSE 0 END) AS BIGINT) AS missing, CAST(COUNT(*) AS BIGINT) AS n FROM ");
        sql.ident(self.table.name)
            .push(" GROUP BY state, verification_state");
        sql.load(conn).map_err(self.err("counting"))
    }

    /// Counts this registry's rows by state.
    pub fn counts(&self, conn: &mut impl AsDbConn) -> Result<RegistryCounts, RegistryError> {
        let mut out = RegistryCounts::default();
        for g in self.groups(conn)? {
            let (Ok(state), Ok(vstate)) = (
                ReplicationState::from_i16(g.state),
                VerificationState::from_i16(g.verification_state),
            ) else {
                out.registry += g.n;
                continue;
            };
            out.registry += g.n;
            out.missing_on_primary += g.missing;
            match state {
                ReplicationState::Pending => out.pending += g.n,
                ReplicationState::Started => out.started += g.n,
                ReplicationState::Synced => out.synced += g.n,
                ReplicationState::Failed => out.failed += g.n,
            }
            if vstate != VerificationState::Disabled {
                out.verification_total += g.n;
            }
            if state == ReplicationState::Synced && vstate == VerificationState::Succeeded {
                out.verified += g.n;
            }
            if vstate == VerificationState::Failed {
                out.verification_failed += g.n;
            }
        }
        Ok(out)
    }

    /// Moves rows left `started` (sync or verification) back to `pending`, for a restart of
    /// the only secondary process on this tracking database.
    pub fn reclaim_started(&self, conn: &mut impl AsDbConn) -> Result<usize, RegistryError> {
        let a = self.apply(conn, &rules::reclaim_syncs(), None)?.len();
        let b = self
            .apply(conn, &rules::release_verification(), None)?
            .len();
        Ok(a + b)
    }

    /// Releases rows this worker claimed for verification but could not process.
    pub fn release_verification(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<usize, RegistryError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .apply(conn, &rules::release_verification(), Some(ids))?
            .len())
    }

    /// Stores where a successful sync wrote the record's file.
    pub fn set_blob_path(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        path: &str,
    ) -> Result<usize, RegistryError> {
        Ok(self
            .apply(conn, &rules::set_blob_path(path), Some(&[id]))?
            .len())
    }

    /// The stored blob paths of `ids` (rows without one are left out).
    pub fn blob_paths(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
    ) -> Result<Vec<(i64, String)>, RegistryError> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            path: String,
        }
        let mut out = Vec::new();
        for chunk in ids.chunks(crate::sql::CHUNK) {
            let mut sql = Sql::new();
            sql.push("SELECT ")
                .ident(self.table.key)
                .push(" AS id, blob_path AS path FROM ");
            sql.ident(self.table.name)
                .push(" WHERE ")
                .ident(self.table.key);
            sql.push(" IN (").ints(chunk.iter().copied());
            sql.push(") AND blob_path IS NOT NULL");
            let rows: Vec<Row> = sql.load(conn).map_err(self.err("reading blob paths"))?;
            out.extend(rows.into_iter().map(|r| (r.id, r.path)));
        }
        Ok(out)
    }
}

#[derive(QueryableByName)]
struct Group {
    #[diesel(sql_type = SmallInt)]
    state: i16,
    #[diesel(sql_type = SmallInt)]
    verification_state: i16,
    #[diesel(sql_type = BigInt)]
    missing: i64,
    #[diesel(sql_type = BigInt)]
    n: i64,
}
