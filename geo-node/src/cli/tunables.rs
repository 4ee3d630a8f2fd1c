//! Every tunable of a site's workers and of its HTTP server as a flag with an environment
//! variable. The defaults shown by `--help` are read from [`SecondaryConfig::default`],
//! [`PrimaryConfig::default`] and [`ServeOptions::default`], so the help text and the library
//! never disagree.
//!
//! Durations take a number and a unit (`30s`, `15m`, `8h`, `7d`; `humantime`'s syntax).

use std::fmt;
use std::str::FromStr;

use clap::builder::TypedValueParser as _;

use geo_diesel::secondary::SecondaryConfig;
use geo_diesel::verifier::PrimaryConfig;

use crate::server::{DEFAULT_MAX_REQUESTS_PER_KEY, DEFAULT_STATUS_TTL, NodeState, ServeOptions};

/// A positive duration on the command line: `30s`, `15m`, `8h`, `7d`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub std::time::Duration);

impl Span {
    /// The duration as chrono's, as the configs hold it.
    pub fn chrono(self) -> chrono::TimeDelta {
        chrono::TimeDelta::from_std(self.0).unwrap_or(chrono::TimeDelta::MAX)
    }

    fn of(d: chrono::TimeDelta) -> Span {
        Span(d.to_std().unwrap_or_default())
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // A bare number is seconds.
        let d = match s.parse::<u64>() {
            Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(s),
        }
        .map_err(|e| format!("{e} (write a number and a unit: 30s, 15m, 8h, 7d)"))?;
        if d.is_zero() {
            return Err("must be longer than zero".to_owned());
        }
        Ok(Span(d))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_duration(self.0), f)
    }
}

/// A share between 0 and 1 (`0.1` or `10%`).
fn share(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|e| format!("{e}: write a share such as 0.1 or 10%"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1 (0% and 100%)"))
    }
}

fn secondary() -> SecondaryConfig {
    SecondaryConfig::default()
}

fn primary() -> PrimaryConfig {
    PrimaryConfig::default()
}

fn serve() -> ServeOptions {
    ServeOptions::default()
}

/// The HTTP server's limits: timeouts, the connection cap, the per-key limit, the status cache.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ServerTunables {
    /// A request head must be complete within this (from the connection's accept, TLS
    /// handshake included, or from its first byte after an idle keep-alive period).
    #[arg(long, env = "GEO_HEADER_READ_TIMEOUT",
          default_value_t = Span(serve().header_read_timeout))]
    pub header_read_timeout: Span,
    /// A keep-alive connection that sends nothing for this long (and has no request in flight)
    /// is closed.
    #[arg(long, env = "GEO_IDLE_TIMEOUT", default_value_t = Span(serve().idle_timeout))]
    pub idle_timeout: Span,
    /// Connections open at once; at the cap the oldest one serving nothing is closed to make
    /// room.
    #[arg(long, env = "GEO_MAX_CONNECTIONS", default_value_t = serve().max_connections,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_connections: usize,
    /// Requests in flight per access key; one more is answered 429 with Retry-After.
    #[arg(long, env = "GEO_MAX_REQUESTS_PER_KEY", default_value_t = DEFAULT_MAX_REQUESTS_PER_KEY,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_requests_per_key: usize,
    /// How long the status behind GET /api/geo/status and the gauges of /metrics is reused
    /// before the databases are read again.
    #[arg(long, env = "GEO_STATUS_CACHE_TTL", default_value_t = Span(DEFAULT_STATUS_TTL))]
    pub status_cache_ttl: Span,
}

impl ServerTunables {
    /// `options` with the timeouts and the cap set from the flags.
    pub fn apply(&self, options: ServeOptions) -> ServeOptions {
        options
            .header_read_timeout(self.header_read_timeout.0)
            .idle_timeout(self.idle_timeout.0)
            .max_connections(self.max_connections)
    }

    /// `state` with the per-key limit and the status cache set from the flags.
    pub fn apply_state(&self, state: NodeState) -> NodeState {
        state
            .with_max_requests_per_key(self.max_requests_per_key)
            .with_status_ttl(self.status_cache_ttl.0)
    }
}

