//! Where blobs live: the [`BlobStore`] trait and [`LocalBlobStore`], a directory on a local
//! file system.
//!
//! Keys are [`BlobPath`]s: validated relative paths that cannot name anything outside the
//! store's root. Writes are atomic: bytes stream into a temporary file `.tmp_<random>` beside the
//! destination while being hashed, the file is fsynced, its checksum is optionally compared with
//! the expected one, and only then is it renamed into place (and the directory fsynced). A reader
//! never sees a partial file at the final path, and the temporary file is removed on every error.

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::checksum::Checksum;

mod atomic;
#[cfg(target_os = "linux")]
mod beneath;
mod local;
mod path;
mod resume;

pub use local::LocalBlobStore;
pub use path::{BlobPath, BlobPathProblem, InvalidBlobPath};
pub use resume::{PARTIAL_PREFIX, PartialWrite, ResumeKey, is_partial_file_name};

/// How long a resumable temporary file ([`PARTIAL_PREFIX`]) untouched by any attempt is kept by
/// [`LocalBlobStore::remove_stale_temp_files`]: every attempt touches it, so one older than
/// this belongs to a record nobody is downloading any more.
pub const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Prefix of the temporary files a [`LocalBlobStore`] writes. A [`BlobPath`] may not use it for
/// its file name, so cleaning temporary files never removes a blob.
pub const TEMP_PREFIX: &str = ".tmp_";

/// A failed blob store operation. Every variant names the blob path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The key is not a valid relative path.
    #[error(transparent)]
    InvalidPath(#[from] InvalidBlobPath),
    /// The path resolves outside the store's root through a symbolic link.
    #[error("blob path {path:?} escapes the blob store root through a symbolic link")]
    Escapes {
        /// The blob path.
        path: String,
    },
    /// No blob at this path.
    #[error("no blob at {path:?}")]
    NotFound {
        /// The blob path.
        path: String,
    },
    /// Something other than a regular file (a directory, say) is at this path.
    #[error("{path:?} is not a regular file")]
    NotAFile {
        /// The blob path.
        path: String,
    },
    /// The written bytes did not have the expected checksum; nothing was stored.
    #[error(
        "checksum mismatch writing {path:?}: expected {expected}, got {actual} ({bytes} bytes)"
    )]
    ChecksumMismatch {
        /// The blob path.
        path: String,
        /// The checksum the caller expected (the primary's).
        expected: Checksum,
        /// The checksum of the bytes received.
        actual: Checksum,
        /// How many bytes were received.
        bytes: u64,
    },
    /// The reader supplying the blob failed; nothing was stored.
    #[error("reading the data for {path:?} failed after {bytes} bytes: {source}")]
    Source {
        /// The blob path.
        path: String,
        /// Bytes received before the failure.
        bytes: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// A request to a remote store (object storage) failed.
    #[error("{op} failed for blob {path:?} in {store}: {source}")]
    Remote {
        /// The blob path.
        path: String,
        /// Where the blob lives (`s3://bucket/prefix`).
        store: String,
        /// What was being done: "get", "head", "put", "multipart upload", "delete", ...
        op: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The store cannot do this for any blob (a local file path of an object in S3, say).
    #[error("{op} is not possible for blob {path:?}: {why}")]
    Unsupported {
        /// The blob path.
        path: String,
        /// What was asked.
        op: &'static str,
        /// Why the store cannot.
        why: &'static str,
    },
    /// A file system operation failed.
    #[error("{op} failed for blob {path:?}: {source}")]
    Io {
        /// The blob path.
        path: String,
        /// What was being done: "open", "create directory", "write", "fsync", "rename", ...
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl BlobError {
    fn io(path: &BlobPath, op: &'static str, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::NotFound && matches!(op, "open" | "metadata") {
            return BlobError::NotFound {
                path: path.to_string(),
            };
        }
        BlobError::Io {
            path: path.to_string(),
            op,
            source,
        }
    }

    /// Whether the error means "there is no such blob".
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobError::NotFound { .. })
    }
}

/// A blob opened for reading.
pub struct BlobReader {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// The size in bytes at the time it was opened.
    pub size: u64,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What a successful write stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Bytes written.
    pub bytes: u64,
    /// Their checksum.
    pub checksum: Checksum,
}

/// A place that stores blobs by relative path.
pub trait BlobStore: Send + Sync {
    /// Opens the blob for reading.
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError>;

    /// Opens the blob for reading from byte `offset`: the reader yields the bytes after it and
    /// [`BlobReader::size`] is the whole blob's size (an `offset` at or past the end yields
    /// nothing). The default reads and discards the first `offset` bytes; a local store seeks.
    fn open_at(&self, path: &BlobPath, offset: u64) -> Result<BlobReader, BlobError> {
        let mut blob = self.open(path)?;
        if offset > 0 {
            io::copy(&mut (&mut blob.reader).take(offset), &mut io::sink())
                .map_err(|e| BlobError::io(path, "read", e))?;
        }
        Ok(blob)
    }

    /// The resumable write of the download `key` to `path`: the temporary file an earlier
    /// attempt left, hashed and locked, or (with `create`) a new empty one. `Ok(None)` when
    /// there is none and `create` is false, when another writer holds it, or when the store
    /// cannot resume (the default): then write with [`write`](BlobStore::write).
    fn resume(
        &self,
        path: &BlobPath,
        key: &ResumeKey,
        create: bool,
    ) -> Result<Option<Box<dyn PartialWrite + '_>>, BlobError> {
        let _ = (path, key, create);
        Ok(None)
    }

    /// Stores everything `reader` yields at `path`, atomically: on success the whole new content
    /// is at `path`; on any error the previous content (or absence) is unchanged. When
    /// `expected` is given and the received bytes hash differently, nothing is stored and the
    /// error is [`BlobError::ChecksumMismatch`].
    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError>;

    /// Removes the blob. Returns whether it existed.
    fn delete(&self, path: &BlobPath) -> Result<bool, BlobError>;

    /// Whether a blob exists at `path`.
    fn exists(&self, path: &BlobPath) -> Result<bool, BlobError> {
        Ok(self.size(path)?.is_some())
    }

    /// The blob's size, or `None` when it does not exist.
    fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError>;

    /// The blob's checksum and size.
    fn checksum(&self, path: &BlobPath) -> Result<(Checksum, u64), BlobError> {
        let blob = self.open(path)?;
        crate::checksum::checksum_reader(blob.reader).map_err(|e| BlobError::Io {
            path: path.to_string(),
            op: "read",
            source: e,
        })
    }

    /// Whether the store is object storage (S3 and the like) rather than a local directory: a
    /// secondary whose store is and whose `sync_object_storage` is off leaves the copying to
    /// the storage provider and only tracks and verifies.
    fn is_object_storage(&self) -> bool {
        false
    }

    /// The absolute file-system path of a blob, when the store is a local directory.
    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError>;
}

/// Whether `name` is a temporary-file name of a [`LocalBlobStore`].
pub fn is_temp_file_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert!(is_temp_file_name(OsStr::new(".tmp_abc")));
        assert!(!is_temp_file_name(OsStr::new("tmp_abc")));
    }
}
