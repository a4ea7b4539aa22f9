//! The `.cu` corpus in `tests/kernels/`, compiled with the project's CUDA toolchain for
//! `-arch=sm_90` (compressed fatbin with SASS and PTX) and `-arch=compute_80` (PTX only),
//! loaded with the fatbin reader, run on the CPU interpreter and compared with CPU
//! references. Integers must match exactly; floats within the tolerance stated per test.

#![allow(clippy::needless_range_loop)]

mod common;
use common::*;

fn lcg(seed: &mut u64) -> u32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| (lcg(&mut s) % 2000) as f32 / 100.0 - 10.0)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}

#[test]
fn vector_add() {
    let mem = memory();
    for m in load_builds("vector_add", &mem) {
        let n = 1000;
        let (a, b) = (floats(n, 1), floats(n, 2));
        let (da, db, dc) = (
            upload(&mem, &a),
            upload(&mem, &b),
            upload(&mem, &vec![0f32; n]),
        );
        run(
            &m,
            &mem,
            "vector_add",
            cfg([4, 1, 1], [256, 1, 1], 0),
            &[Arg::Ptr(da), Arg::Ptr(db), Arg::Ptr(dc), Arg::I32(n as i32)],
        );
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(
            download_f32(&mem, dc, n),
            want,
            "float addition is exact per element"
        );
    }
}

#[test]
fn saxpy() {
    let mem = memory();
    for m in load_builds("saxpy", &mem) {
        let n = 5000;
        let (x, y) = (floats(n, 3), floats(n, 4));
        let (dx, dy) = (upload(&mem, &x), upload(&mem, &y));
        run(
            &m,
            &mem,
            "saxpy",
            cfg([3, 1, 1], [128, 1, 1], 0),
            &[
                Arg::I32(n as i32),
                Arg::F32(2.5),
                Arg::Ptr(dx),
                Arg::Ptr(dy),
            ],
        );
        let want: Vec<f32> = x
            .iter()
            .zip(&y)
            .map(|(x, y)| 2.5f32.mul_add(*x, *y))
            .collect();
        // nvcc contracts a*x+y into one fma, as the reference does: exact.
        assert_eq!(download_f32(&mem, dy, n), want);
    }
}

#[test]
fn tiled_matmul_with_shared_memory() {
    let mem = memory();
    for m in load_builds("matmul", &mem) {
        let (rows, cols, k) = (37, 45, 50);
        let (a, b) = (floats(rows * k, 5), floats(k * cols, 6));
        let (da, db, dc) = (
            upload(&mem, &a),
            upload(&mem, &b),
            upload(&mem, &vec![0f32; rows * cols]),
        );
        let grid = [cols.div_ceil(16) as u32, rows.div_ceil(16) as u32, 1];
        run(
            &m,
            &mem,
            "matmul",
            cfg(grid, [16, 16, 1], 0),
            &[
                Arg::Ptr(da),
                Arg::Ptr(db),
                Arg::Ptr(dc),
                Arg::I32(rows as i32),
                Arg::I32(cols as i32),
                Arg::I32(k as i32),
            ],
        );
        let mut want = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                want[r * cols + c] = (0..k)
                    .map(|i| a[r * k + i] as f64 * b[i * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        assert_close(&download_f32(&mem, dc, rows * cols), &want, 1e-4, "C");
    }
}

#[test]
fn reduction_with_warp_shuffles_and_atomics() {
    let mem = memory();
    for m in load_builds("reduce", &mem) {
        let n = 100_000;
        let mut s = 9;
        let data: Vec<i32> = (0..n).map(|_| (lcg(&mut s) % 2001) as i32 - 1000).collect();
        let (din, dout) = (upload(&mem, &data), upload(&mem, &[0u64]));
        run(
            &m,
            &mem,
            "reduce_int",
            cfg([16, 1, 1], [256, 1, 1], 0),
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::I32(n as i32)],
        );
        let mut got = [0u8; 8];
        mem.read(dout, &mut got).unwrap();
        assert_eq!(
            i64::from_le_bytes(got),
            data.iter().map(|&x| x as i64).sum::<i64>()
        );

        let f = floats(n, 10);
        let (din, dout) = (upload(&mem, &f), upload(&mem, &[0f32]));
        run(
            &m,
            &mem,
            "reduce_float",
            cfg([16, 1, 1], [256, 1, 1], 0),
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::I32(n as i32)],
        );
        let want = f.iter().map(|&x| x as f64).sum::<f64>() as f32;
        let got = download_f32(&mem, dout, 1)[0];
        assert!((got - want).abs() < 0.5, "float sum {got} vs {want}");
    }
}

