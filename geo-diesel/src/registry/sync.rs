//! Replication: events marking rows pending, the backfill's inserts and deletes, claims, and
//! recording what a download did.

use super::*;

impl Registry {
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

    /// Claims up to `limit` rows for `work` ([`rules::claims`] for a sync: never-synced
    /// first, then failed with a due retry, becoming `started` with `last_synced_at = now`;
    /// [`rules::verification_claims`] for secondary verification). Returns their model ids.
    pub fn claim(
        &self,
        conn: &mut impl AsDbConn,
        work: Work,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, RegistryError> {
        let (claims, what) = claims_for(work, now);
        self.table
            .claim(conn, &claims, limit)
            .map_err(self.err(what))
    }

    /// The backend's plans of the statements [`Registry::claim`] runs for `work`, one per claim
    /// in order ([`crate::sql::Sql::explain`]), to check that they read the indexes meant for
    /// them.
    pub fn explain_claims(
        &self,
        conn: &mut impl AsDbConn,
        work: Work,
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<String>>, RegistryError> {
        claims_for(work, now)
            .0
            .iter()
            .map(|c| {
                self.table
                    .claim_sql(c, 100)
                    .explain(conn)
                    .map_err(self.err("explaining a claim"))
            })
            .collect()
    }

    /// [`Registry::claim`] by the secondary process `owner` (its `geo_secondary_workers` id):
    /// the claimed rows record `claimed_by = owner` ([`rules::owned_by`]), so they return to
    /// `pending` when the process stops ([`Registry::release_owned`]).
    pub fn claim_as(
        &self,
        conn: &mut impl AsDbConn,
        work: Work,
        limit: i64,
        now: DateTime<Utc>,
        owner: &str,
    ) -> Result<Vec<i64>, RegistryError> {
        let (claims, what) = claims_for(work, now);
        self.table
            .claim(conn, &rules::owned_by(claims, owner), limit)
            .map_err(self.err(what))
    }

    /// Returns the claims of the process `owner` (stopped, or silent longer than the lease) to
    /// `pending`: its syncs ([`rules::release_owned_syncs`]) and its verifications
    /// ([`rules::release_owned_verifications`]). Returns how many rows.
    pub fn release_owned(
        &self,
        conn: &mut impl AsDbConn,
        owner: &str,
    ) -> Result<usize, RegistryError> {
        let a = self
            .apply(conn, &rules::release_owned_syncs(owner), None)?
            .len();
        let b = self
            .apply(conn, &rules::release_owned_verifications(owner), None)?
            .len();
        Ok(a + b)
    }

    /// Returns rows `ids` claimed at `claimed_at` whose outcome could not be recorded to
    /// `pending` ([`rules::release_claimed`]). Returns how many.
    pub fn release_claimed(
        &self,
        conn: &mut impl AsDbConn,
        ids: &[i64],
        claimed_at: DateTime<Utc>,
    ) -> Result<usize, RegistryError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .apply(conn, &rules::release_claimed(claimed_at), Some(ids))?
            .len())
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
    /// [`Registry::claim`] with [`Work::Sync`]): only while the row is `started` with that claim token. When an
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

    /// Rows `started` for `work` longer than `timeout` fail ("Sync timed out after …", "Verification
    /// timed out after …") with a retry count of 1 and `retry_at` ([`rules::sync_timed_out`],
    /// [`rules::verification_timed_out`]); with `ids`, only those of these rows.
    pub fn fail_timeouts(
        &self,
        conn: &mut impl AsDbConn,
        work: Work,
        timeout: Duration,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
        ids: Option<&[i64]>,
    ) -> Result<usize, RegistryError> {
        let timeout = timeout.to_std().unwrap_or_default();
        let cutoff = geo_core::transitions::timeout_cutoff(now, timeout);
        let change = match work {
            Work::Sync => {
                let message = geo_core::transitions::sync_timeout_message(timeout);
                rules::sync_timed_out(cutoff, &message, retry_at)
            }
            Work::Verification => rules::verification_timed_out(cutoff, timeout, retry_at),
        };
        Ok(self.apply(conn, &change, ids)?.len())
    }

    /// Moves every row left `started` (sync or verification) back to `pending`, whoever claimed
    /// it: only right when no other process uses this tracking database (see
    /// [`Registry::release_owned`] for one process's claims).
    pub fn reclaim_started(&self, conn: &mut impl AsDbConn) -> Result<usize, RegistryError> {
        let a = self.apply(conn, &rules::reclaim_syncs(), None)?.len();
        let b = self
            .apply(conn, &rules::release_verification(), None)?
            .len();
        Ok(a + b)
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
}

/// The claims of `work` ([`rules::claims`], [`rules::verification_claims`]) and what they do,
/// for errors.
fn claims_for(work: Work, now: DateTime<Utc>) -> ([geo_core::transitions::Claim; 2], &'static str) {
    match work {
        Work::Sync => (rules::claims(now), "claiming rows to sync"),
        Work::Verification => (rules::verification_claims(now), "claiming rows to verify"),
    }
}
