//! 2D and 3D copies (`cuMemcpy2D*`, `cuMemcpy3D*`, as `cudaMemcpy2D`/`3D` use them). Host
//! sides are gathered into (or scattered from) one dense buffer, so a copy is one
//! `MemcpyStrided` request whatever its row count. CUDA arrays are not supported.

use super::guard;
use super::memory::{is_device_address, stream_of};
use crate::client::ReplyData;
use gpufn_proto::CuResult;
use gpufn_proto::message::{CopyDirection, DeviceRegion, Request, StreamId};

const MEMORY_TYPE_HOST: u32 = 1;
const MEMORY_TYPE_DEVICE: u32 = 2;
const MEMORY_TYPE_UNIFIED: u32 = 4;

/// `CUDA_MEMCPY2D`.
#[repr(C)]
pub struct Memcpy2D {
    src_x: usize,
    src_y: usize,
    src_type: u32,
    src_host: usize,
    src_device: u64,
    src_array: usize,
    src_pitch: usize,
    dst_x: usize,
    dst_y: usize,
    dst_type: u32,
    dst_host: usize,
    dst_device: u64,
    dst_array: usize,
    dst_pitch: usize,
    width: usize,
    height: usize,
}

/// `CUDA_MEMCPY3D`.
#[repr(C)]
pub struct Memcpy3D {
    src_x: usize,
    src_y: usize,
    src_z: usize,
    src_lod: usize,
    src_type: u32,
    src_host: usize,
    src_device: u64,
    src_array: usize,
    _reserved0: usize,
    src_pitch: usize,
    src_height: usize,
    dst_x: usize,
    dst_y: usize,
    dst_z: usize,
    dst_lod: usize,
    dst_type: u32,
    dst_host: usize,
    dst_device: u64,
    dst_array: usize,
    _reserved1: usize,
    dst_pitch: usize,
    dst_height: usize,
    width: usize,
    height: usize,
    depth: usize,
}

/// One side of a copy, resolved: where its first byte is, and how rows and slices advance.
#[derive(Debug, Clone, Copy)]
struct Side {
    device: bool,
    start: u64,
    pitch: u64,
    rows_per_slice: u64,
}

fn side(
    kind: u32,
    host: usize,
    device: u64,
    array: usize,
    offset: [usize; 3],
    pitch: usize,
    height: usize,
) -> Result<Side, CuResult> {
    let (is_device, base) = match kind {
        MEMORY_TYPE_HOST => (false, host as u64),
        MEMORY_TYPE_DEVICE => (true, device),
        MEMORY_TYPE_UNIFIED => (is_device_address(device), device),
        _ if array != 0 => return Err(CuResult::ERROR_NOT_SUPPORTED),
        _ => return Err(CuResult::ERROR_INVALID_VALUE),
    };
    let [x, y, z] = offset.map(|v| v as u64);
    let (pitch, rows) = (pitch as u64, height as u64);
    Ok(Side {
        device: is_device,
        start: base + x + y * pitch + z * rows * pitch,
        pitch,
        rows_per_slice: rows,
    })
}

fn region(side: Side) -> DeviceRegion {
    DeviceRegion {
        address: side.start,
        pitch: side.pitch,
        rows_per_slice: side.rows_per_slice,
    }
}

/// The host address of row `(y, z)` of a host side.
fn host_row(side: Side, y: u64, z: u64) -> usize {
    (side.start + (z * side.rows_per_slice + y) * side.pitch) as usize
}

