//! Streaming blake3 checksums.
//!
//! A checksum is always recorded with its [`ChecksumAlgorithm`], so a checksum made one way is
//! never compared with one made another way (GitLab compared file-size "checksums" with SHA256
//! after a storage migration and resynced forever, issue #498267).
//!
//! - [`ChecksumWriter`] hashes bytes as they are written, so a download is streamed to a
//!   temporary file and hashed in one pass.
//! - [`checksum_reader`] hashes any reader with a large buffer.
//! - [`checksum_file`] hashes a file on disk with blake3's memory-mapped, multi-threaded
//!   (rayon) path, which uses every core for large files.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use crate::buffer::BufferPool;

/// Length of a blake3 checksum in bytes.
pub const CHECKSUM_LEN: usize = 32;

/// Files at least this large are hashed with memory mapping and rayon by [`checksum_file`];
/// smaller ones are read with a buffer (thread start-up costs more than it saves).
pub const PARALLEL_THRESHOLD: u64 = 4 * 1024 * 1024;

/// Buffer size used by [`checksum_reader`] and [`checksum_file`] for sequential reads.
pub const READ_BUFFER: usize = 1024 * 1024;

/// The algorithm a checksum was made with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    /// BLAKE3 with a 32-byte output (the only one Geo for Rust makes).
    #[default]
    Blake3,
}

impl ChecksumAlgorithm {
    /// `"blake3"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Blake3 => "blake3",
        }
    }

    /// Output length in bytes.
    pub const fn len(self) -> usize {
        match self {
            ChecksumAlgorithm::Blake3 => CHECKSUM_LEN,
        }
    }

    /// Always `false`: no algorithm has an empty output. (Pairs with [`len`](Self::len).)
    pub const fn is_empty(self) -> bool {
        false
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blake3" => Ok(ChecksumAlgorithm::Blake3),
            other => Err(ChecksumError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// A value that cannot be read as a checksum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// The bytes have the wrong length.
    #[error("a blake3 checksum is {CHECKSUM_LEN} bytes, got {0}")]
    WrongLength(usize),
    /// The text is not hexadecimal of the right length.
    #[error("a blake3 checksum is 64 hex digits: {0:?}")]
    BadHex(String),
    /// An algorithm name that is not known.
    #[error("unknown checksum algorithm {0:?} (expected \"blake3\")")]
    UnknownAlgorithm(String),
}

/// A blake3 checksum (32 bytes). Displays and serializes as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum(pub [u8; CHECKSUM_LEN]);

impl Checksum {
    /// The algorithm: always [`ChecksumAlgorithm::Blake3`].
    pub const fn algorithm(&self) -> ChecksumAlgorithm {
        ChecksumAlgorithm::Blake3
    }

    /// Reads a checksum from stored bytes (a `verification_checksum` column).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChecksumError> {
        <[u8; CHECKSUM_LEN]>::try_from(bytes)
            .map(Checksum)
            .map_err(|_| ChecksumError::WrongLength(bytes.len()))
    }

    /// Reads stored bytes that were made with `algorithm`.
    pub fn from_stored(algorithm: ChecksumAlgorithm, bytes: &[u8]) -> Result<Self, ChecksumError> {
        match algorithm {
            ChecksumAlgorithm::Blake3 => Checksum::from_bytes(bytes),
        }
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, ChecksumError> {
        let mut out = [0u8; CHECKSUM_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| ChecksumError::BadHex(s.to_owned()))?;
        Ok(Checksum(out))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; CHECKSUM_LEN] {
        &self.0
    }

    /// The raw bytes as a `Vec`, as stored in a `Binary` column.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Compares with a checksum stored elsewhere together with its algorithm. A different
    /// algorithm is [`ChecksumComparison::Incomparable`], never a mismatch.
    pub fn compare(&self, algorithm: ChecksumAlgorithm, bytes: &[u8]) -> ChecksumComparison {
        if algorithm != self.algorithm() || bytes.len() != algorithm.len() {
            ChecksumComparison::Incomparable
        } else if bytes == self.0 {
            ChecksumComparison::Match
        } else {
            ChecksumComparison::Mismatch
        }
    }
}

/// The outcome of comparing two checksums that may have been made differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumComparison {
    /// Same algorithm, same value.
    Match,
    /// Same algorithm, different value: the data differ.
    Mismatch,
    /// Different algorithms (or a malformed stored value): nothing can be concluded.
    Incomparable,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

impl FromStr for Checksum {
    type Err = ChecksumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Checksum::from_hex(s)
    }
}

