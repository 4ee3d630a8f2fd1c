//! The wire format of the Geo HTTP API: paths, headers, JSON bodies and error codes, shared by
//! the server ([`crate::server`]) and the client ([`crate::client`]).
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /api/geo/retrieve/{replicable}/{id}` | the blob, streamed; `Content-Length`, and [`CHECKSUM_HEADER`] when the primary verified it |
//! | `GET /api/geo/blob_path/{replicable}/{id}` | [`BlobPathResponse`] |
//! | `GET /api/geo/events?after=ID&limit=N` | [`EventsResponse`]: up to `N` events with `id > ID` |
//! | `GET /api/geo/events?ids=1,2,3` | [`EventsResponse`]: those of the events that exist (gap filling) |
//! | `GET /api/geo/events/last` | [`LastEventResponse`] |
//! | `GET /api/geo/ids/{replicable}?from=A&to=B` | [`IdsResponse`]: ids in `A..=B` and the highest id |
//! | `GET /api/geo/checksums/{replicable}?ids=1,2,3` | [`ChecksumsResponse`] |
//! | `GET /api/geo/retrieve_batch/{replicable}?ids=1,2,3` | the paths of those records and the bytes of their small blobs, in the binary framing of [`batch`] |
//! | `GET /api/geo/status` | the site's status object (GitLab's field names) |
//! | `GET /metrics` | Prometheus text format, not authenticated |
//!
//! Every `/api/geo/` endpoint needs `Authorization: GL-Geo <access_key>:<jwt>` (see
//! [`crate::auth`]). Errors are JSON [`ErrorBody`]s with a `geo_code`.

use std::collections::BTreeMap;

use geo_diesel::geo_core::checksum::{Checksum, ChecksumAlgorithm};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::PrimaryChecksum;
use geo_diesel::geo_core::state::VerificationState;
use serde::{Deserialize, Serialize};

/// Response header carrying the primary's blake3 checksum (hex) of a blob it has verified.
pub const CHECKSUM_HEADER: &str = "x-geo-checksum";

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
    /// This site does not serve that endpoint (a secondary asked for primary data).
    pub const NOT_A_PRIMARY: &str = "NOT_A_PRIMARY";
    /// A temporary failure on the primary (database busy, I/O): retry later.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// Any other server failure.
    pub const INTERNAL: &str = "INTERNAL";
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code from [`geo_code`].
    pub geo_code: String,
    /// A human-readable message (never a secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `GET /api/geo/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsResponse {
    /// The events, in id order.
    pub events: Vec<Event>,
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
}

impl ChecksumEntry {
    /// From the trait's form.
    pub fn new(id: i64, p: &PrimaryChecksum) -> Self {
        ChecksumEntry {
            id,
            state: p.state,
            algorithm: p.algorithm,
            checksum: p.checksum,
            verified_at: p.verified_at,
        }
    }

    /// To the trait's form.
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

/// The binary body of `GET /api/geo/retrieve_batch/{replicable}?ids=…`.
///
/// One entry per requested id, in request order, then an end marker; integers little-endian:
///
/// ```text
/// entry: kind u8 | id i64 | path_len u16 | path (UTF-8)          (kind != BLOB)
///        kind u8 | id i64 | path_len u16 | path | checksum [32] | len u32 | bytes   (kind == BLOB)
/// end:   0xFF | count u32                                       (count = number of entries)
/// ```
///
/// The checksum of a [`BatchEntry::Blob`](batch::BatchEntry::Blob) is the primary's verified checksum when it has one
/// (as `retrieve`'s `X-Geo-Checksum`), the blake3 of the bytes sent otherwise: the secondary's
/// blob store compares it before renaming, so bytes damaged on the way never land. A truncated
/// or malformed body fails to decode as a whole.
pub mod batch {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use geo_diesel::geo_core::checksum::Checksum;

    /// `kind` of an entry carrying the bytes.
    pub const BLOB: u8 = 1;
    /// `kind` of an entry to fetch with `retrieve` (too large, over the answer's budget, or
    /// refused/unreadable here: `retrieve` then answers with the precise error).
    pub const INDIVIDUAL: u8 = 2;
    /// `kind` of a record whose file is missing on the primary (`FILE_NOT_FOUND`).
    pub const FILE_NOT_FOUND: u8 = 3;
    /// `kind` of a record that does not exist (`RECORD_NOT_FOUND`; the path is empty).
    pub const RECORD_NOT_FOUND: u8 = 4;
    /// `kind` of the end marker.
    pub const END: u8 = 0xFF;

    /// One record of a batch answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum BatchEntry {
        /// The blob's bytes.
        Blob {
            /// The record id.
            id: i64,
            /// Its blob path.
            path: String,
            /// The checksum the bytes must have (see the module docs).
            checksum: Checksum,
            /// The bytes.
            data: Bytes,
        },
        /// Fetch this one with `retrieve`.
        Individual {
            /// The record id.
            id: i64,
            /// Its blob path.
            path: String,
        },
        /// The record exists but its file does not.
        FileNotFound {
            /// The record id.
            id: i64,
            /// Its blob path.
            path: String,
        },
        /// The record does not exist.
        RecordNotFound {
            /// The record id.
            id: i64,
        },
    }

    impl BatchEntry {
        /// The record id.
        pub fn id(&self) -> i64 {
            match self {
                BatchEntry::Blob { id, .. }
                | BatchEntry::Individual { id, .. }
                | BatchEntry::FileNotFound { id, .. }
                | BatchEntry::RecordNotFound { id } => *id,
            }
        }

