//! The MAC that makes a checksum authentic between two sites.
//!
//! The checksum a secondary compares a download against (the `X-Geo-Checksum` header of
//! `retrieve`, the checksum of a `retrieve_batch` entry, a `checksums` answer entry) is only
//! worth something if nobody on the path could have replaced it: a proxy that rewrites a blob
//! can recompute a plain checksum as easily as the secondary can. So the primary sends, beside
//! every such checksum, a [`ChecksumMac`]: HMAC-SHA256, keyed with the secret of the access key
//! that signed the request (the secret only the pair knows), over a domain-separated encoding
//! of the replicable name, the record id and the checksum:
//!
//! ```text
//! "GL-Geo checksum MAC v1" 0x00 | len(name) u32 BE | name | id i64 BE
//!     | len(algorithm) u8 | algorithm ("blake3") | checksum
//! ```
//!
//! The leading label (with its NUL byte, which no JWT signing input holds) keeps these MACs
//! apart from the request tokens made with the same secret, and the length prefixes keep two
//! different (name, id, checksum) triples from encoding the same bytes. The secondary checks
//! the MAC with its own secret ([`ChecksumMac::verify`], constant time) before it trusts the
//! checksum; a missing or wrong MAC is an [`UnauthenticChecksum`] for that record.
//!
//! On the wire the MAC is 64 lower-case hex digits ([`ChecksumMac::to_hex`]) in headers and
//! JSON, and its 32 bytes in the binary `retrieve_batch` framing.

use std::fmt;

use geo_diesel::geo_core::checksum::{Checksum, ChecksumAlgorithm};
use hmac::Mac;

use super::token::HmacSha256;
use super::{AccessKey, KeyRing, Secret};

/// Length of a [`ChecksumMac`] in bytes.
pub const MAC_LEN: usize = 32;

/// The domain label every MAC'd message starts with.
const DOMAIN: &[u8] = b"GL-Geo checksum MAC v1\0";

/// The MAC of one (replicable, id, checksum) triple (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ChecksumMac(pub [u8; MAC_LEN]);

/// Why a checksum is not authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MacError {
    /// The answer carries a checksum but no MAC.
    #[error("it comes without a MAC")]
    Missing,
    /// The MAC is not 64 hex digits.
    #[error("its MAC is malformed")]
    Malformed,
    /// The MAC was not made with this pair's secret over this replicable, id and checksum.
    #[error("its MAC does not match (rewritten on the way, or signed with another secret)")]
    Mismatch,
}

/// A checksum from the primary that the secondary refuses to trust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the primary's checksum of {replicable} {id} is not authentic: {reason}")]
pub struct UnauthenticChecksum {
    /// The replicable name.
    pub replicable: String,
    /// The record id.
    pub id: i64,
    /// What is wrong with its MAC.
    pub reason: MacError,
}

fn keyed(secret: &Secret, replicable: &str, id: i64, checksum: &Checksum) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(DOMAIN);
    mac.update(&(replicable.len() as u32).to_be_bytes());
    mac.update(replicable.as_bytes());
    mac.update(&id.to_be_bytes());
    let algorithm = ChecksumAlgorithm::Blake3.as_str().as_bytes();
    mac.update(&[algorithm.len() as u8]);
    mac.update(algorithm);
    mac.update(&checksum.0);
    mac
}

impl ChecksumMac {
    /// The MAC of `checksum` as the checksum of `replicable` `id`, keyed with `secret`.
    pub fn compute(secret: &Secret, replicable: &str, id: i64, checksum: &Checksum) -> Self {
        ChecksumMac(
            keyed(secret, replicable, id, checksum)
                .finalize()
                .into_bytes()
                .into(),
        )
    }

    /// Checks, in constant time, that this is the MAC of `checksum` as the checksum of
    /// `replicable` `id` under `secret`.
    pub fn verify(
        &self,
        secret: &Secret,
        replicable: &str,
        id: i64,
        checksum: &Checksum,
    ) -> Result<(), MacError> {
        keyed(secret, replicable, id, checksum)
            .verify_slice(&self.0)
            .map_err(|_| MacError::Mismatch)
    }

