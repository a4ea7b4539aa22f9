//! The device side of a swap: the worker's backend copies chunks between device memory and the
//! store's buffers.
//!
//! The store calls [`DeviceIo`] on the thread that called `swap_out`/`swap_in`, one contiguous
//! range at a time, while a helper thread writes the previous chunk to its tier (or reads and
//! verifies the next one). So a backend with a synchronous copy per call already overlaps device
//! copies with tier I/O:
//! - `cpu` backend: a plain memory copy.
//! - `cuda` backend: `cuMemcpyDtoHAsync`/`HtoDAsync` on a dedicated copy stream, then a stream
//!   synchronize. The buffers handed out are page-aligned and come from a recycled pool of
//!   `chunk_size` buffers, so the backend can register each with `cuMemHostRegister` the first
//!   time it sees it (keyed by its address) and get pinned-memory DMA speed afterwards.

use std::collections::BTreeMap;

use crate::error::DeviceIoError;

/// Copies between device memory and host buffers for the swap store.
pub trait DeviceIo {
    /// Copies the device bytes `[address, address + dst.len())` into `dst`. Returns only when
    /// `dst` holds them.
    fn read(&mut self, address: u64, dst: &mut [u8]) -> Result<(), DeviceIoError>;

    /// Copies `src` to device memory at `address`. May return before the copy is visible on the
    /// device only if the backend orders it before any later work of the session.
    fn write(&mut self, address: u64, src: &[u8]) -> Result<(), DeviceIoError>;
}

/// Device memory simulated in host memory: a set of allocations keyed by start address.
/// This is what the `cpu` backend's memory looks like; tests and the benchmark use it.
#[derive(Default)]
pub struct MemoryDevice {
    allocations: BTreeMap<u64, Vec<u8>>,
}

impl MemoryDevice {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps an allocation holding `data` at `address` (replacing one at the same address).
    pub fn insert(&mut self, address: u64, data: Vec<u8>) {
        self.allocations.insert(address, data);
    }

    /// Maps a zero-filled allocation of `len` bytes at `address`.
    pub fn allocate(&mut self, address: u64, len: usize) {
        self.insert(address, vec![0; len]);
    }

    /// Unmaps the allocation at `address`, returning its contents.
    pub fn free(&mut self, address: u64) -> Option<Vec<u8>> {
        self.allocations.remove(&address)
    }

    /// The contents of the allocation at `address`.
    pub fn get(&self, address: u64) -> Option<&[u8]> {
        self.allocations.get(&address).map(Vec::as_slice)
    }

    fn range_mut(&mut self, address: u64, len: usize) -> Result<&mut [u8], DeviceIoError> {
        let (&start, data) = self
            .allocations
            .range_mut(..=address)
            .next_back()
            .ok_or_else(|| format!("no allocation at {address:#x}"))?;
        let offset = (address - start) as usize;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                format!(
                    "{len} bytes at {address:#x} exceed the allocation at {start:#x} ({} bytes)",
                    data.len()
                )
            })?;
        Ok(&mut data[offset..end])
    }
}

impl DeviceIo for MemoryDevice {
    fn read(&mut self, address: u64, dst: &mut [u8]) -> Result<(), DeviceIoError> {
        dst.copy_from_slice(self.range_mut(address, dst.len())?);
        Ok(())
    }

    fn write(&mut self, address: u64, src: &[u8]) -> Result<(), DeviceIoError> {
        self.range_mut(address, src.len())?.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_inside_allocations() {
        let mut dev = MemoryDevice::new();
        dev.insert(0x1000, vec![1, 2, 3, 4]);
        let mut two = [0u8; 2];
        dev.read(0x1001, &mut two).unwrap();
        assert_eq!(two, [2, 3]);
        dev.write(0x1002, &[9, 9]).unwrap();
        assert_eq!(dev.get(0x1000).unwrap(), &[1, 2, 9, 9]);
    }

    #[test]
    fn out_of_bounds_is_an_error() {
        let mut dev = MemoryDevice::new();
        dev.insert(0x1000, vec![0; 4]);
        assert!(dev.read(0x1003, &mut [0u8; 2]).is_err());
        assert!(dev.write(0x0fff, &[0]).is_err());
    }
}
