//! Checksum throughput: `checksum_file` (memory-mapped, multi-core) against the sequential
//! one-core path and the in-memory writer, on a 256 MiB file in a tmpfs when one is available
//! (file timings on disk vary too much; see FACTS.md).
//!
//! Run with `cargo bench -p geo-core --bench checksum`.

use std::io::Write;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use geo_core::checksum::{ChecksumWriter, checksum_file, checksum_file_sequential};

const SIZE: usize = 256 * 1024 * 1024;

fn bench_dir() -> tempfile::TempDir {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("temporary directory in /dev/shm")
    } else {
        tempfile::tempdir().expect("temporary directory")
    }
}

fn checksums(c: &mut Criterion) {
    let dir = bench_dir();
    let path = dir.path().join("blob");
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&path, &data).expect("write bench file");

    let mut group = c.benchmark_group("checksum_256MiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.bench_function("checksum_file (mmap + rayon)", |b| {
        b.iter(|| checksum_file(&path).expect("hash"))
    });
    group.bench_function("checksum_file_sequential", |b| {
        b.iter(|| checksum_file_sequential(&path).expect("hash"))
    });
    group.bench_function("ChecksumWriter (in memory, sink)", |b| {
        b.iter(|| {
            let mut w = ChecksumWriter::new(std::io::sink());
            for chunk in data.chunks(1024 * 1024) {
                w.write_all(chunk).expect("sink");
            }
            w.finish().1
        })
    });
    group.finish();
}

criterion_group!(benches, checksums);
criterion_main!(benches);
