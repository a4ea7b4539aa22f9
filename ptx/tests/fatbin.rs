//! The fatbin reader on synthetic images (every container and compression kind), plus
//! property tests: mutated fatbins and mutated PTX never panic the reader, parser or loader.

mod common;
use common::memory;
use gpufn_ptx::fatbin::{EntryKind, Image, read_image, select_ptx};
use gpufn_ptx::{CudaCode, LoadError, Module};
use proptest::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

const VECTOR_ADD: &str = include_str!("../benches/vector_add.ptx");
const MATMUL: &str = include_str!("../benches/matmul.ptx");

#[derive(Clone, Copy)]
enum Pack {
    Plain,
    Lz4,
    Zstd,
}

/// One fatbin entry as nvcc lays it out (64-byte header, 72 for PTX with the options pair).
fn entry(kind: u16, arch: u32, payload: &[u8], pack: Pack) -> Vec<u8> {
    let (stored, flag) = match pack {
        Pack::Plain => (payload.to_vec(), 0u64),
        Pack::Lz4 => (lz4_flex::block::compress(payload), 0x2000),
        Pack::Zstd => (
            ruzstd::encoding::compress_to_vec(payload, ruzstd::encoding::CompressionLevel::Fastest),
            0x8000,
        ),
    };
    let header_size: u32 = if kind == 1 { 72 } else { 64 };
    let padded = stored.len().div_ceil(8) * 8;
    let mut e = vec![0u8; header_size as usize];
    e[0..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
    e[4..8].copy_from_slice(&header_size.to_le_bytes());
    e[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
    if !matches!(pack, Pack::Plain) {
        e[0x10..0x14].copy_from_slice(&(stored.len() as u32).to_le_bytes());
    }
    e[0x18..0x1a].copy_from_slice(&5u16.to_le_bytes());
    e[0x1a..0x1c].copy_from_slice(&9u16.to_le_bytes());
    e[0x1c..0x20].copy_from_slice(&arch.to_le_bytes());
    e[0x28..0x30].copy_from_slice(&(0x11 | flag).to_le_bytes());
    e[0x38..0x40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    e.extend_from_slice(&stored);
    e.resize(header_size as usize + padded, 0);
    e
}

fn fatbin(entries: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = entries.concat();
    let mut f = Vec::new();
    f.extend_from_slice(&0xBA55ED50u32.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&16u16.to_le_bytes());
    f.extend_from_slice(&(body.len() as u64).to_le_bytes());
    f.extend_from_slice(&body);
    f
}

fn ptx_for(arch: u32) -> String {
    VECTOR_ADD.replace(".target sm_90", &format!(".target sm_{arch}"))
}

#[test]
fn every_container_and_compression_is_read() {
    for pack in [Pack::Plain, Pack::Lz4, Pack::Zstd] {
        let image = fatbin(&[
            entry(2, 90, b"\x7fELF-not-really", Pack::Plain),
            entry(1, 90, VECTOR_ADD.as_bytes(), pack),
        ]);
        assert_eq!(
            select_ptx(&read_image(&image).unwrap(), 90).unwrap(),
            VECTOR_ADD
        );
        // The wrapper as the stub sends it: 24 wrapper bytes, then the fatbin.
        let mut wrapped = Vec::new();
        wrapped.extend_from_slice(&0x466243B1u32.to_le_bytes());
        wrapped.extend_from_slice(&1u32.to_le_bytes());
        wrapped.extend_from_slice(&[0u8; 16]);
        wrapped.extend_from_slice(&image);
        assert_eq!(
            select_ptx(&read_image(&wrapped).unwrap(), 90).unwrap(),
            VECTOR_ADD
        );
        let mem = memory();
        let m = Module::load(&wrapped, 90, &mem).unwrap();
        assert_eq!(m.kernels()[0].name, "vector_add");
        assert_eq!(
            m.kernels()[0]
                .params
                .iter()
                .map(|p| (p.offset, p.size))
                .collect::<Vec<_>>(),
            vec![(0, 8), (8, 8), (16, 8), (24, 4)]
        );
    }
    // Two fatbins back to back (as in a .nv_fatbin section), PTX in the second.
    let image = [
        fatbin(&[entry(2, 75, b"elf", Pack::Plain)]),
        fatbin(&[entry(1, 75, VECTOR_ADD.as_bytes(), Pack::Lz4)]),
    ]
    .concat();
    match read_image(&image).unwrap() {
        Image::Fatbin(entries) => assert_eq!(
            entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EntryKind::Elf, EntryKind::Ptx]
        ),
        other => panic!("{other:?}"),
    }
    // Bare PTX, NUL-terminated as cuModuleLoadData gets it.
    let mut text = VECTOR_ADD.as_bytes().to_vec();
    text.push(0);
    assert_eq!(
        select_ptx(&read_image(&text).unwrap(), 90).unwrap(),
        VECTOR_ADD
    );
}

#[test]
fn picks_the_highest_ptx_not_above_the_device() {
    let image = fatbin(&[
        entry(1, 75, ptx_for(75).as_bytes(), Pack::Zstd),
        entry(1, 100, ptx_for(100).as_bytes(), Pack::Zstd),
        entry(1, 90, ptx_for(90).as_bytes(), Pack::Lz4),
        entry(2, 90, b"elf", Pack::Plain),
    ]);
    let img = read_image(&image).unwrap();
    assert!(select_ptx(&img, 90).unwrap().contains("sm_90"));
    assert!(select_ptx(&img, 89).unwrap().contains("sm_75"));
    assert!(select_ptx(&img, 120).unwrap().contains("sm_100"));
    let err = select_ptx(&img, 70).unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::NoBinaryForGpu);
    assert!(err.to_string().contains("compute_75"), "{err}");
}

#[test]
fn machine_code_alone_is_not_runnable_and_says_how_to_fix_it() {
    let image = fatbin(&[entry(2, 90, b"\x7fELF", Pack::Plain)]);
    let err = Module::load(&image, 90, &memory()).unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::NoBinaryForGpu);
    assert!(
        err.to_string()
            .contains("-gencode arch=compute_90,code=compute_90"),
        "{err}"
    );
    let err = Module::load(b"\x7fELF\x02\x01\x01", 90, &memory()).unwrap_err();
    assert_eq!(err.cuda_code(), CudaCode::NoBinaryForGpu);
    assert!(err.to_string().contains("cubin"), "{err}");
    for junk in [&b"garbage bytes"[..], &[0xff, 0xfe, 0x00][..], &[][..]] {
        assert!(matches!(
            Module::load(junk, 90, &memory()),
            Err(LoadError::InvalidImage(_))
        ));
    }
}

