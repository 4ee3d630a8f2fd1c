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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::checksum::{Checksum, ChecksumWriter, checksum_file};

/// Prefix of the temporary files a [`LocalBlobStore`] writes. A [`BlobPath`] may not use it for
/// its file name, so cleaning temporary files never removes a blob.
pub const TEMP_PREFIX: &str = ".tmp_";

/// Why a string is not a valid [`BlobPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPathProblem {
    /// The path is empty (or only `.` components).
    Empty,
    /// The path is absolute or has a drive/root prefix.
    Absolute,
    /// The path has a `..` component.
    ParentComponent,
    /// The path contains a NUL byte.
    Nul,
    /// The file name starts with [`TEMP_PREFIX`], reserved for temporary files.
    ReservedName,
}

impl fmt::Display for BlobPathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobPathProblem::Empty => "the path is empty",
            BlobPathProblem::Absolute => "the path must be relative to the blob store root",
            BlobPathProblem::ParentComponent => "the path must not contain `..`",
            BlobPathProblem::Nul => "the path must not contain a NUL byte",
            BlobPathProblem::ReservedName => {
                "file names starting with `.tmp_` are reserved for temporary files"
            }
        })
    }
}

/// A string that is not a valid [`BlobPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob path {path:?}: {problem}")]
pub struct InvalidBlobPath {
    /// The rejected input.
    pub path: String,
    /// What is wrong with it.
    pub problem: BlobPathProblem,
}

/// A validated path relative to a blob store's root, normalized to `/`-separated components
/// with no `.`, no `..`, no empty components and no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobPath(String);

impl BlobPath {
    /// Validates and normalizes `path`. Refuses empty paths, absolute paths, `..` components,
    /// NUL bytes and file names starting with [`TEMP_PREFIX`]; drops `.` and empty components
    /// (`a/./b//c` becomes `a/b/c`).
    pub fn new(path: &str) -> Result<Self, InvalidBlobPath> {
        let bad = |problem| InvalidBlobPath {
            path: path.to_owned(),
            problem,
        };
        if path.contains('\0') {
            return Err(bad(BlobPathProblem::Nul));
        }
        if path.starts_with('/') || path.starts_with('\\') {
            return Err(bad(BlobPathProblem::Absolute));
        }
        let mut parts: Vec<&str> = Vec::new();
        for component in Path::new(path).components() {
            match component {
                Component::Normal(part) => match part.to_str() {
                    Some(s) => parts.push(s),
                    // Unreachable from a &str, but never panic.
                    None => return Err(bad(BlobPathProblem::Absolute)),
                },
                Component::CurDir => {}
                Component::ParentDir => return Err(bad(BlobPathProblem::ParentComponent)),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(BlobPathProblem::Absolute));
                }
            }
        }
        match parts.last() {
            None => Err(bad(BlobPathProblem::Empty)),
            Some(name) if name.starts_with(TEMP_PREFIX) => Err(bad(BlobPathProblem::ReservedName)),
            Some(_) => Ok(BlobPath(parts.join("/"))),
        }
    }

    /// The normalized path, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalized path as a relative [`Path`].
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for BlobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for BlobPath {
    type Err = InvalidBlobPath;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobPath::new(s)
    }
}

impl TryFrom<&str> for BlobPath {
    type Error = InvalidBlobPath;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        BlobPath::new(s)
    }
}

impl AsRef<str> for BlobPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A failed blob store operation. Every variant names the blob path.
#[derive(Debug, thiserror::Error)]
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

    /// The absolute file-system path of a blob, when the store is a local directory.
    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError>;
}

/// A blob store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// A store rooted at `root`, which is created if missing. The root is canonicalized, so later
    /// checks compare real paths.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref();
        fs::create_dir_all(root)?;
        Ok(LocalBlobStore {
            root: fs::canonicalize(root)?,
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path under the root, after checking that no existing ancestor (or the file itself,
    /// when `follow_final`) resolves outside the root through a symbolic link. A dangling
    /// symbolic link on the way is refused too, since creating directories through it could
    /// write outside the root.
    fn resolve(&self, path: &BlobPath, follow_final: bool) -> Result<PathBuf, BlobError> {
        let full = self.root.join(path.as_path());
        let start = if follow_final {
            Some(full.as_path())
        } else {
            full.parent()
        };
        let escapes = || BlobError::Escapes {
            path: path.to_string(),
        };
        let mut current = start;
        while let Some(p) = current {
            match fs::canonicalize(p) {
                Ok(real) => {
                    if real.starts_with(&self.root) {
                        return Ok(full);
                    }
                    return Err(escapes());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Missing, or a dangling symbolic link?
                    if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                        if p == full.as_path() {
                            // The file itself is a dangling link: reading it fails with NotFound
                            // and writing replaces the link, so only its parent matters.
                            current = p.parent();
                            continue;
                        }
                        return Err(escapes());
                    }
                    current = p.parent();
                }
                Err(e) => return Err(BlobError::io(path, "resolve", e)),
            }
            if current.is_some_and(|c| !c.starts_with(&self.root)) {
                break;
            }
        }
        // Walked above the root without finding it: the root itself is gone.
        Err(BlobError::io(
            path,
            "resolve",
            io::Error::new(io::ErrorKind::NotFound, "blob store root does not exist"),
        ))
    }

    /// Removes temporary files (`.tmp_*`) left under the root by writes that crashed, when
    /// their modification time is older than `older_than`. Returns how many were removed.
    pub fn remove_stale_temp_files(&self, older_than: Duration) -> io::Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file()
                    && entry
                        .file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(TEMP_PREFIX))
                    && entry.metadata()?.modified()? < cutoff
                {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Deletes the temporary file when dropped, unless disarmed after the rename.
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove temporary blob file");
        }
    }
}

