//! Splits PTX text into tokens. Never panics; unknown characters are reported with their line.

use crate::error::LoadError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Identifier, register or label name: `add`, `%r1`, `$L__BB0_2`, `_Z3fooi`.
    Ident(String),
    /// A dotted word: `.reg`, `.f32`, `.shared::cta` (stored without the leading dot).
    Dot(String),
    /// Integer literal (magnitude; a leading `-` is a separate token).
    Int(u64),
    /// Decimal floating literal.
    Float(f64),
    /// `0fXXXXXXXX`: exact single-precision bits.
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX`: exact double-precision bits.
    F64Bits(u64),
    Str(String),
    Punct(char),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
}

pub fn tokenize(text: &str) -> Result<Vec<Token>, LoadError> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut line = 1u32;
    let mut out = Vec::new();
    let err = |line: u32, message: String| LoadError::InvalidPtx { line, message };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            _ if c.is_ascii_whitespace() => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                loop {
                    if i + 1 >= b.len() {
                        return Err(err(line, "unterminated /* comment".into()));
                    }
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    if b[i] == b'*' && b[i + 1] == b'/' {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
            }
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\n' {
                        return Err(err(line, "unterminated string".into()));
                    }
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err(err(line, "unterminated string".into()));
                }
                out.push(Token {
                    tok: Tok::Str(String::from_utf8_lossy(&b[start..i]).into_owned()),
                    line,
                });
                i += 1;
            }
            b'.' if b
                .get(i + 1)
                .is_some_and(|&n| is_ident_start(n) && n != b'%') =>
            {
                let start = i + 1;
                i += 1;
                loop {
                    while i < b.len() && is_ident_char(b[i]) {
                        i += 1;
                    }
                    if b.get(i) == Some(&b':')
                        && b.get(i + 1) == Some(&b':')
                        && b.get(i + 2).is_some_and(|&n| is_ident_char(n))
                    {
                        i += 2;
                        continue;
                    }
                    break;
                }
                out.push(Token {
                    tok: Tok::Dot(text[start..i].to_string()),
                    line,
                });
            }
            _ if is_ident_start(c) => {
                let start = i;
                i += 1;
                while i < b.len() && is_ident_char(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(text[start..i].to_string()),
                    line,
                });
            }
            _ if c.is_ascii_digit() => {
                let (tok, len) = lex_number(&b[i..]).ok_or_else(|| {
                    err(
                        line,
                        format!("malformed number near {:?}", snippet(text, i)),
                    )
                })?;
                out.push(Token { tok, line });
                i += len;
            }
            b',' | b';' | b':' | b'[' | b']' | b'{' | b'}' | b'(' | b')' | b'+' | b'-' | b'!'
            | b'@' | b'<' | b'>' | b'=' | b'|' | b'*' => {
                out.push(Token {
                    tok: Tok::Punct(c as char),
                    line,
                });
                i += 1;
            }
            _ => {
                return Err(err(
                    line,
                    format!("unexpected character {:?}", snippet(text, i)),
                ));
            }
        }
    }
    Ok(out)
}

fn snippet(text: &str, at: usize) -> String {
    text.get(at..)
        .unwrap_or("")
        .chars()
        .take(12)
        .collect::<String>()
}

/// Lexes a number at the start of `b`; returns the token and its length in bytes.
fn lex_number(b: &[u8]) -> Option<(Tok, usize)> {
    let hex_run = |from: usize| {
        b[from..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count()
    };
    if b.len() >= 2 && b[0] == b'0' {
        match b[1] {
            b'f' | b'F' => {
                let n = hex_run(2);
                if n == 8 {
                    let v = u32::from_str_radix(std::str::from_utf8(&b[2..10]).ok()?, 16).ok()?;
                    return Some((Tok::F32Bits(v), 10));
                }
            }
            b'd' | b'D' => {
                let n = hex_run(2);
                if n == 16 {
                    let v = u64::from_str_radix(std::str::from_utf8(&b[2..18]).ok()?, 16).ok()?;
                    return Some((Tok::F64Bits(v), 18));
                }
            }
            b'x' | b'X' => {
                let n = hex_run(2);
                if n == 0 {
                    return None;
                }
                let v = u64::from_str_radix(std::str::from_utf8(&b[2..2 + n]).ok()?, 16).ok()?;
                return Some((Tok::Int(v), with_suffix(b, 2 + n)));
            }
            b'b' | b'B' => {
                let n = b[2..]
                    .iter()
                    .take_while(|&&c| c == b'0' || c == b'1')
                    .count();
                if n == 0 {
                    return None;
                }
                let v = u64::from_str_radix(std::str::from_utf8(&b[2..2 + n]).ok()?, 2).ok()?;
                return Some((Tok::Int(v), with_suffix(b, 2 + n)));
            }
            _ => {}
        }
    }
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut end = digits;
    let mut is_float = false;
    if b.get(end) == Some(&b'.') && b.get(end + 1).is_some_and(|c| c.is_ascii_digit()) {
        is_float = true;
        end += 1;
        end += b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
    }
    if matches!(b.get(end), Some(b'e') | Some(b'E')) {
        let mut e = end + 1;
        if matches!(b.get(e), Some(b'+') | Some(b'-')) {
            e += 1;
        }
        let n = b[e..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n > 0 {
            is_float = true;
            end = e + n;
        }
    }
    let s = std::str::from_utf8(&b[..end]).ok()?;
    if is_float {
        return Some((Tok::Float(s.parse().ok()?), end));
    }
    let v = if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse().ok()?
    };
    Some((Tok::Int(v), with_suffix(b, end)))
}

/// Skips an optional `U` suffix of an integer literal.
fn with_suffix(b: &[u8], end: usize) -> usize {
    if matches!(b.get(end), Some(b'U') | Some(b'u')) {
        end + 1
    } else {
        end
    }
}