/// A PTX text with many features, used as a fuzzing seed.
const FEATURES: &str = r#".version 8.0
.target sm_90
.address_size 64
.global .align 4 .b32 table[4] = {1, 2, 3, 4};
.const .align 8 .f64 k = 0d3FF0000000000000;
.extern .shared .align 16 .b8 dyn[];
.func (.param .b32 r) f(.param .b32 x)
{
    .reg .b32 %r<4>;
    ld.param.b32 %r1, [x];
    add.s32 %r2, %r1, 1;
    st.param.b32 [r], %r2;
    ret;
}
.visible .entry k1(.param .u64 p, .param .u32 n)
{
    .reg .pred %p<4>;
    .reg .b32 %r<20>;
    .reg .f32 %f<8>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [p];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    setp.ge.u32 %p1, %r2, %r1;
    @%p1 bra DONE;
    ld.global.u32 %r3, [table+4];
    shfl.sync.bfly.b32 %r4|%p2, %r3, 1, 31, -1;
    { .param .b32 a; .param .b32 b;
      st.param.b32 [a], %r4;
      call.uni (b), f, (a);
      ld.param.b32 %r5, [b]; }
    cvt.rn.f32.s32 %f1, %r5;
    ex2.approx.ftz.f32 %f2, %f1;
    mov.u32 %r6, dyn;
    st.shared.f32 [%r6], %f2;
    bar.sync 0;
    atom.global.add.u32 %r7, [%rd1], %r5;
    vote.sync.ballot.b32 %r8, %p2, -1;
    prmt.b32 %r9, %r8, %r7, 0x3210;
DONE:
    ret;
}
"#;

