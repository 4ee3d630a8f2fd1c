//! The local store's atomic write: a uniquely named temporary file beside the destination
//! ([`tempfile`], named `.tmp_<random>`), filled while hashing, fsynced, checked against the
//! expected checksum, renamed into place, and the directory fsynced. The temporary file is
//! removed on every error (and on a panic, when [`NamedTempFile`] is dropped), so no partial file
//! is ever at the final path.

use std::io::{self, Read, Write};
use std::path::Path;

use tempfile::{NamedTempFile, PersistError};

use super::{BlobError, BlobPath, TEMP_PREFIX, Written};
use crate::checksum::{self, Checksum};

/// Random characters after [`TEMP_PREFIX`] in a temporary file's name.
pub(super) const TEMP_RANDOM_CHARS: usize = 16;

/// Stores everything `reader` yields at `full` (the resolved path of `path`, in the existing
/// directory `dir`), atomically: on success the whole new content is at `full`, on any error the
/// previous content (or absence) is unchanged and the temporary file is gone.
pub(super) fn write_atomically(
    dir: &Path,
    full: &Path,
    path: &BlobPath,
    reader: &mut dyn Read,
    expected: Option<&Checksum>,
) -> Result<Written, BlobError> {
    let tmp = temp_file_in(dir).map_err(|e| BlobError::io(path, "create temporary file", e))?;
    let written = match fill(tmp.as_file(), path, reader, expected) {
        Ok(written) => written,
        Err(e) => {
            discard(tmp);
            return Err(e);
        }
    };
    if let Err(PersistError { file, error }) = tmp.persist(full) {
        discard(file);
        if std::fs::symlink_metadata(full).is_ok_and(|m| m.is_dir()) {
            return Err(BlobError::NotAFile {
                path: path.to_string(),
            });
        }
        return Err(BlobError::io(path, "rename", error));
    }
    sync_dir(dir).map_err(|e| BlobError::io(path, "fsync directory", e))?;
    Ok(written)
}

/// A new, uniquely named temporary file in `dir` (created exclusively, so it never follows a
/// symbolic link planted at its name).
fn temp_file_in(dir: &Path) -> io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).rand_bytes(TEMP_RANDOM_CHARS);
    // tempfile creates its files 0o600; a blob gets the mode of any new file (0o666 less the
    // umask), like every file the store wrote before it used tempfile.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Streams `reader` into `tmp` while hashing, fsyncs it, and compares the checksum with
/// `expected`.
pub(super) fn fill(
    tmp: &std::fs::File,
    path: &BlobPath,
    reader: &mut dyn Read,
    expected: Option<&Checksum>,
) -> Result<Written, BlobError> {
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0;
    pump(reader, tmp, &mut hasher, &mut bytes, path)?;
    let checksum: Checksum = hasher.finalize().into();
    tmp.sync_all()
        .map_err(|e| BlobError::io(path, "fsync", e))?;
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
    Ok(Written { bytes, checksum })
}

/// Appends everything `reader` yields to `file` (at its position), hashing it into `hasher` and
/// counting it in `written`: the one copy loop of every store write.
///
/// Each write is a whole [`READ_BUFFER`](checksum::READ_BUFFER) filled by as many reads as it
/// takes, so a large blob costs one `write` and one hash update per MiB however the source
/// splits it (an HTTP body arrives in pieces of tens of KiB). On a read error, what was read
/// before it is written and hashed first, so a resumable write keeps it; the error is
/// [`BlobError::Source`] with the bytes written so far.
pub(super) fn pump(
    reader: &mut dyn Read,
    mut file: &std::fs::File,
    hasher: &mut blake3::Hasher,
    written: &mut u64,
    path: &BlobPath,
) -> Result<(), BlobError> {
    checksum::with_buffer(|buf| {
        loop {
            let mut filled = 0;
            let mut failed = None;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            file.write_all(&buf[..filled])
                .map_err(|e| BlobError::io(path, "write", e))?;
            hasher.update(&buf[..filled]);
            *written += filled as u64;
            if let Some(source) = failed {
                return Err(BlobError::Source {
                    path: path.to_string(),
                    bytes: *written,
                    source,
                });
            }
            if filled < buf.len() {
                return Ok(());
            }
        }
    })
}

/// Removes a temporary file after a failed write, logging (not returning) a failure to remove
/// it: the write's own error is the one the caller needs, and
/// [`LocalBlobStore::remove_stale_temp_files`](super::LocalBlobStore::remove_stale_temp_files)
/// sweeps what is left.
fn discard(tmp: NamedTempFile) {
    let tmp_path = tmp.path().to_path_buf();
    if let Err(e) = tmp.close()
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %tmp_path.display(), error = %e, "could not remove temporary blob file");
    }
}

/// Makes a directory's entries (a rename, a removal) durable.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes a directory's entries durable (nothing to do where directories cannot be opened).
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Creates `dir` and its missing ancestors, and makes each new directory entry durable: every
/// created directory is fsynced, and so is its parent (which holds its entry), so a crash after
/// the file's rename never loses a directory the rename went into. Returns the directories it
/// created, outermost first (empty when `dir` existed).
pub(super) fn create_dir_all_synced(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        match std::fs::create_dir(&d) {
            Ok(()) => created.push(d),
            // Another writer created it meanwhile: it made it durable itself.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    for d in &created {
        sync_dir(d)?;
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::create_dir_all_synced;

    #[test]
    fn creates_only_the_missing_directories_outermost_first() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a").join("b").join("c");
        let created = create_dir_all_synced(&deep).unwrap();
        assert_eq!(
            created,
            vec![
                root.path().join("a"),
                root.path().join("a").join("b"),
                deep.clone()
            ]
        );
        assert!(deep.is_dir());
        // Existing directories are neither created nor reported again.
        let sibling = root.path().join("a").join("x");
        assert_eq!(
            create_dir_all_synced(&sibling).unwrap(),
            vec![sibling.clone()]
        );
        assert!(create_dir_all_synced(&deep).unwrap().is_empty());
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        assert!(create_dir_all_synced(&root.path().join("f").join("d")).is_err());
    }
}
