//! The in-process signals: a change counter ([`Signal`]) that blocking threads and async tasks
//! wait on, and the two of the process (events committed, registry work); see the module docs
//! of [`crate::notify`].

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// A change counter that blocking threads and async tasks can wait on.
#[derive(Debug)]
pub struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks `m`, taking the data of a poisoned lock as it is.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Signal {
    /// A signal at generation 0.
    pub const fn new() -> Self {
        Signal {
            generation: Mutex::new(0),
            changed: Condvar::new(),
            notify: tokio::sync::Notify::const_new(),
        }
    }

    /// The current generation: read it before looking for work, then wait for it to change.
    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Bumps the generation and wakes every waiter.
    pub fn notify(&self) {
        *lock(&self.generation) += 1;
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// Blocks until the generation differs from `seen` or `deadline` passes; returns whether
    /// it changed.
    pub fn wait_until(&self, seen: u64, deadline: Instant) -> bool {
        let mut g = lock(&self.generation);
        loop {
            if *g != seen {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Resolves once the generation differs from `seen` (wrap it in a timeout).
    pub async fn changed(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a bump between the check and the await is seen.
            notified.as_mut().enable();
            if self.generation() != seen {
                return;
            }
            notified.await;
        }
    }
}

static EVENTS: Signal = Signal::new();
static REGISTRY: Signal = Signal::new();

/// The process-wide "events changed" signal (see the module docs).
pub fn events_signal() -> &'static Signal {
    &EVENTS
}

/// Says that events were committed to a primary database in this process: wakes every waiting
/// feed at once. Call it only after the commit (a waiter woken earlier reads nothing and waits
/// for the database's own signal).
pub fn events_committed() {
    EVENTS.notify();
}

/// The process-wide "registry work" signal (see the module docs).
pub fn registry_signal() -> &'static Signal {
    &REGISTRY
}

/// Says that registry rows may have become due (pending rows created, claims released, an
/// operator's resync): wakes the sync and verification workers of every secondary in this
/// process.
pub fn registry_changed() {
    REGISTRY.notify();
}
