//! The worker loop: runs the passes until idle (tests, the demo) or on background threads
//! ([`Secondary::spawn`]) that stop with their [`WorkerHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use geo_core::source::SourceError;

use super::{Secondary, SecondaryError};

impl Secondary {
    /// Runs cursor, backfill, sync and verification passes until one whole round finds nothing to
    /// do. Rows waiting for a retry later do not count as work. Returns the number of rounds.
    pub fn run_until_idle(&self, max_rounds: usize) -> Result<usize, SecondaryError> {
        for round in 1..=max_rounds {
            let mut work = 0;
            loop {
                let p = self.cursor_pass()?;
                work += p.read;
                if p.read < self.config.cursor_batch {
                    break;
                }
            }
            let (c, r) = self.backfill_all()?;
            work += c + r;
            work += drain(|| self.sync_pass())?;
            work += drain(|| self.verification_pass())?;
            if work == 0 {
                return Ok(round);
            }
        }
        Ok(max_rounds)
    }

    /// Starts the workers on background threads: the log cursor, the scheduler, verification,
    /// the backfill and the timeouts. They stop when the handle is stopped or dropped.
    pub fn spawn(self: &Arc<Self>) -> Result<WorkerHandle, SecondaryError> {
        if self.config.reclaim_on_start {
            self.reclaim_interrupted()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        type Pass = fn(&Secondary) -> Result<usize, SecondaryError>;
        let loops: [(&str, Pass, std::time::Duration); 5] = [
            (
                "geo-log-cursor",
                |s| s.cursor_pass().map(|p| p.read),
                self.config.idle_sleep,
            ),
            ("geo-sync", Secondary::sync_pass, self.config.idle_sleep),
            (
                "geo-verify",
                Secondary::verification_pass,
                self.config.idle_sleep,
            ),
            (
                "geo-backfill",
                |s| {
                    s.backfill_pass()
                        .map(|(c, r, f)| if f > 0 && c + r == 0 { 0 } else { 1 })
                },
                self.config.idle_sleep * 25,
            ),
            (
                "geo-timeouts",
                Secondary::timeouts_pass,
                // Every minute (GitLab: every 10), sooner when the timeouts are short.
                std::time::Duration::from_secs(60)
                    .min(
                        (self
                            .config
                            .sync_timeout
                            .min(self.config.verification_timeout)
                            / 4)
                        .to_std()
                        .unwrap_or_default(),
                    )
                    .max(self.config.idle_sleep),
            ),
        ];
        for (name, pass, idle) in loops {
            let me = Arc::clone(self);
            let stop = Arc::clone(&stop);
            threads.push(
                thread::Builder::new()
                    .name(name.to_string())
                    .spawn(move || worker_loop(name, &stop, idle, || pass(&me)))
                    .map_err(|e| {
                        SecondaryError::Source(SourceError::other("starting a worker thread", e))
                    })?,
            );
        }
        Ok(WorkerHandle { stop, threads })
    }
}

/// Loops `pass` until `stop`; sleeps `idle` when it did nothing, backs off on errors.
pub(crate) fn worker_loop<E: std::fmt::Display>(
    name: &str,
    stop: &AtomicBool,
    idle: std::time::Duration,
    mut pass: impl FnMut() -> Result<usize, E>,
) {
    let mut errors = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let sleep = match pass() {
            Ok(0) => idle,
            Ok(_) => {
                errors = 0;
                std::time::Duration::ZERO
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                tracing::warn!(worker = name, error = %e, errors, "worker pass failed");
                std::time::Duration::from_millis(200u64.saturating_mul(1 << errors.min(6)))
            }
        };
        let until = std::time::Instant::now() + sleep;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            thread::sleep(std::time::Duration::from_millis(20).min(sleep));
        }
    }
}

/// Background worker threads; stops them on [`WorkerHandle::stop`] or drop.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Builds a handle from a stop flag and threads (used by the primary's workers too).
    pub(crate) fn new(stop: Arc<AtomicBool>, threads: Vec<thread::JoinHandle<()>>) -> Self {
        WorkerHandle { stop, threads }
    }

    /// Asks the workers to stop and waits for them.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Runs `pass` until it does nothing; returns the total work it did.
pub(crate) fn drain<E>(mut pass: impl FnMut() -> Result<usize, E>) -> Result<usize, E> {
    let mut total = 0;
    loop {
        match pass()? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}