fn copy(src: Side, dst: Side, extent: [u64; 3], stream: Option<StreamId>) -> Result<(), CuResult> {
    let [width, height, depth] = extent;
    if width == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    if width > src.pitch.max(width) || (height > 1 && (width > src.pitch || width > dst.pitch)) {
        return Err(CuResult::ERROR_INVALID_VALUE);
    }
    let rows = (0..depth).flat_map(|z| (0..height).map(move |y| (y, z)));
    let w = width as usize;
    let session = super::session()?;
    match (src.device, dst.device) {
        (false, true) => {
            let mut dense = Vec::with_capacity(w * (height * depth) as usize);
            for (y, z) in rows {
                // SAFETY: the program describes `width` readable bytes at each host row.
                dense.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(host_row(src, y, z) as *const u8, w)
                });
            }
            session.post(
                &Request::MemcpyStrided {
                    direction: CopyDirection::HostToDevice,
                    dst: Some(region(dst)),
                    src: None,
                    extent,
                    stream,
                },
                &[&dense],
            )
        }
        (true, false) => {
            let mut dense = vec![0u8; w * (height * depth) as usize];
            session.call(
                &Request::MemcpyStrided {
                    direction: CopyDirection::DeviceToHost,
                    dst: None,
                    src: Some(region(src)),
                    extent,
                    stream,
                },
                &[],
                ReplyData::Into(&mut dense),
            )?;
            for (i, (y, z)) in rows.enumerate() {
                // SAFETY: the program describes `width` writable bytes at each host row.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        dense.as_ptr().add(i * w),
                        host_row(dst, y, z) as *mut u8,
                        w,
                    )
                };
            }
            Ok(())
        }
        (true, true) => session.post(
            &Request::MemcpyStrided {
                direction: CopyDirection::DeviceToDevice,
                dst: Some(region(dst)),
                src: Some(region(src)),
                extent,
                stream,
            },
            &[],
        ),
        (false, false) => {
            for (y, z) in rows {
                // SAFETY: both host sides describe `width` bytes per row.
                unsafe {
                    std::ptr::copy(
                        host_row(src, y, z) as *const u8,
                        host_row(dst, y, z) as *mut u8,
                        w,
                    )
                };
            }
            Ok(())
        }
    }
}

fn copy_2d(p: *const Memcpy2D, stream: Option<StreamId>) -> Result<(), CuResult> {
    // SAFETY: the program passes a CUDA_MEMCPY2D.
    let p = unsafe { p.as_ref() }.ok_or(CuResult::ERROR_INVALID_VALUE)?;
    let src = side(
        p.src_type,
        p.src_host,
        p.src_device,
        p.src_array,
        [p.src_x, p.src_y, 0],
        p.src_pitch.max(p.width),
        p.height,
    )?;
    let dst = side(
        p.dst_type,
        p.dst_host,
        p.dst_device,
        p.dst_array,
        [p.dst_x, p.dst_y, 0],
        p.dst_pitch.max(p.width),
        p.height,
    )?;
    copy(src, dst, [p.width as u64, p.height as u64, 1], stream)
}

fn copy_3d(p: *const Memcpy3D, stream: Option<StreamId>) -> Result<(), CuResult> {
    // SAFETY: the program passes a CUDA_MEMCPY3D.
    let p = unsafe { p.as_ref() }.ok_or(CuResult::ERROR_INVALID_VALUE)?;
    let src = side(
        p.src_type,
        p.src_host,
        p.src_device,
        p.src_array,
        [p.src_x, p.src_y, p.src_z],
        p.src_pitch.max(p.width),
        p.src_height.max(p.height),
    )?;
    let dst = side(
        p.dst_type,
        p.dst_host,
        p.dst_device,
        p.dst_array,
        [p.dst_x, p.dst_y, p.dst_z],
        p.dst_pitch.max(p.width),
        p.dst_height.max(p.height),
    )?;
    copy(
        src,
        dst,
        [p.width as u64, p.height as u64, p.depth as u64],
        stream,
    )
}

macro_rules! strided_exports {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) => $body:expr; )*) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $name($($arg: $ty),*) -> CuResult {
                guard(stringify!($name), || $body)
            }
        )*
    };
}

strided_exports! {
    cuMemcpy2D_v2(p: *const Memcpy2D) => copy_2d(p, None);
    cuMemcpy2D_v2_ptds(p: *const Memcpy2D) => copy_2d(p, None);
    cuMemcpy2DUnaligned_v2(p: *const Memcpy2D) => copy_2d(p, None);
    cuMemcpy2DUnaligned_v2_ptds(p: *const Memcpy2D) => copy_2d(p, None);
    cuMemcpy2DAsync_v2(p: *const Memcpy2D, s: usize) => copy_2d(p, stream_of(s));
    cuMemcpy2DAsync_v2_ptsz(p: *const Memcpy2D, s: usize) => copy_2d(p, stream_of(s));
    cuMemcpy3D_v2(p: *const Memcpy3D) => copy_3d(p, None);
    cuMemcpy3D_v2_ptds(p: *const Memcpy3D) => copy_3d(p, None);
    cuMemcpy3DAsync_v2(p: *const Memcpy3D, s: usize) => copy_3d(p, stream_of(s));
    cuMemcpy3DAsync_v2_ptsz(p: *const Memcpy3D, s: usize) => copy_3d(p, stream_of(s));
}
