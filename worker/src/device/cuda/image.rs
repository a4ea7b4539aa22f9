//! Names of the module-scope variables a module image may define, so the backend can ask
//! the driver for each one's address (`cuModuleGetGlobal`): the driver has no call that
//! lists a module's variables. Pure parsing; the images come from programs, so nothing
//! here may panic or trust a length field.
//!
//! Names come from the PTX entries (`.global` / `.const` declarations at module scope) and
//! from the symbol tables of ELF (cubin) entries. A name the module does not really define
//! costs one `CUDA_ERROR_NOT_FOUND` and is dropped.

use gpufn_ptx::fatbin::{EntryKind, Image, read_image};
use std::collections::BTreeSet;

/// Every candidate variable name in `image`, sorted, without duplicates.
pub fn variable_names(image: &[u8]) -> Vec<String> {
    let mut names = BTreeSet::new();
    match read_image(image) {
        Ok(Image::Ptx(text)) => names.extend(ptx_variable_names(&text)),
        Ok(Image::Cubin) => names.extend(elf_object_names(image)),
        Ok(Image::Fatbin(entries)) => {
            for entry in entries {
                let Ok(contents) = entry.contents() else {
                    continue;
                };
                match entry.kind {
                    EntryKind::Ptx => {
                        let end = contents
                            .iter()
                            .position(|&b| b == 0)
                            .unwrap_or(contents.len());
                        if let Ok(text) = std::str::from_utf8(&contents[..end]) {
                            names.extend(ptx_variable_names(text));
                        }
                    }
                    EntryKind::Elf => names.extend(elf_object_names(&contents)),
                    EntryKind::Other(_) => {}
                }
            }
        }
        Err(_) => {}
    }
    names.into_iter().collect()
}

/// Names declared with `.global` or `.const` at module scope of PTX `text`.
pub fn ptx_variable_names(text: &str) -> Vec<String> {
    module_scope_statements(&strip_comments(text))
        .iter()
        .filter_map(|statement| declared_variable(statement))
        .collect()
}

/// The module-scope statements of PTX, with function bodies dropped.
fn module_scope_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                // A body closed at module scope ends a function; an initializer (`= {..}`)
                // is followed by its `;`.
                if depth == 0 && !current.contains('=') {
                    current.clear();
                }
            }
            ';' if depth == 0 => statements.push(std::mem::take(&mut current)),
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    statements
}

