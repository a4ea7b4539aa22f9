//! Device-side `printf` (`vprintf`): formats a C format string against the packed argument
//! buffer nvcc builds (each argument aligned to its size; floats promoted to double).

/// Formats `fmt`. `arg(size)` returns the next argument of 4 or 8 bytes; `string(addr)`
/// reads a NUL-terminated device string.
pub fn format(
    fmt: &[u8],
    mut arg: impl FnMut(u32) -> Option<u64>,
    mut string: impl FnMut(u64) -> Vec<u8>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push(b'%');
            i += 1;
            continue;
        }
        let start = i - 1;
        let mut flags = String::new();
        while let Some(&f) = fmt.get(i).filter(|f| b"-+ #0".contains(f)) {
            flags.push(f as char);
            i += 1;
        }
        let mut width: Option<usize> = None;
        if fmt.get(i) == Some(&b'*') {
            width = arg(4).map(|v| (v as i32).unsigned_abs() as usize);
            i += 1;
        } else {
            while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
                width = Some(
                    width
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add((d - b'0') as usize)
                        .min(4096),
                );
                i += 1;
            }
        }
        let mut precision: Option<usize> = None;
        if fmt.get(i) == Some(&b'.') {
            i += 1;
            precision = Some(0);
            if fmt.get(i) == Some(&b'*') {
                precision = arg(4).map(|v| (v as i32).max(0) as usize);
                i += 1;
            } else {
                while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
                    precision = Some(
                        precision
                            .unwrap_or(0)
                            .saturating_mul(10)
                            .saturating_add((d - b'0') as usize)
                            .min(4096),
                    );
                    i += 1;
                }
            }
        }
        let mut long = 0;
        while let Some(&l) = fmt.get(i).filter(|l| b"hlLqjzt".contains(l)) {
            if matches!(l, b'l' | b'L' | b'q' | b'j' | b'z' | b't') {
                long += 1;
            }
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else {
            out.extend_from_slice(&fmt[start..]);
            break;
        };
        i += 1;
        let left = flags.contains('-');
        let zero = flags.contains('0') && !left;
        let plus = flags.contains('+');
        let space = flags.contains(' ');
        let alt = flags.contains('#');
        let int_size = if long > 0 { 8 } else { 4 };
        let body: String = match conv {
            b'd' | b'i' => {
                let v = arg(int_size).unwrap_or(0);
                let v = if int_size == 4 {
                    v as i32 as i64
                } else {
                    v as i64
                };
                let mut s = v.unsigned_abs().to_string();
                if let Some(p) = precision {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                let sign = if v < 0 {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                pad_number(sign, &s, width, left, zero && precision.is_none())
            }
            b'u' | b'x' | b'X' | b'o' => {
                let v = arg(int_size).unwrap_or(0);
                let v = if int_size == 4 { v as u32 as u64 } else { v };
                let mut s = match conv {
                    b'u' => v.to_string(),
                    b'x' => format!("{v:x}"),
                    b'X' => format!("{v:X}"),
                    _ => format!("{v:o}"),
                };
                if let Some(p) = precision {
                    while s.len() < p {
                        s.insert(0, '0');
                    }
                }
                let prefix = match (alt && v != 0, conv) {
                    (true, b'x') => "0x",
                    (true, b'X') => "0X",
                    (true, b'o') => "0",
                    _ => "",
                };
                pad_number(prefix, &s, width, left, zero && precision.is_none())
            }
            b'c' => {
                let v = arg(4).unwrap_or(0) as u8;
                pad(&(v as char).to_string(), width, left)
            }
            b's' => {
                let addr = arg(8).unwrap_or(0);
                let mut bytes = if addr == 0 {
                    b"(null)".to_vec()
                } else {
                    string(addr)
                };
                if let Some(p) = precision {
                    bytes.truncate(p);
                }
                pad(&String::from_utf8_lossy(&bytes), width, left)
            }
            b'p' => {
                let v = arg(8).unwrap_or(0);
                pad(&format!("0x{v:x}"), width, left)
            }
            b'f' | b'F' | b'e' | b'E' | b'g' | b'G' | b'a' | b'A' => {
                let v = f64::from_bits(arg(8).unwrap_or(0));
                let p = precision.unwrap_or(6);
                let s = format_float(v.abs(), conv, p, alt);
                let sign = if v.is_sign_negative() && !v.is_nan() {
                    "-"
                } else if plus {
                    "+"
                } else if space {
                    " "
                } else {
                    ""
                };
                pad_number(sign, &s, width, left, zero && v.is_finite())
            }
            _ => String::from_utf8_lossy(&fmt[start..i]).into_owned(),
        };
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn pad(s: &str, width: Option<usize>, left: bool) -> String {
    let w = width.unwrap_or(0);
    let n = s.chars().count();
    if n >= w {
        return s.to_string();
    }
    let fill = " ".repeat(w - n);
    if left {
        format!("{s}{fill}")
    } else {
        format!("{fill}{s}")
    }
}

fn pad_number(sign: &str, digits: &str, width: Option<usize>, left: bool, zero: bool) -> String {
    let w = width.unwrap_or(0);
    let n = sign.len() + digits.len();
    if n >= w {
        return format!("{sign}{digits}");
    }
    if left {
        format!("{sign}{digits}{}", " ".repeat(w - n))
    } else if zero {
        format!("{sign}{}{digits}", "0".repeat(w - n))
    } else {
        format!("{}{sign}{digits}", " ".repeat(w - n))
    }
}

fn format_float(v: f64, conv: u8, p: usize, alt: bool) -> String {
    let upper = conv.is_ascii_uppercase();
    if v.is_nan() {
        return if upper { "NAN" } else { "nan" }.into();
    }
    if v.is_infinite() {
        return if upper { "INF" } else { "inf" }.into();
    }
    let s = match conv.to_ascii_lowercase() {
        b'f' => format!("{v:.p$}"),
        b'e' => exp_form(v, p),
        b'a' => format!("{v:e}"),
        _ => {
            // %g: precision P (0 → 1); exponent X from %e; use %f if P > X >= -4.
            let p = if p == 0 { 1 } else { p };
            let e = exp_form(v, p - 1);
            let x: i32 = e
                .rsplit('e')
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let mut s = if (p as i32) > x && x >= -4 {
                format!("{v:.*}", (p as i32 - 1 - x).max(0) as usize)
            } else {
                e
            };
            if !alt {
                s = strip_zeros(&s);
            }
            s
        }
    };
    if upper { s.to_uppercase() } else { s }
}

fn exp_form(v: f64, p: usize) -> String {
    let s = format!("{v:.p$e}");
    // Rust writes 1.5e2; C writes 1.5e+02.
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn strip_zeros(s: &str) -> String {
    let (mantissa, exp) = match s.find('e') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let m = if mantissa.contains('.') {
        mantissa.trim_end_matches('0').trim_end_matches('.')
    } else {
        mantissa
    };
    format!("{m}{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fmt: &str, args: &[u64]) -> String {
        let mut it = args.iter();
        String::from_utf8(format(
            fmt.as_bytes(),
            |_| it.next().copied(),
            |_| b"str".to_vec(),
        ))
        .unwrap()
    }

    #[test]
    fn formats_like_c_printf() {
        assert_eq!(
            run(
                "a %d b %5.2f|%-4u|%x\n",
                &[(-7i32) as u32 as u64, 3.14659f64.to_bits(), 5, 255]
            ),
            "a -7 b  3.15|5   |ff\n"
        );
        assert_eq!(
            run(
                "%e %g %g",
                &[1234.5f64.to_bits(), 0.0001f64.to_bits(), 1e20f64.to_bits()]
            ),
            "1.234500e+03 0.0001 1e+20"
        );
        assert_eq!(run("%s %05d %%", &[1, 42]), "str 00042 %");
        assert_eq!(run("%ld %lld", &[u64::MAX, 3]), "-1 3");
    }
}
