//! A secondary worker process for the multi-process tests (`tests/pg_runtime.rs`).
//!
//! It runs the widgets example's secondary ([`Secondary::spawn`]: log cursor, scheduler,
//! verification, backfill, timeouts) against a shared tracking database, reading the primary
//! directly, until a stop file appears. Every blob download is logged to a shared file opened
//! with `O_APPEND`, one line per event, so the test can check that no two workers ever download
//! the same record at the same time:
//!
//! ```text
//! ready <pid>
//! start <replicable> <id> <pid>
//! end <replicable> <id> <pid>
//! stopped <pid>
//! ```
//!
//! Time is a "warped" wall clock shared by every process of a run: `base + (now - base) ·
//! factor`, so a sync timeout of a minute and a 16 s retry take seconds of real time.
//!
//! ```text
//! geo-test-worker --tracking URL --primary URL --primary-files DIR --secondary-files DIR \
//!     --log FILE --stop FILE [--warp-base-ms MS --warp-factor N] [--sync-timeout-s S] \
//!     [--download-delay-ms MS] [--sync-batch N] [--sync-capacity N]
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::clock::{Clock, Env, FixedRandom};
use geo_diesel::geo_core::event::Event;
use geo_diesel::geo_core::source::{BlobStream, PrimaryChecksum, PrimarySource, SourceError};
use geo_diesel::secondary::{Secondary, SecondaryConfig};

/// A wall clock running `factor` times faster than real time from `base` on; every process
/// given the same base and factor agrees on the time.
struct WarpClock {
    base: DateTime<Utc>,
    factor: i32,
}

impl Clock for WarpClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + (Utc::now() - self.base) * self.factor
    }
}

/// Appends whole lines to the shared log (one `write` per line on an `O_APPEND` file).
struct Log {
    file: std::sync::Mutex<File>,
    pid: u32,
}

impl Log {
    fn line(&self, text: &str) {
        let line = format!("{text} {}\n", self.pid);
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A lost line would hide an overlap: fail loudly.
        f.write_all(line.as_bytes())
            .expect("append to the worker log");
    }
}

/// The direct source, logging every blob download's start and end and slowing it down.
struct LoggingSource {
    inner: DirectSource,
    log: Arc<Log>,
    delay: StdDuration,
}

struct LoggedReader {
    inner: Box<dyn Read + Send>,
    log: Arc<Log>,
    tag: String,
    delay: Option<StdDuration>,
}

impl Read for LoggedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.delay.take() {
            std::thread::sleep(d);
        }
        self.inner.read(buf)
    }
}

impl Drop for LoggedReader {
    fn drop(&mut self) {
        self.log.line(&format!("end {}", self.tag));
    }
}

impl PrimarySource for LoggingSource {
    fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.inner.events_after(after_id, limit)
    }
    fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids)
    }
    fn max_event_id(&self) -> Result<Option<i64>, SourceError> {
        self.inner.max_event_id()
    }
    fn model_ids(
        &self,
        replicable: &str,
        range: RangeInclusive<i64>,
    ) -> Result<Vec<i64>, SourceError> {
        self.inner.model_ids(replicable, range)
    }
    fn max_model_id(&self, replicable: &str) -> Result<Option<i64>, SourceError> {
        self.inner.max_model_id(replicable)
    }
    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, PrimaryChecksum>, SourceError> {
        self.inner.primary_checksums(replicable, ids)
    }
    fn blob_path(&self, replicable: &str, id: i64) -> Result<Option<String>, SourceError> {
        self.inner.blob_path(replicable, id)
    }
    fn open_blob(&self, replicable: &str, id: i64) -> Result<BlobStream, SourceError> {
        let tag = format!("{replicable} {id}");
        self.log.line(&format!("start {tag}"));
        match self.inner.open_blob(replicable, id) {
            Ok(blob) => Ok(BlobStream {
                reader: Box::new(LoggedReader {
                    inner: blob.reader,
                    log: Arc::clone(&self.log),
                    tag,
                    delay: Some(self.delay),
                }),
                size: blob.size,
                checksum: blob.checksum,
            }),
            Err(e) => {
                self.log.line(&format!("end {tag}"));
                Err(e)
            }
        }
    }
}

