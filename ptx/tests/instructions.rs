//! Per-instruction semantics on hand-written PTX: each case runs one instruction on one
//! thread with inputs from the parameter buffer and compares the bits it produced.

mod common;
use common::*;
use gpufn_ptx::{CudaCode, LaunchError, Module};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `body` with %r1..%r3 (b32) loaded from the parameters and returns %r4.
fn eval32(body: &str, a: u32, b: u32, c: u32) -> u32 {
    let text = format!(
        r#".version 8.0
.target sm_90
.address_size 64
.visible .entry k(.param .u64 out, .param .u32 a, .param .u32 b, .param .u32 c)
{{
    .reg .pred %p<4>;
    .reg .b16 %h<4>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [out];
    ld.param.u32 %r1, [a];
    ld.param.u32 %r2, [b];
    ld.param.u32 %r3, [c];
    mov.u32 %r4, 0;
    {body}
    st.global.u32 [%rd1], %r4;
    ret;
}}
"#
    );
    let mem = memory();
    let m = Module::from_ptx(&text, &mem).unwrap_or_else(|e| panic!("{body}: {e}"));
    let out = upload(&mem, &[0u32]);
    let params = [
        out.to_le_bytes().as_slice(),
        &a.to_le_bytes(),
        &b.to_le_bytes(),
        &c.to_le_bytes(),
    ]
    .concat();
    m.launch("k", cfg([1, 1, 1], [1, 1, 1], 0), &params, &mem, 1)
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    download_u32(&mem, out, 1)[0]
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

#[test]
fn integer_instructions() {
    let neg = |x: i32| x as u32;
    let cases: &[(&str, u32, u32, u32, u32)] = &[
        ("add.s32 %r4, %r1, %r2;", 5, neg(-7), 0, neg(-2)),
        // Packed 16-bit pairs: each half on its own (high: -3 vs 2, low: 7 vs 0xfff0 = -16).
        (
            "min.s16x2 %r4, %r1, %r2;",
            0xfffd_0007,
            0x0002_fff0,
            0,
            0xfffd_fff0,
        ),
        (
            "max.s16x2 %r4, %r1, %r2;",
            0xfffd_0007,
            0x0002_fff0,
            0,
            0x0002_0007,
        ),
        (
            "min.u16x2 %r4, %r1, %r2;",
            0xfffd_0007,
            0x0002_fff0,
            0,
            0x0002_0007,
        ),
        (
            "max.u16x2 %r4, %r1, %r2;",
            0xfffd_0007,
            0x0002_fff0,
            0,
            0xfffd_fff0,
        ),
        (
            "min.relu.s16x2 %r4, %r1, %r2;",
            0xfffd_0007,
            0x0002_fff0,
            0,
            0,
        ),
        (
            "add.sat.s32 %r4, %r1, %r2;",
            0x7fff_fff0,
            0x100,
            0,
            0x7fff_ffff,
        ),
        ("sub.s32 %r4, %r1, %r2;", 3, 5, 0, neg(-2)),
        ("mul.lo.s32 %r4, %r1, %r2;", neg(-3), 7, 0, neg(-21)),
        ("mul.hi.u32 %r4, %r1, %r2;", 0x8000_0000, 6, 0, 3),
        (
            "mul.hi.s32 %r4, %r1, %r2;",
            neg(-2),
            0x4000_0000,
            0,
            neg(-1),
        ),
        ("mad.lo.s32 %r4, %r1, %r2, %r3;", 3, 4, 5, 17),
        ("mad.hi.u32 %r4, %r1, %r2, %r3;", 0x8000_0000, 4, 1, 3),
        ("div.s32 %r4, %r1, %r2;", neg(-7), 2, 0, neg(-3)),
        ("div.u32 %r4, %r1, %r2;", 7, 0, 0, u32::MAX),
        ("rem.s32 %r4, %r1, %r2;", neg(-7), 2, 0, neg(-1)),
        ("abs.s32 %r4, %r1;", neg(-9), 0, 0, 9),
        ("neg.s32 %r4, %r1;", 9, 0, 0, neg(-9)),
        ("min.s32 %r4, %r1, %r2;", neg(-1), 1, 0, neg(-1)),
        ("min.u32 %r4, %r1, %r2;", neg(-1), 1, 0, 1),
        ("max.s32 %r4, %r1, %r2;", neg(-1), 1, 0, 1),
        ("shl.b32 %r4, %r1, %r2;", 1, 33, 0, 0),
        ("shr.s32 %r4, %r1, %r2;", neg(-16), 2, 0, neg(-4)),
        ("shr.s32 %r4, %r1, %r2;", neg(-16), 40, 0, neg(-1)),
        ("shr.u32 %r4, %r1, %r2;", neg(-16), 28, 0, 15),
        ("and.b32 %r4, %r1, %r2;", 0b1100, 0b1010, 0, 0b1000),
        ("or.b32 %r4, %r1, %r2;", 0b1100, 0b1010, 0, 0b1110),
        ("xor.b32 %r4, %r1, %r2;", 0b1100, 0b1010, 0, 0b0110),
        ("not.b32 %r4, %r1;", 0, 0, 0, u32::MAX),
        ("cnot.b32 %r4, %r1;", 0, 0, 0, 1),
        ("popc.b32 %r4, %r1;", 0xf0f0, 0, 0, 8),
        ("clz.b32 %r4, %r1;", 0x0001_0000, 0, 0, 15),
        ("brev.b32 %r4, %r1;", 1, 0, 0, 0x8000_0000),
        ("bfind.u32 %r4, %r1;", 0x0001_0000, 0, 0, 16),
        ("bfind.u32 %r4, %r1;", 0, 0, 0, u32::MAX),
        ("bfind.shiftamt.u32 %r4, %r1;", 0x0001_0000, 0, 0, 15),
        ("bfind.s32 %r4, %r1;", neg(-2), 0, 0, 0),
        ("bfe.u32 %r4, %r1, %r2, %r3;", 0xabcd_1234, 8, 12, 0xd12),
        ("bfe.s32 %r4, %r1, %r2, %r3;", 0x0000_0f00, 8, 4, neg(-1)),
        (
            "bfi.b32 %r4, %r1, %r2, %r3, 8;",
            0xff,
            0x1234_5678,
            8,
            0x1234_ff78,
        ),
        (
            "prmt.b32 %r4, %r1, %r2, %r3;",
            0x4433_2211,
            0x8877_6655,
            0x5140,
            0x6622_5511,
        ),
        (
            "prmt.b32 %r4, %r1, %r2, %r3;",
            0x0000_0080,
            0,
            0x0008,
            0x8080_80ff,
        ),
        (
            "shf.l.wrap.b32 %r4, %r1, %r2, %r3;",
            0x8000_0000,
            1,
            4,
            0x18,
        ),
        ("shf.r.clamp.b32 %r4, %r1, %r2, %r3;", 0x10, 1, 40, 1),
        (
            "lop3.b32 %r4, %r1, %r2, %r3, 0x96;",
            0b1100,
            0b1010,
            0b0110,
            0b0000,
        ),
        (
            "lop3.b32 %r4, %r1, %r2, %r3, 0xe8;",
            0b1100,
            0b1010,
            0b0110,
            0b1110,
        ),
        ("mul24.lo.u32 %r4, %r1, %r2;", 0x0100_0003, 5, 0, 15),
        (
            "mad24.lo.s32 %r4, %r1, %r2, %r3;",
            0x00ff_ffff,
            2,
            1,
            neg(-1),
        ),
        ("sad.u32 %r4, %r1, %r2, %r3;", 3, 10, 100, 107),
        (
            "add.cc.u32 %r5, %r1, %r2; addc.u32 %r4, %r3, 0;",
            u32::MAX,
            2,
            7,
            8,
        ),
        (
            "sub.cc.u32 %r5, %r1, %r2; subc.u32 %r4, %r3, 0;",
            1,
            2,
            7,
            6,
        ),
        (
            "mad.lo.cc.u32 %r5, %r1, %r2, 0xffffffff; madc.hi.u32 %r4, %r1, %r2, %r3;",
            0x8000_0001,
            4,
            10,
            2 + 10 + 1,
        ),
        (
            "dp4a.s32.s32 %r4, %r1, %r2, %r3;",
            0x01ff_0203,
            0x0402_ff01,
            10,
            10 + 3 - 2 - 2 + 4,
        ),
        (
            "dp4a.u32.u32 %r4, %r1, %r2, %r3;",
            0x0000_ff00,
            0x0000_0200,
            1,
            511,
        ),
        (
            "dp2a.hi.s32.u32 %r4, %r1, %r2, %r3;",
            0xffff_0002,
            0x0304_0000,
            0,
            8 - 3,
        ),
        ("mul.wide.s16 %r4, %h1, %h2;", 0, 0, 0, 0),
        (
            "cvt.u16.u32 %h1, %r1; mul.wide.s16 %r4, %h1, %h1;",
            0xffff,
            0,
            0,
            1,
        ),
        ("cvt.sat.s8.s32 %r4, %r1;", 300, 0, 0, 127),
        ("cvt.s32.s8 %r4, %r1;", 0x80, 0, 0, neg(-128)),
        ("cvt.u32.u16 %r4, %r1;", 0x12345, 0, 0, 0x2345),
        (
            "setp.lt.s32 %p1, %r1, %r2; selp.u32 %r4, 1, 2, %p1;",
            neg(-1),
            0,
            0,
            1,
        ),
        (
            "setp.lo.u32 %p1, %r1, %r2; selp.u32 %r4, 1, 2, %p1;",
            neg(-1),
            0,
            0,
            2,
        ),
        (
            "setp.eq.and.u32 %p1|%p2, %r1, %r2, %p3; selp.u32 %r4, 1, 2, %p2;",
            1,
            1,
            0,
            2,
        ),
        ("set.gt.u32.s32 %r4, %r1, %r2;", 5, 3, 0, u32::MAX),
        ("slct.u32.s32 %r4, %r1, %r2, %r3;", 10, 20, neg(-1), 20),
        (
            "mov.b32 {%h1, %h2}, %r1; mov.b32 %r4, {%h2, %h1};",
            0x1111_2222,
            0,
            0,
            0x2222_1111,
        ),
    ];
    for &(body, a, b, c, want) in cases {
        assert_eq!(
            eval32(body, a, b, c),
            want,
            "{body} with {a:#x} {b:#x} {c:#x}"
        );
    }
}

#[test]
fn float_instructions() {
    let cases: &[(&str, u32, u32, u32, u32)] = &[
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; add.rn.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(1.5),
            f(2.25),
            0,
            f(3.75),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; add.rz.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(1.0),
            f(1e-9),
            0,
            f(1.0),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; add.rp.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(1.0),
            f(1e-9),
            0,
            f(1.0).wrapping_add(1),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; div.rn.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(1.0),
            f(3.0),
            0,
            f(1.0 / 3.0),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; div.rz.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(2.0),
            f(3.0),
            0,
            f(2.0 / 3.0) - 1,
        ),
        (
            "mov.b32 %f1, %r1; sqrt.rn.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(2.0),
            0,
            0,
            f(2f32.sqrt()),
        ),
        (
            "mov.b32 %f1, %r1; rcp.rn.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(4.0),
            0,
            0,
            f(0.25),
        ),
        (
            "mov.b32 %f1, %r1; ex2.approx.ftz.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(3.0),
            0,
            0,
            f(8.0),
        ),
        (
            "mov.b32 %f1, %r1; lg2.approx.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(8.0),
            0,
            0,
            f(3.0),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; mov.b32 %f3, %r3; fma.rn.f32 %f3, %f1, %f2, %f3; mov.b32 %r4, %f3;",
            f(2.0),
            f(3.0),
            f(1.0),
            f(7.0),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; min.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(f32::NAN),
            f(2.0),
            0,
            f(2.0),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; max.NaN.f32 %f3, %f1, %f2; testp.notanumber.f32 %p1, %f3; selp.u32 %r4, 1, 0, %p1;",
            f(f32::NAN),
            f(2.0),
            0,
            1,
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; copysign.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(-1.0),
            f(2.0),
            0,
            f(-2.0),
        ),
        (
            "mov.b32 %f1, %r1; abs.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(-0.5),
            0,
            0,
            f(0.5),
        ),
        (
            "mov.b32 %f1, %r1; neg.f32 %f3, %f1; mov.b32 %r4, %f3;",
            f(0.5),
            0,
            0,
            f(-0.5),
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; setp.ltu.f32 %p1, %f1, %f2; selp.u32 %r4, 1, 0, %p1;",
            f(f32::NAN),
            f(1.0),
            0,
            1,
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; setp.lt.f32 %p1, %f1, %f2; selp.u32 %r4, 1, 0, %p1;",
            f(f32::NAN),
            f(1.0),
            0,
            0,
        ),
        (
            "mov.b32 %f1, %r1; add.sat.f32 %f3, %f1, %f1; mov.b32 %r4, %f3;",
            f(0.75),
            0,
            0,
            f(1.0),
        ),
        (
            "mov.b32 %f1, %r1; mul.ftz.f32 %f3, %f1, %f1; mov.b32 %r4, %f3;",
            f(1e-20),
            0,
            0,
            0,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rzi.s32.f32 %r4, %f1;",
            f(-2.7),
            0,
            0,
            (-2i32) as u32,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rni.s32.f32 %r4, %f1;",
            f(2.5),
            0,
            0,
            2,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rmi.s32.f32 %r4, %f1;",
            f(-2.5),
            0,
            0,
            (-3i32) as u32,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rzi.u32.f32 %r4, %f1;",
            f(-5.0),
            0,
            0,
            0,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rzi.s32.f32 %r4, %f1;",
            f(1e20),
            0,
            0,
            i32::MAX as u32,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rzi.s32.f32 %r4, %f1;",
            f(f32::NAN),
            0,
            0,
            0,
        ),
        (
            "cvt.rn.f32.s32 %f1, %r1; mov.b32 %r4, %f1;",
            (-3i32) as u32,
            0,
            0,
            f(-3.0),
        ),
        (
            "cvt.rz.f32.u32 %f1, %r1; mov.b32 %r4, %f1;",
            0xffff_ffff,
            0,
            0,
            f(4294967040.0),
        ),
        (
            "mov.b32 %f1, %r1; cvt.rpi.f32.f32 %f2, %f1; mov.b32 %r4, %f2;",
            f(1.2),
            0,
            0,
            f(2.0),
        ),
        (
            "mov.b32 %f1, %r1; cvt.sat.f32.f32 %f2, %f1; mov.b32 %r4, %f2;",
            f(-3.0),
            0,
            0,
            f(0.0),
        ),
        (
            "mov.b32 %f1, %r1; cvt.rn.f16.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;",
            f(1.0),
            0,
            0,
            0x3c00,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rz.f16.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;",
            f(70000.0),
            0,
            0,
            0x7bff,
        ),
        (
            "cvt.u16.u32 %h1, %r1; cvt.u16.u32 %h2, %r2; add.f16 %h3, %h1, %h2; cvt.u32.u16 %r4, %h3;",
            0x3c00,
            0x4000,
            0,
            0x4200,
        ),
        (
            "mul.f16x2 %r4, %r1, %r2;",
            0x4000_3c00,
            0x4000_4000,
            0,
            0x4400_4000,
        ),
        (
            "mov.b32 %f1, %r1; cvt.rn.bf16.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;",
            f(1.0),
            0,
            0,
            0x3f80,
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; cvt.rn.f16x2.f32 %r4, %f1, %f2;",
            f(1.0),
            f(2.0),
            0,
            0x3c00_4000,
        ),
        (
            "mov.b32 %f1, %r1; testp.finite.f32 %p1, %f1; selp.u32 %r4, 1, 0, %p1;",
            f(f32::INFINITY),
            0,
            0,
            0,
        ),
        (
            "mov.b32 %f1, %r1; testp.subnormal.f32 %p1, %f1; selp.u32 %r4, 1, 0, %p1;",
            1,
            0,
            0,
            1,
        ),
        (
            "mov.b32 %f1, %r1; mov.b32 %f2, %r2; set.ge.f32.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;",
            f(2.0),
            f(1.0),
            0,
            f(1.0),
        ),
    ];
    for &(body, a, b, c, want) in cases {
        assert_eq!(
            eval32(body, a, b, c),
            want,
            "{body} with {a:#x} {b:#x} {c:#x}"
        );
    }
}

