//! Reading at an offset and resumable writes of `LocalBlobStore`: the temporary file survives a
//! failed attempt, is found again by the next one (another store value, as after a restart),
//! re-hashed, continued and renamed only when the whole blob matches; a mismatch or a source
//! that starts over never leaves a mix.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use geo_core::blob_store::{
    BlobError, BlobPath, BlobReader, BlobStore, LocalBlobStore, PARTIAL_PREFIX, ResumeKey,
    TEMP_PREFIX, Written, is_partial_file_name, is_temp_file_name,
};
use geo_core::checksum::{Checksum, checksum_bytes};

fn p(s: &str) -> BlobPath {
    BlobPath::new(s).unwrap()
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + seed as u64 * 7 + (i as u64 >> 9)) as u8)
        .collect()
}

/// Names of the files in `dir` (not recursive).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Yields `good`, then fails.
struct FailsAfter<'a> {
    good: &'a [u8],
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "cut by a proxy",
            ));
        }
        let n = buf.len().min(self.good.len()).min(7000);
        buf[..n].copy_from_slice(&self.good[..n]);
        self.good = &self.good[n..];
        Ok(n)
    }
}

fn key(sum: &Checksum) -> ResumeKey {
    ResumeKey::new("widget", 7, sum)
}

#[test]
fn open_at_seeks_and_reports_the_whole_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let bytes = data(100_000, 1);
    store.write(&p("a/f"), &mut &bytes[..], None).unwrap();
    let read_from = |offset: u64| {
        let BlobReader { mut reader, size } = store.open_at(&p("a/f"), offset).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        (size, out)
    };
    assert_eq!(read_from(0), (100_000, bytes.clone()));
    assert_eq!(read_from(99_000), (100_000, bytes[99_000..].to_vec()));
    assert_eq!(read_from(100_000), (100_000, Vec::new()));
    assert_eq!(read_from(200_000), (100_000, Vec::new()));
    assert!(
        store
            .open_at(&p("a/missing"), 5)
            .unwrap_err()
            .is_not_found()
    );

    /// A store with only `open`: the trait's default reads and discards.
    struct OnlyOpen(LocalBlobStore);
    impl BlobStore for OnlyOpen {
        fn open(&self, path: &BlobPath) -> Result<BlobReader, BlobError> {
            self.0.open(path)
        }
        fn write(
            &self,
            path: &BlobPath,
            reader: &mut dyn Read,
            expected: Option<&Checksum>,
        ) -> Result<Written, BlobError> {
            self.0.write(path, reader, expected)
        }
        fn delete(&self, path: &BlobPath) -> Result<bool, BlobError> {
            self.0.delete(path)
        }
        fn size(&self, path: &BlobPath) -> Result<Option<u64>, BlobError> {
            self.0.size(path)
        }
        fn absolute_path(&self, path: &BlobPath) -> Result<std::path::PathBuf, BlobError> {
            self.0.absolute_path(path)
        }
    }
    let plain = OnlyOpen(store.clone());
    let mut out = Vec::new();
    let blob = plain.open_at(&p("a/f"), 12_345).unwrap();
    assert_eq!(blob.size, 100_000);
    { blob.reader }.read_to_end(&mut out).unwrap();
    assert_eq!(out, bytes[12_345..]);
    // A store that cannot resume says so: the caller writes whole.
    assert!(
        plain
            .resume(&p("a/g"), &key(&checksum_bytes(b"x")), true)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_failed_attempt_leaves_its_prefix_and_a_restarted_store_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = data(300_000, 2);
    let sum = checksum_bytes(&bytes);
    let path = p("x/y/blob.bin");
    {
        let store = LocalBlobStore::new(dir.path()).unwrap();
        assert!(store.resume(&path, &key(&sum), false).unwrap().is_none());
        let w = store.resume(&path, &key(&sum), true).unwrap().unwrap();
        assert_eq!(w.offset(), 0);
        let err = w
            .finish(
                &mut FailsAfter {
                    good: &bytes[..120_000],
                },
                0,
                &sum,
            )
            .unwrap_err();
        assert!(
            matches!(err, BlobError::Source { bytes: 120_000, .. }),
            "{err}"
        );
        assert!(!store.exists(&path).unwrap(), "nothing at the final path");
    }
    // Only the resumable temporary file, under the temporary prefix.
    let left = names(&dir.path().join("x/y"));
    assert_eq!(left, vec![key(&sum).file_name()]);
    assert!(left[0].starts_with(PARTIAL_PREFIX) && left[0].starts_with(TEMP_PREFIX));
    assert!(is_partial_file_name(left[0].as_ref()) && is_temp_file_name(left[0].as_ref()));

    // "After a restart": a new store value; the prefix is found, re-hashed and continued.
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let w = store.resume(&path, &key(&sum), false).unwrap().unwrap();
    assert_eq!(w.offset(), 120_000);
    assert_eq!(w.held_checksum(), checksum_bytes(&bytes[..120_000]));
    let written = w.finish(&mut &bytes[120_000..], 120_000, &sum).unwrap();
    assert_eq!(
        written,
        Written {
            bytes: 300_000,
            checksum: sum
        }
    );
    assert_eq!(fs::read(dir.path().join("x/y/blob.bin")).unwrap(), bytes);
    assert_eq!(names(&dir.path().join("x/y")), vec!["blob.bin".to_owned()]);
}