fn mutate(seed: &str, ops: &[(u8, usize, usize, u8)]) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for &(op, x, y, byte) in ops {
        if b.is_empty() {
            break;
        }
        let (i, j) = (x % b.len(), y % b.len());
        match op % 5 {
            0 => b[i] = byte,
            1 => b.truncate(i),
            2 => {
                let (lo, hi) = (i.min(j), i.max(j));
                b.drain(lo..hi.min(lo + 64));
            }
            3 => {
                // Swap two whitespace-separated tokens.
                let text = String::from_utf8_lossy(&b).into_owned();
                let mut toks: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
                if !toks.is_empty() {
                    let (ti, tj) = (x % toks.len(), y % toks.len());
                    toks.swap(ti, tj);
                }
                b = toks.concat().into_bytes();
            }
            _ => {
                let (lo, hi) = (i.min(j), i.max(j).min(i.min(j) + 64));
                let chunk = b[lo..hi].to_vec();
                b.splice(i..i, chunk);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_ptx_never_panics_the_loader(
        seed in 0usize..3,
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let seed = [VECTOR_ADD, MATMUL, FEATURES][seed];
        let text = mutate(seed, &ops);
        let mem = memory();
        if let Ok(s) = std::str::from_utf8(&text) {
            let _ = gpufn_ptx::check_ptx_syntax(s);
        }
        // Whatever loads also runs without panicking: garbage parameters, and a watchdog
        // that cancels launches which loop forever.
        if let Ok(module) = Module::load(&text, 90, &mem) {
            let buf = mem.allocate(4096).unwrap();
            for k in module.kernels() {
                let mut params = vec![0u8; k.param_size as usize];
                for p in &k.params {
                    if p.size == 8 {
                        params[p.offset as usize..p.offset as usize + 8].copy_from_slice(&buf.to_le_bytes());
                    } else if p.size == 4 {
                        params[p.offset as usize..p.offset as usize + 4].copy_from_slice(&16u32.to_le_bytes());
                    }
                }
                let cancel = AtomicBool::new(false);
                let done = AtomicBool::new(false);
                std::thread::scope(|s| {
                    s.spawn(|| {
                        for _ in 0..100 {
                            if done.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        cancel.store(true, Ordering::Relaxed);
                    });
                    let config = gpufn_ptx::LaunchConfig { grid: [2, 1, 1], block: [64, 1, 1], dynamic_shared: 64 };
                    let _ = module.launch_cancellable(&k.name, config, &params, &mem, 2, &cancel);
                    done.store(true, Ordering::Relaxed);
                });
            }
        }
    }

    #[test]
    fn mutated_fatbins_never_panic_the_reader(
        pack in 0u8..3,
        ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()), 1..4),
    ) {
        let pack = [Pack::Plain, Pack::Lz4, Pack::Zstd][pack as usize];
        let image = fatbin(&[entry(2, 90, b"\x7fELF....", Pack::Plain), entry(1, 90, FEATURES.as_bytes(), pack)]);
        let mut bytes = image.clone();
        for &(op, x, _, byte) in &ops {
            if bytes.is_empty() { break; }
            let i = x % bytes.len();
            if op % 3 == 0 { bytes.truncate(i) } else { bytes[i] = byte }
        }
        if let Ok(img) = read_image(&bytes) {
            let _ = select_ptx(&img, 90);
        }
        let _ = Module::load(&bytes, 90, &memory());
    }

    #[test]
    fn fatbin_size_fields_cannot_exhaust_memory(size in any::<u64>(), compressed in any::<u32>(), uncompressed in any::<u64>()) {
        let mut image = fatbin(&[entry(1, 90, FEATURES.as_bytes(), Pack::Lz4)]);
        image[16 + 8..16 + 16].copy_from_slice(&size.to_le_bytes());
        image[16 + 0x10..16 + 0x14].copy_from_slice(&compressed.to_le_bytes());
        image[16 + 0x38..16 + 0x40].copy_from_slice(&uncompressed.to_le_bytes());
        if let Ok(img) = read_image(&image) {
            let _ = select_ptx(&img, 90);
        }
    }
}
