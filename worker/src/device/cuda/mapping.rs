//! Which physical memory chunks back a session's allocations on a GPU: pure bookkeeping
//! for the virtual memory management API, no driver calls.
//!
//! The driver maps memory in whole granules (2 MiB on current GPUs) while the worker places
//! allocations 256-byte aligned, so several allocations may share a granule. A *chunk* is
//! one `cuMemCreate` + `cuMemMap` of whole granules. Chunks are never split or merged:
//! `cuMemUnmap` can only unmap a whole mapping. A chunk is unmapped, and its physical
//! memory released, when the last allocation touching it is freed. Freeing every
//! allocation therefore releases every chunk, which is what swap-out relies on.

use std::collections::BTreeMap;
use thiserror::Error;

/// A span of device addresses, granule-aligned when it describes a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub start: u64,
    pub size: u64,
}

impl Span {
    fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Why an allocation cannot be recorded or freed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MappingError {
    #[error("allocation size must be greater than zero")]
    ZeroSize,
    #[error("address range 0x{address:x}+{size} wraps around the address space")]
    Overflow { address: u64, size: u64 },
    #[error("address range 0x{address:x}+{size} overlaps an existing allocation")]
    Overlap { address: u64, size: u64 },
    #[error("0x{0:x} is not the start of an allocation of this session")]
    NotAllocated(u64),
}

#[derive(Debug, Clone)]
struct Chunk {
    size: u64,
    /// Allocations that touch the chunk.
    users: u32,
}

#[derive(Debug, Clone)]
struct Mapped {
    size: u64,
    /// Start of every chunk the allocation touches.
    chunks: Vec<u64>,
}

/// A session's allocations and the chunks that back them.
#[derive(Debug, Clone)]
pub struct ChunkMap {
    granularity: u64,
    chunks: BTreeMap<u64, Chunk>,
    allocations: BTreeMap<u64, Mapped>,
}

impl ChunkMap {
    /// `granularity` is the driver's allocation granularity (a power of two).
    pub fn new(granularity: u64) -> Self {
        ChunkMap {
            granularity: granularity.max(1).next_power_of_two(),
            chunks: BTreeMap::new(),
            allocations: BTreeMap::new(),
        }
    }

    /// The chunks that must be created and mapped before an allocation of `size` bytes at
    /// `address` can be recorded: the granules it covers that no chunk covers yet, as
    /// maximal runs. Changes nothing.
    pub fn plan_allocate(&self, address: u64, size: u64) -> Result<Vec<Span>, MappingError> {
        let (lo, hi) = self.granules(address, size)?;
        if self.overlaps_allocation(address, size) {
            return Err(MappingError::Overlap { address, size });
        }
        let mut missing = Vec::new();
        let mut cursor = lo;
        for chunk in self.chunks_overlapping(lo, hi) {
            if chunk.start > cursor {
                missing.push(Span {
                    start: cursor,
                    size: chunk.start - cursor,
                });
            }
            cursor = cursor.max(chunk.end());
        }
        if cursor < hi {
            missing.push(Span {
                start: cursor,
                size: hi - cursor,
            });
        }
        Ok(missing)
    }

    /// Records an allocation once the chunks [`ChunkMap::plan_allocate`] returned for it
    /// (`created`) are mapped.
    pub fn commit_allocate(
        &mut self,
        address: u64,
        size: u64,
        created: &[Span],
    ) -> Result<(), MappingError> {
        let (lo, hi) = self.granules(address, size)?;
        if self.overlaps_allocation(address, size) {
            return Err(MappingError::Overlap { address, size });
        }
        for span in created {
            self.chunks.insert(
                span.start,
                Chunk {
                    size: span.size,
                    users: 0,
                },
            );
        }
        let touched: Vec<u64> = self
            .chunks_overlapping(lo, hi)
            .iter()
            .map(|s| s.start)
            .collect();
        for start in &touched {
            if let Some(chunk) = self.chunks.get_mut(start) {
                chunk.users += 1;
            }
        }
        self.allocations.insert(
            address,
            Mapped {
                size,
                chunks: touched,
            },
        );
        Ok(())
    }

    /// Forgets the allocation starting at `address`; returns the chunks no allocation uses
    /// any more, to be unmapped and released.
    pub fn free(&mut self, address: u64) -> Result<Vec<Span>, MappingError> {
        let mapped = self
            .allocations
            .remove(&address)
            .ok_or(MappingError::NotAllocated(address))?;
        let mut unused = Vec::new();
        for start in mapped.chunks {
            let Some(chunk) = self.chunks.get_mut(&start) else {
                continue;
            };
            chunk.users -= 1;
            if chunk.users == 0 {
                let size = chunk.size;
                self.chunks.remove(&start);
                unused.push(Span { start, size });
            }
        }
        Ok(unused)
    }

    /// True if `[address, address + len)` lies inside one allocation.
    pub fn contains(&self, address: u64, len: u64) -> bool {
        let Some(end) = address.checked_add(len) else {
            return false;
        };
        self.allocations
            .range(..=address)
            .next_back()
            .is_some_and(|(start, m)| end <= start + m.size)
    }

    /// Every mapped chunk.
    pub fn chunks(&self) -> impl Iterator<Item = Span> + '_ {
        self.chunks.iter().map(|(&start, c)| Span {
            start,
            size: c.size,
        })
    }

    /// Bytes of physical memory the chunks hold.
    #[cfg(test)]
    pub fn mapped_bytes(&self) -> u64 {
        self.chunks.values().map(|c| c.size).sum()
    }

