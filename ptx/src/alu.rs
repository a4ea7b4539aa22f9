//! Per-lane semantics of arithmetic, comparison and conversion instructions. Values are the
//! bits of their type, zero-extended into a `u64`.

use crate::float::*;
use crate::ir::*;

#[inline(always)]
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[inline(always)]
pub fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// `op` on each 16-bit half of `a` and `b` (as `ty`, S16 or U16); `relu` turns negative
/// results into zero.
pub fn int_bin_16x2(op: IntBinOp, ty: Ty, relu: bool, a: u64, b: u64) -> u64 {
    let half = |shift: u32| {
        let r = int_bin(op, ty, (a >> shift) & 0xffff, (b >> shift) & 0xffff);
        if relu && sext(r, 16) < 0 {
            0
        } else {
            r & 0xffff
        }
    };
    half(0) | (half(16) << 16)
}

pub fn int_bin(op: IntBinOp, ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits().min(64);
    let signed = ty.is_signed();
    let m = mask(bits);
    let (ua, ub) = (a & m, b & m);
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    match op {
        IntBinOp::Add => ua.wrapping_add(ub) & m,
        IntBinOp::Sub => ua.wrapping_sub(ub) & m,
        IntBinOp::AddSat | IntBinOp::SubSat => {
            let r = if op == IntBinOp::AddSat {
                sa as i128 + sb as i128
            } else {
                sa as i128 - sb as i128
            };
            let (lo, hi) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
            (r.clamp(lo, hi) as u64) & m
        }
        IntBinOp::MulLo => ua.wrapping_mul(ub) & m,
        IntBinOp::MulHi => {
            if signed {
                ((sa as i128 * sb as i128) >> bits) as u64 & m
            } else {
                ((ua as u128 * ub as u128) >> bits) as u64 & m
            }
        }
        IntBinOp::MulWide => {
            let wm = mask(bits * 2);
            if signed {
                (sa.wrapping_mul(sb) as u64) & wm
            } else {
                ua.wrapping_mul(ub) & wm
            }
        }
        IntBinOp::Div => {
            if ub == 0 {
                m
            } else if signed {
                (sa.wrapping_div(sb) as u64) & m
            } else {
                ua / ub
            }
        }
        IntBinOp::Rem => {
            if ub == 0 {
                ua
            } else if signed {
                (sa.wrapping_rem(sb) as u64) & m
            } else {
                ua % ub
            }
        }
        IntBinOp::Min => {
            if signed {
                (sa.min(sb) as u64) & m
            } else {
                ua.min(ub)
            }
        }
        IntBinOp::Max => {
            if signed {
                (sa.max(sb) as u64) & m
            } else {
                ua.max(ub)
            }
        }
        IntBinOp::And => ua & ub,
        IntBinOp::Or => ua | ub,
        IntBinOp::Xor => ua ^ ub,
        IntBinOp::Shl => {
            let n = b as u32;
            if n >= bits { 0 } else { (ua << n) & m }
        }
        IntBinOp::Shr => {
            let n = b as u32;
            if signed {
                ((sa >> n.min(bits - 1)) as u64) & m
            } else if n >= bits {
                0
            } else {
                ua >> n
            }
        }
    }
}

pub fn int_un(op: IntUnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits().min(64);
    let m = mask(bits);
    let ua = a & m;
    match op {
        IntUnOp::Not => !ua & m,
        IntUnOp::Cnot => (ua == 0) as u64,
        IntUnOp::Neg => ua.wrapping_neg() & m,
        IntUnOp::Abs => (sext(a, bits).unsigned_abs()) & m,
        IntUnOp::Popc => ua.count_ones() as u64,
        IntUnOp::Clz => (ua.leading_zeros() - (64 - bits)) as u64,
        IntUnOp::Brev => ua.reverse_bits() >> (64 - bits),
        IntUnOp::Bfind | IntUnOp::BfindShift => {
            let v = if ty.is_signed() && sext(a, bits) < 0 {
                !ua & m
            } else {
                ua
            };
            if v == 0 {
                0xffff_ffff
            } else {
                let pos = 63 - v.leading_zeros();
                if op == IntUnOp::BfindShift {
                    (bits - 1 - pos) as u64
                } else {
                    pos as u64
                }
            }
        }
    }
}

