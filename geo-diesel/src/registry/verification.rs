//! Verification on a secondary: the primary's `checksum_succeeded` events, secondary
//! verification's claims and results, manual resync and reverify.

use super::*;

impl Registry {
    /// After a primary `checksum_succeeded` written at `primary_at`: see
    /// [`Registry::on_checksum_succeeded_batch`].
    pub fn on_checksum_succeeded(
        &self,
        conn: &mut impl AsDbConn,
        id: i64,
        checksum: Option<&[u8]>,
        primary_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), RegistryError> {
        self.on_checksum_succeeded_batch(
            conn,
            &[(id, checksum.map(<[u8]>::to_vec))],
            primary_at,
            now,
        )
    }

    /// The primary's `checksum_succeeded` for many records, the latest written at `primary_at`:
    /// rows whose stored checksum equals the primary's are verified at once
    /// ([`rules::verified_by_event`]); every other synced row this site last verified before
    /// `primary_at` (or never) becomes verification `pending`
    /// ([`rules::reverify_after_event`]). Returns (verified, pending).
    pub fn on_checksum_succeeded_batch(
        &self,
        conn: &mut impl AsDbConn,
        rows: &[(i64, Option<Vec<u8>>)],
        primary_at: DateTime<Utc>,
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
            self.apply(conn, &rules::reverify_after_event(primary_at), Some(&rest))?
                .len()
        };
        Ok((verified.len(), pending))
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

    /// An operator's `action` on rows `ids` (all rows when `None`): [`Action::Resync`] sends
    /// rows not `started` back to `pending` ([`rules::resync`]); [`Action::Reverify`] makes synced
    /// rows not being verified verification `pending` ([`rules::reverify`]). Returns the rows
    /// changed.
    pub fn act(
        &self,
        conn: &mut impl AsDbConn,
        action: Action,
        ids: Option<&[i64]>,
    ) -> Result<usize, RegistryError> {
        let change = match action {
            Action::Resync => rules::resync(),
            Action::Reverify => rules::reverify(),
        };
        Ok(self.apply(conn, &change, ids)?.len())
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
}
