//! Moving one chunk between device memory and a buffer, and verifying it.

use crate::buffer::ChunkBuf;
use crate::checksum::chunk_checksum;
use crate::device::DeviceIo;
use crate::error::{Result, SwapError};
use crate::layout::{ChunkPlan, describe_chunk};
use crate::manifest::Manifest;
use crate::types::{Allocation, SessionId, Tier};

/// Copies the chunk's segments from the device into `buf`.
pub fn fill_from_device(
    device: &mut dyn DeviceIo,
    session: SessionId,
    allocations: &[Allocation],
    chunk: &ChunkPlan,
    buf: &mut ChunkBuf,
) -> Result<()> {
    let dst = buf.as_mut_slice();
    for s in &chunk.segments {
        // Validated on swap-out: address + len does not overflow.
        let address = allocations[s.allocation].device_address + s.offset;
        device
            .read(address, &mut dst[s.buf_offset..s.buf_offset + s.len])
            .map_err(|source| SwapError::Device {
                session,
                address,
                len: s.len as u64,
                source,
            })?;
    }
    buf.set_len(chunk.len);
    Ok(())
}

/// Copies the chunk's bytes back to the device.
pub fn drain_to_device(
    device: &mut dyn DeviceIo,
    session: SessionId,
    allocations: &[Allocation],
    chunk: &ChunkPlan,
    data: &[u8],
) -> Result<()> {
    for s in &chunk.segments {
        let address = allocations[s.allocation].device_address + s.offset;
        device
            .write(address, &data[s.buf_offset..s.buf_offset + s.len])
            .map_err(|source| SwapError::Device {
                session,
                address,
                len: s.len as u64,
                source,
            })?;
    }
    Ok(())
}

/// Checks a chunk read back from `tier` against the manifest.
pub fn verify(manifest: &Manifest, tier: Tier, chunk: &ChunkPlan, data: &[u8]) -> Result<()> {
    let problem = if data.len() != chunk.len {
        Some(format!("{} bytes instead of {}", data.len(), chunk.len))
    } else if manifest.checksums.get(chunk.index as usize)
        != Some(&chunk_checksum(chunk.index, data))
    {
        Some("checksum mismatch".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(detail) => Err(SwapError::ChunkCorrupted {
            session: manifest.session,
            tier,
            chunk: chunk.index,
            covers: describe_chunk(chunk, &manifest.allocations),
            detail,
        }),
    }
}

/// The "missing chunk" error for `chunk`.
pub fn missing(manifest: &Manifest, tier: Tier, chunk: &ChunkPlan, detail: String) -> SwapError {
    SwapError::ChunkMissing {
        session: manifest.session,
        tier,
        chunk: chunk.index,
        covers: describe_chunk(chunk, &manifest.allocations),
        detail,
    }
}