#[test]
fn softmax_rows() {
    let mem = memory();
    for m in load_builds("softmax", &mem) {
        let (rows, cols) = (6, 300);
        let x = floats(rows * cols, 11);
        let (dx, dy) = (upload(&mem, &x), upload(&mem, &vec![0f32; rows * cols]));
        run(
            &m,
            &mem,
            "softmax",
            cfg([rows as u32, 1, 1], [128, 1, 1], 0),
            &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(cols as i32)],
        );
        let mut want = Vec::new();
        for r in x.chunks(cols) {
            let mx = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = r.iter().map(|&v| ((v - mx) as f64).exp()).sum();
            want.extend(r.iter().map(|&v| (((v - mx) as f64).exp() / sum) as f32));
        }
        let got = download_f32(&mem, dy, rows * cols);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.max(1e-3) * 10.0 + 1e-9,
                "softmax[{i}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn image_blur_2d() {
    let mem = memory();
    for m in load_builds("blur", &mem) {
        let (w, h) = (53usize, 37usize);
        let mut s = 12;
        let img: Vec<u8> = (0..w * h).map(|_| lcg(&mut s) as u8).collect();
        let (din, dout) = (upload(&mem, &img), upload(&mem, &vec![0u8; w * h]));
        let grid = [w.div_ceil(16) as u32, h.div_ceil(16) as u32, 1];
        run(
            &m,
            &mem,
            "blur",
            cfg(grid, [16, 16, 1], 0),
            &[
                Arg::Ptr(din),
                Arg::Ptr(dout),
                Arg::I32(w as i32),
                Arg::I32(h as i32),
            ],
        );
        let mut got = vec![0u8; w * h];
        mem.read(dout, &mut got).unwrap();
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let xx = (x as i32 + dx).clamp(0, w as i32 - 1) as usize;
                        let yy = (y as i32 + dy).clamp(0, h as i32 - 1) as usize;
                        sum += img[yy * w + xx] as u32;
                    }
                }
                assert_eq!(got[y * w + x] as u32, sum / 9, "pixel ({x},{y})");
            }
        }
    }
}

#[test]
fn histogram_with_shared_atomics() {
    let mem = memory();
    for m in load_builds("histogram", &mem) {
        let n = 50_000;
        let mut s = 13;
        let data: Vec<u8> = (0..n).map(|_| (lcg(&mut s) % 97) as u8 * 2).collect();
        let (din, dbins) = (upload(&mem, &data), upload(&mem, &[0u32; 256]));
        run(
            &m,
            &mem,
            "histogram",
            cfg([8, 1, 1], [256, 1, 1], 0),
            &[Arg::Ptr(din), Arg::I32(n), Arg::Ptr(dbins)],
        );
        let mut want = vec![0u32; 256];
        for &d in &data {
            want[d as usize] += 1;
        }
        assert_eq!(download_u32(&mem, dbins, 256), want);
    }
}

#[test]
fn matrix_transpose() {
    let mem = memory();
    for m in load_builds("transpose", &mem) {
        let (rows, cols) = (70, 45);
        let a = floats(rows * cols, 14);
        let (din, dout) = (upload(&mem, &a), upload(&mem, &vec![0f32; rows * cols]));
        let grid = [cols.div_ceil(32) as u32, rows.div_ceil(32) as u32, 1];
        run(
            &m,
            &mem,
            "transpose",
            cfg(grid, [32, 8, 1], 0),
            &[
                Arg::Ptr(din),
                Arg::Ptr(dout),
                Arg::I32(rows as i32),
                Arg::I32(cols as i32),
            ],
        );
        let got = download_f32(&mem, dout, rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(got[c * rows + r], a[r * cols + c]);
            }
        }
    }
}

