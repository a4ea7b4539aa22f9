//! Finding the bytes of a module image given only a pointer, as `cuModuleLoadData`,
//! `cuLibraryLoadData` and the runtime's loaders receive it.
//!
//! Recognised: the fatbin wrapper nvcc emits (`__fatBinC_Wrapper_t`, magic `0x466243B1`,
//! pointing at the fatbin), a fatbin (`0xBA55ED50`; header + entries), an ELF cubin (size
//! from its section and program header tables) and NUL-terminated PTX text. The worker
//! receives the plain image (never the wrapper, whose pointers mean nothing there).

use std::ffi::{CStr, c_void};

const WRAPPER_MAGIC: u32 = 0x4662_43B1;
const FATBIN_MAGIC: u32 = 0xBA55_ED50;

/// The image at `ptr` as a byte slice, or `None` if it is not recognisable.
///
/// # Safety
/// `ptr` must point at a readable module image of one of the recognised kinds that stays
/// alive and unchanged for the returned lifetime (as the CUDA API requires of its callers).
pub unsafe fn image_bytes<'a>(ptr: *const c_void) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: every image kind starts with at least four readable bytes.
    let magic = unsafe { ptr.cast::<u32>().read_unaligned() };
    match magic {
        WRAPPER_MAGIC => {
            // SAFETY: a wrapper is { u32 magic, u32 version, const void *data, ... }.
            let data = unsafe {
                ptr.cast::<u8>()
                    .add(8)
                    .cast::<*const c_void>()
                    .read_unaligned()
            };
            // SAFETY: `data` is the fatbin the wrapper describes.
            unsafe { fatbin_bytes(data) }
        }
        // SAFETY: forwarded from the caller.
        FATBIN_MAGIC => unsafe { fatbin_bytes(ptr) },
        // SAFETY: an ELF image is at least one ELF header long.
        0x464C_457F => unsafe { elf_bytes(ptr) },
        _ => {
            // SAFETY: anything else must be NUL-terminated PTX text.
            let text = unsafe { CStr::from_ptr(ptr.cast()) };
            Some(text.to_bytes())
        }
    }
}

/// # Safety
/// `ptr` must point at a fatbin header followed by its entries.
unsafe fn fatbin_bytes<'a>(ptr: *const c_void) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    let base = ptr.cast::<u8>();
    // SAFETY: the fatbin header is 16 bytes: magic, u16 version, u16 header size, u64 size.
    let (magic, header_size, fat_size) = unsafe {
        (
            base.cast::<u32>().read_unaligned(),
            base.add(6).cast::<u16>().read_unaligned(),
            base.add(8).cast::<u64>().read_unaligned(),
        )
    };
    if magic != FATBIN_MAGIC {
        return None;
    }
    let len = usize::from(header_size) + usize::try_from(fat_size).ok()?;
    // SAFETY: the header states the container's length.
    Some(unsafe { std::slice::from_raw_parts(base, len) })
}

/// # Safety
/// `ptr` must point at a complete 64-bit ELF image.
unsafe fn elf_bytes<'a>(ptr: *const c_void) -> Option<&'a [u8]> {
    let base = ptr.cast::<u8>();
    // SAFETY: the 64-byte ELF64 header is readable.
    let header = unsafe { std::slice::from_raw_parts(base, 64) };
    if header[4] != 2 {
        return None; // not ELF64
    }
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().unwrap_or([0; 8]));
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([header[o], header[o + 1]]));
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum) = (u16_at(0x3A), u16_at(0x3C));
    let mut end = (shoff + shentsize * shnum)
        .max(phoff + phentsize * phnum)
        .max(64);
    for i in 0..shnum {
        let entry = shoff + i * shentsize;
        // SAFETY: section headers lie inside the image, as its header says.
        let (kind, offset, size) = unsafe {
            let e = base.add(entry as usize);
            (
                e.add(4).cast::<u32>().read_unaligned(),
                e.add(0x18).cast::<u64>().read_unaligned(),
                e.add(0x20).cast::<u64>().read_unaligned(),
            )
        };
        if kind != 8 {
            // SHT_NOBITS occupies no file bytes.
            end = end.max(offset + size);
        }
    }
    // SAFETY: `end` is the furthest byte the image's own tables describe.
    Some(unsafe { std::slice::from_raw_parts(base, usize::try_from(end).ok()?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_text_is_read_up_to_its_nul() {
        let ptx = b".version 9.5\n.target sm_90\n\0trailing";
        // SAFETY: a NUL-terminated buffer.
        let bytes = unsafe { image_bytes(ptx.as_ptr().cast()) }.unwrap();
        assert_eq!(bytes, b".version 9.5\n.target sm_90\n");
    }

    #[test]
    fn wrapper_and_fatbin_resolve_to_the_fatbin_bytes() {
        let mut fatbin = [0u8; 16 + 40];
        fatbin[..4].copy_from_slice(&FATBIN_MAGIC.to_le_bytes());
        fatbin[4..6].copy_from_slice(&1u16.to_le_bytes());
        fatbin[6..8].copy_from_slice(&16u16.to_le_bytes());
        fatbin[8..16].copy_from_slice(&32u64.to_le_bytes());
        let mut wrapper = [0u8; 24];
        wrapper[..4].copy_from_slice(&WRAPPER_MAGIC.to_le_bytes());
        wrapper[4..8].copy_from_slice(&1u32.to_le_bytes());
        wrapper[8..16].copy_from_slice(&(fatbin.as_ptr() as u64).to_le_bytes());
        // SAFETY: both buffers are alive and well-formed.
        let direct = unsafe { image_bytes(fatbin.as_ptr().cast()) }.unwrap();
        // SAFETY: as above.
        let wrapped = unsafe { image_bytes(wrapper.as_ptr().cast()) }.unwrap();
        assert_eq!(direct.len(), 48);
        assert_eq!(direct.as_ptr(), wrapped.as_ptr());
        assert_eq!(direct.len(), wrapped.len());
    }
}
