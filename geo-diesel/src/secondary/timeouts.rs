//! Timeouts: rows stuck in `started` fail after the configured timeouts; on start, rows an
//! earlier run left `started` are reclaimed.

use geo_core::backoff::BackoffCap;
use geo_core::replicables;

use super::{Secondary, SecondaryError};
use crate::registry::{Registry, Work};

impl Secondary {
    /// Moves rows left `started` by an earlier run back to `pending` (see
    /// [`SecondaryConfig::reclaim_on_start`](super::SecondaryConfig::reclaim_on_start)). Returns how many.
    pub fn reclaim_interrupted(&self) -> Result<usize, SecondaryError> {
        let mut conn = self.tracking.get()?;
        let mut n = 0;
        for d in replicables() {
            n += Registry::of(d).reclaim_started(&mut conn)?;
        }
        if n > 0 {
            tracing::info!(
                rows = n,
                "reclaimed syncs and verifications interrupted by the last stop"
            );
        }
        Ok(n)
    }

    /// Fails rows stuck in `started` (sync or verification) for longer than the timeouts.
    pub fn timeouts_pass(&self) -> Result<usize, SecondaryError> {
        let now = self.now();
        let retry = self.env.retry_time(now, 1, BackoffCap::Default);
        let mut conn = self.tracking.get()?;
        let mut n = 0;
        let work = [
            (Work::Sync, self.config.sync_timeout),
            (Work::Verification, self.config.verification_timeout),
        ];
        for d in replicables() {
            for (work, timeout) in work {
                n += Registry::of(d).fail_timeouts(&mut conn, work, timeout, retry, now)?;
            }
        }
        Ok(n)
    }
}
