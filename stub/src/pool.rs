//! Stream-ordered memory pools (`cuMemPool*`, `cuMemAllocAsync`, `cuMemFreeAsync`): the
//! bookkeeping, free of I/O.
//!
//! Pools live in the stub. A pool's blocks are ordinary device allocations of the session;
//! a block the program frees is kept by its pool (still allocated on the worker, counted as
//! reserved) and handed out again by a later allocation of a size it fits. At each
//! synchronisation the stub releases cached blocks until the pool's reserved memory is at
//! most its release threshold (default 0, as in CUDA), and `cuMemPoolTrimTo` releases them
//! on request. Reuse needs no extra ordering: the worker runs a session's work in order, so
//! a block freed on one stream is free for everything queued after it.

use gpufn_proto::CuResult;
use std::collections::{BTreeMap, HashMap};

/// `CUmemPool_attribute` values.
pub mod attr {
    pub const REUSE_FOLLOW_EVENT_DEPENDENCIES: u32 = 1;
    pub const REUSE_ALLOW_OPPORTUNISTIC: u32 = 2;
    pub const REUSE_ALLOW_INTERNAL_DEPENDENCIES: u32 = 3;
    pub const RELEASE_THRESHOLD: u32 = 4;
    pub const RESERVED_MEM_CURRENT: u32 = 5;
    pub const RESERVED_MEM_HIGH: u32 = 6;
    pub const USED_MEM_CURRENT: u32 = 7;
    pub const USED_MEM_HIGH: u32 = 8;
    pub const ALLOCATION_TYPE: u32 = 9;
    pub const EXPORT_HANDLE_TYPES: u32 = 10;
    pub const LOCATION_ID: u32 = 11;
    pub const LOCATION_TYPE: u32 = 12;
    pub const MAX_POOL_SIZE: u32 = 13;
    pub const HW_DECOMPRESS_ENABLED: u32 = 14;
    pub const LOCALITY_DOMAIN_ID: u32 = 15;
}

const ALLOCATION_TYPE_PINNED: u64 = 1;
const LOCATION_TYPE_DEVICE: u64 = 1;

/// The value of a pool attribute: CUDA stores the flags as `int`, the sizes as `cuuint64_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrValue {
    Int(i32),
    U64(u64),
}

/// Whether an attribute's value is an `int` (else a `cuuint64_t`); `None` if unknown.
pub fn attribute_is_int(attribute: u32) -> Option<bool> {
    match attribute {
        attr::REUSE_FOLLOW_EVENT_DEPENDENCIES
        | attr::REUSE_ALLOW_OPPORTUNISTIC
        | attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES
        | attr::ALLOCATION_TYPE
        | attr::EXPORT_HANDLE_TYPES
        | attr::LOCATION_ID
        | attr::LOCATION_TYPE
        | attr::HW_DECOMPRESS_ENABLED
        | attr::LOCALITY_DOMAIN_ID => Some(true),
        attr::RELEASE_THRESHOLD
        | attr::RESERVED_MEM_CURRENT
        | attr::RESERVED_MEM_HIGH
        | attr::USED_MEM_CURRENT
        | attr::USED_MEM_HIGH
        | attr::MAX_POOL_SIZE => Some(false),
        _ => None,
    }
}

/// One pool.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub device: u32,
    release_threshold: u64,
    /// 0: no limit.
    max_size: u64,
    /// The three `REUSE_*` flags, in attribute order. Kept and reported; reuse is always
    /// safe here because the worker runs a session's work in order.
    reuse: [bool; 3],
    /// Blocks the program holds: address → size.
    live: BTreeMap<u64, u64>,
    /// Blocks freed by the program, still allocated on the worker: address → size.
    cached: BTreeMap<u64, u64>,
    reserved_high: u64,
    used_high: u64,
    /// Destroyed while blocks were live: it ends when the last one is freed.
    destroyed: bool,
}

impl Pool {
    fn new(device: u32, max_size: u64) -> Pool {
        Pool {
            device,
            max_size,
            reuse: [true; 3],
            ..Pool::default()
        }
    }

    pub fn used(&self) -> u64 {
        self.live.values().sum()
    }

    pub fn reserved(&self) -> u64 {
        self.used() + self.cached.values().sum::<u64>()
    }

    fn note_high_watermarks(&mut self) {
        self.used_high = self.used_high.max(self.used());
        self.reserved_high = self.reserved_high.max(self.reserved());
    }

