//! The worker loop: runs the passes until idle (tests, the demo) or on background threads
//! ([`Secondary::spawn`]) that stop with their [`WorkerHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use geo_core::source::SourceError;

use super::{Secondary, SecondaryError};
use crate::notify::Signal;

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

    /// Starts the workers on background threads: the heartbeat, the log cursor, the scheduler
    /// (`sync_workers` passes at once), verification, the backfill and the timeouts. They stop
    /// when the handle is stopped or dropped; a clean stop then gives this process's claims and
    /// leases back ([`Secondary::release_own`]).
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
            crate::notify::registry_changed();
        }
        let stop = Arc::new(Stop::default());
        let mut threads = Vec::new();
        type Pass = fn(&Secondary) -> Result<Next, SecondaryError>;
        let work = Some(crate::notify::registry_signal());
        // (name, pass, idle timer, the signal that ends the idle wait early)
        let mut loops: Vec<(String, Pass, std::time::Duration, Option<&'static Signal>)> = vec![
            (
                "geo-heartbeat".to_owned(),
                // Never "busy": it runs every third of the lease period. Claims it takes back
                // from a silent process are new work for the sync workers.
                |s| {
                    s.heartbeat_pass()?;
                    if s.release_silent(false)? > 0 {
                        crate::notify::registry_changed();
                    }
                    Ok(Next::Idle)
                },
                self.heartbeat_interval(),
                None,
            ),
            (
                "geo-log-cursor".to_owned(),
                // A long poll when the primary can wait: an answer that came back empty after
                // waiting is asked again at once; one that came back empty at once (a source
                // that cannot wait, a halt) sleeps `idle_sleep`.
                |s| {
                    if !s.holds(crate::lease::LOG_CURSOR_LEASE)? {
                        return Ok(Next::Idle);
                    }
                    let wait = s.config.event_wait;
                    let started = std::time::Instant::now();
                    let p = s.cursor_pass_waiting(wait)?;
                    if p.read > 0 {
                        crate::notify::registry_changed();
                        Ok(Next::Busy)
                    } else if p.halted.is_none() && !wait.is_zero() && started.elapsed() >= wait / 2
                    {
                        Ok(Next::Again)
                    } else {
                        Ok(Next::Idle)
                    }
                },
                self.config.idle_sleep,
                None,
            ),
            (
                "geo-verify".to_owned(),
                |s| busy(s.verification_pass()),
                self.config.idle_sleep,
                work,
            ),
            (
                "geo-backfill".to_owned(),
                |s| {
                    if !s.holds(crate::lease::BACKFILL_LEASE)? {
                        return Ok(Next::Idle);
                    }
                    let (c, r, f) = s.backfill_pass()?;
                    if c > 0 {
                        crate::notify::registry_changed();
                    }
                    Ok(if f > 0 && c + r == 0 {
                        Next::Idle
                    } else {
                        Next::Busy
                    })
                },
                // Idle sweeps every 25 idle sleeps, but a waiting process asks for the lease
                // at least every third of the lease period.
                (self.config.idle_sleep * 25).min(self.heartbeat_interval()),
                None,
            ),
            (
                "geo-timeouts".to_owned(),
                |s| busy(s.timeouts_pass()),
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
                None,
            ),
        ];
        // The scheduler: `sync_workers` passes at once (geo-sync, geo-sync-1, …), their
        // downloads sharing `sync_capacity`.
        for n in 0..self.config.sync_workers.max(1) {
            let name = match n {
                0 => "geo-sync".to_owned(),
                n => format!("geo-sync-{n}"),
            };
            let pass: Pass = |s| busy(s.sync_pass());
            loops.push((name, pass, self.config.idle_sleep, work));
        }
        for (name, pass, idle, wake) in loops {
            let me = Arc::clone(self);
            let stop = Arc::clone(&stop);
            threads.push(
                thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || run_loop(&name, &stop, idle, wake, || pass(&me)))
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

    /// One log-cursor pass that long-polls the primary for up to `wait` when no event is
    /// after the cursor ([`crate::cursor::LogCursor::pass_waiting`]); a zero `wait` is
    /// [`Secondary::cursor_pass`].
    pub fn cursor_pass_waiting(
        &self,
        wait: std::time::Duration,
    ) -> Result<crate::cursor::CursorPass, SecondaryError> {
        let flags: std::collections::BTreeSet<&'static str> =
            self.enabled_types()?.into_iter().map(|d| d.name).collect();
        let result = self.cursor.pass_waiting(
            &self.tracking,
            self.source.as_ref(),
            self.file_store(),
            &|d| flags.contains(d.name),
            &|| self.now(),
            wait,
        );
        self.after_cursor(result)
    }

    /// Wakes this process's sync and verification workers now (they also wake on their own
    /// when a pass of this process creates work): call it after changing registry rows
    /// outside the workers, e.g. from an operator's action.
    pub fn wake_workers(&self) {
        crate::notify::registry_changed();
    }
}

