//! `GET /metrics`: Prometheus text format (0.0.4) with GitLab's names, through
//! `prometheus-client`. Every sample carries the site's `name` label, as GitLab labels them.
//!
//! - Read at each scrape ([`site`]): gauges per replicable from
//!   [`ReplicableStatus::gauges`] (`geo_widgets_synced`, `geo_widgets_verified`,
//!   `geo_widgets_checksummed`, …), the event log position, and the runtime's counters (the log
//!   cursor's `geo_cursor_skipped_events_total{reason}`, …, the secondary's
//!   `geo_sync_succeeded_total`, …, the primary's `geo_primary_checksummed_total`, …).
//! - Kept by the server ([`Metrics`]): `geo_http_requests_total{endpoint,code}`,
//!   `geo_auth_failures_total{reason}` (every refused token, whether or not it was logged),
//!   `geo_blob_bytes_served_total`, `geo_http_key_limited_total` (requests answered `429` over
//!   the per-key limit), `geo_http_connections` (open on the main listener),
//!   `geo_http_connections_closed_total{reason}` (closed or refused by the server:
//!   `header_timeout`, `idle_timeout`, `evicted`, `refused`, `tls_handshake`), and two histograms:
//!   `geo_http_request_duration_seconds{route,method,code}` (by matched route, never the raw
//!   path) and `geo_sync_duration_seconds{replicable,result}` (one observation per finished
//!   download, through [`SyncObserver`]).
//!
//! [`ReplicableStatus::gauges`]: geo_diesel::geo_core::status::ReplicableStatus::gauges

pub mod site;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use geo_diesel::geo_core::observe::{SyncObserver, SyncResult};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::auth::AuthError;
use crate::server::NodeState;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The `reason` label of `geo_auth_failures_total`: one per [`AuthError`] variant (site keys),
/// then `admin` for a refused operator's request.
pub const AUTH_FAILURE_REASONS: [&str; 9] = [
    "missing",
    "malformed",
    "algorithm",
    "unknown_key",
    "signature",
    "expired",
    "immature",
    "wrong_request",
    "admin",
];

fn auth_failure_reason(e: &AuthError) -> &'static str {
    let i = match e {
        AuthError::Missing => 0,
        AuthError::Malformed(_) => 1,
        AuthError::Algorithm => 2,
        AuthError::UnknownKey => 3,
        AuthError::Signature => 4,
        AuthError::Expired => 5,
        AuthError::Immature => 6,
        AuthError::WrongRequest => 7,
    };
    AUTH_FAILURE_REASONS[i]
}

/// Why the server closed (or refused) a connection: the `reason` of
/// `geo_http_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// Its request head (or TLS handshake) was not complete within the header-read timeout.
    HeaderTimeout,
    /// It sent nothing for the idle timeout.
    IdleTimeout,
    /// Closed at the cap to make room for a new one (it served nothing).
    Evicted,
    /// Closed at once at the cap: every open connection was serving a request.
    Refused,
    /// Its TLS handshake failed.
    TlsHandshake,
}

impl ConnectionEnd {
    /// Every reason.
    pub const ALL: [ConnectionEnd; 5] = [
        ConnectionEnd::HeaderTimeout,
        ConnectionEnd::IdleTimeout,
        ConnectionEnd::Evicted,
        ConnectionEnd::Refused,
        ConnectionEnd::TlsHandshake,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionEnd::HeaderTimeout => "header_timeout",
            ConnectionEnd::IdleTimeout => "idle_timeout",
            ConnectionEnd::Evicted => "evicted",
            ConnectionEnd::Refused => "refused",
            ConnectionEnd::TlsHandshake => "tls_handshake",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: Cow<'static, str>,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncLabels {
    replicable: &'static str,
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets: 0.5 ms to about 16 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Download duration buckets: 1 ms to about 2.5 min.
fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 14))
}

/// The server's own metrics, and the sync-duration histogram the secondary reports to.
#[derive(Debug)]
pub struct Metrics {
    site: String,
    registry: Registry,
    requests: Family<EndpointLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    bytes_served: Counter,
    request_duration: Histograms<RouteLabels>,
    sync: Arc<SyncDurations>,
    key_limited: Counter,
    connections: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new("")
    }
}