#[test]
fn inclusive_scan() {
    let mem = memory();
    for m in load_builds("scan", &mem) {
        let (n, block) = (3000usize, 1024usize);
        let mut s = 15;
        let data: Vec<i32> = (0..n).map(|_| (lcg(&mut s) % 100) as i32 - 30).collect();
        let (din, dout) = (upload(&mem, &data), upload(&mem, &vec![0i32; n]));
        run(
            &m,
            &mem,
            "inclusive_scan",
            cfg([n.div_ceil(block) as u32, 1, 1], [block as u32, 1, 1], 0),
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::I32(n as i32)],
        );
        let got = download_u32(&mem, dout, n);
        for (bi, chunk) in data.chunks(block).enumerate() {
            let mut acc = 0i32;
            for (j, &v) in chunk.iter().enumerate() {
                acc += v;
                assert_eq!(
                    got[bi * block + j] as i32,
                    acc,
                    "element {}",
                    bi * block + j
                );
            }
        }
    }
}

#[test]
fn noinline_and_recursive_device_functions() {
    let mem = memory();
    for m in load_builds("noinline", &mem) {
        let n = 100;
        let vecs: Vec<f32> = (0..2 * n).map(|i| i as f32 * 0.25).collect();
        let (ds, df, dv) = (
            upload(&mem, &vec![0i32; n]),
            upload(&mem, &vec![0u64; n]),
            upload(&mem, &vecs),
        );
        run(
            &m,
            &mem,
            "calls",
            cfg([2, 1, 1], [64, 1, 1], 0),
            &[Arg::Ptr(ds), Arg::Ptr(df), Arg::Ptr(dv), Arg::I32(n as i32)],
        );
        let steps = download_u32(&mem, ds, n);
        for i in 0..n {
            let (mut x, mut c) = (i as u64 + 1, 0);
            while x != 1 {
                x = if x & 1 == 1 { 3 * x + 1 } else { x / 2 };
                c += 1;
            }
            assert_eq!(steps[i], c, "collatz({})", i + 1);
        }
        let mut fb = vec![0u8; n * 8];
        mem.read(df, &mut fb).unwrap();
        let fibs: Vec<u64> = fb
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let fib = |k: usize| (0..k).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
        for (i, &f) in fibs.iter().enumerate() {
            assert_eq!(f, fib(i % 20));
        }
        let want: Vec<f32> = vecs.iter().map(|v| v * 2.0).collect();
        assert_eq!(download_f32(&mem, dv, 2 * n), want);

        let mut s = 19;
        let data: Vec<i32> = (0..n * 12)
            .map(|_| (lcg(&mut s) % 1000) as i32 - 500)
            .collect();
        let (din, dout) = (upload(&mem, &data), upload(&mem, &vec![0i32; n * 12]));
        run(
            &m,
            &mem,
            "local_sort",
            cfg([2, 1, 1], [64, 1, 1], 0),
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::I32(n as i32)],
        );
        let got = download_u32(&mem, dout, n * 12);
        for (t, chunk) in data.chunks(12).enumerate() {
            let mut sorted = chunk.to_vec();
            sorted.sort();
            let g: Vec<i32> = got[t * 12..t * 12 + 12].iter().map(|&v| v as i32).collect();
            assert_eq!(g, sorted, "thread {t}");
        }
    }
}

fn f16_bits(x: f32) -> u16 {
    // Reference: round-to-nearest-even through f64 arithmetic on the bit pattern.
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = x.abs();
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        let q = (a as f64 / 5.960_464_477_539_063e-8).round_ties_even() as u16;
        return sign | q;
    }
    let e = a.log2().floor() as i32;
    let m = (a as f64 / 2f64.powi(e) - 1.0) * 1024.0;
    let mut q = m.round_ties_even() as u32;
    let mut e = e;
    if q == 1024 {
        q = 0;
        e += 1;
    }
    sign | (((e + 15) as u16) << 10) | q as u16
}

fn f16_value(h: u16) -> f32 {
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as f32;
    let v = if e == 31 {
        f32::INFINITY
    } else if e == 0 {
        m * 2f32.powi(-24)
    } else {
        (1.0 + m / 1024.0) * 2f32.powi(e - 15)
    };
    if h & 0x8000 != 0 { -v } else { v }
}