/// What a worker pass asks of its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// It did work: run again at once, and tell the other workers.
    Busy,
    /// It did nothing but already waited for work (a long poll): run again at once.
    Again,
    /// It did nothing: wait for the idle timer or the wake signal.
    Idle,
}

/// [`Next::Busy`] when the pass did something; passes that did work signal the others.
fn busy(work: Result<usize, SecondaryError>) -> Result<Next, SecondaryError> {
    match work? {
        0 => Ok(Next::Idle),
        _ => {
            crate::notify::registry_changed();
            Ok(Next::Busy)
        }
    }
}

/// The stop signal of one set of worker threads: a flag, and a wake-up for threads sleeping on
/// a timer or waiting for work, so they end at once instead of at their next tick.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    signal: Signal,
}

impl Stop {
    /// Whether the threads must end.
    pub(crate) fn is_set(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Ends the threads: sets the flag and wakes every wait (its own, and the work signal the
    /// sync and verification threads wait on).
    pub(crate) fn set(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.signal.notify();
        crate::notify::registry_signal().notify();
    }

    /// Sleeps `d`, or until `wake` leaves generation `seen`, or until stopped.
    fn sleep(&self, d: std::time::Duration, wake: Option<(&Signal, u64)>) {
        let deadline = std::time::Instant::now() + d;
        let own = self.signal.generation();
        if self.is_set() {
            return;
        }
        match wake {
            Some((signal, seen)) => {
                signal.wait_until(seen, deadline);
            }
            None => {
                self.signal.wait_until(own, deadline);
            }
        }
    }
}

/// Loops `pass` until `stop`; sleeps `idle` when it did nothing, backs off on errors. For
/// workers outside the secondary (the primary's verifier).
pub(crate) fn worker_loop<E: std::fmt::Display>(
    name: &str,
    stop: &Stop,
    idle: std::time::Duration,
    mut pass: impl FnMut() -> Result<usize, E>,
) {
    run_loop(name, stop, idle, None, || {
        pass().map(|n| if n == 0 { Next::Idle } else { Next::Busy })
    })
}

/// Loops `pass` until `stop`. After a pass that did nothing it waits `idle`, ended early by a
/// change of `wake` since before the pass (work another thread made meanwhile is never
/// missed) or by the stop; after an error it backs off (200 ms doubling to 12.8 s).
fn run_loop<E: std::fmt::Display>(
    name: &str,
    stop: &Stop,
    idle: std::time::Duration,
    wake: Option<&Signal>,
    mut pass: impl FnMut() -> Result<Next, E>,
) {
    let mut errors = 0u32;
    while !stop.is_set() {
        let seen = wake.map(|w| (w, w.generation()));
        match pass() {
            Ok(Next::Busy | Next::Again) => errors = 0,
            Ok(Next::Idle) => {
                errors = 0;
                stop.sleep(idle, seen);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                tracing::warn!(worker = name, error = %e, errors, "worker pass failed");
                let backoff =
                    std::time::Duration::from_millis(200u64.saturating_mul(1 << errors.min(6)));
                stop.sleep(backoff, None);
            }
        }
    }
}

/// Background worker threads; stops them on [`WorkerHandle::stop`] or drop, then runs what a
/// clean stop does (a secondary gives its claims and leases back).
pub struct WorkerHandle {
    stop: Arc<Stop>,
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
    pub(crate) fn new(stop: Arc<Stop>, threads: Vec<thread::JoinHandle<()>>) -> Self {
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
        self.stop.set();
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
