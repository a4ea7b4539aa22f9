//! Where a session's device memory lies: the session's address range, its allocations and
//! its quota. Pure bookkeeping, no device access, so it is the same for every backend and
//! for swap (swap-out reads and frees every allocation listed here; swap-in allocates each
//! again at the same address).
//!
//! Each session owns a disjoint 1 TiB range. The lower half belongs to the client: the stub
//! may carve addresses there itself and send `MemAlloc { address: Some(..) }` without waiting.
//! The upper half is the worker's: allocations without an address and module variables go
//! there, so they never collide with addresses the client carved.

use gpufn_proto::message::{MemoryRange, ModuleId};
use std::collections::BTreeMap;
use thiserror::Error;

/// First device address of the first session's range (looks like a CUDA unified address).
pub const RANGES_BASE: u64 = 0x7f00_0000_0000;
/// Size of each session's address range.
pub const RANGE_SIZE: u64 = 1 << 40;
/// Session ranges that fit below the CPU device's shared/local windows at `1 << 48`.
pub const MAX_SESSION_RANGES: u32 = ((1u64 << 48) - RANGES_BASE).div_ceil(RANGE_SIZE) as u32 - 1;
/// Alignment of allocations the worker places (cudaMalloc's).
pub const ALIGN: u64 = 256;
/// Unmapped gap after each worker-placed allocation, so small overruns fault.
pub const GUARD: u64 = 4096;

/// Hands out disjoint session ranges and takes them back when sessions end.
#[derive(Debug)]
pub struct RangePool {
    base: u64,
    free: Vec<u32>,
}

impl RangePool {
    /// A pool of `count` ranges from [`RANGES_BASE`] (at most [`MAX_SESSION_RANGES`]).
    pub fn new(count: u32) -> Self {
        Self::within(
            MemoryRange {
                base: RANGES_BASE,
                size: u64::from(MAX_SESSION_RANGES) * RANGE_SIZE,
            },
            count,
        )
    }

    /// A pool of at most `count` ranges inside `window` (a device may need session
    /// addresses where its driver reserved them: see `Device::session_window`).
    pub fn within(window: MemoryRange, count: u32) -> Self {
        let fit = u32::try_from(window.size / RANGE_SIZE).unwrap_or(u32::MAX);
        // Reversed so that `pop` hands out the lowest slot first.
        RangePool {
            base: window.base,
            free: (0..count.min(fit)).rev().collect(),
        }
    }

    /// A free range, or `None` when every range is in use.
    pub fn take(&mut self) -> Option<MemoryRange> {
        let slot = self.free.pop()?;
        Some(MemoryRange {
            base: self.base + u64::from(slot) * RANGE_SIZE,
            size: RANGE_SIZE,
        })
    }

    /// Returns a range handed out by [`RangePool::take`].
    pub fn give_back(&mut self, range: MemoryRange) {
        let slot = ((range.base - self.base) / RANGE_SIZE) as u32;
        if !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }
}

/// Who owns an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `cuMemAlloc` by the program.
    Program,
    /// A module-scope variable of a loaded module, freed with the module.
    Module(ModuleId),
}

/// One allocation of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub address: u64,
    pub size: u64,
    pub owner: Owner,
}

/// Why an allocation could not be placed or freed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error(
        "allocation of {requested} bytes exceeds the session's memory quota \
         ({available} of {quota} bytes free); free memory or ask for a larger quota"
    )]
    Quota {
        requested: u64,
        available: u64,
        quota: u64,
    },
    #[error("allocation size must be greater than zero")]
    ZeroSize,
    #[error(
        "address range 0x{address:x}+{size} is outside the session's range \
         0x{base:x}..0x{end:x}"
    )]
    OutsideRange {
        address: u64,
        size: u64,
        base: u64,
        end: u64,
    },
    #[error("address range 0x{address:x}+{size} overlaps an existing allocation")]
    Overlap { address: u64, size: u64 },
    #[error("0x{0:x} is not the start of an allocation of this session")]
    NotAllocated(u64),
    #[error("0x{0:x} is a module variable; it is freed when its module is unloaded")]
    ModuleOwned(u64),
    #[error("the session's address range has no room for {0} more bytes")]
    RangeFull(u64),
}

