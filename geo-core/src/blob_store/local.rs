//! [`LocalBlobStore`]: a directory on a local file system, with every path checked against
//! symbolic-link escapes before it is touched.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::atomic::{create_dir_all_synced, sync_dir, write_atomically};
use super::resume::LocalPartial;
use super::{
    BlobError, BlobPath, BlobReader, BlobStore, PARTIAL_MAX_AGE, PartialWrite, ResumeKey,
    TEMP_PREFIX, Written, is_partial_file_name,
};
use crate::checksum::{Checksum, checksum_file};

/// A blob store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
    /// The root held open for the `openat2` fast path (`None` where it is not available).
    #[cfg(target_os = "linux")]
    beneath: Option<std::sync::Arc<super::beneath::Root>>,
}

impl LocalBlobStore {
    /// A store rooted at `root`, which is created if missing. The root is canonicalized, so later
    /// checks compare real paths.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = root.as_ref();
        fs::create_dir_all(root)?;
        let root = fs::canonicalize(root)?;
        Ok(LocalBlobStore {
            #[cfg(target_os = "linux")]
            beneath: super::beneath::Root::open(&root).map(std::sync::Arc::new),
            root,
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
        Ok(self.resolve_seeing_parent(path, follow_final)?.0)
    }

    /// [`resolve`](Self::resolve), and whether the walk saw the file's directory exist as a
    /// directory (`false` when it did not look or it is missing), so a write need not ask again.
    fn resolve_seeing_parent(
        &self,
        path: &BlobPath,
        follow_final: bool,
    ) -> Result<(PathBuf, bool), BlobError> {
        let full = self.root.join(path.as_path());
        if let Some(parent_is_dir) = self.no_link_below_root(&full, follow_final) {
            return Ok((full, parent_is_dir));
        }
        Ok((self.resolve_links(path, full, follow_final)?, false))
    }

    /// The common case, cheaply: one `lstat` per component below the (canonical) root, none of
    /// them a symbolic link (up to the first that does not exist: nothing below it does
    /// either). Then the path is under the root as written, and `realpath`, which reads every
    /// component from `/` as a link, is not needed. Anything else (a link, an error) answers
    /// `None` and goes the careful way. `Some(parent_is_dir)`: whether the last directory
    /// component (the root for a top-level file) was seen to be a directory.
    fn no_link_below_root(&self, full: &Path, follow_final: bool) -> Option<bool> {
        let below = full.strip_prefix(&self.root).ok()?;
        let mut at = self.root.clone();
        let mut components = below.components().peekable();
        // The root exists and is a directory (`new` made it and canonicalized it).
        let mut parent_is_dir = true;
        while let Some(c) = components.next() {
            let last = components.peek().is_none();
            if last && !follow_final {
                return Some(parent_is_dir);
            }
            at.push(c);
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => return None,
                Ok(m) => {
                    if !last {
                        parent_is_dir = m.is_dir();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
                Err(_) => return None,
            }
        }
        Some(parent_is_dir)
    }

    /// [`resolve`](Self::resolve) when a symbolic link (or an error) is on the way: the nearest
    /// existing ancestor is canonicalized and must lie under the root.
    fn resolve_links(
        &self,
        path: &BlobPath,
        full: PathBuf,
        follow_final: bool,
    ) -> Result<PathBuf, BlobError> {
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
    /// their modification time is older than `older_than`. Resumable downloads' files
    /// (`.tmp_part_*`, see [`BlobStore::resume`]) are kept for a later attempt unless older
    /// than both `older_than` and [`PARTIAL_MAX_AGE`]. Returns how many were removed.
    pub fn remove_stale_temp_files(&self, older_than: Duration) -> io::Result<usize> {
        self.remove_stale_temp_files_with(older_than, older_than.max(PARTIAL_MAX_AGE))
    }

    /// [`remove_stale_temp_files`](LocalBlobStore::remove_stale_temp_files) with the age of
    /// resumable files given: plain temporary files older than `older_than` and resumable ones
    /// older than `partial_older_than` are removed.
    pub fn remove_stale_temp_files_with(
        &self,
        older_than: Duration,
        partial_older_than: Duration,
    ) -> io::Result<usize> {
        let cutoff_of = |age: Duration| {
            SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let (cutoff, partial_cutoff) = (cutoff_of(older_than), cutoff_of(partial_older_than));
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
                    && entry.metadata()?.modified()?
                        < if is_partial_file_name(&entry.file_name()) {
                            partial_cutoff
                        } else {
                            cutoff
                        }
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

impl LocalBlobStore {
    /// The regular file at `path`, opened, and its size.
    fn open_file(&self, path: &BlobPath) -> Result<(File, u64), BlobError> {
        #[cfg(target_os = "linux")]
        let fast = self
            .beneath
            .as_ref()
            .and_then(|r| r.open_file(path.as_path()));
        #[cfg(not(target_os = "linux"))]
        let fast = None;
        let file = match fast {
            Some(file) => file,
            None => {
                let full = self.resolve(path, true)?;
                File::open(&full).map_err(|e| BlobError::io(path, "open", e))?
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| BlobError::io(path, "metadata", e))?;
        if !meta.is_file() {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        Ok((file, meta.len()))
    }

    /// The resolved destination of a write to `path` and its directory, created (durably) when
    /// missing and checked again once it exists. A destination that is a directory is refused
    /// when the rename onto it fails ([`write_atomically`]), not asked for first.
    fn prepare_write(&self, path: &BlobPath) -> Result<(PathBuf, PathBuf), BlobError> {
        let (full, parent_is_dir) = self.resolve_seeing_parent(path, false)?;
        let dir = full
            .parent()
            .ok_or_else(|| BlobError::Escapes {
                path: path.to_string(),
            })?
            .to_path_buf();
        if !parent_is_dir && !dir.is_dir() {
            let created = create_dir_all_synced(&dir)
                .map_err(|e| BlobError::io(path, "create directory", e))?;
            tracing::trace!(path = %path, created = created.len(), "created and fsynced directories");
            // The directories now exist: check again with every link resolved.
            self.resolve(path, false)?;
        }
        Ok((full, dir))
    }
}

impl BlobStore for LocalBlobStore {
    fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
        let (file, size) = self.open_file(path)?;
        Ok(BlobReader {
            reader: Box::new(file),
            size,
        })
    }

    fn write(
        &self,
        path: &BlobPath,
        reader: &mut dyn Read,
        expected: Option<&Checksum>,
    ) -> Result<Written, BlobError> {
        #[cfg(target_os = "linux")]
        if let Some(beneath) = &self.beneath
            && let Some(name) = path.as_path().file_name()
            && let Some(dir) = beneath.open_dir(path.as_path().parent().unwrap_or(Path::new("")))
        {
            return super::beneath::write_in_dir(&dir, name, path, reader, expected);
        }
        let (full, dir) = self.prepare_write(path)?;
        write_atomically(&dir, &full, path, reader, expected)
    }

    fn open_at(&self, path: &BlobPath, offset: u64) -> Result<BlobReader, BlobError> {
        let blob = self.open_file(path)?;
        let (mut file, size) = blob;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| BlobError::io(path, "seek", e))?;
        }
        Ok(BlobReader {
            reader: Box::new(file),
            size,
        })
    }

    fn resume(
        &self,
        path: &BlobPath,
        key: &ResumeKey,
        create: bool,
    ) -> Result<Option<Box<dyn PartialWrite + '_>>, BlobError> {
        let (full, dir) = if create {
            let (full, dir) = self.prepare_write(path)?;
            if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                return Err(BlobError::NotAFile {
                    path: path.to_string(),
                });
            }
            (full, dir)
        } else {
            let full = self.resolve(path, false)?;
            match full.parent() {
                Some(dir) if dir.is_dir() => {
                    let dir = dir.to_path_buf();
                    (full, dir)
                }
                _ => return Ok(None),
            }
        };
        Ok(
            LocalPartial::open(&dir, &full, path, &key.file_name(), create)?
                .map(|p| Box::new(p) as Box<dyn PartialWrite>),
        )
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
