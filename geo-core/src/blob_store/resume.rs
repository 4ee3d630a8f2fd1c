//! Resumable writes: a download's temporary file that survives a failed attempt and a restart.
//!
//! The file has a deterministic name beside the destination, `.tmp_part_<record>_<version>`
//! ([`ResumeKey`]): the record (replicable and id) and the version of its content (the
//! primary's checksum), so an attempt finds what an earlier one (or an earlier process) left,
//! and a new version of the content never continues an old one. Like every temporary file it
//! starts with [`TEMP_PREFIX`](super::TEMP_PREFIX), which no [`BlobPath`] may use, so it is never
//! visible at a final path. A resumed write re-hashes the prefix it holds (one blake3 pass, on
//! every core), appends what the source sends from there while hashing, and renames into place
//! only when the whole blob has the expected checksum; a mismatch removes the file, so the next
//! attempt starts from byte 0.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::atomic::{pump, sync_dir};
use super::{BlobError, BlobPath, Written};
use crate::checksum::{self, Checksum};

/// Prefix of resumable temporary files (itself under [`TEMP_PREFIX`](super::TEMP_PREFIX)).
pub const PARTIAL_PREFIX: &str = ".tmp_part_";

/// Hex characters of each half of a [`ResumeKey`].
const KEY_HEX: usize = 24;

/// Names the resumable temporary file of one download: the record and the version of its
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResumeKey {
    record: String,
    version: String,
}

impl ResumeKey {
    /// The key of `replicable` `id` downloading the content whose checksum is `expected`.
    pub fn new(replicable: &str, id: i64, expected: &Checksum) -> Self {
        let mut record = blake3::Hasher::new();
        record.update(replicable.as_bytes());
        record.update(&[0]);
        record.update(&id.to_le_bytes());
        let hex = |h: blake3::Hash| h.to_hex()[..KEY_HEX].to_owned();
        ResumeKey {
            record: hex(record.finalize()),
            version: hex(blake3::hash(expected.as_bytes())),
        }
    }

    /// The temporary file's name: `.tmp_part_<record>_<version>`.
    pub fn file_name(&self) -> String {
        format!("{PARTIAL_PREFIX}{}_{}", self.record, self.version)
    }
}

/// Whether `name` is the name of a resumable temporary file.
pub fn is_partial_file_name(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with(PARTIAL_PREFIX))
}

/// A resumable write in progress: the temporary file, locked, and the checksum state of the
/// prefix it holds. Dropping it keeps the file for a later attempt.
pub trait PartialWrite: Send {
    /// Bytes held (and hashed): ask the source for the blob from this offset.
    fn offset(&self) -> u64;

    /// The checksum of the bytes held.
    fn held_checksum(&self) -> Checksum;

    /// Appends everything `reader` yields, which the source says starts at byte `start` of the
    /// blob (the [`offset`](PartialWrite::offset), or 0 when it could not resume: the prefix is
    /// dropped), and stores the whole at the destination when its checksum is `expected`. On a
    /// mismatch the temporary file is removed (the next attempt starts from 0) and the error is
    /// [`BlobError::ChecksumMismatch`]; on a read error it is kept.
    fn finish(
        self: Box<Self>,
        reader: &mut dyn Read,
        start: u64,
        expected: &Checksum,
    ) -> Result<Written, BlobError>;

    /// Removes the temporary file (the record is gone, or its content changed).
    fn discard(self: Box<Self>);
}

/// The local store's [`PartialWrite`].
pub(super) struct LocalPartial {
    file: File,
    tmp: PathBuf,
    full: PathBuf,
    dir: PathBuf,
    path: BlobPath,
    hasher: blake3::Hasher,
    held: u64,
}

impl std::fmt::Debug for LocalPartial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPartial")
            .field("tmp", &self.tmp)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

/// Whether `file` (opened from `tmp`) is the regular file at `tmp` itself, not something a
/// symbolic link planted at that name points to.
#[cfg(unix)]
fn is_the_file_at(file: &File, tmp: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let opened = file.metadata()?;
    let at = std::fs::symlink_metadata(tmp)?;
    Ok(at.file_type().is_file() && at.dev() == opened.dev() && at.ino() == opened.ino())
}

#[cfg(not(unix))]
fn is_the_file_at(_file: &File, tmp: &Path) -> io::Result<bool> {
    Ok(std::fs::symlink_metadata(tmp)?.file_type().is_file())
}

/// Opens `tmp` for reading and writing; with `create_new`, creates it (failing if anything is
/// at that name).
fn open_rw(tmp: &Path, create_new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(create_new);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Like every file the store writes: 0o666 less the umask.
        options.mode(0o666);
    }
    options.open(tmp)
}

