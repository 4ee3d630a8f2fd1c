//! The HTTP server of a site (axum on tokio).
//!
//! A primary serves everything an HTTP secondary's [`PrimarySource`] needs, read through any
//! [`PrimarySource`] on its side (in production geo-diesel's `DirectSource` over its database
//! and blob store). Blobs are streamed in [`CHUNK`]-sized pieces, each read by a short blocking task
//! when the client has taken the one before, so a 5 GiB blob costs the same memory as a 5 KiB one. A secondary serves
//! its own status and metrics. Every `/api/geo/` endpoint is authenticated
//! ([`crate::auth`]); `/metrics` is open, as Prometheus scrapes it, on its own listener
//! (`--metrics-listen`) or on a loopback main listener ([`ServeOptions`]).
//!
//! Each concern is written once: authorization and parameter checks are extractors
//! ([`extract`]), every error answer is an [`ApiError`] (every refused token the same `401`
//! body), one middleware counts and times every request by its matched route and holds the
//! caller's per-access-key slot until the response body is sent, and the listener's timeouts
//! and connection cap live in the accept loop ([`ServerHandle`]). `GET /api/geo/status` and the
//! gauges of `/metrics` read one cached status ([`NodeState::with_status_ttl`]). Handlers, grouped by area (`retrieve`, `events`,
//! `records`, `status`), return `Result<Json<T>, ApiError>` with the typed bodies of
//! [`crate::api`]; database and file calls run on tokio's blocking pool (`spawn_blocking`).
//!
//! [`PrimarySource`]: geo_diesel::geo_core::source::PrimarySource

mod accept;
mod batch;
mod conn;
mod error;
mod events;
pub mod extract;
mod middleware;
mod pruning;
mod range;
mod records;
mod retrieve;
mod selective;
mod serve;
mod state;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use serde::Deserialize;

use crate::api;

pub use error::ApiError;
pub use retrieve::CHUNK;
pub use serve::{ServeError, ServeOptions, ServerHandle};
pub use state::{
    DEFAULT_MAX_REQUESTS_PER_KEY, DEFAULT_STATUS_TTL, NodeState, PrimaryService, SecondaryService,
};
pub(crate) use status::cached as cached_status;
pub use status::collect_status;

/// The routes of a site and the `endpoint` label of their metrics.
pub mod route {
    /// `GET`: one blob, streamed.
    pub const RETRIEVE: &str = "/api/geo/retrieve/{replicable}/{id}";
    /// `GET`: one record's blob path.
    pub const BLOB_PATH: &str = "/api/geo/blob_path/{replicable}/{id}";
    /// `GET`: events after an id, or by ids.
    pub const EVENTS: &str = "/api/geo/events";
    /// `GET`: the highest event id.
    pub const EVENTS_LAST: &str = "/api/geo/events/last";
    /// `GET`: the primary database's identity and event-id high-water mark.
    pub const IDENTITY: &str = "/api/geo/identity";
    /// `GET`: record ids in a range.
    pub const IDS: &str = "/api/geo/ids/{replicable}";
    /// `GET`: the primary's checksums of records.
    pub const CHECKSUMS: &str = "/api/geo/checksums/{replicable}";
    /// `GET`: many small blobs in one answer.
    pub const RETRIEVE_BATCH: &str = "/api/geo/retrieve_batch/{replicable}";
    /// `GET`: the site's status.
    pub const STATUS: &str = "/api/geo/status";
    /// `GET`: Prometheus metrics.
    pub const METRICS: &str = "/metrics";
    /// `GET`: the admin page ([`crate::admin`]).
    pub const ADMIN_PAGE: &str = "/admin/geo";
    /// `GET`: the admin page's embedded script and style.
    pub const ADMIN_ASSET: &str = "/admin/geo/assets/{file}";
    /// `POST`: the admin page's sign-in form (`token=…`).
    pub const ADMIN_SESSION: &str = "/admin/geo/session";
    /// `POST`: signs the admin page out.
    pub const ADMIN_SESSION_DELETE: &str = "/admin/geo/session/delete";
    /// `GET`: the admin page's session.
    pub const ADMIN_API_SESSION: &str = "/admin/geo/api/session";
    /// `GET`: the replicable types the admin page shows.
    pub const ADMIN_API_TYPES: &str = "/admin/geo/api/types";
    /// `GET`: the site's status, for an operator.
    pub const ADMIN_API_STATUS: &str = "/admin/geo/api/status";
    /// `POST`: GraphQL for operators ([`crate::graphql`]).
    pub const GRAPHQL: &str = "/api/graphql";