pub fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let bits = ty.bits();
    let pos = (pos & 0xff) as u32;
    let len = (len & 0xff) as u32;
    let m = mask(bits);
    let a = a & m;
    let sbit = if ty.is_signed() {
        if len == 0 {
            false
        } else {
            let at = (pos + len - 1).min(bits - 1);
            (a >> at) & 1 == 1
        }
    } else {
        false
    };
    let mut d = 0u64;
    for i in 0..bits {
        let bit = if i < len && pos + i < bits {
            (a >> (pos + i)) & 1
        } else {
            sbit as u64
        };
        d |= bit << i;
    }
    d
}

pub fn bfi(ty: Ty, f: u64, b: u64, pos: u64, len: u64) -> u64 {
    let bits = ty.bits();
    let pos = (pos & 0xff) as u32;
    let len = (len & 0xff) as u32;
    let mut d = b & mask(bits);
    for i in 0..len {
        if pos + i >= bits {
            break;
        }
        let bit = (f >> i) & 1;
        d = (d & !(1 << (pos + i))) | (bit << (pos + i));
    }
    d
}

pub fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = (a & 0xffff_ffff) | ((b & 0xffff_ffff) << 32);
    let mut d = 0u64;
    for i in 0..4 {
        let sel = (c >> (i * 4)) & 0xf;
        let byte = (bytes >> ((sel & 7) * 8)) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 { 0xff } else { 0 }
        } else {
            byte
        };
        d |= byte << (i * 8);
    }
    d
}

pub fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut d = 0u64;
    for i in 0..8u32 {
        if lut >> i & 1 == 1 {
            let pick = |bit: u32, v: u64| if bit == 1 { v } else { !v };
            d |= pick(i >> 2 & 1, a) & pick(i >> 1 & 1, b) & pick(i & 1, c);
        }
    }
    d & 0xffff_ffff
}

/// `dp4a` / `dp2a`: integer dot products with 32-bit accumulation.
pub fn dot(two: bool, hi: bool, a_signed: bool, b_signed: bool, a: u64, b: u64, c: u64) -> u64 {
    let byte = |v: u64, i: u32, s: bool| {
        let x = (v >> (8 * i)) & 0xff;
        if s { sext(x, 8) } else { x as i64 }
    };
    let half = |v: u64, i: u32, s: bool| {
        let x = (v >> (16 * i)) & 0xffff;
        if s { sext(x, 16) } else { x as i64 }
    };
    let sum: i64 = if two {
        let first = if hi { 2 } else { 0 };
        (0..2)
            .map(|i| half(a, i, a_signed) * byte(b, first + i, b_signed))
            .sum()
    } else {
        (0..4)
            .map(|i| byte(a, i, a_signed) * byte(b, i, b_signed))
            .sum()
    };
    (c as i64).wrapping_add(sum) as u64 & 0xffff_ffff
}

/// One step of a carry chain: returns (result, carry-out).
pub fn carry(kind: CarryKind, ty: Ty, a: u64, b: u64, c: u64, cf: u64) -> (u64, u64) {
    let bits = ty.bits();
    let m = mask(bits) as u128;
    let (a, b, c, cf) = (
        a as u128 & m,
        b as u128 & m,
        c as u128 & m,
        (cf & 1) as u128,
    );
    match kind {
        CarryKind::Add => {
            let s = a + b + cf;
            ((s & m) as u64, (s >> bits) as u64 & 1)
        }
        CarryKind::Sub => {
            let s = a.wrapping_sub(b).wrapping_sub(cf);
            ((s & m) as u64, (a < b + cf) as u64)
        }
        CarryKind::MadLo | CarryKind::MadHi => {
            let p = if ty.is_signed() {
                (sext(a as u64, bits) as i128 * sext(b as u64, bits) as i128) as u128
            } else {
                a * b
            };
            let part = if kind == CarryKind::MadHi {
                (p >> bits) & m
            } else {
                p & m
            };
            let s = part + c + cf;
            ((s & m) as u64, (s >> bits) as u64 & 1)
        }
    }
}

