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
    ///
    /// For one process driving its secondary by hand (tests, the demo): it runs the log cursor
    /// and the backfill without asking for their leases ([`Secondary::spawn`] does).
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

    /// Starts the workers on background threads: the heartbeat, the log cursor, the scheduler,
    /// verification, the backfill and the timeouts. They stop when the handle is stopped or
    /// dropped; a clean stop then gives this process's claims and leases back
    /// ([`Secondary::release_own`]).
    ///
    /// Several processes may run this on one tracking database: each registers and heartbeats
    /// ([`Secondary::heartbeat_pass`]); the log cursor and the backfill run only in the process
    /// holding their lease ([`crate::lease::LOG_CURSOR_LEASE`],
    /// [`crate::lease::BACKFILL_LEASE`]); the claims of a process silent for longer than
    /// `lease_period` return to `pending` ([`Secondary::release_silent`]). A start never resets
    /// another live process's rows.
    pub fn spawn(self: &Arc<Self>) -> Result<WorkerHandle, SecondaryError> {
        self.heartbeat_pass()?;
        let released = self.release_silent(self.config.reclaim_on_start)?;
        if released > 0 {
            tracing::info!(rows = released, "took back the claims of stopped processes");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        type Pass = fn(&Secondary) -> Result<usize, SecondaryError>;
        let loops: [(&str, Pass, std::time::Duration); 6] = [
            (
                "geo-heartbeat",
                // Never "busy": it runs every third of the lease period.
                |s| {
                    s.heartbeat_pass()?;
                    s.release_silent(false).map(|_| 0)
                },
                self.heartbeat_interval(),
            ),
            (
                "geo-log-cursor",
                |s| {
                    if s.holds(crate::lease::LOG_CURSOR_LEASE)? {
                        s.cursor_pass().map(|p| p.read)
                    } else {
                        Ok(0)
                    }
                },
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
                    if !s.holds(crate::lease::BACKFILL_LEASE)? {
                        return Ok(0);
                    }
                    s.backfill_pass()
                        .map(|(c, r, f)| if f > 0 && c + r == 0 { 0 } else { 1 })
                },
                // Idle sweeps every 25 idle sleeps, but a waiting process asks for the lease
                // at least every third of the lease period.
                (self.config.idle_sleep * 25).min(self.heartbeat_interval()),
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
        let me = Arc::clone(self);
        let mut handle = WorkerHandle::new(stop, threads);
        handle.on_stop = Some(Box::new(move || {
            if let Err(e) = me.release_own() {
                tracing::warn!(error = %e, "could not give back this process's claims on stop; other processes take them back after the lease period");
            }
        }));
        Ok(handle)
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

/// Background worker threads; stops them on [`WorkerHandle::stop`] or drop, then runs what a
/// clean stop does (a secondary gives its claims and leases back).
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    on_stop: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Builds a handle from a stop flag and threads (used by the primary's workers too).
    pub(crate) fn new(stop: Arc<AtomicBool>, threads: Vec<thread::JoinHandle<()>>) -> Self {
        WorkerHandle {
            stop,
            threads,
            on_stop: None,
        }
    }

    /// Asks the workers to stop, waits for them, then gives back what they held.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Stops the workers and waits for them *without* the clean stop's release: the claims and
    /// leases stay as a crash would leave them (for crash tests; other processes take them
    /// back after the lease period).
    pub fn abandon(mut self) {
        self.on_stop = None;
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(release) = self.on_stop.take() {
            release();
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
