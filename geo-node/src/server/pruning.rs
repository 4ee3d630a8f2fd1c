//! What the event feed does for pruning on a primary with a local database: records how far
//! each secondary (by its access key) consumed the log, and answers `410 EVENTS_PRUNED` to a
//! reader that consumed less than what was pruned ([`geo_diesel::primary::prune`]).

use geo_diesel::db::DbPool;

use super::state::PrimaryService;
use super::{ApiError, blocking};
use crate::auth::AccessKey;

/// Records that the secondary signing with `key` read the feed, having consumed up to
/// `consumed`. A primary without a local database (a proxy, a test double) records nothing.
pub(super) async fn record_reader(
    service: &PrimaryService,
    key: &AccessKey,
    consumed: Option<i64>,
) -> Result<(), ApiError> {
    let Some(db) = service.db.clone() else {
        return Ok(());
    };
    let name = key.as_str().to_owned();
    blocking(move || {
        let mut conn = db
            .get()
            .map_err(|e| ApiError::transient("primary database pool", e))?;
        geo_diesel::primary::sites::record_secondary(&mut conn, &name, consumed, chrono::Utc::now())
            .map_err(|e| ApiError::transient("recording the secondary's position", e))
    })
    .await
}

/// `410 EVENTS_PRUNED` when the log is pruned past `consumed`.
pub(super) async fn check(db: Option<DbPool>, consumed: i64) -> Result<(), ApiError> {
    let Some(db) = db else {
        return Ok(());
    };
    let pruned = blocking(move || {
        let mut conn = db
            .get()
            .map_err(|e| ApiError::transient("primary database pool", e))?;
        geo_diesel::primary::prune::pruned_through(&mut conn)
            .map_err(|e| ApiError::transient("reading the pruning mark", e))
    })
    .await?;
    if consumed < pruned {
        return Err(ApiError::events_pruned(pruned, consumed));
    }
    Ok(())
}

/// The pruning mark (`None` before the first prune) and the secondaries the primary knows with
/// their lag behind `head`, for the status. A primary without a local database knows none.
pub(super) fn known(
    service: &PrimaryService,
    head: Option<i64>,
) -> Result<(Option<i64>, Vec<crate::api::KnownSecondaryStatus>), String> {
    let Some(db) = &service.db else {
        return Ok((None, Vec::new()));
    };
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let pruned =
        geo_diesel::primary::prune::pruned_through(&mut conn).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now();
    let known = geo_diesel::primary::sites::known_secondaries(&mut conn)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|s| crate::api::KnownSecondaryStatus::of(s, head, pruned, now))
        .collect();
    Ok(((pruned > 0).then_some(pruned), known))
}
