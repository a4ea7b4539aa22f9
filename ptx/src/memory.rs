//! A session's device memory: allocations at stable 64-bit device addresses, safe to access
//! from many host threads at once (kernel blocks run in parallel).
//!
//! Every access is bounds-checked against the allocation table. Storage is a boxed slice of
//! `AtomicU64`, so every kernel access can be a (relaxed) atomic of its natural size: plain
//! loads and stores cost the same as ordinary moves on x86-64 and AArch64, and `atom`/`red`
//! are real host atomics, correct across host cores.

use crate::compile::{LOCAL_WINDOW, SHARED_WINDOW};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use thiserror::Error;

/// First device address handed out (looks like a CUDA unified address).
const FIRST_ADDRESS: u64 = 0x7f00_0000_0000;
/// Allocations are aligned like cudaMalloc's (256 bytes) and separated by an unmapped guard
/// gap so small overruns fault instead of touching a neighbour.
const ALIGN: u64 = 256;
const GUARD: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemoryError {
    #[error("out of device memory: {requested} bytes requested, {available} available")]
    OutOfMemory { requested: u64, available: u64 },
    #[error("address range 0x{address:x}+{size} is not inside one allocation")]
    InvalidAddress { address: u64, size: u64 },
    #[error("address 0x{0:x} is not the start of an allocation")]
    NotAllocated(u64),
    #[error(
        "address range 0x{address:x}+{size} overlaps an existing allocation or a reserved window"
    )]
    Overlap { address: u64, size: u64 },
}

/// One allocation's storage.
pub struct Allocation {
    base: u64,
    len: u64,
    words: Box<[AtomicU64]>,
}

impl Allocation {
    fn new(base: u64, len: u64) -> Allocation {
        let words = zeroed_words(len.div_ceil(8) as usize);
        Allocation { base, len, words }
    }

    fn byte_ptr(&self) -> *mut u8 {
        // Interior mutability: the atomics own their bytes through UnsafeCell, so writing
        // through a pointer derived from a shared reference to them is allowed.
        self.words.as_ptr() as *mut u8
    }

    /// Loads `size` (1, 2, 4 or 8) bytes at byte offset `off`, which the caller has checked
    /// to be in bounds and aligned to `size`.
    #[inline]
    pub(crate) fn load(&self, off: u64, size: u32) -> u64 {
        debug_assert!(off + size as u64 <= self.words.len() as u64 * 8);
        debug_assert!(off.is_multiple_of(size as u64));
        // SAFETY: `off + size` lies inside `words` (checked by the caller against `len`,
        // and `words` covers `len` rounded up to 8) and `off` is a multiple of `size`, so the
        // pointer is valid and aligned for the atomic type. All accesses to this storage are
        // atomic; only racing accesses of different sizes (a data race in the kernel itself)
        // mix sizes.
        unsafe {
            let p = self.byte_ptr().add(off as usize);
            match size {
                1 => AtomicU8::from_ptr(p).load(Ordering::Relaxed) as u64,
                2 => AtomicU16::from_ptr(p as *mut u16).load(Ordering::Relaxed) as u64,
                4 => AtomicU32::from_ptr(p as *mut u32).load(Ordering::Relaxed) as u64,
                _ => AtomicU64::from_ptr(p as *mut u64).load(Ordering::Relaxed),
            }
        }
    }

    /// Stores the low `size` bytes of `v`; same preconditions as [`Allocation::load`].
    #[inline]
    pub(crate) fn store(&self, off: u64, size: u32, v: u64) {
        debug_assert!(off + size as u64 <= self.words.len() as u64 * 8);
        debug_assert!(off.is_multiple_of(size as u64));
        // SAFETY: as in `load`.
        unsafe {
            let p = self.byte_ptr().add(off as usize);
            match size {
                1 => AtomicU8::from_ptr(p).store(v as u8, Ordering::Relaxed),
                2 => AtomicU16::from_ptr(p as *mut u16).store(v as u16, Ordering::Relaxed),
                4 => AtomicU32::from_ptr(p as *mut u32).store(v as u32, Ordering::Relaxed),
                _ => AtomicU64::from_ptr(p as *mut u64).store(v, Ordering::Relaxed),
            }
        }
    }

