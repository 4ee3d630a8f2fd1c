//! The binary body of `GET /api/geo/retrieve_batch/{replicable}?ids=…`.
//!
//! A header, one entry per requested id, in request order, then an end marker; integers
//! little-endian:
//!
//! ```text
//! header: "GEOB" | version u8 (= VERSION)
//! entry:  kind u8 | id i64 | path_len u16 | path (UTF-8)          (kind != BLOB)
//!         kind u8 | id i64 | path_len u16 | path | checksum [32] | mac [32] | len u32 | bytes
//!                                                                 (kind == BLOB)
//! end:    0xFF | count u32                                       (count = number of entries)
//! ```
//!
//! The checksum of a [`BatchEntry::Blob`] is the primary's verified checksum when it has one (as
//! `retrieve`'s `X-Geo-Checksum`), the blake3 of the bytes sent otherwise: the secondary's
//! blob store compares it before renaming, so bytes damaged on the way never land. Its `mac`
//! ([`ChecksumMac`], made with the requesting key's secret over the replicable, id and
//! checksum) is what makes the checksum worth comparing: the secondary checks it before it uses
//! the entry, so bytes and checksum replaced together on the way are refused too. A truncated
//! or malformed body, or one of another version (version 1 had no header and no MAC), fails to
//! decode as a whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use geo_diesel::geo_core::checksum::Checksum;

use crate::auth::mac::{ChecksumMac, MAC_LEN};

/// The first bytes of a body.
pub const MAGIC: &[u8; 4] = b"GEOB";
/// The framing version this build writes and reads (2: the checksum MAC).
pub const VERSION: u8 = 2;

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
        /// The MAC of `checksum` for this record.
        mac: ChecksumMac,
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
#[derive(Debug)]
pub struct Encoder {
    out: BytesMut,
    count: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    /// An empty body.
    pub fn new() -> Self {
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        out.put_u8(VERSION);
        Encoder { out, count: 0 }
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
        if let BatchEntry::Blob {
            checksum,
            mac,
            data,
            ..
        } = entry
        {
            self.out.put_slice(&checksum.0);
            self.out.put_slice(&mac.0);
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

/// Decodes a whole body: every entry, or an error when anything is off (another framing
/// version, a bad kind, a length past the end, a missing or wrong end marker, trailing bytes).
/// The MACs are not checked here: that takes the secondary's secret.
pub fn decode(mut body: Bytes) -> Result<Vec<BatchEntry>, DecodeError> {
    let bad = |what: &str| DecodeError(what.to_owned());
    if body.remaining() < MAGIC.len() + 1 || &body[..MAGIC.len()] != MAGIC {
        return Err(bad(
            "no GEOB header (a primary of an older version, framing 1 without checksum MACs?)",
        ));
    }
    body.advance(MAGIC.len());
    let version = body.get_u8();
    if version != VERSION {
        return Err(DecodeError(format!(
            "framing version {version}, this build reads {VERSION}"
        )));
    }
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
        let path =
            String::from_utf8(body.split_to(len).to_vec()).map_err(|_| bad("path is not UTF-8"))?;
        out.push(match kind {
            BLOB => {
                if body.remaining() < 32 + MAC_LEN + 4 {
                    return Err(bad("blob header cut short"));
                }
                let mut sum = [0u8; 32];
                body.copy_to_slice(&mut sum);
                let mut mac = [0u8; MAC_LEN];
                body.copy_to_slice(&mut mac);
                let n = body.get_u32_le() as usize;
                if body.remaining() < n {
                    return Err(bad("blob cut short"));
                }
                BatchEntry::Blob {
                    id,
                    path,
                    checksum: Checksum(sum),
                    mac: ChecksumMac(mac),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_and_damage() {
        use geo_diesel::geo_core::checksum::checksum_bytes;
        let entries = vec![
            BatchEntry::Blob {
                id: 1,
                path: "a/1.bin".into(),
                checksum: checksum_bytes(b"hello"),
                mac: ChecksumMac([7; MAC_LEN]),
                data: Bytes::from_static(b"hello"),
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
        kind[MAGIC.len() + 1] = 9;
        assert!(decode(kind.into()).is_err());
        // Another version, or the headerless framing 1, is refused with a clear error.
        let mut v1 = body.to_vec();
        v1[MAGIC.len()] = 1;
        let e = decode(v1.into()).unwrap_err();
        assert!(e.to_string().contains("version 1"), "{e}");
        let e = decode(body.slice(MAGIC.len() + 1..)).unwrap_err();
        assert!(e.to_string().contains("GEOB"), "{e}");
    }
}
