//! The event log: `events` (after an id, with the primary's identity; or by ids to fill gaps),
//! `events/last` and `identity`.

use axum::Json;
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
}

/// `GET /api/geo/events?after=ID&limit=N` (up to `N` events with `id > ID`) or `?ids=1,2,3`
/// (those that exist).
pub(super) async fn events(
    _: Authorized,
    Params(q): Params<EventsQuery>,
    Primary(service): Primary,
) -> Result<Json<EventsResponse>, ApiError> {
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
            let feed = blocking(move || Ok(source.event_feed(after, limit)?)).await?;
            (feed.events, feed.primary)
        }
    };
    Ok(Json(EventsResponse { events, primary }))
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