    /// Checks a MAC as received (`None`: absent; otherwise hex) and, when it holds, vouches for
    /// `checksum`: the one way a secondary turns a received checksum into one it trusts.
    pub fn check_received(
        received: Option<&str>,
        secret: &Secret,
        replicable: &str,
        id: i64,
        checksum: &Checksum,
    ) -> Result<(), UnauthenticChecksum> {
        let fail = |reason| UnauthenticChecksum {
            replicable: replicable.to_owned(),
            id,
            reason,
        };
        let mac = received
            .ok_or(MacError::Missing)
            .and_then(ChecksumMac::from_hex)
            .map_err(fail)?;
        mac.verify(secret, replicable, id, checksum).map_err(fail)
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, MacError> {
        let mut out = [0u8; MAC_LEN];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| MacError::Malformed)?;
        Ok(ChecksumMac(out))
    }
}

impl fmt::Debug for ChecksumMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChecksumMac({})", self.to_hex())
    }
}

impl KeyRing {
    /// The MAC of `checksum` as the checksum of `replicable` `id` for the secondary holding
    /// `key` (the key that signed the request being answered); `None` when the ring no longer
    /// holds that key.
    pub fn checksum_mac(
        &self,
        key: &AccessKey,
        replicable: &str,
        id: i64,
        checksum: &Checksum,
    ) -> Option<ChecksumMac> {
        let (_, secret) = self.secret(key)?;
        Some(ChecksumMac::compute(secret, replicable, id, checksum))
    }
}

#[cfg(test)]
mod tests {
    use geo_diesel::geo_core::checksum::checksum_bytes;

    use super::*;
    use crate::auth::Credentials;
    use crate::auth::keys::tests::creds;

    #[test]
    fn a_mac_binds_secret_replicable_id_and_checksum() {
        let c = creds();
        let sum = checksum_bytes(b"hello");
        let mac = ChecksumMac::compute(&c.secret, "widget", 7, &sum);
        assert_eq!(mac.verify(&c.secret, "widget", 7, &sum), Ok(()));
        let other = Credentials::generate();
        assert_eq!(
            mac.verify(&other.secret, "widget", 7, &sum),
            Err(MacError::Mismatch)
        );
        assert_eq!(
            mac.verify(&c.secret, "widget", 8, &sum),
            Err(MacError::Mismatch)
        );
        assert_eq!(
            mac.verify(&c.secret, "widgets", 7, &sum),
            Err(MacError::Mismatch)
        );
        assert_eq!(
            mac.verify(&c.secret, "widget", 7, &checksum_bytes(b"hellO")),
            Err(MacError::Mismatch)
        );
        let mut flipped = mac;
        flipped.0[31] ^= 1;
        assert_eq!(
            flipped.verify(&c.secret, "widget", 7, &sum),
            Err(MacError::Mismatch)
        );
        // Not the plain HMAC of the checksum: the domain label and the framing are in it.
        let mut plain = c.secret.mac();
        plain.update(&sum.0);
        assert_ne!(mac.0, <[u8; 32]>::from(plain.finalize().into_bytes()));
    }

    #[test]
    fn received_macs() {
        let c = creds();
        let sum = checksum_bytes(b"x");
        let hex = ChecksumMac::compute(&c.secret, "doc", 1, &sum).to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(
            ChecksumMac::from_hex(&hex).unwrap(),
            ChecksumMac::compute(&c.secret, "doc", 1, &sum)
        );
        assert!(ChecksumMac::check_received(Some(&hex), &c.secret, "doc", 1, &sum).is_ok());
        for (received, reason) in [
            (None, MacError::Missing),
            (Some("zz"), MacError::Malformed),
            (Some(&hex[..62]), MacError::Malformed),
            (Some(&"0".repeat(64)[..]), MacError::Mismatch),
        ] {
            let e = ChecksumMac::check_received(received, &c.secret, "doc", 1, &sum).unwrap_err();
            assert_eq!(e.reason, reason);
            let text = e.to_string();
            assert!(
                text.contains("doc 1") && text.contains("not authentic"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_ring_macs_with_the_requesting_keys_secret() {
        let a = creds();
        let b = Credentials::generate();
        let ring = KeyRing::with([a.clone(), b.clone()]);
        let sum = checksum_bytes(b"y");
        let mac = ring.checksum_mac(&b.access_key, "doc", 3, &sum).unwrap();
        assert_eq!(mac.verify(&b.secret, "doc", 3, &sum), Ok(()));
        assert!(mac.verify(&a.secret, "doc", 3, &sum).is_err());
        assert!(
            ring.checksum_mac(&Credentials::generate().access_key, "doc", 3, &sum)
                .is_none()
        );
    }
}
