//! `LocalBlobStore` in a temporary directory: round trips, path validation, symlink escapes,
//! atomic writes and temporary-file cleanup.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use geo_core::blob_store::{BlobError, BlobPath, BlobStore, LocalBlobStore, TEMP_PREFIX};
use geo_core::checksum::checksum_bytes;

fn p(s: &str) -> BlobPath {
    BlobPath::new(s).unwrap()
}

/// Every file under `dir` whose name starts with the temporary prefix.
fn temp_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Yields `good` bytes, then fails.
struct FailsAfter {
    good: Vec<u8>,
    pos: usize,
}

impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.good.len() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer went away",
            ));
        }
        let n = buf.len().min(self.good.len() - self.pos).min(1000);
        buf[..n].copy_from_slice(&self.good[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path().join("blobs")).unwrap();
    let path = p("widgets/00/12/file.bin");
    let bytes = data(3 * 1024 * 1024 + 5);

    assert!(!store.exists(&path).unwrap());
    assert_eq!(store.size(&path).unwrap(), None);
    assert!(store.open(&path).unwrap_err().is_not_found());

    let written = store
        .write(&path, &mut &bytes[..], Some(&checksum_bytes(&bytes)))
        .unwrap();
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.checksum, checksum_bytes(&bytes));

    assert!(store.exists(&path).unwrap());
    assert_eq!(store.size(&path).unwrap(), Some(bytes.len() as u64));
    let mut blob = store.open(&path).unwrap();
    assert_eq!(blob.size, bytes.len() as u64);
    let mut back = Vec::new();
    blob.reader.read_to_end(&mut back).unwrap();
    assert_eq!(back, bytes);
    assert_eq!(
        store.checksum(&path).unwrap(),
        (checksum_bytes(&bytes), bytes.len() as u64)
    );
    let abs = store.absolute_path(&path).unwrap();
    assert_eq!(abs, store.root().join("widgets/00/12/file.bin"));
    assert_eq!(fs::read(&abs).unwrap(), bytes);

    // Overwrite with new content, without an expected checksum.
    let written = store.write(&path, &mut &b"v2"[..], None).unwrap();
    assert_eq!(written.bytes, 2);
    assert_eq!(fs::read(&abs).unwrap(), b"v2");

    assert!(store.delete(&path).unwrap());
    assert!(!store.delete(&path).unwrap());
    assert!(!store.exists(&path).unwrap());
    assert!(temp_files(store.root()).is_empty());
}

#[test]
fn refuses_bad_paths() {
    for bad in [
        "",
        "/abs",
        "/etc/passwd",
        "a/../../x",
        "..",
        "a/..",
        "x/.tmp_1",
    ] {
        assert!(BlobPath::new(bad).is_err(), "{bad:?} accepted");
    }
    // Normalized forms are the same key.
    assert_eq!(p("a/./b"), p("a/b"));
}

#[cfg(unix)]
#[test]
fn refuses_symlink_escapes() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let store = LocalBlobStore::new(dir.path().join("blobs")).unwrap();

    // A directory link pointing out of the root.
    symlink(&outside, store.root().join("evil")).unwrap();
    let escapes = |r: Result<_, BlobError>| matches!(r, Err(BlobError::Escapes { .. }));
    assert!(escapes(store.open(&p("evil/secret")).map(|_| ())));
    assert!(escapes(store.size(&p("evil/secret")).map(|_| ())));
    assert!(escapes(store.delete(&p("evil/secret")).map(|_| ())));
    assert!(escapes(store.absolute_path(&p("evil/secret")).map(|_| ())));
    assert!(escapes(
        store
            .write(&p("evil/new"), &mut &b"x"[..], None)
            .map(|_| ())
    ));
    assert!(escapes(
        store
            .write(&p("evil/deeper/new"), &mut &b"x"[..], None)
            .map(|_| ())
    ));
    assert!(!outside.join("new").exists());
    assert!(!outside.join("deeper").exists());
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");

    // A file link pointing out of the root: reading through it is refused.
    symlink(outside.join("secret"), store.root().join("leak")).unwrap();
    assert!(escapes(store.open(&p("leak")).map(|_| ())));

    // A dangling directory link: creating directories through it would write outside.
    symlink(outside.join("nowhere"), store.root().join("dangling")).unwrap();
    assert!(escapes(
        store
            .write(&p("dangling/sub/file"), &mut &b"x"[..], None)
            .map(|_| ())
    ));
    assert!(!outside.join("nowhere").exists());

    // Links that stay inside the root are fine.
    fs::create_dir_all(store.root().join("real")).unwrap();
    symlink(store.root().join("real"), store.root().join("alias")).unwrap();
    store.write(&p("alias/f"), &mut &b"ok"[..], None).unwrap();
    assert_eq!(fs::read(store.root().join("real/f")).unwrap(), b"ok");
}