/// A session's allocations within its range and quota.
#[derive(Debug)]
pub struct AddressSpace {
    range: MemoryRange,
    quota: u64,
    used: u64,
    allocations: BTreeMap<u64, Allocation>,
    /// Where the next worker-placed allocation starts (bump pointer in the upper half).
    next_placed: u64,
}

impl AddressSpace {
    pub fn new(range: MemoryRange, quota: u64) -> Self {
        AddressSpace {
            range,
            quota,
            used: 0,
            allocations: BTreeMap::new(),
            next_placed: Self::worker_half_of(range),
        }
    }

    fn worker_half_of(range: MemoryRange) -> u64 {
        range.base + range.size / 2
    }

    pub fn range(&self) -> MemoryRange {
        self.range
    }

    /// Start of the upper half, where the worker places allocations.
    pub fn worker_half(&self) -> u64 {
        Self::worker_half_of(self.range)
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn available(&self) -> u64 {
        self.quota.saturating_sub(self.used)
    }

    /// Every allocation, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.allocations.values()
    }

    /// Checks that `[address, address + size)` could be allocated; changes nothing.
    pub fn check_at(&self, address: u64, size: u64) -> Result<(), AddressError> {
        if size == 0 {
            return Err(AddressError::ZeroSize);
        }
        self.check_quota(size)?;
        let end = self.range.base + self.range.size;
        if address < self.range.base || address.checked_add(size).is_none_or(|e| e > end) {
            return Err(AddressError::OutsideRange {
                address,
                size,
                base: self.range.base,
                end,
            });
        }
        let overlaps_before = self
            .allocations
            .range(..=address)
            .next_back()
            .is_some_and(|(_, a)| a.address + a.size > address);
        let overlaps_after = self
            .allocations
            .range(address..address + size)
            .next()
            .is_some();
        if overlaps_before || overlaps_after {
            return Err(AddressError::Overlap { address, size });
        }
        Ok(())
    }

    fn check_quota(&self, size: u64) -> Result<(), AddressError> {
        if size > self.available() {
            return Err(AddressError::Quota {
                requested: size,
                available: self.available(),
                quota: self.quota,
            });
        }
        Ok(())
    }

    /// Records an allocation at a chosen address (client-carved, a module variable the
    /// device placed, or a swap-in).
    pub fn insert_at(&mut self, address: u64, size: u64, owner: Owner) -> Result<(), AddressError> {
        self.check_at(address, size)?;
        self.allocations.insert(
            address,
            Allocation {
                address,
                size,
                owner,
            },
        );
        self.used += size;
        if address >= self.worker_half() {
            self.next_placed = self.next_placed.max(placed_end(address, size));
        }
        Ok(())
    }

    /// Picks an address in the worker's half for `size` bytes; changes nothing until
    /// [`AddressSpace::insert_at`].
    pub fn choose(&self, size: u64) -> Result<u64, AddressError> {
        if size == 0 {
            return Err(AddressError::ZeroSize);
        }
        self.check_quota(size)?;
        let end = self.range.base + self.range.size;
        match self.next_placed.checked_add(size) {
            Some(e) if e <= end => Ok(self.next_placed),
            _ => Err(AddressError::RangeFull(size)),
        }
    }

    /// Removes a program allocation starting at `address`; returns its size.
    pub fn remove(&mut self, address: u64) -> Result<u64, AddressError> {
        match self.allocations.get(&address) {
            None => Err(AddressError::NotAllocated(address)),
            Some(a) if a.owner != Owner::Program => Err(AddressError::ModuleOwned(address)),
            Some(a) => {
                let size = a.size;
                self.allocations.remove(&address);
                self.used -= size;
                Ok(size)
            }
        }
    }

    /// Removes every variable of `module`.
    pub fn remove_module(&mut self, module: ModuleId) {
        let owned: Vec<u64> = self
            .allocations
            .values()
            .filter(|a| a.owner == Owner::Module(module))
            .map(|a| a.address)
            .collect();
        for address in owned {
            if let Some(a) = self.allocations.remove(&address) {
                self.used -= a.size;
            }
        }
    }
}