#[test]
fn half_precision_conversions() {
    let mem = memory();
    for m in load_builds("half", &mem) {
        let n = 64;
        let mut x = floats(n, 16);
        x[0] = 1.0;
        x[1] = 65504.0;
        x[2] = 1e-6;
        x[3] = -0.333;
        let din = upload(&mem, &x);
        let (dh, dback, dsum) = (
            upload(&mem, &vec![0u16; n]),
            upload(&mem, &vec![0f32; n]),
            upload(&mem, &vec![0f32; n]),
        );
        let (db, dbback) = (upload(&mem, &vec![0u16; n]), upload(&mem, &vec![0f32; n]));
        run(
            &m,
            &mem,
            "half_ops",
            cfg([1, 1, 1], [64, 1, 1], 0),
            &[
                Arg::Ptr(din),
                Arg::Ptr(dh),
                Arg::Ptr(dback),
                Arg::Ptr(dsum),
                Arg::Ptr(db),
                Arg::Ptr(dbback),
                Arg::I32(n as i32),
            ],
        );
        let h = download_u16(&mem, dh, n);
        let back = download_f32(&mem, dback, n);
        let sum = download_f32(&mem, dsum, n);
        let b = download_u16(&mem, db, n);
        let bback = download_f32(&mem, dbback, n);
        for i in 0..n {
            let want = f16_bits(x[i]);
            assert_eq!(h[i], want, "f16 of {}", x[i]);
            assert_eq!(back[i], f16_value(want));
            let half = f16_bits(f16_value(want) * 0.5);
            let s = f16_bits(f16_value(want) + f16_value(half));
            assert_eq!(sum[i], f16_value(s), "x + x*0.5 in half for {}", x[i]);
            let bits = x[i].to_bits();
            let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
            assert_eq!(b[i], rounded as u16, "bf16 of {}", x[i]);
            assert_eq!(bback[i], f32::from_bits(rounded << 16));
        }
        let (dh2, db2) = (upload(&mem, &vec![0u32; n]), upload(&mem, &vec![0u32; n]));
        run(
            &m,
            &mem,
            "pack_pairs",
            cfg([1, 1, 1], [64, 1, 1], 0),
            &[
                Arg::Ptr(din),
                Arg::Ptr(dh2),
                Arg::Ptr(db2),
                Arg::I32(n as i32),
            ],
        );
        let (h2, b2) = (download_u32(&mem, dh2, n), download_u32(&mem, db2, n));
        let bf16 = |x: f32| {
            let bits = x.to_bits();
            (bits + 0x7fff + ((bits >> 16) & 1)) >> 16
        };
        for i in 0..n {
            let y = -2.0 * x[i];
            assert_eq!(
                h2[i],
                f16_bits(x[i]) as u32 | (f16_bits(y) as u32) << 16,
                "half2 of {}",
                x[i]
            );
            assert_eq!(b2[i], bf16(x[i]) | bf16(y) << 16, "bfloat162 of {}", x[i]);
        }
    }
}

#[test]
fn kernel_printf_reaches_the_output() {
    let mem = memory();
    for m in load_builds("printf", &mem) {
        let out = run(
            &m,
            &mem,
            "say",
            cfg([2, 1, 1], [3, 1, 1], 0),
            &[Arg::I32(100)],
        );
        let text = String::from_utf8(out.printf).unwrap();
        let mut want = String::new();
        for b in 0..2 {
            for t in 0..3i64 {
                want += &format!(
                    "block {b} thread {t}: {} {} {:x} {:.3} ok {} {}\n",
                    100 - t,
                    t * 3,
                    255 + t,
                    t as f64 * 0.5,
                    (b'A' + t as u8) as char,
                    t << 40
                );
            }
        }
        assert_eq!(text, want);
    }
}