    /// Cached blocks to release, largest first, until at most `keep` bytes stay reserved.
    fn release_down_to(&mut self, keep: u64) -> Vec<u64> {
        let mut reserved = self.reserved();
        let mut by_size: Vec<(u64, u64)> = self.cached.iter().map(|(&a, &s)| (s, a)).collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let mut released = Vec::new();
        for (size, address) in by_size {
            if reserved <= keep {
                break;
            }
            self.cached.remove(&address);
            reserved -= size;
            released.push(address);
        }
        released
    }
}

/// What an allocation from a pool needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// A cached block fits: the program gets this address; nothing to tell the worker.
    Reused(u64),
    /// A new device allocation is needed; record it with [`Pools::add_block`].
    New,
}

/// What freeing an address means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// Not a pool block: an ordinary allocation.
    NotPooled,
    /// Kept by its pool for reuse.
    Cached,
    /// Its pool is gone: release the device allocation now.
    Release,
}

/// All pools of the process, the default and current pool of each device, and which pool
/// each block belongs to.
#[derive(Debug, Default)]
pub struct Pools {
    pools: HashMap<u64, Pool>,
    defaults: HashMap<u32, u64>,
    current: HashMap<u32, u64>,
    /// Block address (live or cached) → pool handle.
    owner: HashMap<u64, u64>,
    next_handle: u64,
}

/// Handles look like aligned pointers and never collide with 0.
const HANDLE_BASE: u64 = 0x7e57_0000_0000;
const HANDLE_STEP: u64 = 0x100;

impl Pools {
    fn new_handle(&mut self) -> u64 {
        self.next_handle += 1;
        HANDLE_BASE + self.next_handle * HANDLE_STEP
    }

    /// `device`'s default pool, created on first use.
    pub fn default_pool(&mut self, device: u32) -> u64 {
        if let Some(&handle) = self.defaults.get(&device) {
            return handle;
        }
        let handle = self.new_handle();
        self.pools.insert(handle, Pool::new(device, 0));
        self.defaults.insert(device, handle);
        handle
    }

    /// The pool `cuMemAllocAsync` uses on `device`.
    pub fn current_pool(&mut self, device: u32) -> u64 {
        match self.current.get(&device) {
            Some(&handle) => handle,
            None => self.default_pool(device),
        }
    }

    pub fn set_current_pool(&mut self, device: u32, handle: u64) -> Result<(), CuResult> {
        match self.pools.get(&handle) {
            Some(pool) if pool.device == device && !pool.destroyed => {
                self.current.insert(device, handle);
                Ok(())
            }
            _ => Err(CuResult::ERROR_INVALID_VALUE),
        }
    }

    /// `cuMemPoolCreate` for device memory; `max_size` 0 means no limit.
    pub fn create(&mut self, device: u32, max_size: u64) -> u64 {
        let handle = self.new_handle();
        self.pools.insert(handle, Pool::new(device, max_size));
        handle
    }

