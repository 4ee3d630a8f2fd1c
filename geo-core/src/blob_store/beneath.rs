//! The local store's fast path on Linux: paths opened relative to the root's directory with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`. One system call walks the path in the
//! kernel and refuses any symbolic link and any `..` out of the root on the way: the common case
//! of [`LocalBlobStore::resolve`](super::LocalBlobStore) (no link below the root), checked in
//! one call instead of an `lstat` per component, and with no window between the check and the
//! use. A write then works inside the directory it opened (`openat`, `renameat`, `fsync` on
//! its descriptor), so no component is walked again.
//!
//! Anything else — a link on the way, a missing directory, a kernel or sandbox without
//! `openat2` — answers `None`, and the caller takes the path-based way, which decides.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::atomic::{TEMP_RANDOM_CHARS, fill};
use super::{BlobError, BlobPath, TEMP_PREFIX, Written};
use crate::checksum::Checksum;

/// Cleared when the kernel (or a seccomp filter) refuses `openat2` itself: every later call
/// goes the path-based way at once.
static OPENAT2_WORKS: AtomicBool = AtomicBool::new(true);

/// The store's root directory, held open.
#[derive(Debug)]
pub(super) struct Root(OwnedFd);

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

impl Root {
    /// The root at `path` (canonical), or `None` when `openat2` is not available.
    pub(super) fn open(path: &Path) -> Option<Root> {
        if !OPENAT2_WORKS.load(Ordering::Relaxed) {
            return None;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let root = Root(fd);
        // Probe once: the root itself, beneath itself.
        root.open_beneath(Path::new("."), OFlags::PATH | OFlags::DIRECTORY)?;
        Some(root)
    }

    fn open_beneath(&self, rel: &Path, flags: OFlags) -> Option<OwnedFd> {
        if !OPENAT2_WORKS.load(Ordering::Relaxed) {
            return None;
        }
        match rustix::fs::openat2(
            &self.0,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            resolve_flags(),
        ) {
            Ok(fd) => Some(fd),
            Err(e) => {
                if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM {
                    OPENAT2_WORKS.store(false, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// `rel` opened for reading, when it is reached with no symbolic link on the way.
    pub(super) fn open_file(&self, rel: &Path) -> Option<File> {
        self.open_beneath(rel, OFlags::RDONLY).map(File::from)
    }

    /// The directory `rel` opened (for a write into it), when it exists and is reached with no
    /// symbolic link on the way.
    pub(super) fn open_dir(&self, rel: &Path) -> Option<File> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY)
            .map(File::from)
    }
}

/// [`write_atomically`](super::atomic::write_atomically) inside the open directory `dir`:
/// a new temporary file created exclusively in it, filled while hashing, fsynced, compared
/// with `expected`, renamed to `name` and the directory fsynced. On any error (or a panic)
/// the temporary file is removed and `name` is unchanged.
pub(super) fn write_in_dir(
    dir: &File,
    name: &std::ffi::OsStr,
    path: &BlobPath,
    reader: &mut dyn Read,
    expected: Option<&Checksum>,
) -> Result<Written, BlobError> {
    let tmp = TempIn::create(dir).map_err(|e| BlobError::io(path, "create temporary file", e))?;
    let written = fill(&tmp.file, path, reader, expected)?;
    if let Err(e) = rustix::fs::renameat(dir, &tmp.name, dir, name) {
        if rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| rustix::fs::FileType::from_raw_mode(s.st_mode).is_dir())
        {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        return Err(BlobError::io(path, "rename", e.into()));
    }
    tmp.persisted();
    dir.sync_all()
        .map_err(|e| BlobError::io(path, "fsync directory", e))?;
    Ok(written)
}

/// A temporary file in a directory, removed when dropped unless persisted.
struct TempIn<'d> {
    dir: &'d File,
    name: String,
    file: File,
    kept: bool,
}

impl<'d> TempIn<'d> {
    /// A new file named [`TEMP_PREFIX`] and random characters, created exclusively (so it never
    /// follows a link planted at its name) with the mode of any new file (0o666 less the
    /// umask).
    fn create(dir: &'d File) -> io::Result<Self> {
        use rand::Rng;
        let mut last = None;
        for _ in 0..16 {
            let mut name = String::with_capacity(TEMP_PREFIX.len() + TEMP_RANDOM_CHARS);
            name.push_str(TEMP_PREFIX);
            name.extend(
                rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(TEMP_RANDOM_CHARS)
                    .map(char::from),
            );
            match rustix::fs::openat(
                dir,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            ) {
                Ok(fd) => {
                    return Ok(TempIn {
                        dir,
                        name,
                        file: File::from(fd),
                        kept: false,
                    });
                }
                Err(e) if e == rustix::io::Errno::EXIST => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| io::Error::other("no temporary name"), io::Error::from))
    }

    fn persisted(mut self) {
        self.kept = true;
    }
}

impl Drop for TempIn<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = rustix::fs::unlinkat(self.dir, self.name.as_str(), AtFlags::empty())
            && e != rustix::io::Errno::NOENT
        {
            tracing::warn!(name = %self.name, error = %e, "could not remove temporary blob file");
        }
    }
}
