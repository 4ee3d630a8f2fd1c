//! [`BulkWorker`]: the thread a node runs to step bulk jobs in the background.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use geo_core::Role;

use super::bulk::{batch_for, step};
use crate::db::DbPool;

/// Steps bulk jobs in the background ([`BulkWorker::spawn`]).
#[derive(Debug)]
pub struct BulkWorker;

/// A running [`BulkWorker`]; stops (and joins its thread) on [`BulkWorkerHandle::stop`] or drop.
#[derive(Debug)]
pub struct BulkWorkerHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BulkWorker {
    /// Starts a thread `geo-bulk-updates` that calls [`step`] with [`batch_for`] the backend in a loop on
    /// `db`, a database of `role`, sleeping `idle` when no job is unfinished. After each batch it
    /// pauses as long as the batch took, so the sync and verification workers get the database
    /// between batches (SQLite has one writer). Errors are logged and retried after `idle`.
    pub fn spawn(db: DbPool, role: Role, idle: Duration) -> std::io::Result<BulkWorkerHandle> {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("geo-bulk-updates".into())
            .spawn(move || worker_loop(&db, role, idle, &rx))?;
        Ok(BulkWorkerHandle {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

/// Waits up to `d`; true when the worker must stop.
fn wait(rx: &mpsc::Receiver<()>, d: Duration) -> bool {
    !matches!(rx.recv_timeout(d), Err(mpsc::RecvTimeoutError::Timeout))
}

fn worker_loop(db: &DbPool, role: Role, idle: Duration, rx: &mpsc::Receiver<()>) {
    loop {
        let started = Instant::now();
        let result = db.get().map_err(|e| e.to_string()).and_then(|mut conn| {
            step(&mut conn, role, batch_for(db.backend())).map_err(|e| e.to_string())
        });
        let pause = match result {
            Ok(Some(job)) => {
                tracing::debug!(
                    job = job.id,
                    replicable = %job.replicable,
                    processed = job.processed,
                    changed = job.changed,
                    finished = job.finished_at.is_some(),
                    "bulk update batch"
                );
                if job.finished_at.is_some() {
                    tracing::info!(job = job.id, replicable = %job.replicable, processed = job.processed, changed = job.changed, "bulk update finished");
                }
                started
                    .elapsed()
                    .clamp(Duration::from_millis(1), idle.max(Duration::from_millis(1)))
            }
            Ok(None) => idle,
            Err(error) => {
                tracing::warn!(%error, "bulk update step failed; retrying");
                idle
            }
        };
        if wait(rx, pause) {
            return;
        }
    }
}

impl BulkWorkerHandle {
    /// Stops the worker after its current batch and joins its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the bulk update worker panicked");
        }
    }
}

impl Drop for BulkWorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
