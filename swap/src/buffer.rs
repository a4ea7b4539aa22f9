//! Chunk buffers: page-aligned host memory, recycled through a pool.
//!
//! Buffers are anonymous mappings, so they are page-aligned (what O_DIRECT needs, and what a CUDA
//! backend needs to register them as pinned memory once: the pool hands the same buffers out
//! again and again). The host tier keeps session data in these buffers; the disk and cold tiers
//! use a few of them as staging buffers.

use std::sync::Mutex;

use memmap2::MmapMut;

use crate::layout::{ALIGN, align_up};

/// A page-aligned buffer with a capacity and a length of valid bytes.
pub struct ChunkBuf {
    map: MmapMut,
    len: usize,
}

impl ChunkBuf {
    /// Allocates a buffer of at least `capacity` bytes (rounded up to [`ALIGN`], at least one page).
    pub fn with_capacity(capacity: usize) -> std::io::Result<Self> {
        let capacity = (align_up(capacity as u64) as usize).max(ALIGN);
        Ok(Self {
            map: MmapMut::map_anon(capacity)?,
            len: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// The valid bytes.
    pub fn data(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// Sets the number of valid bytes (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "chunk length exceeds buffer capacity"
        );
        self.len = len;
    }

    /// The whole buffer, for filling.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[..]
    }

    /// The valid bytes followed by zeros up to the next [`ALIGN`] boundary: what a direct-I/O
    /// write of this chunk needs. Zeroing the padding keeps stale bytes of earlier users of the
    /// buffer out of swap files.
    pub fn padded(&mut self) -> &[u8] {
        let end = align_up(self.len as u64) as usize;
        self.map[self.len..end].fill(0);
        &self.map[..end]
    }
}

/// A pool of full-size chunk buffers, so steady-state swapping does not map and fault in fresh
/// memory. It keeps at most `max_idle` idle buffers; buffers of another size are not kept.
pub struct BufferPool {
    chunk_size: usize,
    max_idle: usize,
    idle: Mutex<Vec<ChunkBuf>>,
}

impl BufferPool {
    pub fn new(chunk_size: usize, max_idle: usize) -> Self {
        Self {
            chunk_size,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// A buffer for a chunk of `len` bytes: a pooled full-size buffer for full chunks, an
    /// exact-size (page-rounded) one for a short last chunk so small sessions stay small in RAM.
    pub fn take(&self, len: usize) -> std::io::Result<ChunkBuf> {
        if align_up(len as u64) == self.chunk_size as u64
            && let Some(mut buf) = self.lock().pop()
        {
            buf.set_len(0);
            return Ok(buf);
        }
        ChunkBuf::with_capacity(len)
    }

    /// A full-size staging buffer.
    pub fn take_full(&self) -> std::io::Result<ChunkBuf> {
        self.take(self.chunk_size)
    }

    /// Returns a buffer for reuse (or frees it if the pool is full or it has another size).
    pub fn give(&self, buf: ChunkBuf) {
        if buf.capacity() == self.chunk_size {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.push(buf);
            }
        }
    }

    /// Allocates and touches buffers until `count` are idle, so the first swap-out does not pay
    /// for page faults.
    pub fn prefault(&self, count: usize) -> std::io::Result<()> {
        let count = count.min(self.max_idle);
        while self.lock().len() < count {
            let mut buf = ChunkBuf::with_capacity(self.chunk_size)?;
            buf.as_mut_slice().fill(0);
            self.lock().push(buf);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ChunkBuf>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Host memory a chunk of `len` bytes occupies in the host tier.
pub fn host_footprint(len: usize) -> u64 {
    align_up(len as u64).max(ALIGN as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned() {
        let buf = ChunkBuf::with_capacity(100).unwrap();
        assert_eq!(buf.capacity(), 4096);
        assert_eq!(buf.data().as_ptr() as usize % 4096, 0);
    }

    #[test]
    fn padding_is_zeroed() {
        let mut buf = ChunkBuf::with_capacity(8192).unwrap();
        buf.as_mut_slice().fill(0xAA);
        buf.set_len(10);
        let padded = buf.padded();
        assert_eq!(padded.len(), 4096);
        assert!(padded[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn pool_recycles_full_buffers_only() {
        let pool = BufferPool::new(8192, 2);
        let a = pool.take_full().unwrap();
        let ptr = a.data().as_ptr();
        pool.give(a);
        assert_eq!(pool.take_full().unwrap().data().as_ptr(), ptr);
        let small = pool.take(10).unwrap();
        assert_eq!(small.capacity(), 4096);
    }
}