#[test]
fn constant_memory_set_through_module_globals() {
    let mem = memory();
    for m in load_builds("constant", &mem) {
        let c = m.global("coeffs").expect("coeffs is a module global");
        assert_eq!(c.size, 32);
        let coeffs = [1.0f32, -2.0, 0.5, 0.25, -0.125, 0.0, 1.5, -0.75];
        mem.write(c.address, &as_bytes(&coeffs)).unwrap();
        let counter = m.global("calls_made").unwrap();
        assert_eq!(
            download_u32(&mem, counter.address, 1),
            vec![7],
            "initialiser applied"
        );
        let n = 200;
        let x: Vec<f32> = (0..n).map(|i| i as f32 / 100.0 - 1.0).collect();
        let (dx, dy) = (upload(&mem, &x), upload(&mem, &vec![0f32; n]));
        run(
            &m,
            &mem,
            "poly",
            cfg([2, 1, 1], [128, 1, 1], 0),
            &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(n as i32)],
        );
        let want: Vec<f32> = x
            .iter()
            .map(|&v| coeffs.iter().rev().fold(0f32, |acc, &c| acc.mul_add(v, c)))
            .collect();
        assert_close(&download_f32(&mem, dy, n), &want, 1e-6, "poly");
        assert_eq!(download_u32(&mem, counter.address, 1), vec![8]);
    }
}

#[test]
fn dynamic_shared_memory_and_syncthreads_count() {
    let mem = memory();
    for m in load_builds("dynamic_shared", &mem) {
        let (blocks, threads) = (5usize, 96usize);
        let mut s = 17;
        let data: Vec<i32> = (0..blocks * threads)
            .map(|_| (lcg(&mut s) % 200) as i32 - 100)
            .collect();
        let (din, dout, dpos) = (
            upload(&mem, &data),
            upload(&mem, &vec![0i32; data.len()]),
            upload(&mem, &vec![0i32; blocks]),
        );
        run(
            &m,
            &mem,
            "reverse_blocks",
            cfg(
                [blocks as u32, 1, 1],
                [threads as u32, 1, 1],
                (threads * 4) as u32,
            ),
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::Ptr(dpos)],
        );
        let got = download_u32(&mem, dout, data.len());
        let pos = download_u32(&mem, dpos, blocks);
        for (b, chunk) in data.chunks(threads).enumerate() {
            for t in 0..threads {
                assert_eq!(got[b * threads + t] as i32, chunk[threads - 1 - t]);
            }
            assert_eq!(pos[b] as usize, chunk.iter().filter(|&&v| v > 0).count());
        }
        // Too little dynamic shared memory for the block is caught, not a host crash.
        let params = pack(
            &m,
            "reverse_blocks",
            &[Arg::Ptr(din), Arg::Ptr(dout), Arg::Ptr(dpos)],
        );
        let err = m
            .launch(
                "reverse_blocks",
                cfg([1, 1, 1], [threads as u32, 1, 1], 16),
                &params,
                &mem,
                1,
            )
            .unwrap_err();
        assert_eq!(
            err.cuda_code(),
            gpufn_ptx::CudaCode::IllegalAddress,
            "{err}"
        );
    }
}

#[test]
fn debug_builds_with_line_info_and_dwarf_sections() {
    let mem = memory();
    for flags in [
        &["-arch=sm_90", "-G"][..],
        &["-arch=compute_80", "-lineinfo"][..],
    ] {
        let m = gpufn_ptx::Module::load(&compile("softmax", flags), 90, &mem)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        let (rows, cols) = (2, 50);
        let x = floats(rows * cols, 18);
        let (dx, dy) = (upload(&mem, &x), upload(&mem, &vec![0f32; rows * cols]));
        run(
            &m,
            &mem,
            "softmax",
            cfg([rows as u32, 1, 1], [128, 1, 1], 0),
            &[Arg::Ptr(dx), Arg::Ptr(dy), Arg::I32(cols as i32)],
        );
        let got = download_f32(&mem, dy, rows * cols);
        for r in got.chunks(cols) {
            let sum: f32 = r.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "{flags:?}: row sums to {sum}");
        }
    }
}

#[test]
fn machine_code_only_fatbin_asks_for_ptx() {
    let image = compile("vector_add", &["-gencode", "arch=compute_90,code=sm_90"]);
    let err = gpufn_ptx::Module::load(&image, 90, &memory()).unwrap_err();
    assert_eq!(err.cuda_code(), gpufn_ptx::CudaCode::NoBinaryForGpu);
    assert!(err.to_string().contains("compute_90"), "{err}");
}
