//! The metrics of the runtime: status gauges per replicable, the event log position and the
//! cursor, read from the site's cached status (so a scrape costs no database query while the
//! status is fresh, [`NodeState::with_status_ttl`]), and the counters of the primary's
//! verifier, the secondary, its log cursor and its link to the primary, read from memory at
//! each scrape. What could not be read (a database down) is left out.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use geo_diesel::geo_core::replicables;
use geo_diesel::geo_core::safety::RemovalKind;

use crate::api::{NodeStatus, PrimaryStatus, SecondaryStatus};
use crate::server::{NodeState, PrimaryService, SecondaryService};

const STATUS_HELP: &str = "Geo status field (GitLab GeoNodeStatus).";

/// Encodes the runtime's metrics of one site.
pub struct SiteCollector {
    status: Arc<NodeStatus>,
    primary: Option<PrimaryService>,
    secondary: Option<SecondaryService>,
}

impl fmt::Debug for SiteCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteCollector")
            .field("primary", &self.primary.is_some())
            .field("secondary", &self.secondary.is_some())
            .finish()
    }
}

impl SiteCollector {
    /// The collector of what `state` serves, from its cached status (read now when the cache
    /// is stale: blocking).
    pub fn of(state: &NodeState) -> Self {
        SiteCollector {
            status: crate::server::cached_status(state),
            primary: state.primary_service().cloned(),
            secondary: state.secondary_service().cloned(),
        }
    }
}

/// Writes metric families, each name once.
struct Out<'a> {
    encoder: DescriptorEncoder<'a>,
    seen: BTreeSet<String>,
}

impl Out<'_> {
    fn gauge(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        if !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let g = ConstGauge::new(value);
        g.encode(
            self.encoder
                .encode_descriptor(name, help, None, g.metric_type())?,
        )
    }

    /// A counter; `name` without its `_total`, which the encoder adds.
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        if !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let c = ConstCounter::new(value);
        c.encode(
            self.encoder
                .encode_descriptor(name, help, None, c.metric_type())?,
        )
    }

    /// A gauge family with labels: `(labels, value)` pairs.
    fn labeled_gauges(
        &mut self,
        name: &str,
        help: &str,
        values: &[(Vec<(&str, &str)>, u64)],
    ) -> fmt::Result {
        if !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            ConstGauge::new(0u64).metric_type(),
        )?;
        for (labels, n) in values {
            ConstGauge::new(*n).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// A counter family with one label: `(label value, count)` pairs.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(&str, u64)],
    ) -> fmt::Result {
        if !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for &(v, n) in values {
            ConstCounter::new(n).encode(family.encode_family(&[(label, v)])?)?;
        }
        Ok(())
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for SiteCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut out = Out {
            encoder,
            seen: BTreeSet::new(),
        };
        if let (Some(p), Some(st)) = (&self.primary, &self.status.primary) {
            primary(&mut out, p, st)?;
        }
        if let (Some(s), Some(st)) = (&self.secondary, &self.status.secondary) {
            secondary(&mut out, s, st)?;
        }
        Ok(())
    }
}

fn primary(out: &mut Out<'_>, p: &PrimaryService, st: &PrimaryStatus) -> fmt::Result {
    if let Some(Some(last)) = st.last_event_id {
        out.gauge(
            "geo_last_event_id",
            "Highest event id on the primary.",
            last.max(0) as u64,
        )?;
    }
    if let Some(pruned) = st.event_log_pruned_through {
        out.gauge(
            "geo_event_log_pruned_through",
            "Every event up to this id has been pruned.",
            pruned.max(0) as u64,
        )?;
    }
    if !st.secondaries.is_empty() {
        let behind: Vec<(Vec<(&str, &str)>, u64)> = st
            .secondaries
            .iter()
            .map(|k| (vec![("secondary", k.name.as_str())], k.events_behind as u64))
            .collect();
        out.labeled_gauges(
            "geo_known_secondary_events_behind",
            "Events a known secondary has not consumed.",
            &behind,
        )?;
        let seen: Vec<(Vec<(&str, &str)>, u64)> = st
            .secondaries
            .iter()
            .map(|k| {
                (
                    vec![("secondary", k.name.as_str())],
                    k.seconds_since_seen as u64,
                )
            })
            .collect();
        out.labeled_gauges(
            "geo_known_secondary_seconds_since_seen",
            "Seconds since a known secondary last read the event feed.",
            &seen,
        )?;
    }
    let Some(v) = &p.verifier else {
        return Ok(());
    };
    for s in &st.replicables.0 {
        for (g, n) in s.gauges() {
            out.gauge(&g, STATUS_HELP, n)?;
        }
    }
    out.counter(
        "geo_primary_checksummed",
        "Records checksummed by this primary since start.",
        load(&v.checksummed),
    )?;
    out.counter(
        "geo_primary_checksum_failed",
        "Primary verification failures since start.",
        load(&v.failed),
    )?;
    out.counter(
        "geo_primary_checksummed_bytes",
        "Bytes hashed by the primary since start.",
        load(&v.bytes),
    )
}

