//! `GET /metrics`: Prometheus text format with GitLab's names.
//!
//! Gauges per replicable come from [`ReplicableStatus::gauges`]
//! (`geo_widgets_synced`, `geo_widgets_verified`, `geo_widgets_checksummed`, …), labelled with
//! the site's `name` as GitLab labels them. Counters: the log cursor's
//! (`geo_cursor_skipped_events_total`, `geo_cursor_gaps_detected_total`, …), the secondary's
//! (`geo_sync_succeeded_total`, …), the server's (`geo_http_requests_total{endpoint,code}`,
//! `geo_auth_failures_total{reason}`, `geo_blob_bytes_served_total`).
//!
//! [`ReplicableStatus::gauges`]: geo_diesel::geo_core::status::ReplicableStatus::gauges

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::AuthError;
use crate::server::NodeState;

/// The server's own counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Blob bytes sent by `retrieve`.
    pub bytes_served: Arc<AtomicU64>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, endpoint: &'static str, code: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((endpoint, code))
            .or_default() += 1;
    }

    /// Counts one refused token.
    pub fn auth_failure(&self, e: &AuthError) {
        let reason = match e {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::Immature => "immature",
            AuthError::WrongRequest => "wrong_request",
        };
        *self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Requests answered with `code` on `endpoint` so far.
    pub fn requests(&self, endpoint: &str, code: u16) -> u64 {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((e, c), _)| *e == endpoint && *c == code)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Tokens refused so far.
    pub fn auth_failures(&self) -> u64 {
        self.auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// Escapes a label value.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    name: String,
    seen: std::collections::BTreeSet<String>,
}

impl Out {
    fn family(&mut self, metric: &str, kind: &str, help: &str) {
        if self.seen.insert(metric.to_owned()) {
            let _ = writeln!(self.text, "# HELP {metric} {help}");
            let _ = writeln!(self.text, "# TYPE {metric} {kind}");
        }
    }

    fn sample(&mut self, metric: &str, kind: &str, help: &str, labels: &[(&str, &str)], v: u64) {
        self.family(metric, kind, help);
        let mut l = format!("name=\"{}\"", escape_label(&self.name));
        for (k, val) in labels {
            let _ = write!(l, ",{k}=\"{}\"", escape_label(val));
        }
        let _ = writeln!(self.text, "{metric}{{{l}}} {v}");
    }
}

/// Renders every metric of the site.
pub fn render(state: &NodeState) -> String {
    let mut out = Out {
        text: String::new(),
        name: state.name().to_owned(),
        seen: Default::default(),
    };
    if let Some(p) = state.primary_service() {
        if let Ok(Some(last)) = p.source.max_event_id() {
            out.sample(
                "geo_last_event_id",
                "gauge",
                "Highest event id on the primary.",
                &[],
                last.max(0) as u64,
            );
        }
        if let Some(v) = &p.verifier {
            if let Ok(rows) = v.status() {
                for (_, s) in rows {
                    for (g, n) in s.gauges() {
                        out.sample(
                            &g,
                            "gauge",
                            "Geo status field (GitLab GeoNodeStatus).",
                            &[],
                            n,
                        );
                    }
                }
            }
            let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
            out.sample(
                "geo_primary_checksummed_total",
                "counter",
                "Records checksummed by this primary since start.",
                &[],
                c(&v.checksummed),
            );
            out.sample(
                "geo_primary_checksum_failed_total",
                "counter",
                "Primary verification failures since start.",
                &[],
                c(&v.failed),
            );
            out.sample(
                "geo_primary_checksummed_bytes_total",
                "counter",
                "Bytes hashed by the primary since start.",
                &[],
                c(&v.bytes),
            );
        }
    }
    if let Some(s) = state.secondary_service() {
        if let Ok(rows) = s.secondary.status() {
            for (_, st) in rows {
                for (g, n) in st.gauges() {
                    out.sample(
                        &g,
                        "gauge",
                        "Geo status field (GitLab GeoNodeStatus).",
                        &[],
                        n,
                    );
                }
            }
        }
        if let Ok(mut conn) = s.secondary.tracking().get()
            && let Ok(cursor) = geo_diesel::cursor::load_state(&mut conn)
        {
            out.sample(
                "geo_cursor_last_event_id",
                "gauge",
                "Event id the log cursor has safely processed.",
                &[],
                cursor.safe_position().max(0) as u64,
            );
            out.sample(
                "geo_cursor_gaps_open",
                "gauge",
                "Event-id gaps awaited.",
                &[],
                cursor.gaps.len() as u64,
            );
        }
        let cc = &s.secondary.cursor().counters;
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.sample(
            "geo_cursor_skipped_events_total",
            "counter",
            "Events skipped by the log cursor.",
            &[("reason", "unknown_replicable")],
            c(&cc.skipped_unknown_replicable),
        );
        out.sample(
            "geo_cursor_skipped_events_total",
            "counter",
            "Events skipped by the log cursor.",
            &[("reason", "malformed")],
            c(&cc.skipped_malformed),
        );
        out.sample(
            "geo_cursor_skipped_events_total",
            "counter",
            "Events skipped by the log cursor.",
            &[("reason", "disabled")],
            c(&cc.skipped_disabled),
        );
        out.sample(
            "geo_cursor_applied_events_total",
            "counter",
            "Events applied by the log cursor.",
            &[],
            c(&cc.applied),
        );
        out.sample(
            "geo_cursor_gaps_detected_total",
            "counter",
            "Event-id gaps detected.",
            &[],
            c(&cc.gaps_detected),
        );
        out.sample(
            "geo_cursor_gaps_filled_total",
            "counter",
            "Event-id gaps filled by a late event.",
            &[],
            c(&cc.gaps_filled),
        );
        out.sample(
            "geo_cursor_gaps_expired_total",
            "counter",
            "Event-id gaps dropped after the timeout.",
            &[],
            c(&cc.gaps_expired),
        );
        let sc = s.secondary.counters();
        out.sample(
            "geo_sync_succeeded_total",
            "counter",
            "Files synced since start.",
            &[],
            c(&sc.synced),
        );
        out.sample(
            "geo_sync_failed_total",
            "counter",
            "Sync failures recorded since start.",
            &[],
            c(&sc.sync_failed),
        );
        out.sample(
            "geo_sync_bytes_total",
            "counter",
            "Bytes written by syncs since start.",
            &[],
            c(&sc.bytes),
        );
        out.sample(
            "geo_verification_succeeded_total",
            "counter",
            "Secondary verifications that matched since start.",
            &[],
            c(&sc.verified),
        );
        out.sample(
            "geo_verification_mismatch_total",
            "counter",
            "Checksum mismatches found since start.",
            &[],
            c(&sc.mismatches),
        );
        if let Some(link) = &s.link {
            out.sample(
                "geo_primary_requests_total",
                "counter",
                "Requests sent to the primary.",
                &[],
                link.requests.load(Ordering::Relaxed),
            );
            out.sample(
                "geo_primary_request_errors_total",
                "counter",
                "Requests to the primary that failed.",
                &[],
                link.errors.load(Ordering::Relaxed),
            );
        }
    }
    let requests: Vec<((&'static str, u16), u64)> = state
        .metrics()
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    for ((endpoint, code), n) in requests {
        out.sample(
            "geo_http_requests_total",
            "counter",
            "Requests answered by this site.",
            &[("endpoint", endpoint), ("code", &code.to_string())],
            n,
        );
    }
    let failures: Vec<(&'static str, u64)> = state
        .metrics()
        .auth_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    out.family("geo_auth_failures_total", "counter", "Refused Geo tokens.");
    for (reason, n) in failures {
        out.sample(
            "geo_auth_failures_total",
            "counter",
            "Refused Geo tokens.",
            &[("reason", reason)],
            n,
        );
    }
    out.sample(
        "geo_blob_bytes_served_total",
        "counter",
        "Blob bytes sent to secondaries.",
        &[],
        state.metrics().bytes_served.load(Ordering::Relaxed),
    );
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
