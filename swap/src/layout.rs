//! How a session's allocations are cut into chunks: pure arithmetic, no I/O.
//!
//! A session's bytes are the concatenation of its allocations in order. That stream is cut into
//! chunks of `chunk_size` bytes (the last one shorter), so chunk `i` always lives at byte offset
//! `i * chunk_size` of a disk file and every chunk but the last is full. Many small allocations
//! therefore share one chunk (one large I/O instead of many small ones); a chunk is a list of
//! segments, each a contiguous piece of one allocation.

use std::fmt::Write as _;

use crate::types::Allocation;

/// Disk and direct-I/O alignment: chunk sizes are multiples of this and file ends are padded to it.
pub const ALIGN: usize = 4096;

/// A contiguous piece of one allocation inside a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index into the session's allocation list.
    pub allocation: usize,
    /// Byte offset inside that allocation.
    pub offset: u64,
    /// Byte offset inside the chunk buffer.
    pub buf_offset: usize,
    pub len: usize,
}

/// One chunk: its index, its length in bytes and the segments that fill it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    pub index: u32,
    pub len: usize,
    pub segments: Vec<Segment>,
}

/// Total bytes of a list of allocations, or `None` on overflow.
pub fn total_bytes(allocations: &[Allocation]) -> Option<u64> {
    allocations
        .iter()
        .try_fold(0u64, |sum, a| sum.checked_add(a.len))
}

/// Number of chunks for `total` bytes.
pub fn chunk_count(total: u64, chunk_size: usize) -> u64 {
    total.div_ceil(chunk_size as u64)
}

/// Rounds `n` up to the next multiple of [`ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Cuts the allocations into chunks of `chunk_size` bytes. Zero-length allocations yield no
/// segments; a session of zero bytes has no chunks.
pub fn plan_chunks(allocations: &[Allocation], chunk_size: usize) -> Vec<ChunkPlan> {
    assert!(chunk_size > 0, "chunk size must be positive");
    let mut chunks = Vec::new();
    let mut current = ChunkPlan {
        index: 0,
        len: 0,
        segments: Vec::new(),
    };
    for (allocation, a) in allocations.iter().enumerate() {
        let mut offset = 0u64;
        while offset < a.len {
            let room = chunk_size - current.len;
            let len = (a.len - offset).min(room as u64) as usize;
            current.segments.push(Segment {
                allocation,
                offset,
                buf_offset: current.len,
                len,
            });
            current.len += len;
            offset += len as u64;
            if current.len == chunk_size {
                let next = ChunkPlan {
                    index: current.index + 1,
                    len: 0,
                    segments: Vec::new(),
                };
                chunks.push(std::mem::replace(&mut current, next));
            }
        }
    }
    if current.len > 0 {
        chunks.push(current);
    }
    chunks
}

/// Human-readable description of what a chunk holds, for error messages:
/// `allocation #1 (0x7f00+4096) bytes 0..4096, allocation #2 (...) bytes ...`.
pub fn describe_chunk(chunk: &ChunkPlan, allocations: &[Allocation]) -> String {
    const SHOWN: usize = 3;
    let mut text = String::new();
    for (i, s) in chunk.segments.iter().take(SHOWN).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        let a = allocations[s.allocation];
        let _ = write!(
            text,
            "allocation #{} ({a}) bytes {}..{}",
            s.allocation,
            s.offset,
            s.offset + s.len as u64
        );
    }
    if chunk.segments.len() > SHOWN {
        let _ = write!(text, " and {} more segments", chunk.segments.len() - SHOWN);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocs(lens: &[u64]) -> Vec<Allocation> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Allocation::new(0x1000_0000 * (i as u64 + 1), len))
            .collect()
    }

    #[test]
    fn empty_session_has_no_chunks() {
        assert!(plan_chunks(&[], 4096).is_empty());
        assert!(plan_chunks(&allocs(&[0, 0]), 4096).is_empty());
    }

    #[test]
    fn small_allocations_share_a_chunk() {
        let plan = plan_chunks(&allocs(&[1, 10, 0, 100]), 4096);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].len, 111);
        let allocations: Vec<usize> = plan[0].segments.iter().map(|s| s.allocation).collect();
        assert_eq!(allocations, vec![0, 1, 3]);
        assert_eq!(plan[0].segments[2].buf_offset, 11);
    }

    #[test]
    fn large_allocation_spans_chunks_and_the_last_is_short() {
        let plan = plan_chunks(&allocs(&[10_000]), 4096);
        let lens: Vec<usize> = plan.iter().map(|c| c.len).collect();
        assert_eq!(lens, vec![4096, 4096, 1808]);
        assert_eq!(plan[2].segments[0].offset, 8192);
    }

    #[test]
    fn chunks_cover_every_byte_exactly_once() {
        let a = allocs(&[5000, 1, 0, 8191, 3]);
        let plan = plan_chunks(&a, 4096);
        let mut seen: Vec<u64> = vec![0; a.len()];
        for c in &plan {
            assert_eq!(c.len, c.segments.iter().map(|s| s.len).sum::<usize>());
            for s in &c.segments {
                assert_eq!(s.offset, seen[s.allocation]);
                seen[s.allocation] += s.len as u64;
            }
        }
        assert_eq!(seen, vec![5000, 1, 0, 8191, 3]);
        assert_eq!(
            plan.len() as u64,
            chunk_count(total_bytes(&a).unwrap(), 4096)
        );
    }

    #[test]
    fn description_names_allocations() {
        let a = allocs(&[10, 20]);
        let plan = plan_chunks(&a, 4096);
        let text = describe_chunk(&plan[0], &a);
        assert!(
            text.contains("allocation #0 (0x10000000+10) bytes 0..10"),
            "{text}"
        );
        assert!(text.contains("allocation #1"), "{text}");
    }
}
