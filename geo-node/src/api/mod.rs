//! The wire format of the Geo HTTP API: paths, headers, JSON bodies and error codes, shared by
//! the server ([`crate::server`]) and the client ([`crate::client`]).
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /api/geo/retrieve/{replicable}/{id}` | the blob, streamed; `Content-Length`, [`CHECKSUM_HEADER`] (the primary's verified checksum, or the blake3 of the file as served) and [`CHECKSUM_MAC_HEADER`] |
//! | `GET /api/geo/blob_path/{replicable}/{id}` | [`BlobPathResponse`] |
//! | `GET /api/geo/events?after=ID&limit=N&wait=MS&consumed=C` | [`EventsResponse`]: up to `N` events with `id > ID`, and the primary's identity and high-water mark read with them; with `wait`, an answer that would be empty waits up to `MS` milliseconds (at most [`MAX_EVENT_WAIT`]) and returns as soon as an event is committed. `consumed` is the id up to which the caller needs nothing (its cursor, or its lowest open gap minus one): the primary records it for the caller's access key and prunes nothing above it (up to its retention bound), and answers `410` [`geo_code::EVENTS_PRUNED`] when it already pruned past it (or past `ID`, for a caller that sends no `consumed`) |
//! | `GET /api/geo/events?ids=1,2,3` | [`EventsResponse`]: those of the events that exist (gap filling) |
//! | `GET /api/geo/events/last` | [`LastEventResponse`] |
//! | `GET /api/geo/identity` | [`IdentityResponse`]: the primary database's identity and event-id high-water mark |
//! | `GET /api/geo/ids/{replicable}?from=A&to=B[&partitions=3,7,12]` | [`IdsResponse`]: ids in `A..=B` (of those partitions only: selective sync) and the highest id |
//! | `GET /api/geo/checksums/{replicable}?ids=1,2,3` | [`ChecksumsResponse`] (each verified checksum with its MAC) |
//! | `GET /api/geo/retrieve_batch/{replicable}?ids=1,2,3` | the paths of those records and the bytes of their small blobs with their checksums and MACs, in the binary framing of [`batch`] |
//! | `GET /api/geo/status` | [`NodeStatus`]: the site's status (GitLab's field names) |
//! | `GET /metrics` | Prometheus text format, not authenticated |
//!
//! Every `/api/geo/` endpoint needs `Authorization: GL-Geo <access_key>:<jwt>` (see
//! [`crate::auth`]). Errors are JSON [`ErrorBody`]s with a `geo_code`.
//!
//! Every checksum a secondary compares content against comes with a MAC made with the secret
//! of the key that signed the request ([`crate::auth::mac`]): the header
//! [`CHECKSUM_MAC_HEADER`] of `retrieve`, the MAC of each `retrieve_batch` blob entry, the `mac`
//! of each verified [`ChecksumEntry`]. A secondary trusts no checksum without it.

use std::collections::BTreeMap;

use geo_diesel::geo_core::checksum::{Checksum, ChecksumAlgorithm};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{PrimaryChecksum, PrimaryIdentity};
use geo_diesel::geo_core::state::VerificationState;
use serde::{Deserialize, Serialize};

pub mod batch;
pub mod sites;
pub mod status;
pub mod types;

pub use sites::{KnownSecondaryStatus, PrunedRecoveryStatus};
pub use status::{
    CursorStatus, HealthStatus, LinkStatus, NodeStatus, PrimaryStatus, SecondaryStatus, SiteRole,
};
pub use types::{ReplicableType, parse_gid};

/// Response header of `retrieve` carrying the blob's blake3 checksum (hex): the primary's
/// verified checksum, or, for a record it has not verified, the blake3 of the file it serves.
pub const CHECKSUM_HEADER: &str = "x-geo-checksum";

/// Response header of `retrieve` carrying the MAC of [`CHECKSUM_HEADER`]'s checksum
/// ([`crate::auth::mac::ChecksumMac`], hex).
pub const CHECKSUM_MAC_HEADER: &str = "x-geo-checksum-mac";

/// Most ids one `ids=` list may hold.
pub const MAX_IDS: usize = 1000;

/// Largest blob whose bytes travel in a `retrieve_batch` answer; larger ones are fetched with
/// `retrieve`.
pub const MAX_BATCH_BLOB: u64 = 64 * 1024;

/// Most blob bytes one `retrieve_batch` answer carries; blobs beyond it are fetched with
/// `retrieve`.
pub const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Most events one `/api/geo/events` answer holds.
pub const MAX_EVENTS: usize = 10_000;

/// Longest `wait` one `/api/geo/events` request may ask for; a longer one is cut to it. Below
/// the client's default read timeout (30 s), so a waiting answer is never taken for a dead
/// primary.
pub const MAX_EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Widest `from..=to` range one `/api/geo/ids` request may ask for.
pub const MAX_ID_RANGE: i64 = 100_000;

/// The `geo_code` values of error bodies.
pub mod geo_code {
    /// The record exists but its file does not (GitLab's code).
    pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
    /// The record does not exist.
    pub const RECORD_NOT_FOUND: &str = "RECORD_NOT_FOUND";
    /// The replicable name is not registered on this site.
    pub const UNKNOWN_REPLICABLE: &str = "UNKNOWN_REPLICABLE";
    /// A parameter is malformed (id, ids list, range).
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The stored blob path is refused (absolute, `..`, or escaping the store through a link).
    pub const BLOB_PATH_REFUSED: &str = "BLOB_PATH_REFUSED";
    /// Missing or bad credentials.
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    /// Valid credentials that may not do this.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// This site does not serve that endpoint (a secondary asked for primary data).
    pub const NOT_A_PRIMARY: &str = "NOT_A_PRIMARY";
    /// A temporary failure on the primary (database busy, I/O): retry later.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// The caller's access key has as many requests in flight as it may (`429`, with
    /// `Retry-After`): retry later.
    pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";
    /// Any other server failure.
    pub const INTERNAL: &str = "INTERNAL";
    /// `410`: the primary pruned events the caller had not consumed ([`super::ErrorBody`]
    /// carries `pruned_through` and `consumed`): recover with a full backfill.
    pub const EVENTS_PRUNED: &str = "EVENTS_PRUNED";
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code from [`geo_code`].
    pub geo_code: String,
    /// A human-readable message (never a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// With [`geo_code::EVENTS_PRUNED`]: every event up to this id is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<i64>,
    /// With [`geo_code::EVENTS_PRUNED`]: the point the caller said it consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed: Option<i64>,
}

/// `GET /api/geo/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsResponse {
    /// The events, in id order.
    pub events: Vec<Event>,
    /// For `after=` reads: the primary database's identity and high-water mark, read in the
    /// same snapshot as the events (absent for `ids=` reads, or from a primary without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<PrimaryIdentity>,
}

