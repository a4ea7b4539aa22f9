//! Half-precision conversions and directed rounding helpers.

use crate::ir::Round;

/// f32 → IEEE binary16 bits with the given rounding.
pub fn f32_to_f16(x: f32, round: Round) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign
            | 0x7c00
            | if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
    }
    let neg = sign != 0;
    // Round a value `v` (an integer count of units) with `shift` bits to drop.
    let round_shift = |v: u64, shift: u32| -> u64 {
        if shift == 0 {
            return v;
        }
        if shift >= 64 {
            return round_up_needed(round, neg, v != 0, false, false) as u64;
        }
        let q = v >> shift;
        let rem = v & ((1u64 << shift) - 1);
        let half = 1u64 << (shift - 1);
        let up = match round {
            Round::Nearest => rem > half || (rem == half && q & 1 == 1),
            _ => round_up_needed(round, neg, rem != 0, false, false),
        };
        q + up as u64
    };
    if exp == 0 && man == 0 {
        return sign;
    }
    // Value = 1.man * 2^(exp-127) (normal f32); f16 normal exponent range -14..15.
    let e = exp - 127;
    let full = (man | if exp != 0 { 0x80_0000 } else { 0 }) as u64; // 24-bit significand
    let e = if exp == 0 { -126 } else { e };
    if e >= -14 {
        // Normal f16: keep 11 bits of significand.
        let m = round_shift(full, 13);
        let (m, e) = if m >= 0x800 { (m >> 1, e + 1) } else { (m, e) };
        if e > 15 {
            return overflow16(sign, round, neg);
        }
        sign | (((e + 15) as u16) << 10) | (m as u16 & 0x3ff)
    } else {
        // Subnormal f16: units of 2^-24.
        let shift = (13 + (-14 - e)) as u32;
        let m = round_shift(full, shift);
        sign | m as u16 // m may round up into the smallest normal, which encodes correctly
    }
}

fn overflow16(sign: u16, round: Round, neg: bool) -> u16 {
    let to_inf = match round {
        Round::Nearest => true,
        Round::Zero => false,
        Round::Up => !neg,
        Round::Down => neg,
    };
    sign | if to_inf { 0x7c00 } else { 0x7bff }
}

/// Whether a directed rounding of an inexact magnitude must step away from zero.
fn round_up_needed(round: Round, neg: bool, inexact: bool, _a: bool, _b: bool) -> bool {
    inexact
        && match round {
            Round::Nearest | Round::Zero => false,
            Round::Up => !neg,
            Round::Down => neg,
        }
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

pub fn f32_to_bf16(x: f32, round: Round) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let neg = bits >> 31 != 0;
    let rem = bits & 0xffff;
    let q = bits >> 16;
    let up = match round {
        Round::Nearest => rem > 0x8000 || (rem == 0x8000 && q & 1 == 1),
        Round::Zero => false,
        Round::Up => rem != 0 && !neg,
        Round::Down => rem != 0 && neg,
    };
    (q + up as u32) as u16
}

pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Rounds an f64 to f32 with round-to-odd: rounding that result again to a format with at
/// least two fewer significand bits (f16, bf16) gives the correctly rounded value, which
/// rounding through f32 to nearest would not (double rounding).
pub fn f64_to_f32_odd(x: f64) -> f32 {
    let r = x as f32;
    if x.is_nan() || !r.is_finite() || r as f64 == x {
        return r;
    }
    // Truncate toward zero, then set the last significand bit.
    let t = if (r as f64).abs() > x.abs() {
        r.next_toward_zero()
    } else {
        r
    };
    f32::from_bits(t.to_bits() | 1)
}

trait NextTowardZero {
    fn next_toward_zero(self) -> Self;
}

impl NextTowardZero for f32 {
    fn next_toward_zero(self) -> f32 {
        if self > 0.0 {
            self.next_down()
        } else {
            self.next_up()
        }
    }
}

/// Rounds an f64 to f32 with a directed mode.
pub fn f64_to_f32(x: f64, round: Round) -> f32 {
    let r = x as f32;
    if round == Round::Nearest || x.is_nan() || (r as f64) == x {
        return r;
    }
    adjust32(r, (r as f64) < x, round)
}

/// Given `r` = the nearest result and whether the exact value lies above it, applies `round`.
pub fn adjust32(r: f32, exact_above: bool, round: Round) -> f32 {
    match round {
        Round::Nearest => r,
        Round::Up if exact_above => r.next_up(),
        Round::Down if !exact_above => r.next_down(),
        Round::Zero if r > 0.0 && !exact_above => r.next_down(),
        Round::Zero if r < 0.0 && exact_above => r.next_up(),
        Round::Zero if r.is_infinite() => {
            if r > 0.0 {
                f32::MAX
            } else {
                f32::MIN
            }
        }
        _ => r,
    }
}

pub fn adjust64(r: f64, exact_above: bool, round: Round) -> f64 {
    match round {
        Round::Nearest => r,
        Round::Up if exact_above => r.next_up(),
        Round::Down if !exact_above => r.next_down(),
        Round::Zero if r > 0.0 && !exact_above => r.next_down(),
        Round::Zero if r < 0.0 && exact_above => r.next_up(),
        _ => r,
    }
}

pub fn ftz32(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_matches_known_values() {
        assert_eq!(f32_to_f16(1.0, Round::Nearest), 0x3c00);
        assert_eq!(f32_to_f16(-2.5, Round::Nearest), 0xc100);
        assert_eq!(f32_to_f16(65504.0, Round::Nearest), 0x7bff);
        assert_eq!(f32_to_f16(70000.0, Round::Nearest), 0x7c00);
        assert_eq!(f32_to_f16(5.960_464_5e-8, Round::Nearest), 0x0001);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        for h in 0..=0xffffu16 {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f, Round::Nearest), h, "{h:#x}");
            }
        }
    }

    #[test]
    fn f64_to_f16_rounds_once() {
        // 1 + 2^-11 + 2^-40 is just above the halfway point between two f16 values: it must
        // round up, although rounding to f32 first would land exactly on the tie.
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(f32_to_f16(f64_to_f32_odd(x), Round::Nearest), 0x3c01);
        assert_eq!(f32_to_f16(x as f32, Round::Nearest), 0x3c00);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0, Round::Nearest), 0x3f80);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f80_8000), Round::Nearest),
            0x3f80
        );
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f81_8000), Round::Nearest),
            0x3f82
        );
    }
}