/// End of a worker-placed allocation plus its guard gap, aligned.
fn placed_end(address: u64, size: u64) -> u64 {
    (address.saturating_add(size).saturating_add(GUARD)).div_ceil(ALIGN) * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pool_within_a_device_window_hands_out_ranges_there() {
        let window = MemoryRange {
            base: 0x2000_0000_0000,
            size: 3 * RANGE_SIZE + 5,
        };
        let mut pool = RangePool::within(window, 8);
        let taken: Vec<MemoryRange> = std::iter::from_fn(|| pool.take()).collect();
        let bases: Vec<u64> = taken.iter().map(|r| r.base).collect();
        assert_eq!(
            bases,
            [0, 1, 2].map(|i| window.base + i * RANGE_SIZE),
            "only whole ranges inside the window, lowest first"
        );
        pool.give_back(taken[1]);
        assert_eq!(pool.take(), Some(taken[1]));
    }

    fn space(quota: u64) -> AddressSpace {
        let mut pool = RangePool::new(4);
        AddressSpace::new(pool.take().unwrap(), quota)
    }

    #[test]
    fn ranges_are_disjoint_and_recycled() {
        let mut pool = RangePool::new(2);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert!(a.base + a.size <= b.base);
        assert!(pool.take().is_none());
        pool.give_back(a);
        assert_eq!(pool.take(), Some(a));
        let last = RANGES_BASE + u64::from(MAX_SESSION_RANGES) * RANGE_SIZE;
        assert!(last <= 1 << 48);
    }

    #[test]
    fn quota_is_enforced_and_freed() {
        let mut s = space(1000);
        let a = s.choose(600).unwrap();
        s.insert_at(a, 600, Owner::Program).unwrap();
        assert!(matches!(s.choose(600), Err(AddressError::Quota { .. })));
        assert_eq!(s.remove(a), Ok(600));
        assert_eq!(s.available(), 1000);
    }

    #[test]
    fn client_addresses_must_lie_in_the_range_and_not_overlap() {
        let mut s = space(1 << 20);
        let base = s.range().base;
        s.insert_at(base, 100, Owner::Program).unwrap();
        assert!(matches!(
            s.insert_at(base + 50, 100, Owner::Program),
            Err(AddressError::Overlap { .. })
        ));
        assert!(matches!(
            s.insert_at(base - 256, 100, Owner::Program),
            Err(AddressError::OutsideRange { .. })
        ));
        assert!(matches!(
            s.insert_at(base + RANGE_SIZE - 10, 100, Owner::Program),
            Err(AddressError::OutsideRange { .. })
        ));
        s.insert_at(base + 100, 100, Owner::Program).unwrap();
    }

    #[test]
    fn module_variables_are_not_freed_by_the_program() {
        let mut s = space(1 << 20);
        let a = s.choose(64).unwrap();
        s.insert_at(a, 64, Owner::Module(ModuleId(7))).unwrap();
        assert_eq!(s.remove(a), Err(AddressError::ModuleOwned(a)));
        s.remove_module(ModuleId(7));
        assert_eq!(s.used(), 0);
    }

    proptest! {
        /// Whatever the mix of client-carved and worker-placed allocations and frees, the
        /// allocations stay disjoint, inside the range, and within the quota.
        #[test]
        fn allocations_stay_disjoint_in_range_and_quota(
            ops in proptest::collection::vec((0u8..3, 1u64..5000, 0u64..20_000), 1..60)
        ) {
            let mut s = space(40_000);
            let base = s.range().base;
            for (op, size, offset) in ops {
                match op {
                    0 => { let _ = s.insert_at(base + offset, size, Owner::Program); }
                    1 => {
                        if let Ok(a) = s.choose(size) {
                            s.insert_at(a, size, Owner::Program).unwrap();
                        }
                    }
                    _ => {
                        let first = s.allocations().next().map(|a| a.address);
                        if let Some(a) = first { s.remove(a).unwrap(); }
                    }
                }
                let all: Vec<Allocation> = s.allocations().copied().collect();
                let total: u64 = all.iter().map(|a| a.size).sum();
                prop_assert_eq!(total, s.used());
                prop_assert!(s.used() <= s.quota());
                for w in all.windows(2) {
                    prop_assert!(w[0].address + w[0].size <= w[1].address);
                }
                for a in &all {
                    prop_assert!(a.address >= base && a.address + a.size <= base + RANGE_SIZE);
                }
            }
        }
    }
}
