//! The event log: `events` (after an id, with the primary's identity, waiting for a commit
//! when asked to; or by ids to fill gaps), `events/last` and `identity`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use geo_diesel::geo_core::source::{EventFeed, PrimarySource};
use geo_diesel::notify::EventWatch;
use serde::Deserialize;

use super::extract::{Authorized, Params, Primary};
use super::{ApiError, blocking};
use crate::api::{self, EventsResponse, IdentityResponse, LastEventResponse};

/// Query of `/api/geo/events`.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    after: Option<i64>,
    limit: Option<usize>,
    ids: Option<String>,
    /// Milliseconds an empty `after=` answer may wait for an event (cut to
    /// [`api::MAX_EVENT_WAIT`]).
    wait: Option<u64>,
    /// The id up to which the caller needs no event (its cursor, or its lowest open gap minus
    /// one): recorded for its access key, so nothing above it is pruned.
    consumed: Option<i64>,
}

/// `GET /api/geo/events?after=ID&limit=N&wait=MS` (up to `N` events with `id > ID`; with
/// `wait`, an empty answer waits up to `MS` ms for a commit) or `?ids=1,2,3` (those that exist).
pub(super) async fn events(
    auth: Authorized,
    Params(q): Params<EventsQuery>,
    Primary(service): Primary,
) -> Result<Json<EventsResponse>, ApiError> {
    if q.ids.is_none() {
        super::pruning::record_reader(&service, &auth.key, q.consumed).await?;
    }
    let pruning = service.db.clone();
    let source = service.source;
    let (events, primary) = match q.ids {
        Some(ids) => {
            let ids = api::parse_ids(&ids).map_err(ApiError::bad_request)?;
            (
                blocking(move || Ok(source.events_by_ids(&ids)?)).await?,
                None,
            )
        }
        None => {
            let after = q.after.unwrap_or(0);
            let limit = q.limit.unwrap_or(1000).min(api::MAX_EVENTS);
            let wait = Duration::from_millis(q.wait.unwrap_or(0)).min(api::MAX_EVENT_WAIT);
            let feed = match (&service.events, wait.is_zero()) {
                (_, true) => blocking(move || Ok(source.event_feed(after, limit)?)).await?,
                (Some(watch), false) => waiting_feed(watch, source, after, limit, wait).await?,
                // A source the server cannot watch (a proxy, a test double): its own wait, on a
                // blocking thread.
                (None, false) => {
                    blocking(move || Ok(source.event_feed_wait(after, limit, wait)?)).await?
                }
            };
            // The pruning mark, read after the events: a prune that removed one of them
            // committed its mark with it.
            super::pruning::check(pruning, q.consumed.unwrap_or(after)).await?;
            (feed.events, feed.primary)
        }
    };
    Ok(Json(EventsResponse { events, primary }))
}

/// Reads the feed until it has events or `wait` has passed, awaiting the database's watch in
/// between: the blocking pool is used only for the reads, and no connection is held while
/// waiting.
async fn waiting_feed(
    watch: &EventWatch,
    source: Arc<dyn PrimarySource>,
    after: i64,
    limit: usize,
    wait: Duration,
) -> Result<EventFeed, ApiError> {
    let deadline = Instant::now() + wait;
    let mut listening = watch.listen();
    loop {
        listening.rearm();
        let s = Arc::clone(&source);
        let feed = blocking(move || Ok(s.event_feed(after, limit)?)).await?;
        let now = Instant::now();
        if !feed.events.is_empty() || now >= deadline {
            return Ok(feed);
        }
        let until = deadline.min(now + geo_diesel::notify::RECHECK);
        let _ = tokio::time::timeout_at(until.into(), listening.changed()).await;
    }
}

/// `GET /api/geo/identity`: the primary database's identity and event-id high-water mark.
pub(super) async fn identity(
    _: Authorized,
    Primary(service): Primary,
) -> Result<Json<IdentityResponse>, ApiError> {
    let source = service.source;
    let primary = blocking(move || Ok(source.primary_identity()?)).await?;
    Ok(Json(IdentityResponse { primary }))
}

/// `GET /api/geo/events/last`.
pub(super) async fn last_event(
    _: Authorized,
    Primary(service): Primary,
) -> Result<Json<LastEventResponse>, ApiError> {
    let source = service.source;
    let last_event_id = blocking(move || Ok(source.max_event_id()?)).await?;
    Ok(Json(LastEventResponse { last_event_id }))
}
