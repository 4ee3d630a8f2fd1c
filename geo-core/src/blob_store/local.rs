//! [`LocalBlobStore`]: a directory on a local file system, with every path checked against
//! symbolic-link escapes before it is touched.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::atomic::{create_dir_all_synced, sync_dir, write_atomically};
use super::{BlobError, BlobPath, BlobReader, BlobStore, TEMP_PREFIX, Written};
use crate::checksum::{Checksum, checksum_file};

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
            let created = create_dir_all_synced(&dir)
                .map_err(|e| BlobError::io(path, "create directory", e))?;
            tracing::trace!(path = %path, created = created.len(), "created and fsynced directories");
            // The directories now exist: check again with every link resolved.
            self.resolve(path, false)?;
        }
        if fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        write_atomically(&dir, &full, path, reader, expected)
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