#[test]
fn checksum_mismatch_stores_nothing_and_removes_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let path = p("a/b/c.bin");
    store.write(&path, &mut &b"old"[..], None).unwrap();

    let wrong = checksum_bytes(b"something else");
    let err = store
        .write(&path, &mut &b"new"[..], Some(&wrong))
        .unwrap_err();
    match &err {
        BlobError::ChecksumMismatch {
            path: p,
            expected,
            actual,
            bytes,
        } => {
            assert_eq!(p, "a/b/c.bin");
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, checksum_bytes(b"new"));
            assert_eq!(*bytes, 3);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("a/b/c.bin"));
    assert_eq!(
        fs::read(store.root().join("a/b/c.bin")).unwrap(),
        b"old",
        "previous content untouched"
    );
    assert_eq!(temp_files(store.root()), Vec::<String>::new());
}

#[test]
fn reader_failing_midway_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    let path = p("x/partial.bin");
    let mut reader = FailsAfter {
        good: data(50_000),
        pos: 0,
    };
    let err = store.write(&path, &mut reader, None).unwrap_err();
    match &err {
        BlobError::Source { path, bytes, .. } => {
            assert_eq!(path, "x/partial.bin");
            assert_eq!(*bytes, 50_000);
        }
        other => panic!("expected a source error, got {other:?}"),
    }
    assert!(!store.root().join("x/partial.bin").exists());
    assert!(!store.exists(&path).unwrap());
    assert_eq!(temp_files(store.root()), Vec::<String>::new());

    // With an existing file, the old content stays.
    store.write(&path, &mut &b"keep"[..], None).unwrap();
    let mut reader = FailsAfter {
        good: data(10),
        pos: 0,
    };
    store.write(&path, &mut reader, None).unwrap_err();
    assert_eq!(
        fs::read(store.root().join("x/partial.bin")).unwrap(),
        b"keep"
    );
    assert_eq!(temp_files(store.root()), Vec::<String>::new());
}

#[test]
fn directories_are_not_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    fs::create_dir_all(store.root().join("d/e")).unwrap();
    let d = p("d");
    assert!(matches!(store.size(&d), Err(BlobError::NotAFile { .. })));
    assert!(matches!(store.delete(&d), Err(BlobError::NotAFile { .. })));
    assert!(matches!(
        store.write(&d, &mut &b"x"[..], None),
        Err(BlobError::NotAFile { .. })
    ));
    assert!(store.root().join("d/e").is_dir());
    assert_eq!(temp_files(store.root()), Vec::<String>::new());
}

#[test]
fn stale_temp_files_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    fs::create_dir_all(store.root().join("a/b")).unwrap();
    let leftover = store.root().join("a/b/.tmp_deadbeef");
    fs::write(&leftover, b"crash leftover").unwrap();
    fs::write(store.root().join("a/b/blob"), b"real").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    // Younger than the threshold: kept.
    assert_eq!(
        store
            .remove_stale_temp_files(Duration::from_secs(3 * 3600))
            .unwrap(),
        0
    );
    assert!(leftover.exists());
    assert_eq!(
        store
            .remove_stale_temp_files(Duration::from_secs(3600))
            .unwrap(),
        1
    );
    assert!(!store.root().join("a/b/.tmp_deadbeef").exists());
    assert!(store.root().join("a/b/blob").exists());
}

#[test]
fn concurrent_readers_never_see_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalBlobStore::new(dir.path()).unwrap());
    let path = p("hot/file");
    let a = vec![b'a'; 1 << 20];
    let b = vec![b'b'; 1 << 20];
    store.write(&path, &mut &a[..], None).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, path, stop) = (store.clone(), path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut blob = store.open(&path).unwrap();
                let mut buf = Vec::new();
                blob.reader.read_to_end(&mut buf).unwrap();
                assert_eq!(buf.len(), 1 << 20, "a whole file, never a partial one");
                assert!(buf.iter().all(|c| *c == buf[0]), "one version, never a mix");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..20 {
        let content = if i % 2 == 0 { &b } else { &a };
        store.write(&path, &mut &content[..], None).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

#[cfg(unix)]
#[test]
fn blobs_get_the_mode_of_any_new_file() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::new(dir.path()).unwrap();
    store.write(&p("m/blob"), &mut &b"x"[..], None).unwrap();
    // A file created the ordinary way in the same folder: 0o666 less this process's umask.
    let plain = store.root().join("m/plain");
    fs::write(&plain, b"x").unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store.root().join("m/blob")), mode(&plain));
    // Into a directory that exists (the write that opens it and works inside it): the same.
    store.write(&p("m/again"), &mut &b"x"[..], None).unwrap();
    assert_eq!(mode(&store.root().join("m/again")), mode(&plain));
    assert!(temp_files(store.root()).is_empty());
}

#[cfg(unix)]
#[test]
fn writing_over_a_link_replaces_the_link_not_its_target() {
    use std::os::unix::fs::symlink;

    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::write(&outside, b"secret").unwrap();
    let store = LocalBlobStore::new(dir.path().join("blobs")).unwrap();
    symlink(&outside, store.root().join("link")).unwrap();

    store.write(&p("link"), &mut &b"new"[..], None).unwrap();
    let at = store.root().join("link");
    assert!(!fs::symlink_metadata(&at).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(&at).unwrap(), b"new");
    assert_eq!(fs::read(&outside).unwrap(), b"secret");
    assert!(temp_files(store.root()).is_empty());
}