/// The secondary's workers: capacities, batch sizes, timeouts.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct SecondaryTunables {
    /// Downloads in flight at once, across all types (GitLab's `files_max_capacity`).
    #[arg(long, env = "GEO_SYNC_CAPACITY", default_value_t = secondary().sync_capacity,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub sync_capacity: usize,
    /// Scheduler passes at once: the next claims and looks up its rows while the last one
    /// downloads (their downloads share the sync capacity).
    #[arg(long, env = "GEO_SYNC_WORKERS", default_value_t = secondary().sync_workers,
          value_parser = clap::value_parser!(u32).range(1..=16).map(|v| v as usize))]
    pub sync_workers: usize,
    /// Registry rows claimed per scheduler pass (at least the sync capacity).
    #[arg(long, env = "GEO_SYNC_BATCH", default_value_t = secondary().sync_batch,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub sync_batch: usize,
    /// Synced files re-hashed per verification pass.
    #[arg(long, env = "GEO_VERIFICATION_BATCH", default_value_t = secondary().verification_batch,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub verification_batch: usize,
    /// Threads hashing files during verification (GitLab's `verification_max_capacity`).
    #[arg(long, env = "GEO_VERIFICATION_THREADS", default_value_t = secondary().verification_threads,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub verification_threads: usize,
    /// Model ids compared per backfill range.
    #[arg(long, env = "GEO_BACKFILL_BATCH", default_value_t = secondary().backfill_batch,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub backfill_batch: i64,
    /// Events read per log cursor pass.
    #[arg(long, env = "GEO_CURSOR_BATCH", default_value_t = secondary().cursor_batch,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub cursor_batch: usize,
    /// A download that receives no bytes for this long fails and is retried (resuming where it
    /// stopped); there is no limit on a download's total duration. `--sync-timeout` is an alias.
    #[arg(long, alias = "sync-timeout", env = "GEO_SYNC_NO_PROGRESS_TIMEOUT",
          default_value_t = Span::of(secondary().sync_timeout))]
    pub sync_no_progress_timeout: Span,
    /// A verification `started` for longer than this fails and is retried.
    #[arg(long, env = "GEO_VERIFICATION_TIMEOUT",
          default_value_t = Span::of(secondary().verification_timeout))]
    pub verification_timeout: Span,
    /// How long a missing event id (a transaction not yet committed on the primary) is awaited
    /// before the cursor gives it up.
    #[arg(long, env = "GEO_GAP_TIMEOUT", default_value_t = Span::of(secondary().gap_timeout))]
    pub gap_timeout: Span,
    /// How long this process may stay silent (it heartbeats every third of it) before the
    /// other `secondary` processes on the tracking database take its claims back and one of
    /// them takes over the log cursor and the backfill.
    #[arg(long, alias = "lease-period-secs", env = "GEO_LEASE_PERIOD",
          default_value_t = Span::of(secondary().lease_period))]
    pub lease_period: Span,
    /// The largest share of a type's registry rows one backfill sweep may remove (orphans), or
    /// mark missing on the primary, before it is refused and reported (one row may always go);
    /// `backfill --allow-mass-removal` confirms a refused sweep.
    #[arg(long, env = "GEO_MAX_REMOVAL_SHARE", default_value_t = secondary().max_removal_share,
          value_parser = share)]
    pub max_removal_share: f64,
    /// Sleep between worker passes when there is nothing to do, in milliseconds.
    #[arg(long, env = "GEO_IDLE_MS", default_value_t = secondary().idle_sleep.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_ms: u64,
    /// How long one read of the primary's event feed waits for a new event, in milliseconds: a
    /// commit on the primary reaches the log cursor within milliseconds, and a quiet secondary
    /// asks once per wait (at most 20 s, the primary's longest). 0 polls every `--idle-ms`.
    #[arg(long, env = "GEO_EVENT_WAIT_MS",
          default_value_t = secondary().event_wait.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(0..=20_000))]
    pub event_wait_ms: u64,
}

