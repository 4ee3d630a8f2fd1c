//! Test data, checksums, folders and waiting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use geo_diesel::geo_core::checksum::{Checksum, checksum_bytes};

/// Deterministic pseudo-random bytes (xorshift from `seed`).
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The blake3 checksum of `bytes` as the databases store it.
pub fn sum(bytes: &[u8]) -> Vec<u8> {
    checksum_bytes(bytes).to_vec()
}

/// The checksum of `bytes` (readable in assertion messages).
pub fn checksum(bytes: &[u8]) -> Checksum {
    checksum_bytes(bytes)
}

/// A temporary folder: on tmpfs (`/dev/shm`) when there is one, where fsyncs cost nothing and
/// thousands of small files do not dominate a suite's time.
///
/// # Panics
///
/// When no temporary folder can be created.
pub fn temp_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("geo-test-");
    if shm.is_dir() {
        b.tempdir_in(shm)
    } else {
        b.tempdir()
    }
    .expect("create a temporary folder")
}

/// Reads a file, `None` when it does not exist.
///
/// # Panics
///
/// On any other error.
pub fn read_opt(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// Every regular file under `root`, as paths relative to it, sorted.
///
/// # Panics
///
/// When the tree cannot be read.
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("file type").is_dir() {
                dirs.push(entry.path());
            } else {
                out.push(entry.path().strip_prefix(root).expect("under root").into());
            }
        }
    }
    out.sort();
    out
}

/// Polls `done` every 20 ms until it holds.
///
/// # Panics
///
/// With `what` when `limit` passes first.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