fn args() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let Some(key) = key.strip_prefix("--") else {
            usage(&format!("unexpected argument {key:?}"));
        };
        let Some(value) = it.next() else {
            usage(&format!("--{key} needs a value"));
        };
        out.insert(key.to_string(), value);
    }
    out
}

fn usage(message: &str) -> ! {
    eprintln!(
        "geo-test-worker: {message}\nusage: geo-test-worker --tracking URL --primary URL \
         --primary-files DIR --secondary-files DIR --log FILE --stop FILE [--warp-base-ms MS] \
         [--warp-factor N] [--sync-timeout-s S] [--download-delay-ms MS] [--sync-batch N] \
         [--sync-capacity N]"
    );
    std::process::exit(2)
}

fn required<'a>(a: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    a.get(key)
        .map(String::as_str)
        .unwrap_or_else(|| usage(&format!("--{key} is required")))
}

fn number(a: &BTreeMap<String, String>, key: &str, default: i64) -> i64 {
    a.get(key).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| usage(&format!("--{key}: {v:?} is not a number")))
    })
}

fn main() {
    // Link the example application so its replicables are registered in this binary.
    let types = [
        <widgets::Widget as Replicable>::DESCRIPTOR.name,
        <widgets::Gadget as Replicable>::DESCRIPTOR.name,
    ];
    let a = args();
    let log_path = PathBuf::from(required(&a, "log"));
    let stop = PathBuf::from(required(&a, "stop"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap_or_else(|e| usage(&format!("cannot open {}: {e}", log_path.display())));
    let log = Arc::new(Log {
        file: std::sync::Mutex::new(file),
        pid: std::process::id(),
    });

    let base_ms = number(&a, "warp-base-ms", Utc::now().timestamp_millis());
    let base = Utc
        .timestamp_millis_opt(base_ms)
        .single()
        .unwrap_or_else(|| usage("--warp-base-ms is out of range"));
    let factor = i32::try_from(number(&a, "warp-factor", 1))
        .unwrap_or_else(|_| usage("--warp-factor is out of range"));
    let env = Env::new(
        Arc::new(WarpClock { base, factor }),
        Arc::new(FixedRandom(0)),
    );

    let tracking = DbPool::connect(required(&a, "tracking"), 4)
        .unwrap_or_else(|e| usage(&format!("tracking database: {e}")));
    let primary = DbPool::connect(required(&a, "primary"), 4)
        .unwrap_or_else(|e| usage(&format!("primary database: {e}")));
    let primary_store = Arc::new(
        LocalBlobStore::new(required(&a, "primary-files"))
            .unwrap_or_else(|e| usage(&format!("primary files: {e}"))),
    );
    let secondary_store = Arc::new(
        LocalBlobStore::new(required(&a, "secondary-files"))
            .unwrap_or_else(|e| usage(&format!("secondary files: {e}"))),
    );
    let source = Arc::new(LoggingSource {
        inner: DirectSource::new(primary, primary_store),
        log: Arc::clone(&log),
        delay: StdDuration::from_millis(number(&a, "download-delay-ms", 0).max(0) as u64),
    });
    let config = SecondaryConfig {
        reclaim_on_start: false,
        sync_timeout: Duration::seconds(number(&a, "sync-timeout-s", 8 * 3600)),
        sync_batch: number(&a, "sync-batch", 200).max(1) as usize,
        sync_capacity: number(&a, "sync-capacity", 10).max(1) as usize,
        idle_sleep: StdDuration::from_millis(20),
        ..SecondaryConfig::default()
    };
    let secondary = Arc::new(Secondary::new(
        tracking,
        source,
        secondary_store,
        env,
        config,
    ));
    let workers = secondary
        .spawn()
        .unwrap_or_else(|e| usage(&format!("starting the workers: {e}")));
    log.line(&format!("ready {}", types.join(",")));
    // Secondary::spawn runs the timeouts pass once a minute when idle; with a short sync timeout
    // this process checks every 100 ms so a dead worker's claims are taken over quickly.
    while !stop.exists() {
        if let Err(e) = secondary.timeouts_pass() {
            eprintln!("geo-test-worker: timeouts pass failed: {e}");
        }
        std::thread::sleep(StdDuration::from_millis(100));
    }
    workers.stop();
    log.line("stopped");
}
