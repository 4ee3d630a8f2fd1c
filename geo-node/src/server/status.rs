//! The site's own reports: `GET /api/geo/status` ([`NodeStatus`]) and `GET /metrics`.
//!
//! Both read one [`StatusCache`]: whatever the scrape rate, the databases (and, on a secondary,
//! the primary) are read at most once per TTL (10 s by default); concurrent requests after it
//! expired wait for one refresh rather than each running their own. `status_at` says when the
//! cached status was taken; `uptime_seconds` and the secondary's link counters are read fresh.
//! The operator's paths read a fresh status: the admin page's `/admin/geo/api/status`
//! ([`collect_status`]) and GraphQL's registry counts.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use geo_diesel::geo_core::replicables;
use geo_diesel::geo_core::status::ReplicableStatuses;

use super::extract::Authorized;
use super::{ApiError, NodeState, blocking};
use crate::api::{
    CursorStatus, HealthStatus, NodeStatus, PrimaryStatus, SecondaryStatus, SiteRole,
};

/// Most open gaps listed in a status.
const GAPS_LISTED: usize = 100;

/// `GET /api/geo/status`.
pub(super) async fn status(
    State(state): State<Arc<NodeState>>,
    _: Authorized,
) -> Result<Json<NodeStatus>, ApiError> {
    blocking(move || Ok(Json(cached_status(&state)))).await
}

/// The last status taken, read again when older than the TTL.
#[derive(Debug)]
pub(crate) struct StatusCache {
    ttl: Duration,
    last: Mutex<Option<(Instant, Arc<NodeStatus>)>>,
    /// Held while one caller refreshes; the others wait for its result.
    refresh: Mutex<()>,
}

impl StatusCache {
    /// A cache whose status is reused for `ttl`.
    pub(crate) fn new(ttl: Duration) -> Self {
        StatusCache {
            ttl,
            last: Mutex::new(None),
            refresh: Mutex::new(()),
        }
    }

    fn last(&self) -> MutexGuard<'_, Option<(Instant, Arc<NodeStatus>)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, now: Instant) -> Option<Arc<NodeStatus>> {
        self.last()
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, s)| Arc::clone(s))
    }

    /// The cached status, or `read()` when it is older than the TTL (one reader at a time;
    /// the others wait and take its result). Blocks: call it off the async workers.
    pub(crate) fn get(&self, read: impl FnOnce() -> NodeStatus) -> Arc<NodeStatus> {
        if let Some(s) = self.fresh(Instant::now()) {
            return s;
        }
        let _one = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.fresh(Instant::now()) {
            return s;
        }
        let s = Arc::new(read());
        *self.last() = Some((Instant::now(), Arc::clone(&s)));
        s
    }
}

/// The status, from the cache: what the databases said at `status_at`, with the uptime and
/// the link's counters of now.
pub(crate) fn cached_status(state: &NodeState) -> NodeStatus {
    let mut status = NodeStatus::clone(&cached(state));
    status.uptime_seconds = state.uptime().as_secs();
    if let (Some(s), Some(service)) = (status.secondary.as_mut(), state.secondary_service()) {
        s.primary_link = service.link.as_ref().map(|l| l.snapshot());
    }
    status
}

/// The cached status as taken (blocking).
pub(crate) fn cached(state: &NodeState) -> Arc<NodeStatus> {
    state.status_cache().get(|| collect_status(state))
}