        /// The blob path, `None` for a record that does not exist.
        pub fn path(&self) -> Option<&str> {
            match self {
                BatchEntry::Blob { path, .. }
                | BatchEntry::Individual { path, .. }
                | BatchEntry::FileNotFound { path, .. } => Some(path),
                BatchEntry::RecordNotFound { .. } => None,
            }
        }
    }

    /// A batch body that does not decode.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("malformed retrieve_batch answer: {0}")]
    pub struct DecodeError(pub String);

    /// Writes entries into one body.
    #[derive(Debug, Default)]
    pub struct Encoder {
        out: BytesMut,
        count: u32,
    }

    impl Encoder {
        /// An empty body.
        pub fn new() -> Self {
            Encoder::default()
        }

        /// Appends one entry. A path longer than 65,535 bytes is written empty (the client then
        /// fails that record's download with a clear error instead of a wrong path); the server
        /// never sends one, as it marks such records [`BatchEntry::Individual`].
        pub fn push(&mut self, entry: &BatchEntry) {
            let (kind, path) = match entry {
                BatchEntry::Blob { path, .. } => (BLOB, path.as_str()),
                BatchEntry::Individual { path, .. } => (INDIVIDUAL, path.as_str()),
                BatchEntry::FileNotFound { path, .. } => (FILE_NOT_FOUND, path.as_str()),
                BatchEntry::RecordNotFound { .. } => (RECORD_NOT_FOUND, ""),
            };
            let path = if path.len() > usize::from(u16::MAX) {
                ""
            } else {
                path
            };
            self.out.put_u8(kind);
            self.out.put_i64_le(entry.id());
            self.out.put_u16_le(path.len() as u16);
            self.out.put_slice(path.as_bytes());
            if let BatchEntry::Blob { checksum, data, .. } = entry {
                self.out.put_slice(&checksum.0);
                self.out.put_u32_le(data.len() as u32);
                self.out.put_slice(data);
            }
            self.count += 1;
        }

        /// The finished body, end marker included.
        pub fn finish(mut self) -> Bytes {
            self.out.put_u8(END);
            self.out.put_u32_le(self.count);
            self.out.freeze()
        }
    }

    /// Decodes a whole body: every entry, or an error when anything is off (a bad kind, a
    /// length past the end, a missing or wrong end marker, trailing bytes).
    pub fn decode(mut body: Bytes) -> Result<Vec<BatchEntry>, DecodeError> {
        let bad = |what: &str| DecodeError(what.to_owned());
        let mut out = Vec::new();
        loop {
            if body.remaining() < 1 {
                return Err(bad("no end marker"));
            }
            let kind = body.get_u8();
            if kind == END {
                if body.remaining() != 4 {
                    return Err(bad("bad end marker"));
                }
                let count = body.get_u32_le();
                if count as usize != out.len() {
                    return Err(bad("entry count does not match"));
                }
                return Ok(out);
            }
            if body.remaining() < 10 {
                return Err(bad("entry cut short"));
            }
            let id = body.get_i64_le();
            let len = usize::from(body.get_u16_le());
            if body.remaining() < len {
                return Err(bad("path cut short"));
            }
            let path = String::from_utf8(body.split_to(len).to_vec())
                .map_err(|_| bad("path is not UTF-8"))?;
            out.push(match kind {
                BLOB => {
                    if body.remaining() < 36 {
                        return Err(bad("blob header cut short"));
                    }
                    let mut sum = [0u8; 32];
                    body.copy_to_slice(&mut sum);
                    let n = body.get_u32_le() as usize;
                    if body.remaining() < n {
                        return Err(bad("blob cut short"));
                    }
                    BatchEntry::Blob {
                        id,
                        path,
                        checksum: Checksum(sum),
                        data: body.split_to(n),
                    }
                }
                INDIVIDUAL => BatchEntry::Individual { id, path },
                FILE_NOT_FOUND => BatchEntry::FileNotFound { id, path },
                RECORD_NOT_FOUND => BatchEntry::RecordNotFound { id },
                k => return Err(DecodeError(format!("unknown entry kind {k}"))),
            });
        }
    }
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

    #[test]
    fn batch_round_trip_and_damage() {
        use batch::*;
        use geo_diesel::geo_core::checksum::checksum_bytes;
        let entries = vec![
            BatchEntry::Blob {
                id: 1,
                path: "a/1.bin".into(),
                checksum: checksum_bytes(b"hello"),
                data: bytes::Bytes::from_static(b"hello"),
            },
            BatchEntry::Individual {
                id: 2,
                path: "b/ü.bin".into(),
            },
            BatchEntry::FileNotFound {
                id: 3,
                path: "c".into(),
            },
            BatchEntry::RecordNotFound { id: -4 },
        ];
        let mut enc = Encoder::new();
        entries.iter().for_each(|e| enc.push(e));
        let body = enc.finish();
        assert_eq!(decode(body.clone()).unwrap(), entries);
        assert_eq!(decode(Encoder::new().finish()).unwrap(), vec![]);
        // Every truncation fails, and so do trailing bytes and a wrong count.
        for n in 0..body.len() {
            assert!(decode(body.slice(..n)).is_err(), "cut at {n}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode(longer.into()).is_err());
        let mut wrong = body.to_vec();
        *wrong.last_mut().unwrap() ^= 1;
        assert!(decode(wrong.into()).is_err());
        let mut kind = body.to_vec();
        kind[0] = 9;
        assert!(decode(kind.into()).is_err());
    }
}
