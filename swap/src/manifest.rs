//! The per-session manifest: allocations, chunk size and one checksum per chunk.
//!
//! It is written next to the data in the disk and cold tiers (so those copies describe
//! themselves) and is checksummed itself. Encoding: `GPUFNSWP` magic, version (u32 LE), body
//! length (u64 LE), xxh3 of the body (u64 LE), then the body as JSON. The decoder treats its
//! input as untrusted: any damage is an error, never a panic.

use serde::{Deserialize, Serialize};

use crate::checksum::manifest_checksum;
use crate::layout::{self, ALIGN, ChunkPlan};
use crate::types::{Allocation, SessionId};

const MAGIC: &[u8; 8] = b"GPUFNSWP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Largest chunk size accepted (and configurable).
pub const MAX_CHUNK_SIZE: usize = 1 << 30;
/// Manifests larger than this are rejected before parsing.
const MAX_BODY_LEN: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub session: SessionId,
    /// Distinguishes successive swap-outs of the same session id in this store (names its cold
    /// objects, so deleting an old copy in the background never touches a newer one).
    pub generation: u64,
    pub chunk_size: usize,
    pub allocations: Vec<Allocation>,
    /// One checksum per chunk, see [`crate::checksum::chunk_checksum`].
    pub checksums: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    #[error("not a gpufn swap manifest (bad magic)")]
    BadMagic,
    #[error("unsupported manifest version {0} (this worker reads version {VERSION})")]
    Version(u32),
    #[error("body length {declared} does not match the {actual} bytes present")]
    Length { declared: u64, actual: usize },
    #[error("manifest checksum mismatch")]
    Checksum,
    #[error("malformed manifest body: {0}")]
    Body(String),
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
}

impl Manifest {
    /// Total bytes of the session's allocations.
    pub fn total_bytes(&self) -> u64 {
        // Validated on decode and checked on creation.
        layout::total_bytes(&self.allocations).unwrap_or(u64::MAX)
    }

    /// The chunk layout (recomputed from allocations and chunk size).
    pub fn chunks(&self) -> Vec<ChunkPlan> {
        layout::plan_chunks(&self.allocations, self.chunk_size)
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("a manifest always serializes");
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&manifest_checksum(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() < HEADER_LEN {
            return Err(ManifestError::TooShort(bytes.len()));
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        if &header[..8] != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(ManifestError::Version(version));
        }
        let declared = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        if declared > MAX_BODY_LEN || declared != body.len() as u64 {
            return Err(ManifestError::Length {
                declared,
                actual: body.len(),
            });
        }
        let checksum = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
        if checksum != manifest_checksum(body) {
            return Err(ManifestError::Checksum);
        }
        let manifest: Manifest =
            serde_json::from_slice(body).map_err(|e| ManifestError::Body(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.chunk_size == 0
            || !self.chunk_size.is_multiple_of(ALIGN)
            || self.chunk_size > MAX_CHUNK_SIZE
        {
            return Err(ManifestError::Inconsistent(format!(
                "chunk size {} is not a positive multiple of {ALIGN} up to {MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        let total = layout::total_bytes(&self.allocations).ok_or_else(|| {
            ManifestError::Inconsistent("allocation sizes overflow 64 bits".into())
        })?;
        let expected = layout::chunk_count(total, self.chunk_size);
        if expected != self.checksums.len() as u64 {
            return Err(ManifestError::Inconsistent(format!(
                "{} checksums for {expected} chunks",
                self.checksums.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            session: SessionId(42),
            generation: 7,
            chunk_size: 4096,
            allocations: vec![Allocation::new(0x1000, 5000), Allocation::new(0x9000, 1)],
            checksums: vec![1, 2],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn inconsistent_checksum_count_is_rejected() {
        let mut m = sample();
        m.checksums.pop();
        assert!(matches!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::Inconsistent(_))
        ));
    }

    #[test]
    fn truncation_is_rejected() {
        let bytes = sample().encode();
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            Manifest::decode(&bytes[..3]),
            Err(ManifestError::TooShort(3))
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn any_flipped_byte_is_detected(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut bytes = sample().encode();
            let i = pos.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(Manifest::decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bodies_with_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&VERSION.to_le_bytes());
            bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&manifest_checksum(&body).to_le_bytes());
            bytes.extend_from_slice(&body);
            let _ = Manifest::decode(&bytes);
        }
    }
}