    /// `cuMemPoolDestroy`: returns the cached blocks to release. A pool with live blocks
    /// ends when the last is freed; a device's current pool reverts to its default.
    pub fn destroy(&mut self, handle: u64) -> Result<Vec<u64>, CuResult> {
        let is_default = self.defaults.values().any(|&h| h == handle);
        let pool = self.live_pool_mut(handle)?;
        if is_default {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        let device = pool.device;
        let released: Vec<u64> = std::mem::take(&mut pool.cached).into_keys().collect();
        pool.destroyed = true;
        let ended = pool.live.is_empty();
        if ended {
            self.pools.remove(&handle);
        }
        for address in &released {
            self.owner.remove(address);
        }
        if self.current.get(&device) == Some(&handle) {
            self.current.remove(&device);
        }
        Ok(released)
    }

    fn live_pool_mut(&mut self, handle: u64) -> Result<&mut Pool, CuResult> {
        match self.pools.get_mut(&handle) {
            Some(pool) if !pool.destroyed => Ok(pool),
            _ => Err(CuResult::ERROR_INVALID_VALUE),
        }
    }

    pub fn pool(&self, handle: u64) -> Option<&Pool> {
        self.pools.get(&handle).filter(|p| !p.destroyed)
    }

    /// Starts an allocation of `size` bytes: the smallest cached block that fits, else a
    /// new block, if the pool's size limit allows it.
    pub fn allocate(&mut self, handle: u64, size: u64) -> Result<Allocation, CuResult> {
        if size == 0 {
            return Err(CuResult::ERROR_INVALID_VALUE);
        }
        let pool = self.live_pool_mut(handle)?;
        let fit = pool
            .cached
            .iter()
            .filter(|&(_, &block)| block >= size)
            .min_by_key(|&(&address, &block)| (block, address))
            .map(|(&address, &block)| (address, block));
        if let Some((address, block)) = fit {
            pool.cached.remove(&address);
            pool.live.insert(address, block);
            pool.note_high_watermarks();
            return Ok(Allocation::Reused(address));
        }
        if pool.max_size != 0 && pool.reserved().saturating_add(size) > pool.max_size {
            return Err(CuResult::ERROR_OUT_OF_MEMORY);
        }
        Ok(Allocation::New)
    }

    /// Records a new block of `size` bytes at `address`, held by the program.
    pub fn add_block(&mut self, handle: u64, address: u64, size: u64) -> Result<(), CuResult> {
        let pool = self.live_pool_mut(handle)?;
        pool.live.insert(address, size);
        pool.note_high_watermarks();
        self.owner.insert(address, handle);
        Ok(())
    }

    /// Frees `address` if it is a pool block. Freeing a block twice is an error.
    pub fn free(&mut self, address: u64) -> Result<Free, CuResult> {
        let Some(&handle) = self.owner.get(&address) else {
            return Ok(Free::NotPooled);
        };
        let pool = self
            .pools
            .get_mut(&handle)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let size = pool
            .live
            .remove(&address)
            .ok_or(CuResult::ERROR_INVALID_VALUE)?;
        if pool.destroyed {
            if pool.live.is_empty() {
                self.pools.remove(&handle);
            }
            self.owner.remove(&address);
            return Ok(Free::Release);
        }
        pool.cached.insert(address, size);
        Ok(Free::Cached)
    }

    /// At a synchronisation: cached blocks to release so that no pool reserves more than
    /// its release threshold.
    pub fn release_over_thresholds(&mut self) -> Vec<u64> {
        let mut released = Vec::new();
        for pool in self.pools.values_mut() {
            let threshold = pool.release_threshold;
            released.extend(pool.release_down_to(threshold));
        }
        for address in &released {
            self.owner.remove(address);
        }
        released
    }

    /// `cuMemPoolTrimTo`: cached blocks to release so that at most `keep` bytes stay
    /// reserved (live blocks are never released).
    pub fn trim_to(&mut self, handle: u64, keep: u64) -> Result<Vec<u64>, CuResult> {
        let released = self.live_pool_mut(handle)?.release_down_to(keep);
        for address in &released {
            self.owner.remove(address);
        }
        Ok(released)
    }

    /// The pool a live block belongs to (0 if none), for `CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE`.
    pub fn owner_of_live(&self, address: u64) -> u64 {
        self.owner
            .get(&address)
            .filter(|&&h| {
                self.pools
                    .get(&h)
                    .is_some_and(|p| p.live.contains_key(&address))
            })
            .copied()
            .unwrap_or(0)
    }

    /// After a context reset freed every allocation: the pools keep their settings and
    /// lose their blocks.
    pub fn forget_blocks(&mut self) {
        self.owner.clear();
        self.pools.retain(|_, pool| !pool.destroyed);
        for pool in self.pools.values_mut() {
            pool.live.clear();
            pool.cached.clear();
        }
    }

    pub fn get_attribute(&self, handle: u64, attribute: u32) -> Result<AttrValue, CuResult> {
        let pool = self.pool(handle).ok_or(CuResult::ERROR_INVALID_VALUE)?;
        let int = |b: bool| AttrValue::Int(i32::from(b));
        Ok(match attribute {
            attr::REUSE_FOLLOW_EVENT_DEPENDENCIES => int(pool.reuse[0]),
            attr::REUSE_ALLOW_OPPORTUNISTIC => int(pool.reuse[1]),
            attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => int(pool.reuse[2]),
            attr::RELEASE_THRESHOLD => AttrValue::U64(pool.release_threshold),
            attr::RESERVED_MEM_CURRENT => AttrValue::U64(pool.reserved()),
            attr::RESERVED_MEM_HIGH => AttrValue::U64(pool.reserved_high),
            attr::USED_MEM_CURRENT => AttrValue::U64(pool.used()),
            attr::USED_MEM_HIGH => AttrValue::U64(pool.used_high),
            attr::ALLOCATION_TYPE => AttrValue::Int(ALLOCATION_TYPE_PINNED as i32),
            attr::EXPORT_HANDLE_TYPES => AttrValue::Int(0),
            attr::LOCATION_ID => AttrValue::Int(pool.device as i32),
            attr::LOCATION_TYPE => AttrValue::Int(LOCATION_TYPE_DEVICE as i32),
            attr::MAX_POOL_SIZE => AttrValue::U64(pool.max_size),
            attr::HW_DECOMPRESS_ENABLED => AttrValue::Int(0),
            attr::LOCALITY_DOMAIN_ID => AttrValue::Int(-1),
            _ => return Err(CuResult::ERROR_INVALID_VALUE),
        })
    }

    /// Sets a settable attribute; the high watermarks can only be reset (to 0), which sets
    /// them to the current value, as CUDA does.
    pub fn set_attribute(
        &mut self,
        handle: u64,
        attribute: u32,
        value: u64,
    ) -> Result<(), CuResult> {
        let pool = self.live_pool_mut(handle)?;
        match attribute {
            attr::REUSE_FOLLOW_EVENT_DEPENDENCIES => pool.reuse[0] = value != 0,
            attr::REUSE_ALLOW_OPPORTUNISTIC => pool.reuse[1] = value != 0,
            attr::REUSE_ALLOW_INTERNAL_DEPENDENCIES => pool.reuse[2] = value != 0,
            attr::RELEASE_THRESHOLD => pool.release_threshold = value,
            attr::RESERVED_MEM_HIGH if value == 0 => pool.reserved_high = pool.reserved(),
            attr::USED_MEM_HIGH if value == 0 => pool.used_high = pool.used(),
            _ => return Err(CuResult::ERROR_INVALID_VALUE),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn u64_attr(pools: &Pools, pool: u64, attribute: u32) -> u64 {
        match pools.get_attribute(pool, attribute).unwrap() {
            AttrValue::U64(v) => v,
            AttrValue::Int(v) => v as u64,
        }
    }

    /// Allocates through the pool, placing new blocks at `next`.
    fn alloc(pools: &mut Pools, pool: u64, size: u64, next: &mut u64) -> u64 {
        match pools.allocate(pool, size).unwrap() {
            Allocation::Reused(a) => a,
            Allocation::New => {
                let a = *next;
                *next += size;
                pools.add_block(pool, a, size).unwrap();
                a
            }
        }
    }

    #[test]
    fn default_threshold_releases_freed_blocks_at_the_next_sync() {
        let mut pools = Pools::default();
        let pool = pools.default_pool(0);
        let mut next = 0x1000_0000;
        let a = alloc(&mut pools, pool, 4 * MIB, &mut next);
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_CURRENT), 4 * MIB);
        assert_eq!(pools.free(a), Ok(Free::Cached));
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_CURRENT), 0);
        assert_eq!(u64_attr(&pools, pool, attr::RESERVED_MEM_CURRENT), 4 * MIB);
        assert_eq!(pools.release_over_thresholds(), vec![a]);
        assert_eq!(u64_attr(&pools, pool, attr::RESERVED_MEM_CURRENT), 0);
        assert_eq!(u64_attr(&pools, pool, attr::RESERVED_MEM_HIGH), 4 * MIB);
        assert_eq!(
            pools.free(a),
            Ok(Free::NotPooled),
            "released: no longer a pool block"
        );
    }

    #[test]
    fn a_high_threshold_keeps_blocks_for_reuse() {
        let mut pools = Pools::default();
        let pool = pools.default_pool(0);
        pools
            .set_attribute(pool, attr::RELEASE_THRESHOLD, u64::MAX)
            .unwrap();
        let mut next = 0x1000_0000;
        let a = alloc(&mut pools, pool, 8 * MIB, &mut next);
        pools.free(a).unwrap();
        assert!(pools.release_over_thresholds().is_empty());
        // A smaller request reuses the cached block; a larger one needs a new block.
        assert_eq!(pools.allocate(pool, 2 * MIB), Ok(Allocation::Reused(a)));
        assert_eq!(pools.allocate(pool, 16 * MIB), Ok(Allocation::New));
        assert_eq!(pools.free(a), Ok(Free::Cached));
        assert_eq!(pools.trim_to(pool, 0), Ok(vec![a]));
    }

    #[test]
    fn double_free_of_a_cached_block_is_refused() {
        let mut pools = Pools::default();
        let pool = pools.default_pool(0);
        let mut next = 0x1000_0000;
        let a = alloc(&mut pools, pool, MIB, &mut next);
        pools.free(a).unwrap();
        assert_eq!(pools.free(a), Err(CuResult::ERROR_INVALID_VALUE));
    }

    #[test]
    fn trim_keeps_the_requested_bytes_and_never_live_blocks() {
        let mut pools = Pools::default();
        let pool = pools.create(0, 0);
        pools
            .set_attribute(pool, attr::RELEASE_THRESHOLD, u64::MAX)
            .unwrap();
        let mut next = 0x1000_0000;
        let blocks: Vec<u64> = (1..=3)
            .map(|i| alloc(&mut pools, pool, i * MIB, &mut next))
            .collect();
        let live = alloc(&mut pools, pool, 8 * MIB, &mut next);
        for &b in &blocks {
            pools.free(b).unwrap();
        }
        // Reserved 14 MiB: releasing the 3 MiB block leaves 11 MiB, then the 2 MiB one 9.
        let released = pools.trim_to(pool, 10 * MIB).unwrap();
        assert_eq!(released, vec![blocks[2], blocks[1]]);
        assert_eq!(u64_attr(&pools, pool, attr::RESERVED_MEM_CURRENT), 9 * MIB);
        assert_eq!(pools.trim_to(pool, 0).unwrap(), vec![blocks[0]]);
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_CURRENT), 8 * MIB);
        assert_eq!(pools.owner_of_live(live), pool);
    }

    #[test]
    fn high_watermarks_reset_to_the_current_value() {
        let mut pools = Pools::default();
        let pool = pools.default_pool(0);
        let mut next = 0x1000_0000;
        let a = alloc(&mut pools, pool, 4 * MIB, &mut next);
        let _b = alloc(&mut pools, pool, 2 * MIB, &mut next);
        pools.free(a).unwrap();
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_HIGH), 6 * MIB);
        pools.set_attribute(pool, attr::USED_MEM_HIGH, 0).unwrap();
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_HIGH), 2 * MIB);
        assert_eq!(
            pools.set_attribute(pool, attr::USED_MEM_HIGH, 5),
            Err(CuResult::ERROR_INVALID_VALUE)
        );
        assert_eq!(
            pools.set_attribute(pool, attr::USED_MEM_CURRENT, 0),
            Err(CuResult::ERROR_INVALID_VALUE)
        );
    }

    #[test]
    fn max_size_limits_reserved_memory() {
        let mut pools = Pools::default();
        let pool = pools.create(0, 4 * MIB);
        let mut next = 0x1000_0000;
        alloc(&mut pools, pool, 3 * MIB, &mut next);
        assert_eq!(
            pools.allocate(pool, 2 * MIB),
            Err(CuResult::ERROR_OUT_OF_MEMORY)
        );
        assert_eq!(u64_attr(&pools, pool, attr::MAX_POOL_SIZE), 4 * MIB);
    }

    #[test]
    fn current_pool_follows_set_and_destroy() {
        let mut pools = Pools::default();
        let default = pools.default_pool(0);
        let mine = pools.create(0, 0);
        assert_eq!(pools.current_pool(0), default);
        pools.set_current_pool(0, mine).unwrap();
        assert_eq!(pools.current_pool(0), mine);
        assert_eq!(
            pools.set_current_pool(1, mine),
            Err(CuResult::ERROR_INVALID_VALUE),
            "a pool of device 0 cannot serve device 1"
        );
        assert_eq!(pools.destroy(default), Err(CuResult::ERROR_INVALID_VALUE));
        pools.destroy(mine).unwrap();
        assert_eq!(pools.current_pool(0), default);
        assert_eq!(pools.destroy(mine), Err(CuResult::ERROR_INVALID_VALUE));
    }

    #[test]
    fn a_destroyed_pool_releases_cached_blocks_now_and_live_ones_when_freed() {
        let mut pools = Pools::default();
        let pool = pools.create(0, 0);
        pools
            .set_attribute(pool, attr::RELEASE_THRESHOLD, u64::MAX)
            .unwrap();
        let mut next = 0x1000_0000;
        let cached = alloc(&mut pools, pool, MIB, &mut next);
        let live = alloc(&mut pools, pool, MIB, &mut next);
        pools.free(cached).unwrap();
        assert_eq!(pools.destroy(pool), Ok(vec![cached]));
        assert_eq!(
            pools.allocate(pool, MIB),
            Err(CuResult::ERROR_INVALID_VALUE)
        );
        assert_eq!(pools.free(live), Ok(Free::Release));
        assert_eq!(pools.free(live), Ok(Free::NotPooled));
    }

    #[test]
    fn a_reset_forgets_blocks_but_keeps_settings() {
        let mut pools = Pools::default();
        let pool = pools.default_pool(0);
        pools
            .set_attribute(pool, attr::RELEASE_THRESHOLD, 99)
            .unwrap();
        let mut next = 0x1000_0000;
        let a = alloc(&mut pools, pool, MIB, &mut next);
        pools.forget_blocks();
        assert_eq!(pools.free(a), Ok(Free::NotPooled));
        assert_eq!(u64_attr(&pools, pool, attr::USED_MEM_CURRENT), 0);
        assert_eq!(u64_attr(&pools, pool, attr::RELEASE_THRESHOLD), 99);
    }
}