fn create_temp_file(dir: &Path, path: &BlobPath) -> Result<(File, TempGuard), BlobError> {
    for _ in 0..16 {
        let name = format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>());
        let tmp = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => {
                return Ok((
                    file,
                    TempGuard {
                        path: tmp,
                        armed: true,
                    },
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(BlobError::io(path, "create temporary file", e)),
        }
    }
    Err(BlobError::io(
        path,
        "create temporary file",
        io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
    ))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

impl BlobStore for LocalBlobStore {
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
        let full = self.resolve(path, true)?;
        let file = File::open(&full).map_err(|e| BlobError::io(path, "open", e))?;
        let meta = file
            .metadata()
            .map_err(|e| BlobError::io(path, "metadata", e))?;
        if !meta.is_file() {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        Ok(BlobReader {
            reader: Box::new(file),
            size: meta.len(),
        })
    }

    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError> {
        let full = self.resolve(path, false)?;
        let dir = full
            .parent()
            .ok_or_else(|| BlobError::Escapes {
                path: path.to_string(),
            })?
            .to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| BlobError::io(path, "create directory", e))?;
            // The directories now exist: check again with every link resolved.
            self.resolve(path, false)?;
        }
        if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }

        let (file, guard) = create_temp_file(&dir, path)?;
        let mut writer = ChecksumWriter::new(file);
        crate::checksum::with_buffer(|buf| {
            loop {
                let n = match reader.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(BlobError::Source {
                            path: path.to_string(),
                            bytes: writer.bytes_written(),
                            source: e,
                        });
                    }
                };
                writer
                    .write_all(&buf[..n])
                    .map_err(|e| BlobError::io(path, "write", e))?;
            }
            Ok(())
        })?;
        let (file, checksum, bytes) = writer.finish();
        file.sync_all()
            .map_err(|e| BlobError::io(path, "fsync", e))?;
        drop(file);

        if let Some(expected) = expected
            && *expected != checksum
        {
            return Err(BlobError::ChecksumMismatch {
                path: path.to_string(),
                expected: *expected,
                actual: checksum,
                bytes,
            });
        }

        fs::rename(&guard.path, &full).map_err(|e| BlobError::io(path, "rename", e))?;
        let mut guard = guard;
        guard.armed = false;
        sync_dir(&dir).map_err(|e| BlobError::io(path, "fsync directory", e))?;
        Ok(Written { bytes, checksum })
    }

    fn delete(&self, path: &BlobPath) -> Result<bool, BlobError> {
        let full = self.resolve(path, false)?;
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                return Err(BlobError::NotAFile {
                    path: path.to_string(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(BlobError::io(path, "metadata", e)),
        }
        match fs::remove_file(&full) {
            Ok(()) => {
                if let Some(dir) = full.parent() {
                    sync_dir(dir).map_err(|e| BlobError::io(path, "fsync directory", e))?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::io(path, "delete", e)),
        }
    }

    fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
        let full = self.resolve(path, true)?;
        match fs::metadata(&full) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Err(BlobError::NotAFile {
                path: path.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::io(path, "metadata", e)),
        }
    }

    fn checksum(&self, path: &BlobPath) -> Result<(Checksum, u64), BlobError> {
        let full = self.resolve(path, true)?;
        if fs::metadata(&full).is_ok_and(|m| !m.is_file()) {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        checksum_file(&full).map_err(|e| BlobError::io(path, "open", e))
    }

    fn absolute_path(&self, path: &BlobPath) -> Result<PathBuf, BlobError> {
        self.resolve(path, true)
    }
}

/// Whether `name` is a temporary-file name of a [`LocalBlobStore`].
pub fn is_temp_file_name(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BlobPath {
        BlobPath::new(s).unwrap()
    }

    #[test]
    fn blob_path_validation() {
        assert_eq!(p("a/b.bin").as_str(), "a/b.bin");
        assert_eq!(p("./a//b/./c").as_str(), "a/b/c");
        let problem = |s: &str| BlobPath::new(s).unwrap_err().problem;
        assert_eq!(problem(""), BlobPathProblem::Empty);
        assert_eq!(problem("./."), BlobPathProblem::Empty);
        assert_eq!(problem("/abs"), BlobPathProblem::Absolute);
        assert_eq!(problem("a/../../x"), BlobPathProblem::ParentComponent);
        assert_eq!(problem("a/.."), BlobPathProblem::ParentComponent);
        assert_eq!(problem("a\0b"), BlobPathProblem::Nul);
        assert_eq!(problem("dir/.tmp_123"), BlobPathProblem::ReservedName);
        // Only the file name is reserved; a directory may be called anything.
        assert_eq!(p(".tmp_dir/x").as_str(), ".tmp_dir/x");
        let e = BlobPath::new("/etc/passwd").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid blob path \"/etc/passwd\": the path must be relative to the blob store root"
        );
    }

    #[test]
    fn temp_names() {
        assert!(is_temp_file_name(OsStr::new(".tmp_abc")));
        assert!(!is_temp_file_name(OsStr::new("tmp_abc")));
    }
}
