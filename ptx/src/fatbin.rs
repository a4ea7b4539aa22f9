//! Recognises module images (`__fatBinC_Wrapper_t`, raw fatbin, PTX text, ELF cubin),
//! decompresses fatbin entries and picks the PTX the CPU device runs.
//!
//! Layouts: see `shared/research/remoting.md` §3. All reads are bounds-checked; a damaged
//! image gives [`LoadError::InvalidImage`], never a panic.

use crate::error::LoadError;
use std::io::Read;

const WRAPPER_MAGIC: u32 = 0x466243B1;
const FATBIN_MAGIC: u32 = 0xBA55ED50;
const FATBIN_HEADER_SIZE: usize = 16;
const ENTRY_HEADER_MIN: usize = 64;
const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;
const FLAG_COMPRESSED_ZLIB: u64 = 0x1000;
const FLAG_COMPRESSED_LZ4: u64 = 0x2000;
const FLAG_COMPRESSED_ZSTD: u64 = 0x8000;
/// Refuse to inflate a single entry beyond this (a damaged size field must not exhaust memory).
const MAX_ENTRY_SIZE: u64 = 1 << 30;

/// One entry of a fatbin, as described by its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatbinEntry {
    pub kind: EntryKind,
    /// SM or compute architecture number, e.g. 90.
    pub arch: u32,
    pub ptx_isa: (u16, u16),
    pub flags: u64,
    /// Stored payload bytes (still compressed when `flags` says so).
    pub payload: Vec<u8>,
    pub uncompressed_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Ptx,
    Elf,
    /// NVVM IR / LTO IR or anything else the CPU device cannot use.
    Other(u16),
}

impl FatbinEntry {
    /// The entry's payload, decompressed.
    pub fn contents(&self) -> Result<Vec<u8>, LoadError> {
        let limit = self.uncompressed_size.min(MAX_ENTRY_SIZE);
        if self.flags & FLAG_COMPRESSED_ZSTD != 0 {
            let decoder = ruzstd::decoding::StreamingDecoder::new(&self.payload[..])
                .map_err(|e| invalid(format!("zstd entry: {e}")))?;
            let mut out = Vec::new();
            decoder
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| invalid(format!("zstd entry: {e}")))?;
            Ok(out)
        } else if self.flags & FLAG_COMPRESSED_LZ4 != 0 {
            // LZ4 expands at most 255:1, so a damaged size field cannot make us reserve more.
            let bound = (self.payload.len() as u64)
                .saturating_mul(255)
                .saturating_add(64);
            lz4_flex::block::decompress(&self.payload, limit.min(bound) as usize)
                .map_err(|e| invalid(format!("lz4 entry: {e}")))
        } else if self.flags & FLAG_COMPRESSED_ZLIB != 0 {
            Err(LoadError::NotSupported {
                what: "fatbin entry with the old zlib compression (flag 0x1000); rebuild with CUDA 11.5 or newer".into(),
                line: 0,
            })
        } else {
            Ok(self.payload.clone())
        }
    }
}

/// What kind of image a program handed to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A fatbin (from a wrapper or raw), with all entries of all fatbins found.
    Fatbin(Vec<FatbinEntry>),
    /// PTX text.
    Ptx(String),
    /// A device ELF (cubin): machine code only.
    Cubin,
}

/// Classifies and parses an image. Wrappers hold a pointer to the fatbin that is only valid
/// in the program's address space, so a wrapper must arrive with its fatbin appended right
/// after the 24 wrapper bytes (what the stub sends).
pub fn read_image(bytes: &[u8]) -> Result<Image, LoadError> {
    match read_u32(bytes, 0) {
        Some(WRAPPER_MAGIC) => {
            let rest = bytes.get(24..).unwrap_or(&[]);
            if read_u32(rest, 0) != Some(FATBIN_MAGIC) {
                return Err(invalid(
                    "fatbin wrapper without its fatbin: send the wrapper followed by the fatbin it points to".into(),
                ));
            }
            Ok(Image::Fatbin(read_fatbins(rest)?))
        }
        Some(FATBIN_MAGIC) => Ok(Image::Fatbin(read_fatbins(bytes)?)),
        _ if bytes.starts_with(b"\x7fELF") => Ok(Image::Cubin),
        _ => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let text = std::str::from_utf8(&bytes[..end])
                .map_err(|_| invalid("not a fatbin, cubin or PTX text (not UTF-8)".into()))?;
            if !looks_like_ptx(text) {
                return Err(invalid(
                    "not a fatbin, cubin or PTX text (no .version/.target directive)".into(),
                ));
            }
            Ok(Image::Ptx(text.to_string()))
        }
    }
}

fn looks_like_ptx(text: &str) -> bool {
    text.contains(".version") || text.contains(".target") || text.contains(".entry")
}