    /// The granule-aligned span `[lo, hi)` an allocation covers.
    fn granules(&self, address: u64, size: u64) -> Result<(u64, u64), MappingError> {
        if size == 0 {
            return Err(MappingError::ZeroSize);
        }
        let overflow = MappingError::Overflow { address, size };
        let end = address.checked_add(size).ok_or(overflow.clone())?;
        let mask = self.granularity - 1;
        let hi = end.checked_add(mask).ok_or(overflow)? & !mask;
        Ok((address & !mask, hi))
    }

    fn overlaps_allocation(&self, address: u64, size: u64) -> bool {
        let end = address.saturating_add(size);
        self.allocations
            .range(..end)
            .next_back()
            .is_some_and(|(start, m)| start + m.size > address)
    }

    /// Chunks that overlap `[lo, hi)`, in address order.
    fn chunks_overlapping(&self, lo: u64, hi: u64) -> Vec<Span> {
        let mut found: Vec<Span> = self
            .chunks
            .range(..hi)
            .rev()
            .map(|(&start, c)| Span {
                start,
                size: c.size,
            })
            .take_while(|s| s.end() > lo)
            .collect();
        found.reverse();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: u64 = 2 << 20;

    fn allocate(map: &mut ChunkMap, address: u64, size: u64) -> Vec<Span> {
        let plan = map.plan_allocate(address, size).unwrap();
        map.commit_allocate(address, size, &plan).unwrap();
        plan
    }

    #[test]
    fn small_allocations_share_a_granule_until_both_are_freed() {
        let mut map = ChunkMap::new(G);
        let base = 0x7f00_0000_0000;
        assert_eq!(
            allocate(&mut map, base, 256),
            vec![Span {
                start: base,
                size: G
            }]
        );
        assert_eq!(allocate(&mut map, base + 4096, 256), vec![], "same granule");
        assert_eq!(map.free(base).unwrap(), vec![], "still used by the second");
        assert_eq!(
            map.free(base + 4096).unwrap(),
            vec![Span {
                start: base,
                size: G
            }]
        );
        assert_eq!(map.mapped_bytes(), 0);
    }

    #[test]
    fn an_allocation_across_existing_chunks_maps_only_the_gaps() {
        let mut map = ChunkMap::new(G);
        let base = 0x7f00_0000_0000;
        allocate(&mut map, base + G, 100);
        // From the middle of granule 0 to the middle of granule 3: granules 0, 2 and 3 are new.
        let plan = allocate(&mut map, base + G + G / 2 + 512, 2 * G);
        assert_eq!(
            plan,
            vec![Span {
                start: base + 2 * G,
                size: 2 * G
            }]
        );
        let plan = allocate(&mut map, base + 100, G - 200);
        assert_eq!(
            plan,
            vec![Span {
                start: base,
                size: G
            }]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let mut map = ChunkMap::new(G);
        allocate(&mut map, 0x1000, 512);
        assert_eq!(
            map.plan_allocate(0x1100, 16),
            Err(MappingError::Overlap {
                address: 0x1100,
                size: 16
            })
        );
        assert_eq!(map.plan_allocate(0x1000, 0), Err(MappingError::ZeroSize));
        assert!(matches!(
            map.plan_allocate(u64::MAX - 10, 100),
            Err(MappingError::Overflow { .. })
        ));
        assert_eq!(map.free(0x1100), Err(MappingError::NotAllocated(0x1100)));
        assert!(map.contains(0x1000, 512) && map.contains(0x11ff, 1));
        assert!(
            !map.contains(0x1000, 513) && !map.contains(0xfff, 2) && !map.contains(u64::MAX, 2)
        );
    }

    proptest! {
        /// Whatever allocations come and go, every live allocation is backed by chunks, no
        /// chunk outlives its last user and chunks never overlap.
        #[test]
        fn chunks_always_back_exactly_the_live_allocations(
            ops in proptest::collection::vec((0u64..64, 1u64..(6 << 20), any::<bool>()), 1..60)
        ) {
            let mut map = ChunkMap::new(G);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (slot, size, free_one) in ops {
                if free_one && !live.is_empty() {
                    let (address, _) = live.remove(slot as usize % live.len());
                    map.free(address).unwrap();
                } else {
                    let address = 0x7f00_0000_0000 + slot * (1 << 20) + (slot % 7) * 256;
                    let overlaps = live.iter().any(|&(a, s)| a < address + size && address < a + s);
                    match map.plan_allocate(address, size) {
                        Ok(plan) => {
                            prop_assert!(!overlaps);
                            map.commit_allocate(address, size, &plan).unwrap();
                            live.push((address, size));
                        }
                        Err(e) => prop_assert!(overlaps, "{e}"),
                    }
                }
                let chunks: Vec<Span> = map.chunks().collect();
                for pair in chunks.windows(2) {
                    prop_assert!(pair[0].end() <= pair[1].start, "chunks overlap");
                }
                for c in &chunks {
                    prop_assert!(c.start % G == 0 && c.size % G == 0 && c.size > 0);
                    prop_assert!(live.iter().any(|&(a, s)| a < c.end() && c.start < a + s), "unused chunk");
                }
                for &(a, s) in &live {
                    prop_assert!(map.contains(a, s));
                    let mut g = a & !(G - 1);
                    while g < a + s {
                        prop_assert!(chunks.iter().any(|c| c.start <= g && g < c.end()), "unbacked granule");
                        g += G;
                    }
                }
            }
            for (a, _) in live {
                map.free(a).unwrap();
            }
            prop_assert_eq!(map.mapped_bytes(), 0);
        }
    }
}