#[test]
fn a_source_that_starts_over_drops_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let bytes = data(50_000, 3);
    let sum = checksum_bytes(&bytes);
    let path = p("f.bin");
    let w = store.resume(&path, &key(&sum), true).unwrap().unwrap();
    let _ = w.finish(
        &mut FailsAfter {
            good: &bytes[..20_000],
        },
        0,
        &sum,
    );
    let w = store.resume(&path, &key(&sum), false).unwrap().unwrap();
    assert_eq!(w.offset(), 20_000);
    // The source sent the whole blob (no range support): start 0.
    w.finish(&mut &bytes[..], 0, &sum).unwrap();
    assert_eq!(fs::read(dir.path().join("f.bin")).unwrap(), bytes);
}

#[test]
fn a_prefix_of_other_content_mismatches_and_is_removed_without_touching_the_old_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let path = p("d/f.bin");
    store.write(&path, &mut &b"the old blob"[..], None).unwrap();
    let old = data(80_000, 4);
    let new = data(80_000, 5);
    let sum_new = checksum_bytes(&new);
    // A prefix of the old content under the key of the new (the content changed between the
    // attempts, the checksum did not yet).
    let w = store.resume(&path, &key(&sum_new), true).unwrap().unwrap();
    let _ = w.finish(
        &mut FailsAfter {
            good: &old[..30_000],
        },
        0,
        &sum_new,
    );
    let w = store.resume(&path, &key(&sum_new), false).unwrap().unwrap();
    let err = w.finish(&mut &new[30_000..], 30_000, &sum_new).unwrap_err();
    assert!(
        matches!(&err, BlobError::ChecksumMismatch { expected, bytes: 80_000, .. } if *expected == sum_new),
        "{err}"
    );
    assert_eq!(
        fs::read(dir.path().join("d/f.bin")).unwrap(),
        b"the old blob",
        "never a mix at the final path"
    );
    assert_eq!(names(&dir.path().join("d")), vec!["f.bin".to_owned()]);
    // The next attempt starts from 0.
    let w = store.resume(&path, &key(&sum_new), true).unwrap().unwrap();
    assert_eq!(w.offset(), 0);
    w.finish(&mut &new[..], 0, &sum_new).unwrap();
    assert_eq!(fs::read(dir.path().join("d/f.bin")).unwrap(), new);
}

#[test]
fn a_complete_prefix_is_stored_without_reading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let bytes = data(10_000, 6);
    let sum = checksum_bytes(&bytes);
    let k = key(&sum);
    fs::write(dir.path().join(k.file_name()), &bytes).unwrap();
    let w = store.resume(&p("f"), &k, false).unwrap().unwrap();
    assert_eq!((w.offset(), w.held_checksum()), (10_000, sum));
    w.finish(&mut io::empty(), 10_000, &sum).unwrap();
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), bytes);
}

#[test]
fn one_writer_at_a_time_and_versions_have_their_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let a = checksum_bytes(b"version a");
    let b = checksum_bytes(b"version b");
    assert_ne!(key(&a).file_name(), key(&b).file_name());
    assert_ne!(
        ResumeKey::new("widget", 7, &a).file_name(),
        ResumeKey::new("widget", 8, &a).file_name()
    );
    assert_ne!(
        ResumeKey::new("widget", 7, &a).file_name(),
        ResumeKey::new("gadget", 7, &a).file_name()
    );
    let first = store.resume(&p("f"), &key(&a), true).unwrap().unwrap();
    assert!(
        store.resume(&p("f"), &key(&a), true).unwrap().is_none(),
        "locked by the first writer"
    );
    drop(first);
    assert!(store.resume(&p("f"), &key(&a), false).unwrap().is_some());
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_at_the_temporary_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    fs::write(&target, b"keep me").unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let sum = checksum_bytes(b"x");
    std::os::unix::fs::symlink(&target, dir.path().join(key(&sum).file_name())).unwrap();
    for create in [false, true] {
        let r = store.resume(&p("f"), &key(&sum), create);
        assert!(
            matches!(r, Err(BlobError::Escapes { .. })),
            "create={create}"
        );
    }
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn the_sweep_keeps_resumable_files_until_they_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let sum = checksum_bytes(b"x");
    let w = store.resume(&p("s/f"), &key(&sum), true).unwrap().unwrap();
    let _ = w.finish(&mut FailsAfter { good: b"abc" }, 0, &sum);
    fs::write(dir.path().join("s/.tmp_0123456789abcdef"), b"crashed write").unwrap();
    // The start-up sweep of a lone process removes crashed plain writes, not resumable files.
    assert_eq!(store.remove_stale_temp_files(Duration::ZERO).unwrap(), 1);
    assert_eq!(names(&dir.path().join("s")), vec![key(&sum).file_name()]);
    // Older than the bound: removed.
    assert_eq!(
        store
            .remove_stale_temp_files_with(Duration::ZERO, Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(names(&dir.path().join("s")).is_empty());
}
