//! A secondary worker process for the multi-process test (`tests/pg_runtime.rs`).
//!
//! It runs the widgets example's secondary ([`Secondary::spawn`]: log cursor, scheduler,
//! verification, backfill, timeouts) against a shared tracking database, reading the primary
//! directly, until a stop file appears. Every blob download is logged to a shared file, one
//! line per event ([`geo_tests::worker::LogLine`]), so the test can check that no two workers
//! ever download the same record at the same time:
//!
//! ```text
//! ready <replicables> <pid>
//! start <replicable> <id> <pid>
//! end <replicable> <id> <pid>
//! stopped <pid>
//! ```
//!
//! Time is a "warped" wall clock shared by every process of a run
//! ([`geo_tests::worker::WarpClock`]), so a sync timeout of a minute and a 16 s retry take
//! seconds of real time. The command line is [`geo_tests::worker::WorkerOptions`]:
//!
//! ```text
//! geo-test-worker --tracking URL --primary URL --primary-files DIR --secondary-files DIR \
//!     --log FILE --stop FILE [--warp-base-ms MS --warp-factor N] [--sync-timeout-s S] \
//!     [--download-delay-ms MS] [--sync-batch N] [--sync-capacity N]
//! ```

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use geo_diesel::db::DbPool;
use geo_diesel::direct::DirectSource;
use geo_diesel::geo_core::Replicable;
use geo_diesel::geo_core::blob_store::LocalBlobStore;
use geo_diesel::geo_core::clock::{Env, FixedRandom};
use geo_diesel::geo_core::source::PrimarySource;
use geo_diesel::secondary::{Secondary, SecondaryConfig};
use geo_tests::source::{HookedReader, Intercepted, Interceptor, Opened};
use geo_tests::worker::{LogLine, USAGE, WarpClock, WorkerLog, WorkerOptions};

/// Logs every blob download's start and end and slows it down by `delay`.
struct LoggingDownloads {
    log: Arc<WorkerLog>,
    pid: u32,
    delay: StdDuration,
}

impl Interceptor for LoggingDownloads {
    fn open_blob(&self, inner: &dyn PrimarySource, replicable: &str, id: i64) -> Opened {
        let (pid, delay) = (self.pid, self.delay);
        let end = LogLine::End(replicable.to_string(), id, pid);
        self.log
            .append(&LogLine::Start(replicable.to_string(), id, pid));
        match inner.open_blob(replicable, id) {
            Ok(blob) => {
                let log = Arc::clone(&self.log);
                Ok(HookedReader::wrap(blob, |r| {
                    r.before_first_read(move || std::thread::sleep(delay))
                        .on_drop(move || log.append(&end))
                }))
            }
            Err(e) => {
                self.log.append(&end);
                Err(e)
            }
        }
    }
}

fn usage(message: &str) -> ! {
    eprintln!("geo-test-worker: {message}\n{USAGE}");
    std::process::exit(2)
}

fn main() {
    // Link the example application so its replicables are registered in this binary.
    let types = [
        <widgets::Widget as Replicable>::DESCRIPTOR.name,
        <widgets::Gadget as Replicable>::DESCRIPTOR.name,
    ];
    let o = WorkerOptions::parse(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e));
    let pid = std::process::id();
    let log = Arc::new(
        WorkerLog::open(&o.log)
            .unwrap_or_else(|e| usage(&format!("cannot open {}: {e}", o.log.display()))),
    );
    let clock = WarpClock::of(&o).unwrap_or_else(|e| usage(&e));
    let env = Env::new(Arc::new(clock), Arc::new(FixedRandom(0)));

    let tracking = DbPool::connect(&o.tracking, 4)
        .unwrap_or_else(|e| usage(&format!("tracking database: {e}")));
    let primary =
        DbPool::connect(&o.primary, 4).unwrap_or_else(|e| usage(&format!("primary database: {e}")));
    let primary_store = Arc::new(
        LocalBlobStore::new(&o.primary_files)
            .unwrap_or_else(|e| usage(&format!("primary files: {e}"))),
    );
    let secondary_store = Arc::new(
        LocalBlobStore::new(&o.secondary_files)
            .unwrap_or_else(|e| usage(&format!("secondary files: {e}"))),
    );
    let source = Intercepted::new(
        Arc::new(DirectSource::new(primary, primary_store)),
        LoggingDownloads {
            log: Arc::clone(&log),
            pid,
            delay: StdDuration::from_millis(o.download_delay_ms),
        },
    );
    let config = SecondaryConfig::default()
        .reclaim_on_start(false)
        // Heartbeats sleep in real time but are compared on the warped clock: a lease of an
        // hour of warped time outlasts the run, so the killed worker's claims come back through
        // the sync timeout, which is what this binary's test exercises.
        .lease_period(Duration::hours(1))
        .sync_timeout(Duration::seconds(o.sync_timeout_s))
        .sync_batch(o.sync_batch)
        .sync_capacity(o.sync_capacity)
        .idle_sleep(StdDuration::from_millis(20));
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
    log.append(&LogLine::Ready(types.join(","), pid));
    // Secondary::spawn runs the timeouts pass once a minute when idle; with a short sync timeout
    // this process checks every 100 ms so a dead worker's claims are taken over quickly.
    while !o.stop.exists() {
        if let Err(e) = secondary.timeouts_pass() {
            eprintln!("geo-test-worker: timeouts pass failed: {e}");
        }
        std::thread::sleep(StdDuration::from_millis(100));
    }
    workers.stop();
    log.append(&LogLine::Stopped(pid));
}