impl Metrics {
    /// The metrics of the site named `site` (the `name` label of every sample).
    pub fn new(site: &str) -> Self {
        let mut registry = Registry::with_labels(std::iter::once(site_label(site)));
        let requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "geo_http_requests",
            "Requests answered by this site",
            requests.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        // Every reason from the start, so a dashboard sees zeros rather than no series.
        for reason in AUTH_FAILURE_REASONS {
            let _ = auth_failures.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "geo_auth_failures",
            "Refused Geo tokens",
            auth_failures.clone(),
        );
        let bytes_served = Counter::default();
        registry.register(
            "geo_blob_bytes_served",
            "Blob bytes sent to secondaries",
            bytes_served.clone(),
        );
        let request_duration: Histograms<RouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register(
            "geo_http_request_duration_seconds",
            "Time to answer a request (to the response head), by matched route",
            request_duration.clone(),
        );
        let sync = Arc::new(SyncDurations {
            durations: Family::new_with_constructor(sync_buckets),
        });
        registry.register(
            "geo_sync_duration_seconds",
            "Time one download took, by replicable and result",
            sync.durations.clone(),
        );
        let key_limited = Counter::default();
        registry.register(
            "geo_http_key_limited",
            "Requests answered 429: their access key had as many requests in flight as it may",
            key_limited.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "geo_http_connections",
            "Connections open on the main listener",
            connections.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        for end in ConnectionEnd::ALL {
            let _ = connections_closed.get_or_create(&ReasonLabels {
                reason: end.as_str(),
            });
        }
        registry.register(
            "geo_http_connections_closed",
            "Connections the server closed or refused, by reason",
            connections_closed.clone(),
        );
        Metrics {
            site: site.to_owned(),
            registry,
            requests,
            auth_failures,
            bytes_served,
            request_duration,
            sync,
            key_limited,
            connections,
            connections_closed,
        }
    }

    /// Counts a request refused over its key's limit.
    pub fn key_limited(&self) {
        self.key_limited.inc();
    }

    /// Requests refused over their key's limit so far.
    pub fn key_limited_count(&self) -> u64 {
        self.key_limited.get()
    }

    /// Sets the number of open connections.
    pub(crate) fn connections_open(&self, n: usize) {
        self.connections.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts a connection the server closed or refused.
    pub(crate) fn connection_ended(&self, why: ConnectionEnd) {
        self.connections_closed
            .get_or_create(&ReasonLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Connections closed or refused for `why` so far.
    pub fn connections_closed(&self, why: ConnectionEnd) -> u64 {
        self.connections_closed
            .get(&ReasonLabels {
                reason: why.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    /// Counts one answered request of `endpoint` (its short name, e.g. `retrieve`).
    pub fn request(&self, endpoint: &'static str, code: u16) {
        self.requests
            .get_or_create(&EndpointLabels { endpoint, code })
            .inc();
    }

    /// Records how long a request of the matched `route` took.
    pub fn request_duration(&self, route: &'static str, method: &str, code: u16, took: Duration) {
        let method = match method {
            "GET" => Cow::Borrowed("GET"),
            "HEAD" => Cow::Borrowed("HEAD"),
            other => Cow::Owned(other.to_owned()),
        };
        self.request_duration
            .get_or_create(&RouteLabels {
                route,
                method,
                code,
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one refused token.
    pub fn auth_failure(&self, e: &AuthError) {
        let reason = auth_failure_reason(e);
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a refused operator's request (GraphQL, the admin page): reason `admin`.
    pub fn admin_auth_failure(&self) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason: "admin" })
            .inc();
    }

    /// Counts blob bytes sent.
    pub fn served(&self, bytes: u64) {
        self.bytes_served.inc_by(bytes);
    }

    /// A handle on the served-bytes counter, for a body streamed after the handler returned.
    pub(crate) fn served_counter(&self) -> Counter {
        self.bytes_served.clone()
    }

    /// Requests answered with `code` on `endpoint` (a label of
    /// [`route::ALL`](crate::server::route::ALL)) so far.
    pub fn requests(&self, endpoint: &str, code: u16) -> u64 {
        crate::server::route::ALL
            .iter()
            .find(|(_, e)| *e == endpoint)
            .and_then(|&(_, endpoint)| self.requests.get(&EndpointLabels { endpoint, code }))
            .map_or(0, |c| c.get())
    }

    /// Tokens refused so far.
    pub fn auth_failures(&self) -> u64 {
        AUTH_FAILURE_REASONS
            .iter()
            .filter_map(|&reason| self.auth_failures.get(&ReasonLabels { reason }))
            .map(|c| c.get())
            .sum()
    }

    /// Blob bytes sent so far.
    pub fn bytes_served(&self) -> u64 {
        self.bytes_served.get()
    }

    /// What a secondary reports each finished download to (see
    /// [`Secondary::set_sync_observer`](geo_diesel::secondary::Secondary::set_sync_observer)).
    pub fn sync_observer(&self) -> Arc<dyn SyncObserver> {
        Arc::clone(&self.sync) as Arc<dyn SyncObserver>
    }
}

fn site_label(site: &str) -> (Cow<'static, str>, Cow<'static, str>) {
    (Cow::Borrowed("name"), Cow::Owned(site.to_owned()))
}

/// The `geo_sync_duration_seconds` histogram, as a [`SyncObserver`].
#[derive(Debug)]
struct SyncDurations {
    durations: Histograms<SyncLabels>,
}

impl SyncObserver for SyncDurations {
    fn sync_finished(
        &self,
        replicable: &'static str,
        elapsed: Duration,
        _bytes: u64,
        result: SyncResult,
    ) {
        let result = match result {
            SyncResult::Synced => "synced",
            SyncResult::Failed => "failed",
            SyncResult::Orphan => "orphan",
            _ => "other",
        };
        self.durations
            .get_or_create(&SyncLabels { replicable, result })
            .observe(elapsed.as_secs_f64());
    }
}

/// Renders every metric of the site: what the runtime reports (read now) and the server's own.
pub fn render(state: &NodeState) -> String {
    let metrics = state.metrics();
    let mut scrape = Registry::with_labels(std::iter::once(site_label(&metrics.site)));
    scrape.register_collector(Box::new(site::SiteCollector::of(state)));
    let mut out = String::new();
    // Writing to a String cannot fail, and the collectors skip what they cannot read.
    let _ = prometheus_text::encode(&mut out, &scrape);
    let _ = prometheus_text::encode(&mut out, &metrics.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_counters_keep_their_names() {
        let m = Metrics::new("eu \"west\"\n");
        m.request("retrieve", 200);
        m.request("retrieve", 200);
        m.served(5);
        m.auth_failure(&AuthError::Expired);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains(
                "geo_http_requests_total{name=\"eu \\\"west\\\"\\n\",endpoint=\"retrieve\",code=\"200\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("# TYPE geo_http_requests_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("# HELP geo_blob_bytes_served_total Blob bytes sent to secondaries.\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "geo_auth_failures_total{name=\"eu \\\"west\\\"\\n\",reason=\"expired\"} 1\n"
            ),
            "{out}"
        );
        assert_eq!(
            (m.requests("retrieve", 200), m.requests("retrieve", 404)),
            (2, 0)
        );
        assert_eq!((m.auth_failures(), m.bytes_served()), (1, 5));
    }

    #[test]
    fn sync_durations_are_observed_per_replicable_and_result() {
        let m = Metrics::new("eu");
        let o = m.sync_observer();
        o.sync_finished("widget", Duration::from_millis(3), 10, SyncResult::Synced);
        o.sync_finished("widget", Duration::from_millis(4), 0, SyncResult::Failed);
        o.sync_finished("widget", Duration::from_millis(5), 10, SyncResult::Synced);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("# TYPE geo_sync_duration_seconds histogram\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "geo_sync_duration_seconds_count{name=\"eu\",replicable=\"widget\",result=\"synced\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "geo_sync_duration_seconds_count{name=\"eu\",replicable=\"widget\",result=\"failed\"} 1\n"
            ),
            "{out}"
        );
    }
}