impl LocalPartial {
    /// Opens the resumable file `name` in the existing directory `dir` and hashes what it holds;
    /// creates it when `create`. `None` when it does not exist (and not `create`), or when
    /// another writer holds its lock.
    pub(super) fn open(
        dir: &Path,
        full: &Path,
        path: &BlobPath,
        name: &str,
        create: bool,
    ) -> Result<Option<Self>, BlobError> {
        let tmp = dir.join(name);
        // An existing file first; a new one is created exclusively, so it never follows a
        // symbolic link planted at its name (an existing one is refused below).
        let file = match open_rw(&tmp, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match open_rw(&tmp, true) {
                Ok(f) => f,
                Err(e) => return Err(BlobError::io(path, "create temporary file", e)),
            },
            Err(e) => return Err(BlobError::io(path, "open temporary file", e)),
        };
        if !is_the_file_at(&file, &tmp).map_err(|e| BlobError::io(path, "metadata", e))? {
            return Err(BlobError::Escapes {
                path: path.to_string(),
            });
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::debug!(path = %path, "another writer holds the resumable file; not resuming");
                return Ok(None);
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(BlobError::io(path, "lock temporary file", e));
            }
        }
        // Touched at every attempt: the stale-file sweep judges by the last attempt.
        if let Err(e) = file.set_modified(std::time::SystemTime::now()) {
            tracing::debug!(path = %path, error = %e, "could not touch the resumable file");
        }
        let mut partial = LocalPartial {
            file,
            tmp,
            full: full.to_path_buf(),
            dir: dir.to_path_buf(),
            path: path.clone(),
            hasher: blake3::Hasher::new(),
            held: 0,
        };
        partial.rehash()?;
        Ok(Some(partial))
    }

    /// Hashes the prefix the file holds (memory-mapped, on every core, when it is large).
    fn rehash(&mut self) -> Result<(), BlobError> {
        let len = self
            .file
            .metadata()
            .map_err(|e| BlobError::io(&self.path, "metadata", e))?
            .len();
        self.hasher = blake3::Hasher::new();
        self.held = 0;
        if len == 0 {
            return Ok(());
        }
        if len >= checksum::PARALLEL_THRESHOLD {
            // The file is locked by us: nothing truncates it while it is mapped.
            self.hasher
                .update_mmap_rayon(&self.tmp)
                .map_err(|e| BlobError::io(&self.path, "read temporary file", e))?;
        } else {
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(|e| BlobError::io(&self.path, "seek", e))?;
            self.hasher
                .update_reader(&mut (&self.file).take(len))
                .map_err(|e| BlobError::io(&self.path, "read temporary file", e))?;
        }
        self.held = self.hasher.count();
        if self.held != len {
            // Changed under us: start over.
            self.truncate()?;
        }
        Ok(())
    }

    fn truncate(&mut self) -> Result<(), BlobError> {
        self.file
            .set_len(0)
            .map_err(|e| BlobError::io(&self.path, "truncate temporary file", e))?;
        self.hasher = blake3::Hasher::new();
        self.held = 0;
        Ok(())
    }

    fn remove(self) {
        let LocalPartial { file, tmp, .. } = self;
        drop(file);
        if let Err(e) = std::fs::remove_file(&tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %e, "could not remove a resumable temporary file");
        }
    }

    fn append(&mut self, reader: &mut dyn Read) -> Result<(), BlobError> {
        self.file
            .seek(SeekFrom::Start(self.held))
            .map_err(|e| BlobError::io(&self.path, "seek", e))?;
        // What arrives before a read error stays for the next attempt.
        pump(
            reader,
            &self.file,
            &mut self.hasher,
            &mut self.held,
            &self.path,
        )
    }
}

impl PartialWrite for LocalPartial {
    fn offset(&self) -> u64 {
        self.held
    }

    fn held_checksum(&self) -> Checksum {
        self.hasher.finalize().into()
    }

    fn finish(
        mut self: Box<Self>,
        reader: &mut dyn Read,
        start: u64,
        expected: &Checksum,
    ) -> Result<Written, BlobError> {
        if start != self.held {
            if start != 0 {
                return Err(BlobError::io(
                    &self.path,
                    "resume",
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "the source resumed at byte {start}, the temporary file holds {}",
                            self.held
                        ),
                    ),
                ));
            }
            tracing::debug!(path = %self.path, held = self.held, "the source started over: dropping the prefix");
            self.truncate()?;
        }
        self.append(reader)?;
        let actual: Checksum = self.hasher.finalize().into();
        let bytes = self.held;
        if actual != *expected {
            let path = self.path.to_string();
            self.remove();
            return Err(BlobError::ChecksumMismatch {
                path,
                expected: *expected,
                actual,
                bytes,
            });
        }
        self.file
            .sync_all()
            .map_err(|e| BlobError::io(&self.path, "fsync", e))?;
        std::fs::rename(&self.tmp, &self.full)
            .map_err(|e| BlobError::io(&self.path, "rename", e))?;
        sync_dir(&self.dir).map_err(|e| BlobError::io(&self.path, "fsync directory", e))?;
        Ok(Written {
            bytes,
            checksum: actual,
        })
    }

    fn discard(self: Box<Self>) {
        self.remove();
    }
}