/// Reads back-to-back fatbins (the `.nv_fatbin` section may hold several).
fn read_fatbins(mut bytes: &[u8]) -> Result<Vec<FatbinEntry>, LoadError> {
    let mut entries = Vec::new();
    while read_u32(bytes, 0) == Some(FATBIN_MAGIC) {
        let header_size = read_u16(bytes, 6).ok_or_else(|| truncated("fatbin header"))? as usize;
        let fat_size = read_u64(bytes, 8).ok_or_else(|| truncated("fatbin header"))?;
        if header_size < FATBIN_HEADER_SIZE {
            return Err(invalid(format!("fatbin header size {header_size} < 16")));
        }
        let end = (header_size as u64)
            .checked_add(fat_size)
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(|| truncated("fatbin"))? as usize;
        read_entries(&bytes[header_size..end], &mut entries)?;
        // The next fatbin starts 8-aligned after this one.
        let next = end.div_ceil(8) * 8;
        bytes = bytes.get(next..).unwrap_or(&[]);
    }
    Ok(entries)
}

fn read_entries(mut bytes: &[u8], entries: &mut Vec<FatbinEntry>) -> Result<(), LoadError> {
    while bytes.len() >= ENTRY_HEADER_MIN {
        let kind = read_u16(bytes, 0).unwrap_or(0);
        let header_size = read_u32(bytes, 4).unwrap_or(0) as usize;
        let payload_size = read_u64(bytes, 8).unwrap_or(0);
        let compressed_size = read_u32(bytes, 0x10).unwrap_or(0) as u64;
        if header_size < ENTRY_HEADER_MIN || header_size > bytes.len() {
            return Err(invalid(format!(
                "fatbin entry header size {header_size} out of range"
            )));
        }
        let stored = payload_size.max(compressed_size);
        let end = (header_size as u64)
            .checked_add(stored)
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(|| truncated("fatbin entry"))? as usize;
        let flags = read_u64(bytes, 0x28).unwrap_or(0);
        let compressed = flags & (FLAG_COMPRESSED_LZ4 | FLAG_COMPRESSED_ZSTD) != 0;
        let payload_len = if compressed && compressed_size > 0 {
            compressed_size
        } else {
            payload_size
        } as usize;
        let uncompressed = read_u64(bytes, 0x38).unwrap_or(0);
        entries.push(FatbinEntry {
            kind: match kind {
                KIND_PTX => EntryKind::Ptx,
                KIND_ELF => EntryKind::Elf,
                other => EntryKind::Other(other),
            },
            arch: read_u32(bytes, 0x1C).unwrap_or(0),
            ptx_isa: (
                read_u16(bytes, 0x1A).unwrap_or(0),
                read_u16(bytes, 0x18).unwrap_or(0),
            ),
            flags,
            payload: bytes[header_size..header_size + payload_len].to_vec(),
            uncompressed_size: if uncompressed == 0 {
                payload_size
            } else {
                uncompressed
            },
        });
        bytes = &bytes[end..];
    }
    Ok(())
}

/// Picks the PTX text to run on a device of compute capability `cc` (e.g. 90 for 9.0): the
/// PTX entry with the highest architecture not above `cc`.
pub fn select_ptx(image: &Image, cc: u32) -> Result<String, LoadError> {
    match image {
        Image::Ptx(text) => Ok(text.clone()),
        Image::Cubin => Err(LoadError::NoBinaryForGpu(
            "the image is a cubin (GPU machine code); the CPU device runs PTX only: build with \
             PTX embedded, e.g. nvcc -gencode arch=compute_90,code=compute_90"
                .into(),
        )),
        Image::Fatbin(entries) => {
            let best = entries
                .iter()
                .filter(|e| e.kind == EntryKind::Ptx && e.arch <= cc)
                .max_by_key(|e| e.arch);
            match best {
                Some(entry) => {
                    let bytes = entry.contents()?;
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    String::from_utf8(bytes[..end].to_vec())
                        .map_err(|_| invalid("PTX entry is not UTF-8 text".into()))
                }
                None => Err(no_ptx_error(entries, cc)),
            }
        }
    }
}

fn no_ptx_error(entries: &[FatbinEntry], cc: u32) -> LoadError {
    let newer: Vec<String> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Ptx)
        .map(|e| format!("compute_{}", e.arch))
        .collect();
    if newer.is_empty() {
        LoadError::NoBinaryForGpu(
            "the fatbin holds only GPU machine code and no PTX; the CPU device needs PTX: \
             build with e.g. -gencode arch=compute_90,code=compute_90 (or -arch=sm_90, which \
             embeds PTX too)"
                .into(),
        )
    } else {
        LoadError::NoBinaryForGpu(format!(
            "the fatbin's PTX ({}) is for a newer architecture than the device (compute {}.{}); \
             build with a lower virtual architecture, e.g. -gencode arch=compute_{cc},code=compute_{cc}",
            newer.join(", "),
            cc / 10,
            cc % 10
        ))
    }
}

fn invalid(message: String) -> LoadError {
    LoadError::InvalidImage(message)
}

fn truncated(what: &str) -> LoadError {
    invalid(format!("{what} is truncated"))
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