fn declared_variable(statement: &str) -> Option<String> {
    let declaration = statement.split('=').next().unwrap_or_default();
    let tokens: Vec<&str> = declaration.split_whitespace().collect();
    if !tokens.iter().any(|t| *t == ".global" || *t == ".const") {
        return None;
    }
    let last = tokens.last()?;
    let name = last.split('[').next().unwrap_or_default();
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%'));
    valid.then(|| name.to_string())
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

const SHT_SYMTAB: u32 = 2;
const STT_OBJECT: u8 = 1;
const SYMBOL_SIZE: usize = 24;

/// Names of the data objects (`STT_OBJECT`) a 64-bit little-endian ELF image defines.
pub fn elf_object_names(elf: &[u8]) -> Vec<String> {
    elf_object_names_checked(elf).unwrap_or_default()
}

fn elf_object_names_checked(elf: &[u8]) -> Option<Vec<String>> {
    if !elf.starts_with(b"\x7fELF") || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None; // not ELF64 little-endian
    }
    let section_table = usize::try_from(read_u64(elf, 0x28)?).ok()?;
    let entry_size = usize::from(read_u16(elf, 0x3a)?);
    let count = usize::from(read_u16(elf, 0x3c)?);
    if entry_size < 0x40 {
        return None;
    }
    let section = |index: usize| -> Option<&[u8]> {
        let start = section_table.checked_add(index.checked_mul(entry_size)?)?;
        elf.get(start..start.checked_add(0x40)?)
    };
    let contents = |header: &[u8]| -> Option<&[u8]> {
        let offset = usize::try_from(read_u64(header, 0x18)?).ok()?;
        let size = usize::try_from(read_u64(header, 0x20)?).ok()?;
        elf.get(offset..offset.checked_add(size)?)
    };
    let mut names = Vec::new();
    for index in 0..count {
        let header = section(index)?;
        if read_u32(header, 4)? != SHT_SYMTAB {
            continue;
        }
        let symbols = contents(header)?;
        let strings = contents(section(usize::try_from(read_u32(header, 0x28)?).ok()?)?)?;
        for symbol in symbols.chunks_exact(SYMBOL_SIZE) {
            let defined = read_u16(symbol, 6)? != 0;
            if symbol[4] & 0xf != STT_OBJECT || !defined {
                continue;
            }
            let start = usize::try_from(read_u32(symbol, 0)?).ok()?;
            let Some(tail) = strings.get(start..) else {
                continue;
            };
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            if let Ok(name) = std::str::from_utf8(&tail[..end])
                && !name.is_empty()
            {
                names.push(name.to_string());
            }
        }
    }
    Some(names)
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PTX: &str = r#"
//
// Generated by NVIDIA NVVM Compiler
.version 8.5
.target sm_90
.address_size 64

.global .align 4 .u32 counter;
.visible .global .align 4 .b8 table[64] = {1, 2, 3, 4};
.const .align 8 .f64 coefficients[3];
.extern .shared .align 16 .b8 dynamic_smem[];
/* .global .u32 commented_out; */
.visible .entry add_one(
	.param .u64 add_one_param_0
)
{
	.reg .b32 	%r<3>;
	.global .u32 not_module_scope;
	ld.param.u64 	%rd1, [add_one_param_0];
	ret;
}
.global .align 8 .u64 after_function = 7;
"#;

    #[test]
    fn ptx_declarations_at_module_scope_are_found() {
        assert_eq!(
            ptx_variable_names(PTX),
            vec!["counter", "table", "coefficients", "after_function"]
        );
        assert_eq!(variable_names(PTX.as_bytes()), {
            let mut v = vec!["after_function", "coefficients", "counter", "table"];
            v.sort();
            v
        });
    }

    /// A minimal ELF64 with a symbol table: one object `gvar`, one function `kern`, one
    /// undefined object `ext`.
    fn elf() -> Vec<u8> {
        let strtab = b"\0gvar\0kern\0ext\0".to_vec();
        let mut symtab = vec![0u8; SYMBOL_SIZE]; // the null symbol
        for (name, info, shndx) in [(1u32, 0x11u8, 1u16), (6, 0x12, 1), (11, 0x11, 0)] {
            let mut s = vec![0u8; SYMBOL_SIZE];
            s[0..4].copy_from_slice(&name.to_le_bytes());
            s[4] = info;
            s[6..8].copy_from_slice(&shndx.to_le_bytes());
            symtab.extend(s);
        }
        let mut image = vec![0u8; 0x40];
        image[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_at = image.len();
        image.extend(&strtab);
        let symtab_at = image.len();
        image.extend(&symtab);
        let sections_at = image.len();
        let header = |kind: u32, offset: usize, size: usize, link: u32| {
            let mut h = vec![0u8; 0x40];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h[0x28..0x2c].copy_from_slice(&link.to_le_bytes());
            h
        };
        image.extend(header(0, 0, 0, 0));
        image.extend(header(3, strtab_at, strtab.len(), 0));
        image.extend(header(SHT_SYMTAB, symtab_at, symtab.len(), 1));
        image[0x28..0x30].copy_from_slice(&(sections_at as u64).to_le_bytes());
        image[0x3a..0x3c].copy_from_slice(&0x40u16.to_le_bytes());
        image[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        image
    }

    #[test]
    fn cubin_objects_are_found() {
        assert_eq!(elf_object_names(&elf()), vec!["gvar"]);
        assert_eq!(variable_names(&elf()), vec!["gvar"]);
    }

    proptest! {
        #[test]
        fn damaged_images_never_panic(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let mut image = elf();
            if let Some(b) = image.get_mut(flip) {
                *b = byte;
            }
            image.truncate(cut);
            let _ = variable_names(&image);
            let _ = elf_object_names(&image);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = ptx_variable_names(&text);
            let _ = variable_names(text.as_bytes());
        }
    }
}