#[test]
fn memory_instructions() {
    let mem = memory();
    let m = Module::from_ptx(
        r#".version 8.0
.target sm_90
.address_size 64
.visible .entry k(.param .u64 g)
{
    .reg .pred %p<4>;
    .reg .b16 %h<4>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<8>;
    .shared .align 16 .b8 s[64];
    .local .align 8 .b8 loc[16];
    ld.param.u64 %rd1, [g];
    // cp.async 16 bytes global -> shared, then read back through a generic pointer
    mov.u32 %r1, s;
    cp.async.ca.shared.global [%r1], [%rd1], 16;
    cp.async.commit_group;
    cp.async.wait_group 0;
    cvta.shared.u64 %rd2, %rd3;
    mov.u64 %rd3, s;
    cvta.shared.u64 %rd2, %rd3;
    ld.v4.u32 {%r2, %r3, %r4, %r5}, [%rd2];
    isspacep.shared %p1, %rd2;
    isspacep.global %p2, %rd1;
    selp.u32 %r6, 1, 0, %p1;
    selp.u32 %r7, 2, 0, %p2;
    add.u32 %r6, %r6, %r7;
    // 16-bit atomics on global memory
    atom.global.add.noftz.f16 %h1, [%rd1+18], %h2;
    mov.b16 %h2, 0x3c00;
    atom.global.add.noftz.f16 %h1, [%rd1+18], %h2;
    atom.global.cas.b16 %h3, [%rd1+16], 0x1234, 0x4321;
    // local memory through a generic pointer
    mov.u64 %rd4, loc;
    cvta.local.u64 %rd5, %rd4;
    st.u32 [%rd5+4], %r5;
    ld.local.u32 %r8, [loc+4];
    st.global.v4.u32 [%rd1+32], {%r2, %r3, %r4, %r8};
    st.global.u32 [%rd1+48], %r6;
    ret;
}
"#,
        &mem,
    )
    .unwrap();
    let mut init = vec![0u8; 64];
    for (i, v) in [11u32, 22, 33, 44].iter().enumerate() {
        init[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    init[16..18].copy_from_slice(&0x1234u16.to_le_bytes());
    init[18..20].copy_from_slice(&0x4000u16.to_le_bytes()); // 2.0 in half
    let g = upload(&mem, &init);
    m.launch("k", cfg([1, 1, 1], [1, 1, 1], 0), &g.to_le_bytes(), &mem, 1)
        .unwrap();
    let words = download_u32(&mem, g, 16);
    assert_eq!(&words[8..12], &[11, 22, 33, 44]);
    assert_eq!(words[12], 3, "isspacep");
    assert_eq!(
        words[4], 0x4200_4321,
        "f16 atomic add (2.0 + 1.0 = 3.0 = 0x4200) and b16 CAS"
    );
}

#[test]
fn a_running_launch_can_be_cancelled() {
    let mem = memory();
    let m = Module::from_ptx(
        ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry spin()\n{\nLOOP:\n bra.uni LOOP;\n}\n",
        &mem,
    )
    .unwrap();
    let cancel = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let h = s.spawn(|| {
            m.launch_cancellable("spin", cfg([4, 1, 1], [64, 1, 1], 0), &[], &mem, 2, &cancel)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        cancel.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    let err = result.unwrap_err();
    assert!(matches!(err, LaunchError::Cancelled { .. }), "{err}");
    assert_eq!(err.cuda_code(), CudaCode::LaunchTimeout);
}