impl From<blake3::Hash> for Checksum {
    fn from(h: blake3::Hash) -> Self {
        Checksum(*h.as_bytes())
    }
}

impl From<Checksum> for Vec<u8> {
    fn from(c: Checksum) -> Self {
        c.to_vec()
    }
}

impl TryFrom<&[u8]> for Checksum {
    type Error = ChecksumError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Checksum::from_bytes(bytes)
    }
}

impl serde::Serialize for Checksum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Checksum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Checksum::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// The checksum of a byte slice.
pub fn checksum_bytes(data: &[u8]) -> Checksum {
    blake3::hash(data).into()
}

/// A writer that hashes everything written through it and counts the bytes.
///
/// ```
/// use std::io::Write;
/// let mut w = geo_core::checksum::ChecksumWriter::new(Vec::new());
/// w.write_all(b"hello").unwrap();
/// let (data, sum, len) = w.finish();
/// assert_eq!((data.as_slice(), len), (&b"hello"[..], 5));
/// assert_eq!(sum, geo_core::checksum::checksum_bytes(b"hello"));
/// ```
pub struct ChecksumWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> ChecksumWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        ChecksumWriter {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The checksum of the bytes written so far.
    pub fn checksum(&self) -> Checksum {
        self.hasher.finalize().into()
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The wrapped writer, mutably. Bytes written to it directly are not hashed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the wrapped writer, the checksum and the byte count. Does not flush.
    pub fn finish(self) -> (W, Checksum, u64) {
        let sum = self.hasher.finalize().into();
        (self.inner, sum, self.bytes)
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Hash only what the inner writer accepted, so a short write hashes exactly once.
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> fmt::Debug for ChecksumWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChecksumWriter")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Hashes everything `reader` yields, with a 1 MiB buffer. Returns the checksum and the length.
pub fn checksum_reader(mut reader: impl Read) -> io::Result<(Checksum, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    with_buffer(|buf| {
        loop {
            let n = match reader.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        Ok(())
    })?;
    Ok((hasher.finalize().into(), total))
}

/// Read buffers [`with_buffer`] hands out, kept for the next call (at most [`POOLED_BUFFERS`]).
static BUFFERS: BufferPool = BufferPool::new(READ_BUFFER, POOLED_BUFFERS);

/// Most buffers [`with_buffer`] keeps between calls: enough for every download and hashing
/// thread of a busy secondary (`sync_capacity` 10, a few verification threads).
pub const POOLED_BUFFERS: usize = 16;

/// Runs `f` with a [`READ_BUFFER`]-byte buffer from a process-wide [`BufferPool`]: allocated
/// (and zeroed) once, not once per file or per thread. Download threads live for one sync pass,
/// and zeroing a fresh 1 MiB for each of them dominated small-file syncs. Concurrent and
/// nested calls each get a buffer of their own.
pub fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    f(&mut BUFFERS.take())
}

/// Hashes a file. Files of [`PARALLEL_THRESHOLD`] bytes or more are memory-mapped and hashed on
/// every core (blake3's `update_mmap_rayon`); smaller ones are read sequentially.
///
/// Returns the checksum and the number of bytes hashed. The file must not be truncated while it
/// is being hashed (a memory-mapped read of a truncated file faults); Geo replaces blobs by
/// renaming, never in place.
pub fn checksum_file(path: impl AsRef<Path>) -> io::Result<(Checksum, u64)> {
    let path = path.as_ref();
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < PARALLEL_THRESHOLD {
        return checksum_reader(file);
    }
    drop(file);
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path)?;
    Ok((hasher.finalize().into(), hasher.count()))
}

/// Hashes a file sequentially on one core with a 1 MiB buffer (no memory mapping).
pub fn checksum_file_sequential(path: impl AsRef<Path>) -> io::Result<(Checksum, u64)> {
    checksum_reader(File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official BLAKE3 test vectors (test_vectors.json): input byte i is i % 251.
    fn vector_input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    const EMPTY: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    const ONE_BYTE: &str = "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213";
    const LEN_1024: &str = "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7";

    #[test]
    fn matches_blake3_reference_vectors() {
        assert_eq!(checksum_bytes(b"").to_hex(), EMPTY);
        assert_eq!(checksum_bytes(&vector_input(1)).to_hex(), ONE_BYTE);
        assert_eq!(checksum_bytes(&vector_input(1024)).to_hex(), LEN_1024);
    }

    #[test]
    fn writer_reader_and_file_agree() {
        let data = vector_input(3 * READ_BUFFER + 17);
        let expected = checksum_bytes(&data);

        let mut w = ChecksumWriter::new(Vec::new());
        for chunk in data.chunks(7919) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.bytes_written(), data.len() as u64);
        let (out, sum, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!((sum, n), (expected, data.len() as u64));

        assert_eq!(
            checksum_reader(&data[..]).unwrap(),
            (expected, data.len() as u64)
        );

        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, &data[..1024]).unwrap();
        assert_eq!(checksum_file(&small).unwrap().0.to_hex(), LEN_1024);

        // Above the threshold: exercises the mmap + rayon path.
        let big_data = vector_input(PARALLEL_THRESHOLD as usize * 2 + 5);
        let big = dir.path().join("big");
        std::fs::write(&big, &big_data).unwrap();
        let want = (checksum_bytes(&big_data), big_data.len() as u64);
        assert_eq!(checksum_file(&big).unwrap(), want);
        assert_eq!(checksum_file_sequential(&big).unwrap(), want);
    }

    #[test]
    fn hex_bytes_and_serde_round_trip() {
        let c = checksum_bytes(b"geo");
        assert_eq!(Checksum::from_hex(&c.to_string()).unwrap(), c);
        assert_eq!(
            Checksum::from_hex(&c.to_hex().to_uppercase()).unwrap(),
            c,
            "upper-case hex is accepted"
        );
        assert_eq!(Checksum::from_bytes(&c.to_vec()).unwrap(), c);
        assert_eq!(
            Checksum::from_bytes(&[1, 2, 3]),
            Err(ChecksumError::WrongLength(3))
        );
        assert!(matches!(
            Checksum::from_hex("xyz"),
            Err(ChecksumError::BadHex(_))
        ));
        assert!(Checksum::from_hex(&c.to_hex()[..62]).is_err());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{c}\""));
        assert_eq!(serde_json::from_str::<Checksum>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Checksum>("\"00\"").is_err());
        assert_eq!(format!("{c:?}"), format!("Checksum({c})"));
    }

    #[test]
    fn algorithm_is_recorded_and_compared() {
        let c = checksum_bytes(b"a");
        assert_eq!(c.algorithm().as_str(), "blake3");
        assert_eq!(
            "blake3".parse::<ChecksumAlgorithm>().unwrap(),
            ChecksumAlgorithm::Blake3
        );
        assert!("sha256".parse::<ChecksumAlgorithm>().is_err());
        assert_eq!(
            c.compare(ChecksumAlgorithm::Blake3, c.as_bytes()),
            ChecksumComparison::Match
        );
        assert_eq!(
            c.compare(ChecksumAlgorithm::Blake3, checksum_bytes(b"b").as_bytes()),
            ChecksumComparison::Mismatch
        );
        // A size "checksum" such as GitLab's "024417" is not a mismatch: it is incomparable.
        assert_eq!(
            c.compare(ChecksumAlgorithm::Blake3, b"024417"),
            ChecksumComparison::Incomparable
        );
    }

    #[test]
    fn reader_errors_propagate() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        assert_eq!(
            checksum_reader(Failing).unwrap_err().to_string(),
            "disk on fire"
        );
    }
}