/// The site's status, read now (not cached): GitLab's per-type fields for each role the site
/// plays, plus the event log position, open gaps and health. What cannot be read is named in
/// `health`.
pub fn collect_status(state: &NodeState) -> NodeStatus {
    let mut problems: Vec<String> = Vec::new();
    let primary = state.primary_service().map(|p| {
        let last_event_id = match p.source.max_event_id() {
            Ok(last) => Some(last),
            Err(e) => {
                problems.push(format!("primary event log: {e}"));
                None
            }
        };
        let replicables = match p.verifier.as_ref().map(|v| v.status()) {
            None => ReplicableStatuses::default(),
            Some(Ok(rows)) => rows.into_iter().map(|(_, s)| s).collect(),
            Some(Err(e)) => {
                problems.push(format!("primary status: {e}"));
                ReplicableStatuses::default()
            }
        };
        let primary_identity = match p.source.primary_identity() {
            Ok(identity) => identity,
            Err(e) => {
                problems.push(format!("primary identity: {e}"));
                None
            }
        };
        let (event_log_pruned_through, secondaries) =
            match super::pruning::known(p, last_event_id.flatten()) {
                Ok(known) => known,
                Err(e) => {
                    problems.push(format!("known secondaries: {e}"));
                    (None, Vec::new())
                }
            };
        PrimaryStatus {
            last_event_id,
            primary_identity,
            replicables,
            event_log_pruned_through,
            secondaries,
        }
    });
    let secondary = state.secondary_service().map(|s| {
        let replicables = match s.secondary.status() {
            Ok(rows) => rows.into_iter().map(|(_, st)| st).collect(),
            Err(e) => {
                problems.push(format!("tracking database: {e}"));
                ReplicableStatuses::default()
            }
        };
        let cursor = match s
            .secondary
            .tracking()
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| geo_diesel::cursor::load_state(&mut c).map_err(|e| e.to_string()))
        {
            Ok(cursor) => Some(CursorStatus {
                cursor_last_event_id: cursor.safe_position(),
                cursor_position: cursor.last_event_id,
                open_gaps_count: cursor.gaps.len(),
                open_gaps: cursor.gaps.iter().take(GAPS_LISTED).copied().collect(),
            }),
            Err(e) => {
                problems.push(format!("event log cursor: {e}"));
                None
            }
        };
        let last_event_id = match s.source.max_event_id() {
            Ok(last) => last,
            Err(e) => {
                problems.push(format!("primary unreachable: {e}"));
                None
            }
        };
        let position = cursor.as_ref().map(|c| c.cursor_last_event_id);
        let events_behind = match (last_event_id, position) {
            (Some(last), Some(at)) => Some((last - at).max(0)),
            (None, Some(_)) if problems.is_empty() => Some(0),
            _ => None,
        };
        let seconds_behind = match (events_behind, position) {
            (Some(0), _) => Some(0),
            (Some(_), Some(at)) => match s.source.events_after(at, 1) {
                Ok(events) => Some(events.first().map_or(0, |e| {
                    (chrono::Utc::now() - e.created_at).num_seconds().max(0)
                })),
                Err(e) => {
                    problems.push(format!("primary unreachable: {e}"));
                    None
                }
            },
            _ => None,
        };
        // Safety first in `health`: what stopped the secondary, then what it refused to remove.
        let halt = match s.secondary.halt() {
            Ok(halt) => halt,
            Err(e) => {
                problems.push(format!("safety state: {e}"));
                None
            }
        };
        let mass_removal_refused = s.secondary.mass_removal_refusals();
        let mut safety: Vec<String> = halt.iter().map(ToString::to_string).collect();
        safety.extend(mass_removal_refused.iter().map(ToString::to_string));
        problems.splice(0..0, safety);
        SecondaryStatus {
            halt,
            mass_removal_refused,
            replicables,
            cursor,
            last_event_id,
            events_behind,
            seconds_behind,
            cursor_skipped_events_count: s.secondary.cursor().counters.skipped(),
            primary_link: s.link.as_ref().map(|l| l.snapshot()),
            events_pruned_recoveries: s
                .secondary
                .counters()
                .pruned_recoveries
                .load(std::sync::atomic::Ordering::Relaxed),
            last_events_pruned: s.secondary.last_pruned_recovery().as_ref().map(Into::into),
        }
    });
    let healthy = problems.is_empty();
    NodeStatus {
        name: state.name().to_owned(),
        status_at: chrono::Utc::now(),
        uptime_seconds: state.uptime().as_secs(),
        role: SiteRole::of(primary.is_some(), secondary.is_some()),
        replicables: replicables().iter().map(|d| d.name.to_owned()).collect(),
        primary,
        secondary,
        health_status: if healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        },
        health: if healthy {
            "Healthy".to_owned()
        } else {
            problems.join("; ")
        },
    }
}

/// `GET /metrics`, not authenticated (Prometheus scrapes it).
pub(super) async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    let text = tokio::task::spawn_blocking(move || crate::metrics::render(&state))
        .await
        .unwrap_or_else(|e| format!("# metrics failed: {e}\n"));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}