pub fn mul24(hi: bool, signed: bool, a: u64, b: u64, c: u64) -> u64 {
    let ext = |v: u64| {
        if signed {
            sext(v, 24)
        } else {
            (v & 0xff_ffff) as i64
        }
    };
    let p = ext(a) * ext(b);
    let r = if hi { (p >> 16) as u64 } else { p as u64 };
    r.wrapping_add(c) & 0xffff_ffff
}

pub fn shf(left: bool, clamp: bool, a: u64, b: u64, c: u64) -> u64 {
    let n = if clamp {
        (c as u32).min(32)
    } else {
        c as u32 & 31
    };
    let v = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    if left {
        ((v << n) >> 32) & 0xffff_ffff
    } else {
        (v >> n) & 0xffff_ffff
    }
}

/// A float read with its type: f16/bf16/f32 widen exactly to f64.
pub fn read_f(ty: Ty, v: u64) -> f64 {
    match ty {
        Ty::F16 => f16_to_f32(v as u16) as f64,
        Ty::Bf16 => bf16_to_f32(v as u16) as f64,
        Ty::F32 => f32::from_bits(v as u32) as f64,
        _ => f64::from_bits(v),
    }
}

fn write_f16(ty: Ty, x: f64, round: Round) -> u64 {
    let odd = f64_to_f32_odd(x);
    match ty {
        Ty::F16 => f32_to_f16(odd, round) as u64,
        _ => f32_to_bf16(odd, round) as u64,
    }
}

/// Applies `f` to both halves of a packed pair (f16x2/bf16x2), or to the value itself.
fn per_half(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(Ty, u64, u64, u64) -> u64) -> u64 {
    match ty {
        Ty::F16x2 | Ty::Bf16x2 => {
            let h = if ty == Ty::F16x2 { Ty::F16 } else { Ty::Bf16 };
            let lo = f(h, a & 0xffff, b & 0xffff, c & 0xffff) & 0xffff;
            let hi = f(
                h,
                (a >> 16) & 0xffff,
                (b >> 16) & 0xffff,
                (c >> 16) & 0xffff,
            ) & 0xffff;
            lo | (hi << 16)
        }
        _ => f(ty, a, b, c),
    }
}

fn sat_f64(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Rounds the exact value `s + err` (err tiny, only its sign matters) to f32.
fn f32_directed(s: f64, err: f64, round: Round) -> f32 {
    let r = s as f32;
    if round == Round::Nearest {
        return r;
    }
    let diff = s - r as f64;
    let above = if diff != 0.0 {
        diff > 0.0
    } else if err != 0.0 {
        err > 0.0
    } else {
        return r;
    };
    adjust32(r, above, round)
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, err)
}

pub fn fbin(op: FBinOp, ty: Ty, m: FMods, a: u64, b: u64) -> u64 {
    per_half(ty, a, b, 0, |ty, a, b, _| fbin_scalar(op, ty, m, a, b))
}