/// `GET /api/geo/identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityResponse {
    /// The primary database's identity and event-id high-water mark; `null` when it publishes
    /// none.
    pub primary: Option<PrimaryIdentity>,
}

/// `GET /api/geo/events/last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastEventResponse {
    /// The highest event id, `null` when the log is empty.
    pub last_event_id: Option<i64>,
}

/// `GET /api/geo/ids/{replicable}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdsResponse {
    /// Record ids in the requested range, ascending (empty when no range was asked).
    pub ids: Vec<i64>,
    /// The highest record id, `null` when there is none.
    pub max_id: Option<i64>,
}

/// `GET /api/geo/blob_path/{replicable}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobPathResponse {
    /// The blob path relative to the store root, `null` when the record does not exist.
    pub blob_path: Option<String>,
}

/// One record's verification state on the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumEntry {
    /// The record id.
    pub id: i64,
    /// The primary's verification state.
    pub state: VerificationState,
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The checksum, when verified.
    pub checksum: Option<Checksum>,
    /// When it was verified, if known.
    pub verified_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The MAC of the verified checksum ([`crate::auth::mac::ChecksumMac`], hex), made with
    /// the requesting key's secret; absent when there is no verified checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl ChecksumEntry {
    /// From the trait's form, without a MAC.
    pub fn new(id: i64, p: &PrimaryChecksum) -> Self {
        ChecksumEntry {
            id,
            state: p.state,
            algorithm: p.algorithm,
            checksum: p.checksum,
            verified_at: p.verified_at,
            mac: None,
        }
    }

    /// With the MAC of its verified checksum under `mac` (`mac(id, checksum)`; no MAC when
    /// there is no verified checksum).
    pub fn with_mac(
        mut self,
        mac: impl FnOnce(i64, &Checksum) -> Option<crate::auth::mac::ChecksumMac>,
    ) -> Self {
        let verified = match self.state {
            VerificationState::Succeeded => self.checksum,
            _ => None,
        };
        self.mac = verified.and_then(|c| mac(self.id, &c)).map(|m| m.to_hex());
        self
    }

    /// To the trait's form (the MAC, checked by the caller, is dropped).
    pub fn into_primary(self) -> (i64, PrimaryChecksum) {
        (
            self.id,
            PrimaryChecksum {
                state: self.state,
                algorithm: self.algorithm,
                checksum: self.checksum,
                verified_at: self.verified_at,
            },
        )
    }
}

/// `GET /api/geo/checksums/{replicable}?ids=…`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumsResponse {
    /// Records that have a verification state.
    pub checksums: Vec<ChecksumEntry>,
    /// The blob paths of the requested records that exist (saves one request per download).
    #[serde(default)]
    pub blob_paths: BTreeMap<i64, String>,
}

/// Parses an `ids=1,2,3` list: at most [`MAX_IDS`] integers.
pub fn parse_ids(s: &str) -> Result<Vec<i64>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let ids = s
        .split(',')
        .map(|p| p.trim().parse::<i64>().map_err(|_| format!("bad id {p:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > MAX_IDS {
        return Err(format!(
            "at most {MAX_IDS} ids per request, got {}",
            ids.len()
        ));
    }
    Ok(ids)
}

/// Renders an `ids=` list.
pub fn join_ids(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// Whether `name` may appear in a URL path segment as a replicable name (what
/// `#[replicable]` accepts: lower-case letters, digits and `_`).
pub fn valid_replicable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists() {
        assert_eq!(parse_ids("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_ids("").unwrap(), Vec::<i64>::new());
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids(&join_ids(&(0..1001).collect::<Vec<_>>())).is_err());
        assert_eq!(join_ids(&[4, -1, 9]), "4,-1,9");
        assert!(valid_replicable_name("widget_2"));
        assert!(
            !valid_replicable_name("../etc")
                && !valid_replicable_name("")
                && !valid_replicable_name("Widget")
        );
    }
}
