//! Byte buffers allocated and zeroed once, then reused: one home for the read buffers of
//! hashing and downloads ([`checksum::with_buffer`](crate::checksum::with_buffer)) and for the
//! pieces a primary streams ([`BufferPool::take`], handed to the HTTP stack as an owner of
//! `bytes::Bytes` and back in the pool when it has been sent).
//!
//! Zeroing a fresh buffer for every file, thread or streamed piece cost more than the copy it
//! was for: a 256 KiB `vec![0; n]` per piece was 6% of a large-blob transfer's CPU.

use std::sync::Mutex;

/// A pool of `size`-byte buffers that keeps at most `keep` of them between uses.
#[derive(Debug)]
pub struct BufferPool {
    size: usize,
    keep: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `keep` free ones (a `static`'s initializer).
    pub const fn new(size: usize, keep: usize) -> Self {
        BufferPool {
            size,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Bytes in each buffer.
    pub fn size(&self) -> usize {
        self.size
    }

    /// A buffer: a kept one, or a newly zeroed one when none is free. Concurrent takers each
    /// get their own; it returns to the pool when dropped (kept only while fewer than `keep`
    /// are free).
    pub fn take(&'static self) -> PooledBuffer {
        let kept = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        PooledBuffer {
            buf: Some(kept.unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())),
            pool: self,
        }
    }

    /// Free buffers kept now.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn put(&self, buf: Box<[u8]>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A buffer of a [`BufferPool`], whole (`size` bytes, its content whatever the last user left).
/// Back in its pool when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    buf: Option<Box<[u8]>>,
    pool: &'static BufferPool,
}

impl std::ops::Deref for PooledBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.put(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_without_zeroing_again() {
        static POOL: BufferPool = BufferPool::new(64, 2);
        let mut a = POOL.take();
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(|&b| b == 0), "a new buffer is zeroed");
        a[0] = 7;
        let ptr = a.as_ptr();
        drop(a);
        assert_eq!(POOL.kept(), 1);
        let b = POOL.take();
        assert_eq!(b.as_ptr(), ptr, "the kept buffer is handed out again");
        assert_eq!(b[0], 7, "and not zeroed again");
        assert_eq!(POOL.kept(), 0);
    }

    #[test]
    fn at_most_keep_buffers_stay_and_concurrent_takers_get_their_own() {
        static POOL: BufferPool = BufferPool::new(16, 2);
        let taken: Vec<_> = (0..5).map(|_| POOL.take()).collect();
        let mut ptrs: Vec<_> = taken.iter().map(|b| b.as_ptr()).collect();
        ptrs.sort();
        ptrs.dedup();
        assert_eq!(ptrs.len(), 5, "every taker has a buffer of its own");
        drop(taken);
        assert_eq!(POOL.kept(), 2, "only `keep` free buffers are kept");
    }
}