    /// Atomically replaces the 4- or 8-byte value at `off` with `f(old)`; returns the old
    /// value. Same preconditions as [`Allocation::load`].
    #[inline]
    pub(crate) fn update(&self, off: u64, size: u32, f: impl Fn(u64) -> u64) -> u64 {
        debug_assert!(size == 4 || size == 8);
        // SAFETY: as in `load`.
        unsafe {
            let p = self.byte_ptr().add(off as usize);
            if size == 4 {
                let a = AtomicU32::from_ptr(p as *mut u32);
                let mut old = a.load(Ordering::Relaxed);
                loop {
                    let new = f(old as u64) as u32;
                    match a.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                        Ok(_) => return old as u64,
                        Err(cur) => old = cur,
                    }
                }
            } else {
                let a = AtomicU64::from_ptr(p as *mut u64);
                let mut old = a.load(Ordering::Relaxed);
                loop {
                    let new = f(old);
                    match a.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                        Ok(_) => return old,
                        Err(cur) => old = cur,
                    }
                }
            }
        }
    }

    /// Bytes from `off` up to the next word boundary, at most `len`. Bulk copies move
    /// those byte by byte, then whole words, then the tail byte by byte.
    fn head_len(off: u64, len: usize) -> usize {
        usize::try_from(off.next_multiple_of(8) - off).map_or(len, |head| head.min(len))
    }

    /// The words from the one that holds byte offset `off` on (empty at the end).
    fn words_from(&self, off: u64) -> &[AtomicU64] {
        &self.words[(off / 8) as usize..]
    }

    fn read_bytes(&self, off: u64, out: &mut [u8]) {
        let len = out.len();
        let (head, rest) = out.split_at_mut(Self::head_len(off, len));
        for (i, byte) in head.iter_mut().enumerate() {
            *byte = self.load(off + i as u64, 1) as u8;
        }
        let words = self.words_from(off + head.len() as u64);
        let mut chunks = rest.chunks_exact_mut(8);
        // One relaxed load per word: a plain move, without a bounds check per byte.
        for (chunk, word) in (&mut chunks).zip(words) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let tail_at = off + (len - tail.len()) as u64;
        for (i, byte) in tail.iter_mut().enumerate() {
            *byte = self.load(tail_at + i as u64, 1) as u8;
        }
    }

    fn write_bytes(&self, off: u64, data: &[u8]) {
        let (head, rest) = data.split_at(Self::head_len(off, data.len()));
        for (i, &byte) in head.iter().enumerate() {
            self.store(off + i as u64, 1, byte as u64);
        }
        let words = self.words_from(off + head.len() as u64);
        let chunks = rest.chunks_exact(8);
        let tail = chunks.remainder();
        for (chunk, word) in chunks.zip(words) {
            let v = u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes"));
            word.store(v, Ordering::Relaxed);
        }
        let tail_at = off + (data.len() - tail.len()) as u64;
        for (i, &byte) in tail.iter().enumerate() {
            self.store(tail_at + i as u64, 1, byte as u64);
        }
    }
}

#[derive(Default)]
struct Table {
    allocations: BTreeMap<u64, Arc<Allocation>>,
    used: u64,
    next: u64,
}

/// The device memory of one session.
pub struct DeviceMemory {
    table: RwLock<Table>,
    capacity: u64,
}