fn secondary(out: &mut Out<'_>, s: &SecondaryService, st: &SecondaryStatus) -> fmt::Result {
    let sec = &s.secondary;
    for r in &st.replicables.0 {
        for (g, n) in r.gauges() {
            out.gauge(&g, STATUS_HELP, n)?;
        }
    }
    if let Some(cursor) = &st.cursor {
        out.gauge(
            "geo_cursor_last_event_id",
            "Event id the log cursor has safely processed.",
            cursor.cursor_last_event_id.max(0) as u64,
        )?;
        out.gauge(
            "geo_cursor_gaps_open",
            "Event-id gaps awaited.",
            cursor.open_gaps_count as u64,
        )?;
    }
    out.gauge(
        "geo_secondary_halted",
        "Whether the secondary is halted (1): it applies no events and removes nothing (another primary identity, or event ids gone backwards; see the status).",
        u64::from(st.halt.is_some()),
    )?;
    let refused = &st.mass_removal_refused;
    let kinds = [RemovalKind::Orphans, RemovalKind::MissingOnPrimary];
    let values: Vec<(Vec<(&str, &str)>, u64)> = replicables()
        .iter()
        .flat_map(|d| kinds.iter().map(move |k| (d, *k)))
        .map(|(d, k)| {
            let n = refused
                .iter()
                .find(|r| r.replicable == d.name && r.kind == k)
                .map_or(0, |r| r.would_remove);
            (vec![("replicable", d.name), ("kind", k.as_str())], n)
        })
        .collect();
    out.labeled_gauges(
        "geo_secondary_mass_removal_refused",
        "Rows a refused sweep would have removed (kind orphans) or marked missing on the primary; 0 when nothing is refused.",
        &values,
    )?;
    let cc = &sec.cursor().counters;
    out.counters(
        "geo_cursor_skipped_events",
        "Events skipped by the log cursor.",
        "reason",
        &[
            ("unknown_replicable", load(&cc.skipped_unknown_replicable)),
            ("malformed", load(&cc.skipped_malformed)),
            ("disabled", load(&cc.skipped_disabled)),
            ("unselected", load(&cc.skipped_unselected)),
        ],
    )?;
    out.counter(
        "geo_cursor_applied_events",
        "Events applied by the log cursor.",
        load(&cc.applied),
    )?;
    out.counter(
        "geo_cursor_gaps_detected",
        "Event-id gaps detected.",
        load(&cc.gaps_detected),
    )?;
    out.counter(
        "geo_cursor_gaps_filled",
        "Event-id gaps filled by a late event.",
        load(&cc.gaps_filled),
    )?;
    out.counter(
        "geo_cursor_gaps_expired",
        "Event-id gaps dropped after the timeout.",
        load(&cc.gaps_expired),
    )?;
    let sc = sec.counters();
    out.counter(
        "geo_sync_succeeded",
        "Files synced since start.",
        load(&sc.synced),
    )?;
    out.counter(
        "geo_sync_failed",
        "Sync failures recorded since start.",
        load(&sc.sync_failed),
    )?;
    out.counter(
        "geo_sync_bytes",
        "Bytes written by syncs since start.",
        load(&sc.bytes),
    )?;
    out.counter(
        "geo_verification_succeeded",
        "Secondary verifications that matched since start.",
        load(&sc.verified),
    )?;
    out.counter(
        "geo_verification_mismatch",
        "Checksum mismatches found since start.",
        load(&sc.mismatches),
    )?;
    out.counter(
        "geo_cursor_events_pruned_recoveries",
        "Recoveries from events the primary pruned before this secondary consumed them (full backfill and reverification).",
        load(&sc.pruned_recoveries),
    )?;
    if let Some(link) = &s.link {
        out.counter(
            "geo_primary_requests",
            "Requests sent to the primary.",
            load(&link.requests),
        )?;
        out.counter(
            "geo_primary_request_errors",
            "Requests to the primary that failed.",
            load(&link.errors),
        )?;
    }
    Ok(())
}
