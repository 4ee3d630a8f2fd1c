//! The primary's event pruning flags ([`PruneTunables`]); defaults read from
//! [`PruneConfig::default`].

use std::fmt;
use std::str::FromStr;

use clap::builder::TypedValueParser as _;

use geo_diesel::primary::prune::PruneConfig;

use super::Span;

fn prune() -> PruneConfig {
    PruneConfig::default()
}

/// A retention bound: a value, or `off` (no bound of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound<T>(pub Option<T>);

impl<T: FromStr> FromStr for Bound<T> {
    type Err = T::Err;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(Bound(None)),
            v => v.parse().map(|v| Bound(Some(v))),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Bound<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// Event pruning on the primary: events every known secondary consumed are deleted, and never
/// more than the retention bound is kept.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct PruneTunables {
    /// Do not prune the event log (another process does, or keep everything).
    #[arg(long)]
    pub no_prune: bool,
    /// Events older than this are pruned even if a secondary has not consumed it (it then
    /// recovers with a full backfill); `off` for no age bound.
    #[arg(long, env = "GEO_EVENT_RETENTION",
          default_value_t = Bound(prune().retention_age.map(|d| Span(d.to_std().unwrap_or_default()))))]
    pub event_retention: Bound<Span>,
    /// Events more than this many ids behind the newest are pruned even if a secondary has not
    /// consumed them; `off` for no cap.
    #[arg(long, env = "GEO_EVENT_RETENTION_EVENTS",
          default_value_t = Bound(prune().retention_events))]
    pub event_retention_events: Bound<i64>,
    /// Time between pruning passes (GitLab: 5 min).
    #[arg(long, env = "GEO_PRUNE_INTERVAL", default_value_t = Span(prune().interval))]
    pub prune_interval: Span,
    /// Events one DELETE removes at most (each batch is its own short transaction).
    #[arg(long, env = "GEO_PRUNE_BATCH", default_value_t = prune().batch,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub prune_batch: usize,
}

impl PruneTunables {
    /// `config` with every tunable set from the flags.
    pub fn apply(&self, config: PruneConfig) -> PruneConfig {
        config
            .retention_age(self.event_retention.0.map(Span::chrono))
            .retention_events(self.event_retention_events.0.map(|n| n.max(0)))
            .interval(self.prune_interval.0)
            .batch(self.prune_batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct P {
        #[command(flatten)]
        t: PruneTunables,
    }

    #[test]
    fn defaults_come_from_the_library_and_off_disables_a_bound() {
        let c = P::parse_from(["p"]).t.apply(PruneConfig::default());
        let d = PruneConfig::default();
        assert_eq!(
            (c.retention_age, c.retention_events, c.batch, c.interval),
            (d.retention_age, d.retention_events, d.batch, d.interval)
        );
        let p = P::parse_from([
            "p",
            "--event-retention",
            "off",
            "--event-retention-events",
            "500",
            "--prune-batch",
            "7",
            "--prune-interval",
            "2m",
        ]);
        let c = p.t.apply(PruneConfig::default());
        assert_eq!(c.retention_age, None);
        assert_eq!(c.retention_events, Some(500));
        assert_eq!(c.batch, 7);
        assert_eq!(c.interval, std::time::Duration::from_secs(120));
        assert!(P::try_parse_from(["p", "--prune-batch", "0"]).is_err());
        assert!(P::try_parse_from(["p", "--event-retention", "soon"]).is_err());
    }
}