fn fbin_scalar(op: FBinOp, ty: Ty, m: FMods, a: u64, b: u64) -> u64 {
    match ty {
        Ty::F32 => {
            let (mut x, mut y) = (f32::from_bits(a as u32), f32::from_bits(b as u32));
            if m.ftz {
                x = ftz32(x);
                y = ftz32(y);
            }
            let mut r = match op {
                FBinOp::Add | FBinOp::Sub => {
                    let y = if op == FBinOp::Sub { -y } else { y };
                    if m.round == Round::Nearest {
                        x + y
                    } else {
                        let (s, e) = two_sum(x as f64, y as f64);
                        f32_directed(s, e, m.round)
                    }
                }
                FBinOp::Mul => {
                    if m.round == Round::Nearest {
                        x * y
                    } else {
                        f32_directed(x as f64 * y as f64, 0.0, m.round)
                    }
                }
                FBinOp::Div => {
                    if m.round == Round::Nearest {
                        x / y
                    } else {
                        let (xd, yd) = (x as f64, y as f64);
                        let q = xd / yd;
                        let rem = (-q).mul_add(yd, xd);
                        let e = if (rem > 0.0) == (yd > 0.0) {
                            rem.abs()
                        } else {
                            -rem.abs()
                        };
                        f32_directed(q, e, m.round)
                    }
                }
                FBinOp::Min => x.min(y),
                FBinOp::Max => x.max(y),
                FBinOp::MinNan => {
                    if x.is_nan() || y.is_nan() {
                        f32::NAN
                    } else {
                        x.min(y)
                    }
                }
                FBinOp::MaxNan => {
                    if x.is_nan() || y.is_nan() {
                        f32::NAN
                    } else {
                        x.max(y)
                    }
                }
                FBinOp::CopySign => y.copysign(x),
            };
            if m.sat {
                r = sat_f64(r as f64) as f32;
            }
            if m.ftz {
                r = ftz32(r);
            }
            r.to_bits() as u64
        }
        Ty::F64 => {
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let r = match op {
                FBinOp::Add | FBinOp::Sub => {
                    let y = if op == FBinOp::Sub { -y } else { y };
                    let (s, e) = two_sum(x, y);
                    if e == 0.0 {
                        s
                    } else {
                        adjust64(s, e > 0.0, m.round)
                    }
                }
                FBinOp::Mul => {
                    let p = x * y;
                    let e = x.mul_add(y, -p);
                    if e == 0.0 || !p.is_finite() {
                        p
                    } else {
                        adjust64(p, e > 0.0, m.round)
                    }
                }
                FBinOp::Div => {
                    let q = x / y;
                    let rem = (-q).mul_add(y, x);
                    if rem == 0.0 || !q.is_finite() {
                        q
                    } else {
                        adjust64(q, (rem > 0.0) == (y > 0.0), m.round)
                    }
                }
                FBinOp::Min => x.min(y),
                FBinOp::Max => x.max(y),
                FBinOp::MinNan => {
                    if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else {
                        x.min(y)
                    }
                }
                FBinOp::MaxNan => {
                    if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else {
                        x.max(y)
                    }
                }
                FBinOp::CopySign => y.copysign(x),
            };
            let r = if m.sat { sat_f64(r) } else { r };
            r.to_bits()
        }
        _ => {
            // f16 / bf16: compute exactly in f64, round once to the narrow type.
            let (x, y) = (read_f(ty, a), read_f(ty, b));
            let r = match op {
                FBinOp::Add => x + y,
                FBinOp::Sub => x - y,
                FBinOp::Mul => x * y,
                FBinOp::Div => x / y,
                FBinOp::Min => x.min(y),
                FBinOp::Max => x.max(y),
                FBinOp::MinNan => {
                    if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else {
                        x.min(y)
                    }
                }
                FBinOp::MaxNan => {
                    if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else {
                        x.max(y)
                    }
                }
                FBinOp::CopySign => y.copysign(x),
            };
            let r = if m.sat { sat_f64(r) } else { r };
            write_f16(ty, r, m.round)
        }
    }
}

