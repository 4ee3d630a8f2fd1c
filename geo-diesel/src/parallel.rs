//! Running blocking work (downloads, checksums) on a fixed number of scoped threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Applies `f` to every item on at most `threads` scoped threads (each takes the next item when
/// it is free, so one slow item does not hold up the others) and returns the results in item
/// order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item was processed: the threads joined")
        })
        .collect()
}

/// Results per thread that [`parallel_stream`] holds for its sink while the sink works.
///
/// The sink of a sync pass records each group in one SQLite transaction, so this bounds both the
/// group size and what a killed process loses (finished downloads not yet recorded: synced
/// again, never corrupt). At 4, small-file passes recorded groups of about 42 rows and
/// their downloads waited for the sink; at 16, B2 over HTTP (`http_bench --only B2`) took
/// 0.36 s instead of 0.41 s (64 was no faster).
pub const STREAM_BUFFER_PER_THREAD: usize = 16;

/// Applies `f` to every item on at most `threads` scoped threads, as [`parallel_map`] does, and
/// hands the results to `sink` on the calling thread as they finish: each call gets every
/// result waiting (at least one), so the caller can record them in groups while the threads
/// keep working. Up to [`STREAM_BUFFER_PER_THREAD`] `× threads` results wait for the sink while
/// it works, so short items (small downloads) never stall behind the sink's last group; a
/// thread blocks only when that buffer is full. At most `(STREAM_BUFFER_PER_THREAD + 1) ×
/// threads` results are finished but not yet through the sink (the buffer, the group in the
/// sink and one waiting per thread). Returns how many items it processed.
pub fn parallel_stream<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
    mut sink: impl FnMut(Vec<R>),
) -> usize {
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::sync_channel::<R>(threads.max(1) * STREAM_BUFFER_PER_THREAD);
    let mut processed = 0;
    thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len()) {
            let (tx, next, f) = (tx.clone(), &next, &f);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if tx.send(f(item)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            processed += group.len();
            sink(group);
        }
    });
    processed
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    #[test]
    fn results_keep_item_order_and_threads_are_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = parallel_map(&(0..50).collect::<Vec<u64>>(), 3, |x| {
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(1));
            live.fetch_sub(1, Ordering::SeqCst);
            x * 2
        });
        assert_eq!(out, (0..50).map(|x| x * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(parallel_map(&[] as &[u8], 4, |x| *x).is_empty());
    }

    #[test]
    fn threads_keep_working_while_the_sink_records_a_group() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let finished = AtomicUsize::new(0);
        let mut during_first_sink = None;
        super::parallel_stream(
            &(0..200).collect::<Vec<u64>>(),
            2,
            |_| {
                std::thread::sleep(std::time::Duration::from_millis(1));
                finished.fetch_add(1, Ordering::SeqCst);
            },
            |_| {
                if during_first_sink.is_none() {
                    let before = finished.load(Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(60));
                    during_first_sink = Some(finished.load(Ordering::SeqCst) - before);
                }
            },
        );
        // A rendezvous hand-over lets each thread finish one item and then wait: 2 at most.
        // The buffer lets them fill it (2 × STREAM_BUFFER_PER_THREAD) and one more each.
        let n = during_first_sink.unwrap();
        assert!(n > 4, "only {n} items finished while the sink worked");
        assert!(n <= 2 * (super::STREAM_BUFFER_PER_THREAD + 1), "{n}");
    }

    #[test]
    fn stream_hands_over_every_result_while_the_others_still_run() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let mut seen = Vec::new();
        let mut busy_at_a_sink = false;
        let n = super::parallel_stream(
            &(0..40).collect::<Vec<u64>>(),
            3,
            |x| {
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                live.fetch_sub(1, Ordering::SeqCst);
                x * 2
            },
            |group| {
                assert!(!group.is_empty());
                busy_at_a_sink |= live.load(Ordering::SeqCst) > 0;
                seen.extend(group);
            },
        );
        assert_eq!(n, 40);
        seen.sort_unstable();
        assert_eq!(seen, (0..40).map(|x| x * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(busy_at_a_sink, "results were only handed over at the end");
        assert_eq!(
            super::parallel_stream(&[] as &[u8], 4, |x| *x, |_| panic!()),
            0
        );
    }
}
