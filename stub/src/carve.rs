//! Client-side placement of device allocations. The worker gives each session an address
//! range whose lower half belongs to the client (see `worker/src/address_space.rs`), so the
//! stub picks addresses itself and `cuMemAlloc` needs no round trip. Pure bookkeeping.

use std::collections::BTreeMap;

/// Alignment of every allocation (what `cudaMalloc` guarantees).
pub const ALIGN: u64 = 256;
/// Unused gap after each allocation, so small overruns hit no other allocation.
pub const GUARD: u64 = 4096;

/// Free and used space of the client half of a session's range.
#[derive(Debug)]
pub struct Carver {
    /// Free blocks: start → length.
    free: BTreeMap<u64, u64>,
    /// Allocations: start → (size asked for, length reserved).
    used: BTreeMap<u64, (u64, u64)>,
    quota: u64,
    in_use: u64,
}

/// Why an allocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarveError {
    /// The session's quota would be exceeded.
    Quota,
    /// No free block is large enough.
    NoSpace,
    /// Size zero.
    Zero,
}

impl Carver {
    /// The client half of `[base, base + size)`, with `quota` bytes of allocations at most.
    pub fn new(base: u64, size: u64, quota: u64) -> Self {
        let start = base.next_multiple_of(ALIGN);
        let half = size / 2;
        let mut free = BTreeMap::new();
        if half > start - base {
            free.insert(start, half - (start - base));
        }
        Carver {
            free,
            used: BTreeMap::new(),
            quota,
            in_use: 0,
        }
    }

    /// Bytes allocated (as asked for) and the quota.
    pub fn usage(&self) -> (u64, u64) {
        (self.in_use, self.quota)
    }

    /// Places `size` bytes; returns the address.
    pub fn allocate(&mut self, size: u64) -> Result<u64, CarveError> {
        if size == 0 {
            return Err(CarveError::Zero);
        }
        if self.in_use.saturating_add(size) > self.quota {
            return Err(CarveError::Quota);
        }
        let reserved = size
            .checked_next_multiple_of(ALIGN)
            .and_then(|s| s.checked_add(GUARD))
            .ok_or(CarveError::NoSpace)?;
        let (&start, &len) = self
            .free
            .iter()
            .find(|(_, len)| **len >= reserved)
            .ok_or(CarveError::NoSpace)?;
        self.free.remove(&start);
        if len > reserved {
            self.free.insert(start + reserved, len - reserved);
        }
        self.used.insert(start, (size, reserved));
        self.in_use += size;
        Ok(start)
    }

    /// Frees the allocation starting at `address`; `false` if there is none.
    pub fn free(&mut self, address: u64) -> bool {
        let Some((size, reserved)) = self.used.remove(&address) else {
            return false;
        };
        self.in_use -= size;
        let mut start = address;
        let mut len = reserved;
        if let Some((&prev, &prev_len)) = self.free.range(..address).next_back()
            && prev + prev_len == address
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(next_len) = self.free.remove(&(address + reserved)) {
            len += next_len;
        }
        self.free.insert(start, len);
        true
    }

    /// Forgets every allocation (after a primary context reset, the worker frees them).
    pub fn reset(&mut self) {
        let addresses: Vec<u64> = self.used.keys().copied().collect();
        for address in addresses {
            self.free(address);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7f00_0000_0000;

    #[test]
    fn allocations_are_aligned_disjoint_and_in_the_lower_half() {
        let mut c = Carver::new(BASE, 1 << 40, 1 << 30);
        let a = c.allocate(1000).unwrap();
        let b = c.allocate(1).unwrap();
        assert_eq!(a % ALIGN, 0);
        assert_eq!(b % ALIGN, 0);
        assert!(b >= a + 1000 + GUARD);
        assert!(b < BASE + (1 << 39));
    }

    #[test]
    fn the_quota_counts_requested_bytes_and_frees_give_them_back() {
        let mut c = Carver::new(BASE, 1 << 40, 4096);
        let a = c.allocate(4000).unwrap();
        assert_eq!(c.allocate(200), Err(CarveError::Quota));
        assert!(c.free(a));
        assert!(!c.free(a), "double free is refused");
        assert!(c.allocate(4096).is_ok());
        assert_eq!(c.allocate(0), Err(CarveError::Zero));
    }

    #[test]
    fn freed_neighbours_coalesce_so_space_is_reused() {
        let mut c = Carver::new(BASE, 1 << 20, 1 << 30);
        let blocks: Vec<u64> = (0..8).map(|_| c.allocate(10_000).unwrap()).collect();
        for b in &blocks {
            assert!(c.free(*b));
        }
        // All space is one block again: the largest possible allocation fits.
        assert_eq!(c.allocate((1 << 19) - GUARD), Ok(BASE));
    }

    #[test]
    fn reset_frees_everything() {
        let mut c = Carver::new(BASE, 1 << 40, 1 << 20);
        c.allocate(1 << 20).unwrap();
        c.reset();
        assert_eq!(c.usage().0, 0);
        assert!(c.allocate(1 << 20).is_ok());
    }
}