pub fn fma(ty: Ty, m: FMods, a: u64, b: u64, c: u64) -> u64 {
    per_half(ty, a, b, c, |ty, a, b, c| match ty {
        Ty::F32 => {
            let (mut x, mut y, mut z) = (
                f32::from_bits(a as u32),
                f32::from_bits(b as u32),
                f32::from_bits(c as u32),
            );
            if m.ftz {
                x = ftz32(x);
                y = ftz32(y);
                z = ftz32(z);
            }
            let mut r = if m.round == Round::Nearest {
                x.mul_add(y, z)
            } else {
                let p = x as f64 * y as f64; // exact
                let (s, e) = two_sum(p, z as f64);
                f32_directed(s, e, m.round)
            };
            if m.sat {
                r = sat_f64(r as f64) as f32;
            }
            if m.ftz {
                r = ftz32(r);
            }
            r.to_bits() as u64
        }
        Ty::F64 => {
            let r = f64::from_bits(a).mul_add(f64::from_bits(b), f64::from_bits(c));
            (if m.sat { sat_f64(r) } else { r }).to_bits()
        }
        _ => {
            let r = read_f(ty, a).mul_add(read_f(ty, b), read_f(ty, c));
            write_f16(ty, if m.sat { sat_f64(r) } else { r }, m.round)
        }
    })
}

pub fn fun(op: FUnOp, ty: Ty, m: FMods, a: u64) -> u64 {
    per_half(ty, a, 0, 0, |ty, a, _, _| {
        match (op, ty) {
            (FUnOp::Neg, Ty::F32) => return a ^ 0x8000_0000,
            (FUnOp::Abs, Ty::F32) => return a & 0x7fff_ffff,
            (FUnOp::Neg, Ty::F64) => return a ^ (1 << 63),
            (FUnOp::Abs, Ty::F64) => return a & !(1 << 63),
            (FUnOp::Neg, _) => return a ^ 0x8000,
            (FUnOp::Abs, _) => return a & 0x7fff,
            _ => {}
        }
        match ty {
            Ty::F32 => {
                let mut x = f32::from_bits(a as u32);
                if m.ftz {
                    x = ftz32(x);
                }
                let mut r = match op {
                    FUnOp::Rcp if m.round != Round::Nearest => {
                        return fbin_scalar(FBinOp::Div, ty, m, 1.0f32.to_bits() as u64, a);
                    }
                    FUnOp::Sqrt if m.round != Round::Nearest => {
                        let xd = x as f64;
                        let s = xd.sqrt();
                        let rem = (-s).mul_add(s, xd);
                        f32_directed(s, rem, m.round)
                    }
                    FUnOp::Rcp | FUnOp::RcpApprox => 1.0 / x,
                    FUnOp::Sqrt | FUnOp::SqrtApprox => x.sqrt(),
                    FUnOp::Rsqrt => 1.0 / x.sqrt(),
                    FUnOp::Sin => x.sin(),
                    FUnOp::Cos => x.cos(),
                    FUnOp::Ex2 => x.exp2(),
                    FUnOp::Lg2 => x.log2(),
                    FUnOp::Tanh => x.tanh(),
                    FUnOp::Neg | FUnOp::Abs => x,
                };
                if m.sat {
                    r = sat_f64(r as f64) as f32;
                }
                if m.ftz {
                    r = ftz32(r);
                }
                r.to_bits() as u64
            }
            Ty::F64 => {
                let x = f64::from_bits(a);
                let r = match op {
                    FUnOp::Rcp if m.round != Round::Nearest => {
                        return fbin_scalar(FBinOp::Div, ty, m, 1.0f64.to_bits(), a);
                    }
                    FUnOp::Rcp | FUnOp::RcpApprox => 1.0 / x,
                    FUnOp::Sqrt | FUnOp::SqrtApprox => {
                        let s = x.sqrt();
                        let rem = (-s).mul_add(s, x);
                        if rem == 0.0 || !s.is_finite() {
                            s
                        } else {
                            adjust64(s, rem > 0.0, m.round)
                        }
                    }
                    FUnOp::Rsqrt => 1.0 / x.sqrt(),
                    FUnOp::Sin => x.sin(),
                    FUnOp::Cos => x.cos(),
                    FUnOp::Ex2 => x.exp2(),
                    FUnOp::Lg2 => x.log2(),
                    FUnOp::Tanh => x.tanh(),
                    FUnOp::Neg | FUnOp::Abs => x,
                };
                r.to_bits()
            }
            _ => {
                let x = read_f(ty, a);
                let r = match op {
                    FUnOp::Rcp | FUnOp::RcpApprox => 1.0 / x,
                    FUnOp::Sqrt | FUnOp::SqrtApprox => x.sqrt(),
                    FUnOp::Rsqrt => 1.0 / x.sqrt(),
                    FUnOp::Sin => x.sin(),
                    FUnOp::Cos => x.cos(),
                    FUnOp::Ex2 => x.exp2(),
                    FUnOp::Lg2 => x.log2(),
                    FUnOp::Tanh => x.tanh(),
                    FUnOp::Neg | FUnOp::Abs => x,
                };
                write_f16(ty, r, m.round)
            }
        }
    })
}