impl SecondaryTunables {
    /// `config` with every tunable set from the flags.
    pub fn apply(&self, config: SecondaryConfig) -> SecondaryConfig {
        config
            .sync_capacity(self.sync_capacity)
            .sync_workers(self.sync_workers)
            .sync_batch(self.sync_batch.max(self.sync_capacity))
            .verification_batch(self.verification_batch)
            .verification_threads(self.verification_threads)
            .backfill_batch(self.backfill_batch)
            .cursor_batch(self.cursor_batch)
            .sync_no_progress_timeout(self.sync_no_progress_timeout.chrono())
            .verification_timeout(self.verification_timeout.chrono())
            .gap_timeout(self.gap_timeout.chrono())
            .lease_period(self.lease_period.chrono())
            .max_removal_share(self.max_removal_share)
            .idle_sleep(std::time::Duration::from_millis(self.idle_ms))
            .event_wait(std::time::Duration::from_millis(self.event_wait_ms))
    }
}

/// The primary's verification workers.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct PrimaryTunables {
    /// Records claimed per verification pass and type.
    #[arg(long, env = "GEO_VERIFICATION_BATCH", default_value_t = primary().verification_batch,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub verification_batch: i64,
    /// Threads computing checksums (GitLab's `verification_max_capacity`; default: the cores).
    #[arg(long, env = "GEO_VERIFICATION_THREADS", default_value_t = primary().verification_threads,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub verification_threads: usize,
    /// Succeeded records are checksummed again after this long.
    #[arg(long, env = "GEO_REVERIFICATION_INTERVAL",
          default_value_t = Span::of(primary().reverification_interval))]
    pub reverification_interval: Span,
    /// A verification `started` for longer than this fails and is retried.
    #[arg(long, env = "GEO_VERIFICATION_TIMEOUT",
          default_value_t = Span::of(primary().verification_timeout))]
    pub verification_timeout: Span,
    /// Sleep between verification passes when there is nothing to do, in milliseconds.
    #[arg(long, env = "GEO_IDLE_MS", default_value_t = primary().idle_sleep.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_ms: u64,
}

