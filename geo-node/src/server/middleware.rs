//! The one metrics and tracing middleware: every answer of a known route is counted
//! (`geo_http_requests_total{endpoint,code}`) and timed
//! (`geo_http_request_duration_seconds{route,method,code}`) by its matched route, never by the
//! raw path, so `/api/geo/retrieve/widget/7` is `/api/geo/retrieve/{replicable}/{id}`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{NodeState, route};

/// Counts, times and logs one request.
pub(super) async fn track(
    State(state): State<Arc<NodeState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let known = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| route::known(p.as_str()));
    let method = request.method().clone();
    let response = next.run(request).await;
    if let Some((route, endpoint)) = known {
        let took = started.elapsed();
        let code = response.status().as_u16();
        state.metrics().request(endpoint, code);
        state
            .metrics()
            .request_duration(route, method.as_str(), code, took);
        tracing::debug!(
            route,
            method = %method,
            code,
            elapsed_ms = took.as_millis() as u64,
            "answered"
        );
    }
    response
}