pub fn testp(op: TestpOp, ty: Ty, a: u64) -> u64 {
    let x = read_f(ty, a);
    let sub = match ty {
        Ty::F32 => f32::from_bits(a as u32).is_subnormal(),
        Ty::F64 => x.is_subnormal(),
        _ => (a >> 10) & 0x1f == 0 && a & 0x3ff != 0,
    };
    (match op {
        TestpOp::Finite => x.is_finite(),
        TestpOp::Infinite => x.is_infinite(),
        TestpOp::Number => !x.is_nan(),
        TestpOp::NotANumber => x.is_nan(),
        TestpOp::Normal => x.is_finite() && x != 0.0 && !sub,
        TestpOp::Subnormal => sub,
    }) as u64
}

pub fn compare(cmp: Cmp, ty: Ty, ftz: bool, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (mut x, mut y) = (read_f(ty, a), read_f(ty, b));
        if ftz && ty == Ty::F32 {
            x = ftz32(x as f32) as f64;
            y = ftz32(y as f32) as f64;
        }
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !nan && x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt | Cmp::Lo => !nan && x < y,
            Cmp::Le | Cmp::Ls => !nan && x <= y,
            Cmp::Gt | Cmp::Hi => !nan && x > y,
            Cmp::Ge | Cmp::Hs => !nan && x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    let bits = ty.bits().min(64);
    let (ua, ub) = (a & mask(bits), b & mask(bits));
    let (sa, sb) = (sext(a, bits), sext(b, bits));
    let signed = ty.is_signed();
    match cmp {
        Cmp::Eq | Cmp::Equ => ua == ub,
        Cmp::Ne | Cmp::Neu => ua != ub,
        Cmp::Lt | Cmp::Ltu if signed => sa < sb,
        Cmp::Le | Cmp::Leu if signed => sa <= sb,
        Cmp::Gt | Cmp::Gtu if signed => sa > sb,
        Cmp::Ge | Cmp::Geu if signed => sa >= sb,
        Cmp::Lt | Cmp::Ltu | Cmp::Lo => ua < ub,
        Cmp::Le | Cmp::Leu | Cmp::Ls => ua <= ub,
        Cmp::Gt | Cmp::Gtu | Cmp::Hi => ua > ub,
        Cmp::Ge | Cmp::Geu | Cmp::Hs => ua >= ub,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

pub fn combine(op: BoolOp, x: bool, c: bool) -> bool {
    match op {
        BoolOp::And => x && c,
        BoolOp::Or => x || c,
        BoolOp::Xor => x ^ c,
    }
}

fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

fn round_int(x: f64, round: Round) -> f64 {
    match round {
        Round::Nearest => x.round_ties_even(),
        Round::Zero => x.trunc(),
        Round::Down => x.floor(),
        Round::Up => x.ceil(),
    }
}

fn int_to_float(v: i128, dty: Ty, round: Round) -> u64 {
    match dty {
        Ty::F64 => {
            let r = v as f64;
            if round == Round::Nearest || !r.is_finite() || r as i128 == v {
                r.to_bits()
            } else {
                adjust64(r, (r as i128) < v, round).to_bits()
            }
        }
        _ => {
            let r = v as f32;
            let r = if round == Round::Nearest || !r.is_finite() || r as i128 == v {
                r
            } else {
                adjust32(r, (r as i128) < v, round)
            };
            match dty {
                Ty::F32 => r.to_bits() as u64,
                Ty::F16 => f32_to_f16(r, round) as u64,
                _ => f32_to_bf16(r, round) as u64,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn cvt(
    dty: Ty,
    sty: Ty,
    round: Option<Round>,
    int_round: bool,
    ftz: bool,
    sat: bool,
    a: u64,
) -> u64 {
    let dbits = dty.bits().min(64);
    if !sty.is_float() {
        let v: i128 = if sty.is_signed() {
            sext(a, sty.bits()) as i128
        } else {
            (a & mask(sty.bits().min(64))) as i128
        };
        if dty.is_float() {
            let r = int_to_float(v, dty, round.unwrap_or(Round::Nearest));
            return if sat {
                let x = read_f(dty, r);
                float_bits(dty, sat_f64(x))
            } else {
                r
            };
        }
        let v = if sat {
            let (lo, hi) = int_range(dty);
            v.clamp(lo, hi)
        } else {
            v
        };
        return (v as u64) & mask(dbits);
    }
    let mut x = read_f(sty, a);
    if ftz && sty == Ty::F32 {
        x = ftz32(x as f32) as f64;
    }
    if !dty.is_float() {
        if x.is_nan() {
            return 0;
        }
        let r = round_int(x, round.unwrap_or(Round::Zero));
        let (lo, hi) = int_range(dty);
        let v = if r <= lo as f64 {
            lo
        } else if r >= hi as f64 {
            hi
        } else {
            r as i128
        };
        return (v as u64) & mask(dbits);
    }
    let x = if int_round {
        round_int(x, round.unwrap_or(Round::Nearest))
    } else {
        x
    };
    let x = if sat { sat_f64(x) } else { x };
    let rnd = if int_round {
        Round::Nearest
    } else {
        round.unwrap_or(Round::Nearest)
    };
    match dty {
        Ty::F64 => x.to_bits(),
        Ty::F32 => {
            let r = f64_to_f32(x, rnd);
            (if ftz { ftz32(r) } else { r }).to_bits() as u64
        }
        Ty::F16 => f32_to_f16(f64_to_f32_odd(x), rnd) as u64,
        _ => f32_to_bf16(f64_to_f32_odd(x), rnd) as u64,
    }
}

fn float_bits(ty: Ty, x: f64) -> u64 {
    match ty {
        Ty::F64 => x.to_bits(),
        Ty::F32 => (x as f32).to_bits() as u64,
        Ty::F16 => f32_to_f16(x as f32, Round::Nearest) as u64,
        _ => f32_to_bf16(x as f32, Round::Nearest) as u64,
    }
}

/// Read-modify-write of an atomic operation: the new value from the old one.
pub fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let m = mask(bits);
    match op {
        AtomOp::Add if ty.is_float() => fbin(
            FBinOp::Add,
            ty,
            FMods {
                round: Round::Nearest,
                ftz: false,
                sat: false,
            },
            old,
            b,
        ),
        AtomOp::Add => old.wrapping_add(b) & m,
        AtomOp::Min if ty.is_float() => float_bits(ty, read_f(ty, old).min(read_f(ty, b))),
        AtomOp::Max if ty.is_float() => float_bits(ty, read_f(ty, old).max(read_f(ty, b))),
        AtomOp::Min => int_bin(IntBinOp::Min, ty, old, b),
        AtomOp::Max => int_bin(IntBinOp::Max, ty, old, b),
        AtomOp::Inc => {
            if (old & m) >= (b & m) {
                0
            } else {
                (old + 1) & m
            }
        }
        AtomOp::Dec => {
            if old & m == 0 || (old & m) > (b & m) {
                b & m
            } else {
                (old - 1) & m
            }
        }
        AtomOp::And => old & b & m,
        AtomOp::Or => (old | b) & m,
        AtomOp::Xor => (old ^ b) & m,
        AtomOp::Exch => b & m,
        AtomOp::Cas => {
            if old & m == b & m {
                c & m
            } else {
                old & m
            }
        }
    }
}