/// `n` zeroed words from memory the allocator hands out zeroed (calloc: fresh pages from the
/// OS for large sizes), so an allocation costs no pass over its bytes until they are used.
/// Writing zeros word by word made a 1 GiB allocation (e.g. a swap-in) take over a second.
fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
    if n == 0 {
        return Box::new([]);
    }
    let layout = std::alloc::Layout::array::<AtomicU64>(n).expect("allocations fit in memory");
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` holds `n` AtomicU64s, allocated by the global allocator with the layout of
    // `[AtomicU64; n]` (which is what the box frees with), and all-zero bytes are a valid
    // AtomicU64 (same bit validity as u64).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n)) }
}

impl DeviceMemory {
    /// Memory with room for `capacity` bytes of allocations.
    pub fn new(capacity: u64) -> DeviceMemory {
        DeviceMemory {
            table: RwLock::new(Table {
                next: FIRST_ADDRESS,
                ..Default::default()
            }),
            capacity,
        }
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates `size` zeroed bytes at a new address.
    pub fn allocate(&self, size: u64) -> Result<u64, MemoryError> {
        let mut t = self.table_mut();
        let address = t.next;
        if address.saturating_add(size) >= SHARED_WINDOW.min(LOCAL_WINDOW) {
            return Err(MemoryError::OutOfMemory {
                requested: size,
                available: 0,
            });
        }
        Self::insert(&mut t, self.capacity, address, size)?;
        Ok(address)
    }

    /// Allocates `size` zeroed bytes at a chosen address (restoring a swapped-out session at
    /// the addresses its program already holds).
    pub fn allocate_at(&self, address: u64, size: u64) -> Result<(), MemoryError> {
        let mut t = self.table_mut();
        let end = address.checked_add(size.max(1));
        let overlaps = end.is_none_or(|end| {
            end > SHARED_WINDOW.min(LOCAL_WINDOW)
                || t.allocations
                    .range(..end)
                    .next_back()
                    .is_some_and(|(_, a)| a.base + a.len.max(1) > address)
        });
        if overlaps || address == 0 {
            return Err(MemoryError::Overlap { address, size });
        }
        Self::insert(&mut t, self.capacity, address, size)
    }

    fn insert(t: &mut Table, capacity: u64, address: u64, size: u64) -> Result<(), MemoryError> {
        if size > capacity.saturating_sub(t.used) {
            return Err(MemoryError::OutOfMemory {
                requested: size,
                available: capacity.saturating_sub(t.used),
            });
        }
        let end = address.saturating_add(size.max(1));
        t.allocations
            .insert(address, Arc::new(Allocation::new(address, size)));
        t.used += size;
        t.next = t.next.max((end + GUARD).div_ceil(ALIGN) * ALIGN);
        Ok(())
    }

    /// Frees the allocation starting at `address`.
    pub fn free(&self, address: u64) -> Result<(), MemoryError> {
        let mut t = self.table_mut();
        let a = t
            .allocations
            .remove(&address)
            .ok_or(MemoryError::NotAllocated(address))?;
        t.used -= a.len;
        Ok(())
    }

    /// `(address, size)` of every allocation, in address order.
    pub fn allocations(&self) -> Vec<(u64, u64)> {
        self.table()
            .allocations
            .values()
            .map(|a| (a.base, a.len))
            .collect()
    }

    /// Bytes currently allocated.
    pub fn used(&self) -> u64 {
        self.table().used
    }

    fn find(&self, address: u64, size: u64) -> Result<(Arc<Allocation>, u64), MemoryError> {
        let t = self.table();
        let hit = t
            .allocations
            .range(..=address)
            .next_back()
            .and_then(|(_, a)| {
                let off = address - a.base;
                (off.checked_add(size).is_some_and(|e| e <= a.len)).then(|| (a.clone(), off))
            });
        hit.ok_or(MemoryError::InvalidAddress { address, size })
    }

    /// Copies device memory into `out` (cuMemcpyDtoH).
    pub fn read(&self, address: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let (a, off) = self.find(address, out.len() as u64)?;
        a.read_bytes(off, out);
        Ok(())
    }

    /// Copies `data` into device memory (cuMemcpyHtoD).
    pub fn write(&self, address: u64, data: &[u8]) -> Result<(), MemoryError> {
        let (a, off) = self.find(address, data.len() as u64)?;
        a.write_bytes(off, data);
        Ok(())
    }

    /// Lends the `len` bytes at `address` to `f` as one plain byte slice, so a bulk write
    /// (a host-to-device copy read straight from the network) fills them without a copy
    /// through an intermediate buffer. Fails, without calling `f`, like [`Self::write`] when
    /// the range is not inside one allocation.
    ///
    /// # Safety
    ///
    /// Nothing else may read or write these bytes while `f` runs: no kernel, no other call on
    /// this memory, from any thread. The slice is an exclusive borrow the atomics that own the
    /// bytes do not know about.
    pub unsafe fn with_bytes_mut<R>(
        &self,
        address: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, MemoryError> {
        let (a, off) = self.find(address, len)?;
        // SAFETY: `off + len <= a.len` (checked by `find`) and `words` covers `a.len` rounded
        // up to 8, so the range lies inside the storage, which is initialised (zeroed when
        // allocated); both fit in `usize` because the storage exists. The atomics own their
        // bytes through `UnsafeCell`, so writing through a pointer derived from them is
        // allowed, and the caller guarantees no other access while the slice lives. `a` keeps
        // the storage alive until `f` returns, even if the allocation is freed meanwhile.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(a.byte_ptr().add(off as usize), len as usize) };
        Ok(f(bytes))
    }

    /// Copies `len` bytes between two device ranges (cuMemcpyDtoD); the ranges may overlap.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), MemoryError> {
        let (from, src_off) = self.find(src, len)?;
        let (to, dst_off) = self.find(dst, len)?;
        let mut buf = vec![0u8; len as usize];
        from.read_bytes(src_off, &mut buf);
        to.write_bytes(dst_off, &buf);
        Ok(())
    }

    /// Sets `len` bytes to repetitions of `pattern` (cuMemsetD8/D16/D32).
    pub fn fill(&self, address: u64, len: u64, pattern: &[u8]) -> Result<(), MemoryError> {
        if pattern.is_empty() || !len.is_multiple_of(pattern.len() as u64) {
            return Err(MemoryError::InvalidAddress { address, size: len });
        }
        let (a, off) = self.find(address, len)?;
        let buf: Vec<u8> = pattern.iter().copied().cycle().take(len as usize).collect();
        a.write_bytes(off, &buf);
        Ok(())
    }

    /// A consistent view of the allocation table for one launch.
    pub(crate) fn view(&self) -> MemView {
        let t = self.table();
        MemView {
            allocs: t.allocations.values().cloned().collect(),
        }
    }
}

/// The allocation table as a sorted array, fixed for the duration of a launch (allocations
/// freed meanwhile stay alive through their `Arc` until the launch ends).
pub(crate) struct MemView {
    allocs: Vec<Arc<Allocation>>,
}

impl MemView {
    /// Finds the allocation holding `[address, address+size)`; `hint` caches the last hit.
    #[inline]
    pub(crate) fn find(
        &self,
        address: u64,
        size: u32,
        hint: &mut usize,
    ) -> Option<(&Allocation, u64)> {
        if let Some(a) = self.allocs.get(*hint) {
            let off = address.wrapping_sub(a.base);
            if off < a.len && a.len - off >= size as u64 {
                return Some((a, off));
            }
        }
        let idx = self
            .allocs
            .partition_point(|a| a.base <= address)
            .checked_sub(1)?;
        let a = &self.allocs[idx];
        let off = address - a.base;
        if off < a.len && a.len - off >= size as u64 {
            *hint = idx;
            Some((a, off))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_bounds_checked_and_round_trip() {
        let m = DeviceMemory::new(1 << 20);
        let a = m.allocate(100).unwrap();
        let b = m.allocate(100).unwrap();
        assert!(b >= a + 100 + GUARD);
        m.write(a, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
        let mut out = [0u8; 10];
        m.read(a, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(m.read(a + 95, &mut out).is_err());
        assert!(m.write(a + 200, &[0]).is_err());
        m.free(a).unwrap();
        assert!(m.read(a, &mut out).is_err());
        assert_eq!(m.free(a), Err(MemoryError::NotAllocated(a)));
    }

    #[test]
    fn copy_and_fill() {
        let m = DeviceMemory::new(1 << 20);
        let a = m.allocate(64).unwrap();
        let b = m.allocate(64).unwrap();
        m.fill(a, 64, &[1, 2, 3, 4]).unwrap();
        m.copy(b + 3, a + 1, 20).unwrap();
        let mut out = [0u8; 8];
        m.read(b, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 2, 3, 4, 1, 2]);
        assert!(m.copy(b + 60, a, 8).is_err());
        assert!(m.fill(a, 6, &[0, 0, 0, 0]).is_err());
    }

    proptest::proptest! {
        /// Copies in and out at any offset and length (unaligned heads and tails around
        /// whole words) move exactly those bytes, as a plain byte array would.
        #[test]
        fn unaligned_copies_match_a_byte_array(
            writes in proptest::collection::vec(
                (0usize..200, proptest::collection::vec(proptest::num::u8::ANY, 0..60)),
                1..8,
            ),
            read_at in 0usize..200,
            read_len in 0usize..60,
        ) {
            const LEN: usize = 260;
            let m = DeviceMemory::new(1 << 20);
            let base = m.allocate(LEN as u64).unwrap();
            let mut model = vec![0u8; LEN];
            for (at, data) in &writes {
                m.write(base + *at as u64, data).unwrap();
                model[*at..*at + data.len()].copy_from_slice(data);
            }
            let mut whole = vec![0u8; LEN];
            m.read(base, &mut whole).unwrap();
            proptest::prop_assert_eq!(&whole, &model);
            let mut part = vec![0u8; read_len];
            m.read(base + read_at as u64, &mut part).unwrap();
            proptest::prop_assert_eq!(&part[..], &model[read_at..read_at + read_len]);
        }
    }

    #[test]
    fn lent_bytes_are_the_allocation_and_are_bounds_checked() {
        let m = DeviceMemory::new(1 << 20);
        let a = m.allocate(100).unwrap();
        // SAFETY: nothing else uses `m` while the slice lives.
        let len = unsafe {
            m.with_bytes_mut(a + 3, 90, |bytes| {
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = i as u8 + 1;
                }
                bytes.len()
            })
        };
        assert_eq!(len, Ok(90));
        let mut out = [0u8; 100];
        m.read(a, &mut out).unwrap();
        assert_eq!(&out[..3], &[0, 0, 0]);
        assert!(
            out[3..93]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == i as u8 + 1)
        );
        assert_eq!(&out[93..], &[0; 7]);
        // SAFETY: as above; the closure must not run for a bad range.
        let past_the_end: Result<(), _> =
            unsafe { m.with_bytes_mut(a + 50, 51, |_| panic!("called for a bad range")) };
        assert_eq!(
            past_the_end,
            Err(MemoryError::InvalidAddress {
                address: a + 50,
                size: 51
            })
        );
        // SAFETY: as above.
        let overflowing: Result<(), _> =
            unsafe { m.with_bytes_mut(u64::MAX, 2, |_| panic!("called for a bad range")) };
        assert!(overflowing.is_err());
    }

    #[test]
    fn handles_are_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DeviceMemory>();
        send_sync::<crate::Module>();
    }

    #[test]
    fn capacity_and_fixed_addresses_are_enforced() {
        let m = DeviceMemory::new(1000);
        assert!(matches!(
            m.allocate(2000),
            Err(MemoryError::OutOfMemory { .. })
        ));
        m.allocate_at(0x1000_0000, 100).unwrap();
        assert!(m.allocate_at(0x1000_0010, 10).is_err());
        assert!(m.allocate_at(SHARED_WINDOW, 10).is_err());
        m.allocate_at(0x1000_0100, 10).unwrap();
    }
}
