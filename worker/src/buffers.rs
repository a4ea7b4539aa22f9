//! A session's byte buffers for request payloads and reply data, reused from one frame to
//! the next.
//!
//! Copies move in frames of a few MiB. A fresh buffer per frame costs the allocator's
//! bookkeeping, a memset for reply data, and, for sizes the allocator maps afresh, a page
//! fault per 4 KiB; through a fast transport that is a large share of a copy. The executor
//! gives a request's payload back once it ran, the writer a reply's data once it is on the
//! wire, and the next frame takes the buffer again.
//!
//! Each session has its own pool, so a buffer only ever holds bytes of its own session.

use std::sync::Mutex;

/// Buffers kept for reuse, at most: about as many as a session has in use at once (the
/// reader's read-ahead, the executor's request, replies on their way out).
const KEPT: usize = 8;
/// Buffers larger than this are freed rather than kept (the stub's copy frames are 4 MiB), so
/// an idle session keeps at most 64 MiB.
const KEPT_CAPACITY: usize = 8 << 20;

/// A session's pool of byte buffers.
#[derive(Debug, Default)]
pub struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    /// An empty buffer with room for at least `capacity` bytes, for reading into.
    pub fn take_empty(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = self
            .take_where(|b| b.capacity() >= capacity)
            .unwrap_or_default();
        buffer.clear();
        buffer.reserve_exact(capacity);
        buffer
    }

    /// A buffer of exactly `len` bytes for the device to fill. Its bytes are initialised
    /// (zero, or left from an earlier frame of the same session); only bytes never used
    /// before are zeroed.
    pub fn take_filled(&self, len: usize) -> Vec<u8> {
        let mut buffer = self.take_where(|b| b.len() >= len).unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }

    /// Returns a buffer that is no longer needed.
    pub fn give_back(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > KEPT_CAPACITY {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEPT {
            free.push(buffer);
        }
    }

    /// A kept buffer that fits, else any kept buffer (it grows), else none.
    fn take_where(&self, fits: impl Fn(&Vec<u8>) -> bool) -> Option<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        match free.iter().position(fits) {
            Some(i) => Some(free.swap_remove(i)),
            None => free.pop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_buffer_is_reused_without_reallocation() {
        let pool = Buffers::default();
        let first = pool.take_filled(1 << 20);
        assert_eq!(first.len(), 1 << 20);
        let pointer = first.as_ptr();
        pool.give_back(first);
        let again = pool.take_filled(1 << 20);
        assert_eq!(again.as_ptr(), pointer, "the same allocation comes back");
        assert_eq!(again.len(), 1 << 20);
        pool.give_back(again);
        let empty = pool.take_empty(1 << 20);
        assert_eq!((empty.as_ptr(), empty.len()), (pointer, 0));
        assert!(empty.capacity() >= 1 << 20);
    }

    #[test]
    fn the_pool_stays_bounded() {
        let pool = Buffers::default();
        for _ in 0..KEPT * 2 {
            pool.give_back(vec![1u8; 8]);
        }
        pool.give_back(Vec::with_capacity(KEPT_CAPACITY + 1));
        let free = pool.free.lock().unwrap();
        assert_eq!(free.len(), KEPT);
        assert!(free.iter().all(|b| b.capacity() <= KEPT_CAPACITY));
    }

    #[test]
    fn a_larger_request_grows_a_kept_buffer() {
        let pool = Buffers::default();
        pool.give_back(vec![7u8; 10]);
        let grown = pool.take_filled(20);
        assert_eq!(grown.len(), 20);
        assert_eq!(&grown[10..], &[0u8; 10], "new bytes are zeroed");
        pool.give_back(grown);
        assert!(pool.take_empty(1000).capacity() >= 1000);
    }
}