impl PrimaryTunables {
    /// `config` with every tunable set from the flags.
    pub fn apply(&self, config: PrimaryConfig) -> PrimaryConfig {
        config
            .verification_batch(self.verification_batch)
            .verification_threads(self.verification_threads)
            .reverification_interval(self.reverification_interval.chrono())
            .verification_timeout(self.verification_timeout.chrono())
            .idle_sleep(std::time::Duration::from_millis(self.idle_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Sec {
        #[command(flatten)]
        t: SecondaryTunables,
    }

    #[derive(Debug, Parser)]
    struct Pri {
        #[command(flatten)]
        t: PrimaryTunables,
    }

    #[derive(Debug, Parser)]
    struct Srv {
        #[command(flatten)]
        t: ServerTunables,
    }

    #[test]
    fn server_flags_set_the_limits() {
        let d = Srv::try_parse_from(["x"]).unwrap().t;
        let o = d.apply(ServeOptions::default());
        assert_eq!(
            format!("{o:?}"),
            format!("{:?}", ServeOptions::default()),
            "the defaults are the library's"
        );
        assert_eq!(d.max_requests_per_key, DEFAULT_MAX_REQUESTS_PER_KEY);
        assert_eq!(d.status_cache_ttl.0, DEFAULT_STATUS_TTL);
        let t = Srv::try_parse_from([
            "x",
            "--header-read-timeout=2s",
            "--idle-timeout=90s",
            "--max-connections=10",
            "--max-requests-per-key=3",
            "--status-cache-ttl=1m",
        ])
        .unwrap()
        .t;
        let o = t.apply(ServeOptions::default());
        assert_eq!(o.header_read_timeout, std::time::Duration::from_secs(2));
        assert_eq!(o.idle_timeout, std::time::Duration::from_secs(90));
        assert_eq!(o.max_connections, 10);
        assert_eq!(t.max_requests_per_key, 3);
        assert_eq!(t.status_cache_ttl.0, std::time::Duration::from_secs(60));
        for bad in [
            ["x", "--max-connections=0"],
            ["x", "--max-requests-per-key=0"],
            ["x", "--header-read-timeout=0s"],
        ] {
            let e = Srv::try_parse_from(bad).unwrap_err().to_string();
            let flag = bad[1].split('=').next().unwrap();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_defaults_are_the_libraries_defaults() {
        let d = SecondaryConfig::default();
        let c = Sec::try_parse_from(["x"])
            .unwrap()
            .t
            .apply(SecondaryConfig::default());
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
        let d = PrimaryConfig::default();
        let c = Pri::try_parse_from(["x"])
            .unwrap()
            .t
            .apply(PrimaryConfig::default());
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn flags_set_every_field() {
        let c = Sec::try_parse_from([
            "x",
            "--sync-capacity=3",
            "--sync-workers=3",
            "--sync-batch=7",
            "--verification-batch=9",
            "--verification-threads=4",
            "--backfill-batch=500",
            "--cursor-batch=50",
            "--sync-no-progress-timeout=2h",
            "--verification-timeout=90m",
            "--gap-timeout=5m",
            "--lease-period=10",
            "--max-removal-share=25%",
            "--idle-ms=50",
            "--event-wait-ms=0",
        ])
        .unwrap()
        .t
        .apply(SecondaryConfig::default());
        assert_eq!(
            (
                c.sync_capacity,
                c.sync_batch,
                c.verification_batch,
                c.verification_threads
            ),
            (3, 7, 9, 4)
        );
        assert_eq!(c.sync_workers, 3);
        assert_eq!((c.backfill_batch, c.cursor_batch), (500, 50));
        assert_eq!(c.sync_timeout, chrono::TimeDelta::hours(2));
        assert_eq!(c.verification_timeout, chrono::TimeDelta::minutes(90));
        assert_eq!(c.gap_timeout, chrono::TimeDelta::minutes(5));
        assert_eq!(c.lease_period, chrono::TimeDelta::seconds(10));
        assert_eq!(c.max_removal_share, 0.25);
        assert_eq!(c.idle_sleep, std::time::Duration::from_millis(50));
        assert_eq!(c.event_wait, std::time::Duration::ZERO);
        let p = Pri::try_parse_from([
            "x",
            "--reverification-interval=1d",
            "--verification-batch=5",
        ])
        .unwrap()
        .t
        .apply(PrimaryConfig::default());
        assert_eq!(p.reverification_interval, chrono::TimeDelta::days(1));
        assert_eq!(p.verification_batch, 5);
    }

    #[test]
    fn the_sync_timeout_is_a_no_progress_timeout_of_5_minutes_also_named_sync_timeout() {
        let parse = |args: &[&str]| {
            Sec::try_parse_from(args)
                .unwrap()
                .t
                .apply(SecondaryConfig::default())
                .sync_timeout
        };
        assert_eq!(parse(&["x"]), chrono::TimeDelta::minutes(5));
        assert_eq!(
            parse(&["x", "--sync-timeout=90s"]),
            chrono::TimeDelta::seconds(90)
        );
        assert_eq!(
            parse(&["x", "--sync-no-progress-timeout=1m"]),
            chrono::TimeDelta::minutes(1)
        );
    }

    #[test]
    fn a_sync_batch_below_the_capacity_is_raised_to_it() {
        let c = Sec::try_parse_from(["x", "--sync-capacity=20", "--sync-batch=5"])
            .unwrap()
            .t
            .apply(SecondaryConfig::default());
        assert_eq!(c.sync_batch, 20);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for bad in [
            ["x", "--sync-capacity=0"],
            ["x", "--sync-no-progress-timeout=0s"],
            ["x", "--sync-no-progress-timeout=8 parsecs"],
            ["x", "--backfill-batch=-1"],
            ["x", "--max-removal-share=1.5"],
            ["x", "--max-removal-share=ten"],
            ["x", "--event-wait-ms=60000"],
        ] {
            let e = Sec::try_parse_from(bad).unwrap_err().to_string();
            let flag = bad[1].split('=').next().unwrap();
            assert!(e.contains(flag), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_tunable_has_a_variable_and_shows_its_default() {
        for mut cmd in [
            <Sec as clap::CommandFactory>::command(),
            <Pri as clap::CommandFactory>::command(),
            <Srv as clap::CommandFactory>::command(),
        ] {
            let help = cmd.render_long_help().to_string();
            for arg in cmd.get_arguments().filter(|a| a.get_id() != "help") {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert!(
                    env.as_deref().is_some_and(|e| e.starts_with("GEO_")),
                    "{arg:?}"
                );
                assert!(!arg.get_default_values().is_empty(), "{arg:?}");
            }
            assert!(
                help.contains("[default: 7days]")
                    || help.contains("[default: 1h]")
                    || help.contains("[default: 10s]"),
                "{help}"
            );
        }
    }
}
