//! [`FailureLog`]: refused requests are logged at most once per source per window, with the
//! count of those suppressed since, so a flood of bad tokens cannot flood the logs. Every
//! refusal is still counted (`geo_auth_failures_total{reason}`).
//!
//! The source is the access key when the header names one this site knows (a real secondary
//! with a wrong clock or secret), else the peer's IP address (anyone else: an unknown key
//! costs the sender nothing, so it does not get a log line of its own).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::AccessKey;

/// Default window: at most one line per source per this long.
pub const DEFAULT_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Most sources remembered; beyond it (a flood from many addresses) they share one.
const MAX_SOURCES: usize = 4096;

/// Where a refused request came from, for its log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FailureSource {
    /// A key this site knows.
    Key(AccessKey),
    /// The peer's address.
    Peer(IpAddr),
    /// The peer is unknown, or too many sources were seen in one window.
    Other,
}

impl std::fmt::Display for FailureSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureSource::Key(k) => write!(f, "access key {k}"),
            FailureSource::Peer(ip) => write!(f, "peer {ip}"),
            FailureSource::Other => f.write_str("other peers"),
        }
    }
}

#[derive(Debug)]
struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

/// Decides which refusals get a log line.
#[derive(Debug)]
pub struct FailureLog {
    window: Duration,
    sources: Mutex<HashMap<FailureSource, Entry>>,
}

impl Default for FailureLog {
    fn default() -> Self {
        FailureLog::new(DEFAULT_LOG_WINDOW)
    }
}

impl FailureLog {
    /// At most one line per source per `window`.
    pub fn new(window: Duration) -> Self {
        FailureLog {
            window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// A refusal from `source` at `now`: `Some(suppressed)` when it should be logged (with
    /// the number of refusals from that source not logged since its last line), `None` when
    /// it is suppressed.
    pub fn record(&self, source: FailureSource, now: Instant) -> Option<u64> {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            let window = self.window;
            sources.retain(|_, e| now.saturating_duration_since(e.logged_at) < window);
        }
        let source = if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            FailureSource::Other
        } else {
            source
        };
        match sources.get_mut(&source) {
            Some(e) if now.saturating_duration_since(e.logged_at) < self.window => {
                e.suppressed += 1;
                None
            }
            Some(e) => {
                let suppressed = std::mem::take(&mut e.suppressed);
                e.logged_at = now;
                Some(suppressed)
            }
            None => {
                sources.insert(
                    source,
                    Entry {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_window_with_the_suppressed_count() {
        let log = FailureLog::new(Duration::from_secs(10));
        let t = Instant::now();
        let peer = FailureSource::Peer("192.0.2.7".parse().unwrap());
        let key = FailureSource::Key(AccessKey::new("0123456789abcdef0123").unwrap());
        assert_eq!(log.record(peer.clone(), t), Some(0));
        for i in 1..=99 {
            assert_eq!(log.record(peer.clone(), t + Duration::from_millis(i)), None);
        }
        // Another source has its own window.
        assert_eq!(log.record(key.clone(), t + Duration::from_secs(1)), Some(0));
        assert_eq!(log.record(key, t + Duration::from_secs(2)), None);
        // After the window: one line, saying how many were not logged.
        assert_eq!(
            log.record(peer.clone(), t + Duration::from_secs(10)),
            Some(99)
        );
        assert_eq!(log.record(peer, t + Duration::from_secs(11)), None);
    }

    #[test]
    fn a_flood_from_many_addresses_shares_one_line() {
        let log = FailureLog::new(Duration::from_secs(10));
        let t = Instant::now();
        let mut logged = 0;
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if log.record(FailureSource::Peer(ip), t).is_some() {
                logged += 1;
            }
        }
        // Every remembered address once, then one line for all the others.
        assert_eq!(logged, MAX_SOURCES + 1);
    }
}