    /// Every route with its `endpoint` label (`geo_http_requests_total{endpoint}`).
    pub const ALL: [(&str, &str); 18] = [
        (RETRIEVE, "retrieve"),
        (BLOB_PATH, "blob_path"),
        (EVENTS, "events"),
        (EVENTS_LAST, "events_last"),
        (IDENTITY, "identity"),
        (IDS, "ids"),
        (CHECKSUMS, "checksums"),
        (RETRIEVE_BATCH, "retrieve_batch"),
        (STATUS, "status"),
        (METRICS, "metrics"),
        (GRAPHQL, "graphql"),
        (ADMIN_PAGE, "admin_page"),
        (ADMIN_ASSET, "admin_asset"),
        (ADMIN_SESSION, "admin_session"),
        (ADMIN_SESSION_DELETE, "admin_session_delete"),
        (ADMIN_API_SESSION, "admin_api_session"),
        (ADMIN_API_TYPES, "admin_api_types"),
        (ADMIN_API_STATUS, "admin_api_status"),
    ];

    /// The route and endpoint label of a matched route pattern.
    pub(crate) fn known(matched: &str) -> Option<(&'static str, &'static str)> {
        ALL.iter().copied().find(|(r, _)| *r == matched)
    }
}

/// The router of a site, `/metrics` included.
pub fn router(state: Arc<NodeState>) -> Router {
    router_with(state, true)
}

/// The router of a site's main listener; `/metrics` only when `metrics` (else `404` there).
pub(crate) fn router_with(state: Arc<NodeState>, metrics: bool) -> Router {
    let mut routes = Router::new()
        .route(route::RETRIEVE, get(retrieve::retrieve))
        .route(route::BLOB_PATH, get(records::blob_path))
        .route(route::EVENTS, get(events::events))
        .route(route::EVENTS_LAST, get(events::last_event))
        .route(route::IDENTITY, get(events::identity))
        .route(route::IDS, get(records::ids))
        .route(route::CHECKSUMS, get(records::checksums))
        .route(route::RETRIEVE_BATCH, get(batch::retrieve_batch))
        .route(route::STATUS, get(status::status))
        .route(route::GRAPHQL, axum::routing::post(crate::graphql::handle))
        .merge(crate::admin::routes());
    if metrics {
        routes = routes.route(route::METRICS, get(status::metrics));
    }
    finish(routes, state)
}

/// The router of the metrics listener: `GET /metrics` and nothing else.
pub(crate) fn metrics_router(state: Arc<NodeState>) -> Router {
    finish(
        Router::new().route(route::METRICS, get(status::metrics)),
        state,
    )
}

/// The middleware every route has, the fallback and the state.
fn finish(routes: Router<Arc<NodeState>>, state: Arc<NodeState>) -> Router {
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::track,
        ))
        .fallback(|| async { ApiError::no_such_endpoint() })
        .with_state(state)
}

/// Runs a blocking closure on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// Query of `/api/geo/checksums/{replicable}` and `/api/geo/retrieve_batch/{replicable}`: a
/// comma-separated id list.
#[derive(Debug, Deserialize)]
struct IdListQuery {
    ids: Option<String>,
}

impl IdListQuery {
    /// The ids (at most [`api::MAX_IDS`]); none when the list is absent.
    fn ids(&self) -> Result<Vec<i64>, ApiError> {
        api::parse_ids(self.ids.as_deref().unwrap_or("")).map_err(ApiError::bad_request)
    }
}
