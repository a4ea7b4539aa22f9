//! Translates parsed PTX functions into the compact [`ir`](crate::ir) form: names resolved to
//! register slots, frame offsets and device addresses; immediates materialised as constant
//! slots so every operand of an arithmetic instruction is a register.

use crate::ast::{self, Function, Operand, Space, Stmt, VarDecl};
use crate::error::LoadError;
use crate::ir::*;
use std::collections::HashMap;

/// Generic addresses in `[SHARED_WINDOW, SHARED_WINDOW + WINDOW_SIZE)` are shared memory.
pub const SHARED_WINDOW: u64 = 0x0001_0000_0000_0000;
/// Generic addresses in `[LOCAL_WINDOW, LOCAL_WINDOW + WINDOW_SIZE)` are local memory.
pub const LOCAL_WINDOW: u64 = 0x0002_0000_0000_0000;
pub const WINDOW_SIZE: u64 = 1 << 32;

/// One compiled function.
#[derive(Debug, Clone)]
pub struct FuncCode {
    pub name: String,
    pub is_entry: bool,
    pub code: Vec<Inst>,
    pub nslots: u32,
    pub consts: Vec<(Slot, u64)>,
    pub specials: Vec<(Slot, Special)>,
    /// Bytes of local memory this function's frame needs (params, returns, locals, call slots).
    pub frame_size: u32,
}

/// Layout of one parameter (kernel parameter buffer or `.func` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// What a function's signature looks like from outside.
#[derive(Debug, Clone)]
pub struct Signature {
    pub params: Vec<ParamLayout>,
    pub returns: Vec<ParamLayout>,
    /// Size of the parameter area (kernel buffer size, or start of a `.func`'s locals).
    pub size: u32,
}

/// Module-wide facts the function compiler resolves names against.
pub struct ModuleEnv {
    pub globals: HashMap<String, u64>,
    pub shared: HashMap<String, u32>,
    pub functions: HashMap<String, u32>,
    pub signatures: Vec<Signature>,
}

fn decl_size(v: &VarDecl) -> u64 {
    let elem = Ty::parse(&v.ty).map_or(1, |t| t.bytes() as u64) * v.vector as u64;
    v.dims
        .iter()
        .fold(elem, |acc, d| acc.saturating_mul(d.unwrap_or(0)))
}

pub fn decl_size_align(v: &VarDecl) -> (u64, u32) {
    let elem = Ty::parse(&v.ty).map_or(1, |t| t.bytes()) * v.vector;
    (
        decl_size(v),
        v.align
            .unwrap_or(elem)
            .clamp(1, 1 << 16)
            .next_power_of_two(),
    )
}

pub fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a.max(1)).saturating_mul(a.max(1))
}

/// Lays out parameters (then return values) of a function.
pub fn signature(f: &Function) -> Signature {
    let mut off = 0u64;
    let mut lay = |decls: &[VarDecl]| {
        decls
            .iter()
            .map(|d| {
                let (size, align) = decl_size_align(d);
                off = align_up(off, align as u64);
                let p = ParamLayout {
                    name: d.name.clone(),
                    offset: off.min(u32::MAX as u64) as u32,
                    size: size.min(u32::MAX as u64) as u32,
                    align,
                };
                off = off.saturating_add(size);
                p
            })
            .collect::<Vec<_>>()
    };
    let params = lay(&f.params);
    let returns = lay(&f.returns);
    Signature {
        params,
        returns,
        size: align_up(off, 16).min(u32::MAX as u64) as u32,
    }
}

#[derive(Debug, Clone, Copy)]
enum Sym {
    Reg { slot: Slot, ty: Ty },
    Global { addr: u64 },
    Shared { off: u32 },
    Frame { off: u32 },
    KernelParam { off: u32 },
}

struct FnCompiler<'a> {
    env: &'a ModuleEnv,
    func_index: u32,
    is_entry: bool,
    code: Vec<Inst>,
    nslots: u32,
    consts: HashMap<u64, Slot>,
    specials: HashMap<Special, Slot>,
    scopes: Vec<HashMap<String, Sym>>,
    labels: HashMap<String, u32>,
    fixups: Vec<(usize, String, u32)>,
    frame_size: u64,
    shared_next: &'a mut u32,
    scratch: Option<Slot>,
    carry_flag: Option<Slot>,
}

const MAX_FRAME: u64 = 1 << 24;
const MAX_REGISTERS: usize = 1 << 15;

/// Compiles one function with a body.
pub fn compile_function(
    env: &ModuleEnv,
    func_index: u32,
    f: &Function,
    body: &[Stmt],
    shared_next: &mut u32,
) -> Result<FuncCode, LoadError> {
    let sig = &env.signatures[func_index as usize];
    let mut c = FnCompiler {
        env,
        func_index,
        is_entry: f.is_entry,
        code: Vec::new(),
        nslots: 0,
        consts: HashMap::new(),
        specials: HashMap::new(),
        scopes: vec![HashMap::new()],
        labels: HashMap::new(),
        fixups: Vec::new(),
        frame_size: if f.is_entry { 0 } else { sig.size as u64 },
        shared_next,
        scratch: None,
        carry_flag: None,
    };
    for p in sig.params.iter().chain(&sig.returns) {
        let sym = if f.is_entry {
            Sym::KernelParam { off: p.offset }
        } else {
            Sym::Frame { off: p.offset }
        };
        c.scopes[0].insert(p.name.clone(), sym);
    }
    c.block(body)?;
    // A function may fall off its end; give it an implicit return.
    c.code.push(Inst {
        guard: None,
        op: Op::Ret,
        line: f.line,
    });
    for (at, label, line) in std::mem::take(&mut c.fixups) {
        let Some(&target) = c.labels.get(&label) else {
            return Err(LoadError::InvalidPtx {
                line,
                message: format!("branch to undefined label {label}"),
            });
        };
        if let Op::Bra { target: t } = &mut c.code[at].op {
            *t = target;
        }
    }
    let mut consts: Vec<(Slot, u64)> = c.consts.iter().map(|(&v, &s)| (s, v)).collect();
    consts.sort_unstable();
    let mut specials: Vec<(Slot, Special)> = c.specials.iter().map(|(&v, &s)| (s, v)).collect();
    specials.sort_unstable_by_key(|x| x.0);
    Ok(FuncCode {
        name: f.name.clone(),
        is_entry: f.is_entry,
        code: c.code,
        nslots: c.nslots,
        consts,
        specials,
        frame_size: align_up(c.frame_size, 16) as u32,
    })
}

fn unsupported(what: impl Into<String>, line: u32) -> LoadError {
    LoadError::NotSupported {
        what: what.into(),
        line,
    }
}

fn bad(message: impl Into<String>, line: u32) -> LoadError {
    LoadError::InvalidPtx {
        line,
        message: message.into(),
    }
}

/// Modifiers of one instruction with helpers to query them.
struct Mods<'a>(&'a [String]);

impl Mods<'_> {
    fn has(&self, m: &str) -> bool {
        self.0.iter().any(|x| x == m)
    }
    fn types(&self) -> Vec<Ty> {
        self.0.iter().filter_map(|m| Ty::parse(m)).collect()
    }
    fn round(&self) -> Option<Round> {
        self.0.iter().find_map(|m| match m.as_str() {
            "rn" | "rni" | "rna" => Some(Round::Nearest),
            "rz" | "rzi" => Some(Round::Zero),
            "rm" | "rmi" => Some(Round::Down),
            "rp" | "rpi" => Some(Round::Up),
            _ => None,
        })
    }
    fn int_round(&self) -> bool {
        self.0
            .iter()
            .any(|m| matches!(m.as_str(), "rni" | "rzi" | "rmi" | "rpi"))
    }
    fn fmods(&self) -> FMods {
        FMods {
            round: self.round().unwrap_or(Round::Nearest),
            ftz: self.has("ftz"),
            sat: self.has("sat") || self.has("satfinite"),
        }
    }
    fn space(&self) -> Option<Space> {
        self.0.iter().find_map(|m| {
            let base = m.split("::").next().unwrap_or("");
            match base {
                "global" => Some(Space::Global),
                "shared" => Some(Space::Shared),
                "local" => Some(Space::Local),
                "const" => Some(Space::Const),
                "param" => Some(Space::Param),
                _ => None,
            }
        })
    }
    fn vector(&self) -> usize {
        self.0
            .iter()
            .find_map(|m| match m.as_str() {
                "v2" => Some(2),
                "v4" => Some(4),
                "v8" => Some(8),
                _ => None,
            })
            .unwrap_or(1)
    }
}

fn special_of(name: &str) -> Option<Special> {
    let dim = |c: &str| match c {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, comp)) = name.split_once('.') {
        let d = dim(comp)?;
        return Some(match base {
            "%tid" => Special::Tid(d),
            "%ntid" => Special::Ntid(d),
            "%ctaid" => Special::Ctaid(d),
            "%nctaid" => Special::Nctaid(d),
            "%clusterid" | "%cluster_ctaid" => Special::Zero,
            "%nclusterid" | "%cluster_nctaid" => Special::Zero,
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        "%nwarpid" => Special::NWarpId,
        "%smid" => Special::SmId,
        "%nsmid" => Special::NSmId,
        "%gridid" => Special::GridId,
        "%lanemask_eq" => Special::LaneMaskEq,
        "%lanemask_lt" => Special::LaneMaskLt,
        "%lanemask_le" => Special::LaneMaskLe,
        "%lanemask_gt" => Special::LaneMaskGt,
        "%lanemask_ge" => Special::LaneMaskGe,
        "%dynamic_smem_size" => Special::DynamicSmemSize,
        "%total_smem_size" => Special::TotalSmemSize,
        n if n.starts_with("%envreg") || n.starts_with("%pm") => Special::Zero,
        _ => return None,
    })
}

/// Encodes a literal as the bits of type `ty`.
fn literal_bits(op: &Operand, ty: Ty, line: u32) -> Result<u64, LoadError> {
    let float_bits = |f: f64| -> u64 {
        match ty {
            Ty::F32 => (f as f32).to_bits() as u64,
            Ty::F16 | Ty::F16x2 => crate::float::f32_to_f16(f as f32, Round::Nearest) as u64,
            Ty::Bf16 | Ty::Bf16x2 => crate::float::f32_to_bf16(f as f32, Round::Nearest) as u64,
            _ => f.to_bits(),
        }
    };
    let mask = |v: u64| match ty.bits() {
        b if b >= 64 => v,
        1 => (v != 0) as u64,
        b => v & ((1u64 << b) - 1),
    };
    Ok(match op {
        Operand::Int(v) => match ty {
            Ty::F32 | Ty::F64 => float_bits(*v as f64),
            _ => mask(*v as u64),
        },
        Operand::Float(f) => {
            if !ty.is_float() {
                return Err(bad(
                    format!("float literal {f} for integer type {ty:?}"),
                    line,
                ));
            }
            float_bits(*f)
        }
        Operand::F32Bits(b) => match ty {
            Ty::F64 => (f32::from_bits(*b) as f64).to_bits(),
            Ty::F16 | Ty::Bf16 => float_bits(f32::from_bits(*b) as f64),
            _ => mask(*b as u64),
        },
        Operand::F64Bits(b) => match ty {
            Ty::F32 | Ty::F16 | Ty::Bf16 => float_bits(f64::from_bits(*b)),
            _ => mask(*b),
        },
        _ => return Err(bad("expected a literal", line)),
    })
}

impl FnCompiler<'_> {
    fn new_slot(&mut self) -> Slot {
        self.nslots += 1;
        self.nslots - 1
    }

    fn konst(&mut self, v: u64) -> Slot {
        if let Some(&s) = self.consts.get(&v) {
            return s;
        }
        let s = self.new_slot();
        self.consts.insert(v, s);
        s
    }

    fn scratch(&mut self) -> Slot {
        if let Some(s) = self.scratch {
            return s;
        }
        let s = self.new_slot();
        self.scratch = Some(s);
        s
    }

    fn lookup(&self, name: &str) -> Option<Sym> {
        for scope in self.scopes.iter().rev() {
            if let Some(s) = scope.get(name) {
                return Some(*s);
            }
        }
        if let Some(&addr) = self.env.globals.get(name) {
            return Some(Sym::Global { addr });
        }
        if let Some(&off) = self.env.shared.get(name) {
            return Some(Sym::Shared { off });
        }
        None
    }

    fn emit(&mut self, op: Op, line: u32) {
        self.code.push(Inst {
            guard: None,
            op,
            line,
        });
    }

    fn declare(&mut self, v: &VarDecl) -> Result<(), LoadError> {
        let line = v.line;
        match v.space {
            Space::Reg => {
                let ty = Ty::parse(&v.ty).ok_or_else(|| bad("bad register type", line))?;
                if v.vector != 1 {
                    return Err(unsupported("vector registers (.reg .v2/.v4)", line));
                }
                let names: Vec<String> = match v.range {
                    Some(n) => (0..n).map(|i| format!("{}{i}", v.name)).collect(),
                    None => vec![v.name.clone()],
                };
                // Each register costs 256 bytes per warp; bound what a module can make a
                // worker allocate.
                if self.nslots as usize + names.len() > MAX_REGISTERS {
                    return Err(unsupported(
                        format!("more than {MAX_REGISTERS} virtual registers in one function"),
                        line,
                    ));
                }
                for n in names {
                    let slot = self.new_slot();
                    self.scopes
                        .last_mut()
                        .expect("scope stack is never empty")
                        .insert(n, Sym::Reg { slot, ty });
                }
            }
            Space::Local | Space::Param => {
                let (size, align) = decl_size_align(v);
                let off = align_up(self.frame_size, align as u64);
                self.frame_size = off.saturating_add(size);
                if self.frame_size > MAX_FRAME {
                    return Err(unsupported(
                        "a frame larger than 16 MiB of local memory",
                        line,
                    ));
                }
                self.scopes
                    .last_mut()
                    .expect("scope stack is never empty")
                    .insert(v.name.clone(), Sym::Frame { off: off as u32 });
            }
            Space::Shared => {
                let (size, align) = decl_size_align(v);
                let off = align_up(*self.shared_next as u64, align as u64);
                let end = off.saturating_add(size);
                if end > u32::MAX as u64 / 2 {
                    return Err(unsupported("more than 2 GiB of shared memory", line));
                }
                *self.shared_next = end as u32;
                self.scopes
                    .last_mut()
                    .expect("scope stack is never empty")
                    .insert(v.name.clone(), Sym::Shared { off: off as u32 });
            }
            Space::Global | Space::Const => {
                return Err(unsupported("function-scope .global/.const variables", line));
            }
        }
        Ok(())
    }

    fn block(&mut self, stmts: &[Stmt]) -> Result<(), LoadError> {
        for s in stmts {
            match s {
                Stmt::Decl(v) => self.declare(v)?,
                Stmt::Label(name, line) => {
                    if self
                        .labels
                        .insert(name.clone(), self.code.len() as u32)
                        .is_some()
                    {
                        return Err(bad(format!("label {name} defined twice"), *line));
                    }
                }
                Stmt::Block(inner) => {
                    self.scopes.push(HashMap::new());
                    let r = self.block(inner);
                    self.scopes.pop();
                    r?;
                }
                Stmt::Instr(i) => self.instr(i)?,
            }
        }
        Ok(())
    }

    /// Slot of a register-like source operand of type `ty`.
    fn src(&mut self, op: &Operand, ty: Ty, line: u32) -> Result<Slot, LoadError> {
        match op {
            Operand::Name(name) => self.name_value(name, 0, line),
            Operand::SymOffset { name, offset } => self.name_value(name, *offset, line),
            Operand::Int(_) | Operand::Float(_) | Operand::F32Bits(_) | Operand::F64Bits(_) => {
                let v = literal_bits(op, ty, line)?;
                Ok(self.konst(v))
            }
            _ => Err(bad(format!("unexpected operand {op:?}"), line)),
        }
    }

    fn name_value(&mut self, name: &str, offset: i64, line: u32) -> Result<Slot, LoadError> {
        match self.lookup(name) {
            Some(Sym::Reg { slot, .. }) if offset == 0 => Ok(slot),
            Some(Sym::Reg { .. }) => Err(bad(format!("register {name} with an offset"), line)),
            Some(Sym::Global { addr }) => Ok(self.konst(addr.wrapping_add(offset as u64))),
            Some(Sym::Shared { off }) => Ok(self.konst((off as u64).wrapping_add(offset as u64))),
            Some(Sym::KernelParam { off }) => {
                Ok(self.konst((off as u64).wrapping_add(offset as u64)))
            }
            Some(Sym::Frame { off }) => {
                let d = self.new_slot();
                let offset = (off as i64)
                    .saturating_add(offset)
                    .clamp(0, u32::MAX as i64) as u32;
                self.emit(Op::FrameAddr { d, offset }, line);
                Ok(d)
            }
            None => {
                if matches!(
                    name,
                    "%clock" | "%clock64" | "%globaltimer" | "%globaltimer_lo"
                ) {
                    let d = self.new_slot();
                    self.emit(Op::Clock { d }, line);
                    return Ok(d);
                }
                if let Some(sp) = special_of(name) {
                    if let Some(&s) = self.specials.get(&sp) {
                        return Ok(s);
                    }
                    let s = self.new_slot();
                    self.specials.insert(sp, s);
                    return Ok(s);
                }
                if self.env.functions.contains_key(name) {
                    return Err(unsupported(
                        format!("taking the address of function {name} (indirect calls)"),
                        line,
                    ));
                }
                Err(bad(format!("undeclared name {name}"), line))
            }
        }
    }

    fn dst(&mut self, op: &Operand, line: u32) -> Result<Slot, LoadError> {
        match op {
            Operand::Sink => Ok(self.scratch()),
            Operand::Name(name) => match self.lookup(name) {
                Some(Sym::Reg { slot, .. }) => Ok(slot),
                _ => Err(bad(format!("{name} is not a register"), line)),
            },
            _ => Err(bad(format!("bad destination {op:?}"), line)),
        }
    }

    fn reg_bits(&self, op: &Operand) -> Option<u32> {
        match op {
            Operand::Name(n) => match self.lookup(n) {
                Some(Sym::Reg { ty, .. }) => Some(ty.bits()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Predicate operand, possibly negated (`!%p`).
    fn pred(&mut self, op: &Operand, line: u32) -> Result<(Slot, bool), LoadError> {
        match op {
            Operand::Not(inner) => Ok((self.src(inner, Ty::Pred, line)?, true)),
            other => Ok((self.src(other, Ty::Pred, line)?, false)),
        }
    }

    /// Resolves a memory operand for an access in `space` (None = generic).
    fn addr(
        &mut self,
        op: &Operand,
        space: Option<Space>,
        line: u32,
    ) -> Result<(Addr, MemSpace), LoadError> {
        let Operand::Addr { base, offset } = op else {
            return Err(bad(format!("expected an address, found {op:?}"), line));
        };
        let default_space = match space {
            None => MemSpace::Generic,
            Some(Space::Global) | Some(Space::Const) => MemSpace::Global,
            Some(Space::Shared) => MemSpace::Shared,
            Some(Space::Local) => MemSpace::Local,
            Some(Space::Param) if self.is_entry => MemSpace::KernelParam,
            Some(Space::Param) => MemSpace::Local,
            Some(Space::Reg) => return Err(bad("memory access in the register space", line)),
        };
        let Some(name) = base else {
            return Ok((
                Addr {
                    base: None,
                    offset: *offset,
                    frame: false,
                },
                default_space,
            ));
        };
        let mk = |off: i64, frame: bool| Addr {
            base: None,
            offset: off,
            frame,
        };
        Ok(match self.lookup(name) {
            Some(Sym::Reg { slot, .. }) => (
                Addr {
                    base: Some(slot),
                    offset: *offset,
                    frame: false,
                },
                default_space,
            ),
            Some(Sym::Global { addr }) => (
                mk((addr as i64).wrapping_add(*offset), false),
                MemSpace::Global,
            ),
            Some(Sym::Shared { off }) => (
                mk((off as i64).wrapping_add(*offset), false),
                MemSpace::Shared,
            ),
            Some(Sym::KernelParam { off }) => (
                mk((off as i64).wrapping_add(*offset), false),
                MemSpace::KernelParam,
            ),
            Some(Sym::Frame { off }) => (
                mk((off as i64).wrapping_add(*offset), true),
                MemSpace::Local,
            ),
            None => {
                let v = self.name_value(name, 0, line)?;
                (
                    Addr {
                        base: Some(v),
                        offset: *offset,
                        frame: false,
                    },
                    default_space,
                )
            }
        })
    }

    fn instr(&mut self, i: &ast::Instr) -> Result<(), LoadError> {
        let start = self.code.len();
        let guard = match &i.guard {
            Some((name, neg)) => Some((self.name_value(name, 0, i.line)?, *neg)),
            None => None,
        };
        let op = self.op(i)?;
        let at = self.code.len();
        if let Op::Bra { .. } = op {
            let label = match i.operands.first() {
                Some(Operand::Name(l)) => l.clone(),
                _ => return Err(bad("bra needs a label", i.line)),
            };
            self.fixups.push((at, label, i.line));
        }
        // Helper instructions (frame addresses) emitted for operands run unguarded before it.
        let _ = start;
        self.code.push(Inst {
            guard,
            op,
            line: i.line,
        });
        Ok(())
    }

    fn ty1(&self, i: &ast::Instr) -> Result<Ty, LoadError> {
        Mods(&i.mods)
            .types()
            .last()
            .copied()
            .ok_or_else(|| bad(format!("{} without a type", i.opcode), i.line))
    }
}

fn operands<const N: usize>(i: &ast::Instr) -> Result<&[Operand; N], LoadError> {
    {
        i.operands
            .get(..N)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad(format!("{} needs {N} operands", i.opcode), i.line))
    }
}

impl FnCompiler<'_> {
    fn op(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let m = Mods(&i.mods);
        let line = i.line;
        let full = || format!("{}.{}", i.opcode, i.mods.join("."));
        Ok(match i.opcode.as_str() {
            "addc" | "subc" | "madc" => self.carry(i)?,
            "add" | "sub" | "mad" if m.has("cc") => self.carry(i)?,
            "mov" => self.mov(i)?,
            "ld" | "ldu" => self.ld(i)?,
            "st" => self.st(i)?,
            "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor"
            | "shl" | "shr" | "copysign" => self.binary(i)?,
            "mad" | "fma" => {
                let ty = self.ty1(i)?;
                let [d, a, b, c] = operands::<4>(i)?;
                let d = self.dst(d, line)?;
                // For .wide the type names the (narrow) multiplicands; the addend is twice as wide.
                let c_ty = if m.has("wide") { double_ty(ty) } else { ty };
                let a = self.src(a, ty, line)?;
                let b = self.src(b, ty, line)?;
                let c = self.src(c, c_ty, line)?;
                if ty.is_float() {
                    Op::Fma {
                        ty,
                        m: m.fmods(),
                        d,
                        a,
                        b,
                        c,
                    }
                } else {
                    let mode = if m.has("hi") {
                        IntBinOp::MulHi
                    } else if m.has("wide") {
                        IntBinOp::MulWide
                    } else {
                        IntBinOp::MulLo
                    };
                    Op::Mad {
                        mode,
                        ty,
                        sat: m.has("sat"),
                        d,
                        a,
                        b,
                        c,
                    }
                }
            }
            "abs" | "neg" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" | "rcp" | "sqrt"
            | "rsqrt" | "sin" | "cos" | "ex2" | "lg2" | "tanh" => self.unary(i)?,
            "bfe" => {
                let ty = self.ty1(i)?;
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Bfe {
                    ty,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                    b: self.src(b, Ty::U32, line)?,
                    c: self.src(c, Ty::U32, line)?,
                }
            }
            "bfi" => {
                let ty = self.ty1(i)?;
                let [d, f, b, c, e] = operands::<5>(i)?;
                Op::Bfi {
                    ty,
                    d: self.dst(d, line)?,
                    f: self.src(f, ty, line)?,
                    b: self.src(b, ty, line)?,
                    c: self.src(c, Ty::U32, line)?,
                    e: self.src(e, Ty::U32, line)?,
                }
            }
            "prmt" => {
                if i.mods.iter().any(|x| x != "b32") {
                    return Ok(Op::Unsupported { what: full() });
                }
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Prmt {
                    d: self.dst(d, line)?,
                    a: self.src(a, Ty::B32, line)?,
                    b: self.src(b, Ty::B32, line)?,
                    c: self.src(c, Ty::B32, line)?,
                }
            }
            "shf" => {
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Shf {
                    left: m.has("l"),
                    clamp: m.has("clamp"),
                    d: self.dst(d, line)?,
                    a: self.src(a, Ty::B32, line)?,
                    b: self.src(b, Ty::B32, line)?,
                    c: self.src(c, Ty::U32, line)?,
                }
            }
            "sad" => {
                let ty = self.ty1(i)?;
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Sad {
                    ty,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                    b: self.src(b, ty, line)?,
                    c: self.src(c, ty, line)?,
                }
            }
            "testp" => {
                let ty = self.ty1(i)?;
                let op = match i.mods.first().map(String::as_str) {
                    Some("finite") => TestpOp::Finite,
                    Some("infinite") => TestpOp::Infinite,
                    Some("number") => TestpOp::Number,
                    Some("notanumber") => TestpOp::NotANumber,
                    Some("normal") => TestpOp::Normal,
                    Some("subnormal") => TestpOp::Subnormal,
                    _ => return Err(bad("testp needs an operation", line)),
                };
                let [d, a] = operands::<2>(i)?;
                Op::Testp {
                    op,
                    ty,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                }
            }
            "setp" | "set" => self.setp(i)?,
            "selp" => {
                let ty = self.ty1(i)?;
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Selp {
                    ty,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                    b: self.src(b, ty, line)?,
                    c: self.src(c, Ty::Pred, line)?,
                }
            }
            "slct" => {
                let tys = m.types();
                let (Some(&dty), Some(&cty)) = (tys.first(), tys.get(1)) else {
                    return Err(bad("slct needs two types", line));
                };
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Slct {
                    cty,
                    ftz: m.has("ftz"),
                    d: self.dst(d, line)?,
                    a: self.src(a, dty, line)?,
                    b: self.src(b, dty, line)?,
                    c: self.src(c, cty, line)?,
                }
            }
            "cvt" => {
                let tys = m.types();
                let (Some(&dty), Some(&sty)) = (tys.first(), tys.get(1)) else {
                    return Err(bad("cvt needs two types", line));
                };
                if matches!(dty, Ty::F16x2 | Ty::Bf16x2) && sty == Ty::F32 && i.operands.len() == 3
                {
                    let [d, a, b] = operands::<3>(i)?;
                    return Ok(Op::CvtPack {
                        dty,
                        round: m.round().unwrap_or(Round::Nearest),
                        relu: m.has("relu"),
                        d: self.dst(d, line)?,
                        a: self.src(a, Ty::F32, line)?,
                        b: self.src(b, Ty::F32, line)?,
                    });
                }
                if i.operands.len() != 2 || matches!(dty, Ty::F16x2 | Ty::Bf16x2) {
                    return Ok(Op::Unsupported { what: full() });
                }
                let [d, a] = operands::<2>(i)?;
                Op::Cvt {
                    dty,
                    sty,
                    round: m.round(),
                    int_round: m.int_round(),
                    ftz: m.has("ftz"),
                    sat: m.has("sat"),
                    d: self.dst(d, line)?,
                    a: self.src(a, sty, line)?,
                }
            }
            "cvta" => {
                let to = m.has("to");
                let space = match m.space() {
                    Some(Space::Global) | Some(Space::Const) => MemSpace::Global,
                    Some(Space::Shared) => MemSpace::Shared,
                    Some(Space::Local) => MemSpace::Local,
                    _ => return Ok(Op::Unsupported { what: full() }),
                };
                let ty = self.ty1(i).unwrap_or(Ty::U64);
                let [d, a] = operands::<2>(i)?;
                Op::Cvta {
                    space,
                    to_generic: !to,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                }
            }
            "atom" | "red" => self.atom(i)?,
            "bra" => {
                if m.0.iter().any(|x| x != "uni") {
                    return Err(unsupported(full(), line));
                }
                Op::Bra { target: 0 }
            }
            "call" => self.call(i)?,
            "ret" => Op::Ret,
            "exit" => Op::Exit,
            "trap" => Op::Trap {
                what: "trap instruction (__trap)",
            },
            "brkpt" => Op::Trap {
                what: "brkpt instruction",
            },
            "membar" | "fence" | "nanosleep" | "prefetch" | "prefetchu" | "pmevent"
            | "griddepcontrol" | "discard" | "applypriority" | "createpolicy" => {
                if i.opcode == "createpolicy" {
                    let d = self.dst(&i.operands[0], line)?;
                    let z = self.konst(0);
                    return Ok(Op::Mov { d, a: z });
                }
                Op::Nop
            }
            "bar" | "barrier" => self.bar(i)?,
            "shfl" => {
                let mode = match () {
                    _ if m.has("up") => ShflMode::Up,
                    _ if m.has("down") => ShflMode::Down,
                    _ if m.has("bfly") => ShflMode::Bfly,
                    _ if m.has("idx") => ShflMode::Idx,
                    _ => return Err(bad("shfl needs a mode", line)),
                };
                let ops = &i.operands;
                if ops.len() < 4 {
                    return Err(bad("shfl needs 4 or 5 operands", line));
                }
                let (d, p) = match &ops[0] {
                    Operand::Pair(d, p) => (self.dst(d, line)?, Some(self.dst(p, line)?)),
                    d => (self.dst(d, line)?, None),
                };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(&ops[1], Ty::B32, line)?,
                    b: self.src(&ops[2], Ty::U32, line)?,
                    c: self.src(&ops[3], Ty::U32, line)?,
                }
            }
            "vote" => {
                let mode = match () {
                    _ if m.has("all") => VoteMode::All,
                    _ if m.has("any") => VoteMode::Any,
                    _ if m.has("uni") => VoteMode::Uni,
                    _ if m.has("ballot") => VoteMode::Ballot,
                    _ => return Err(bad("vote needs a mode", line)),
                };
                let [d, a] = operands::<2>(i)?;
                let (a, negate) = self.pred(a, line)?;
                Op::Vote {
                    mode,
                    d: self.dst(d, line)?,
                    a,
                    negate,
                }
            }
            "match" => {
                let ty = self.ty1(i)?;
                let [d, a] = operands::<2>(i)?;
                let (d, p) = match d {
                    Operand::Pair(d, p) => (self.dst(d, line)?, Some(self.dst(p, line)?)),
                    d => (self.dst(d, line)?, None),
                };
                Op::Match {
                    all: m.has("all"),
                    ty,
                    d,
                    p,
                    a: self.src(a, ty, line)?,
                }
            }
            "activemask" => {
                let [d] = operands::<1>(i)?;
                Op::Activemask {
                    d: self.dst(d, line)?,
                }
            }
            "redux" => {
                let ty = self.ty1(i)?;
                let op = match () {
                    _ if m.has("add") => ReduxOp::Add,
                    _ if m.has("min") => ReduxOp::Min,
                    _ if m.has("max") => ReduxOp::Max,
                    _ if m.has("and") => ReduxOp::And,
                    _ if m.has("or") => ReduxOp::Or,
                    _ if m.has("xor") => ReduxOp::Xor,
                    _ => return Ok(Op::Unsupported { what: full() }),
                };
                if ty.is_float() {
                    return Ok(Op::Unsupported { what: full() });
                }
                let [d, a] = operands::<2>(i)?;
                Op::Redux {
                    op,
                    ty,
                    d: self.dst(d, line)?,
                    a: self.src(a, ty, line)?,
                }
            }
            "lop3" => {
                let [d, a, b, c, lut] = operands::<5>(i)?;
                let Operand::Int(lut) = lut else {
                    return Err(bad("lop3 needs an immediate lookup table", line));
                };
                Op::Lop3 {
                    d: self.dst(d, line)?,
                    a: self.src(a, Ty::B32, line)?,
                    b: self.src(b, Ty::B32, line)?,
                    c: self.src(c, Ty::B32, line)?,
                    lut: *lut as u8,
                }
            }
            "mul24" | "mad24" => {
                let ty = self.ty1(i)?;
                let ops = &i.operands;
                let want = if i.opcode == "mad24" { 4 } else { 3 };
                if ops.len() != want || m.has("sat") {
                    return Ok(Op::Unsupported { what: full() });
                }
                let c = if want == 4 {
                    self.src(&ops[3], ty, line)?
                } else {
                    self.konst(0)
                };
                Op::Mul24 {
                    hi: m.has("hi"),
                    signed: ty.is_signed(),
                    d: self.dst(&ops[0], line)?,
                    a: self.src(&ops[1], ty, line)?,
                    b: self.src(&ops[2], ty, line)?,
                    c,
                }
            }
            "dp4a" | "dp2a" => {
                let tys = m.types();
                let (Some(&at), Some(&bt)) = (tys.first(), tys.get(1)) else {
                    return Err(bad(format!("{} needs two types", i.opcode), line));
                };
                let [d, a, b, c] = operands::<4>(i)?;
                Op::Dot {
                    two: i.opcode == "dp2a",
                    hi: m.has("hi"),
                    a_signed: at.is_signed(),
                    b_signed: bt.is_signed(),
                    d: self.dst(d, line)?,
                    a: self.src(a, at, line)?,
                    b: self.src(b, bt, line)?,
                    c: self.src(c, Ty::B32, line)?,
                }
            }
            "isspacep" => {
                let space = match m.space() {
                    Some(Space::Global) => MemSpace::Global,
                    Some(Space::Shared) => MemSpace::Shared,
                    Some(Space::Local) => MemSpace::Local,
                    _ => return Ok(Op::Unsupported { what: full() }),
                };
                let [d, a] = operands::<2>(i)?;
                Op::IsSpace {
                    space,
                    d: self.dst(d, line)?,
                    a: self.src(a, Ty::U64, line)?,
                }
            }
            "cp" if m.has("async") => {
                if m.has("commit_group") || m.has("wait_group") || m.has("wait_all") {
                    return Ok(Op::Nop);
                }
                if m.has("bulk") || m.has("mbarrier") || !m.has("shared") || !m.has("global") {
                    return Ok(Op::Unsupported { what: full() });
                }
                let ops = &i.operands;
                if ops.len() < 3 {
                    return Err(bad("cp.async needs 3 or 4 operands", line));
                }
                let (dst, _) = self.addr(&ops[0], Some(Space::Shared), line)?;
                let (src, _) = self.addr(&ops[1], Some(Space::Global), line)?;
                let size = match &ops[2] {
                    Operand::Int(n @ (4 | 8 | 16)) => *n as u32,
                    _ => return Err(bad("cp.async copies 4, 8 or 16 bytes", line)),
                };
                let src_size = match ops.get(3) {
                    Some(o @ (Operand::Int(_) | Operand::Name(_))) => {
                        Some(self.src(o, Ty::U32, line)?)
                    }
                    _ => None,
                };
                Op::CopyAsync {
                    dst,
                    src,
                    size,
                    src_size,
                }
            }
            "brx" | "tex" | "tld4" | "suld" | "sust" | "sured" | "suq" | "txq" | "istypep"
            | "cp" | "mbarrier" | "wmma" | "mma" | "ldmatrix" | "stmatrix" | "wgmma"
            | "cvt.pack" | "elect" | "setmaxnreg" | "alloca" | "stackrestore" | "stacksave"
            | "multimem" | "cp.async" | "tensormap" | "getctarank" | "mapa" | "movmatrix"
            | "fns" | "bmsk" | "szext" | "vabsdiff" | "vadd" | "vsub" | "vmad" | "vmax"
            | "vmin" | "vset" | "vshl" | "vshr" => Op::Unsupported { what: full() },
            other => {
                return Err(unsupported(format!("instruction {other}"), line));
            }
        })
    }

    fn mov(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let ty = self.ty1(i)?;
        let [d, a] = operands::<2>(i)?;
        match (d, a) {
            (Operand::Vector(parts), a) => {
                let n = parts.len() as u32;
                let part_bits = ty.bits() / n.max(1);
                let ds = parts
                    .iter()
                    .map(|p| self.dst(p, line))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Op::Unpack {
                    ds,
                    a: self.src(a, ty, line)?,
                    part_bits,
                })
            }
            (d, Operand::Vector(parts)) => {
                let n = parts.len() as u32;
                let part_bits = ty.bits() / n.max(1);
                let pty = match part_bits {
                    8 => Ty::B8,
                    16 => Ty::B16,
                    32 => Ty::B32,
                    _ => Ty::B64,
                };
                let parts = parts
                    .iter()
                    .map(|p| self.src(p, pty, line))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Op::Pack {
                    d: self.dst(d, line)?,
                    parts,
                    part_bits,
                })
            }
            (d, a) => {
                let a = self.src(a, ty, line)?;
                Ok(Op::Mov {
                    d: self.dst(d, line)?,
                    a,
                })
            }
        }
    }

    fn ld(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let ty = self.ty1(i)?;
        let n = m.vector();
        let [d, a] = operands::<2>(i)?;
        let (addr, space) = self.addr(a, m.space(), line)?;
        let dsts: Vec<&Operand> = match d {
            Operand::Vector(v) => v.iter().collect(),
            d => vec![d],
        };
        if dsts.len() != n || ty == Ty::B128 {
            return Ok(Op::Unsupported {
                what: format!("ld.{}", i.mods.join(".")),
            });
        }
        // A signed load into a wider register sign-extends to the register's width.
        let reg_bits = dsts
            .first()
            .and_then(|d| self.reg_bits(d))
            .unwrap_or(ty.bits());
        let sign_to = if ty.is_signed() && reg_bits > ty.bits() {
            reg_bits
        } else {
            0
        };
        let ds = dsts
            .into_iter()
            .map(|d| self.dst(d, line))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Op::Ld {
            space,
            ty,
            sign_to,
            ds,
            addr,
        })
    }

    fn st(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let ty = self.ty1(i)?;
        let n = m.vector();
        let [a, v] = operands::<2>(i)?;
        let (addr, space) = self.addr(a, m.space(), line)?;
        if space == MemSpace::KernelParam {
            return Ok(Op::Unsupported {
                what: "st.param to a kernel parameter".into(),
            });
        }
        let vals: Vec<&Operand> = match v {
            Operand::Vector(v) => v.iter().collect(),
            v => vec![v],
        };
        if vals.len() != n || ty == Ty::B128 {
            return Ok(Op::Unsupported {
                what: format!("st.{}", i.mods.join(".")),
            });
        }
        let srcs = vals
            .into_iter()
            .map(|v| self.src(v, ty, line))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Op::St {
            space,
            ty,
            srcs,
            addr,
        })
    }

    fn binary(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        if m.has("s16x2") || m.has("u16x2") {
            return self.binary_16x2(i);
        }
        let ty = self.ty1(i)?;
        let [d, a, b] = operands::<3>(i)?;
        let d = self.dst(d, line)?;
        if ty == Ty::Pred {
            let op = match i.opcode.as_str() {
                "and" => IntBinOp::And,
                "or" => IntBinOp::Or,
                "xor" => IntBinOp::Xor,
                _ => return Err(bad("bad predicate instruction", line)),
            };
            let (a, na) = self.pred(a, line)?;
            let (b, nb) = self.pred(b, line)?;
            if na || nb {
                return Ok(Op::Unsupported {
                    what: "negated predicate operand".into(),
                });
            }
            return Ok(Op::PredLogic { op, d, a, b });
        }
        let wide = m.has("wide");
        let a_ty = ty;
        let shift = matches!(i.opcode.as_str(), "shl" | "shr");
        let a = self.src(a, a_ty, line)?;
        let b = self.src(b, if shift { Ty::U32 } else { a_ty }, line)?;
        if ty.is_float() {
            let op = match i.opcode.as_str() {
                "add" => FBinOp::Add,
                "sub" => FBinOp::Sub,
                "mul" => FBinOp::Mul,
                "div" => FBinOp::Div,
                "min" if m.has("NaN") => FBinOp::MinNan,
                "max" if m.has("NaN") => FBinOp::MaxNan,
                "min" => FBinOp::Min,
                "max" => FBinOp::Max,
                "copysign" => FBinOp::CopySign,
                _ => return Err(bad(format!("{} on a float type", i.opcode), line)),
            };
            if m.has("relu") || m.has("xorsign") {
                return Ok(Op::Unsupported {
                    what: format!("{}.{}", i.opcode, i.mods.join(".")),
                });
            }
            return Ok(Op::FBin {
                op,
                ty,
                m: m.fmods(),
                d,
                a,
                b,
            });
        }
        let sat = m.has("sat");
        let op = match i.opcode.as_str() {
            "add" if sat => IntBinOp::AddSat,
            "sub" if sat => IntBinOp::SubSat,
            "add" => IntBinOp::Add,
            "sub" => IntBinOp::Sub,
            "mul" if m.has("hi") => IntBinOp::MulHi,
            "mul" if wide => IntBinOp::MulWide,
            "mul" => IntBinOp::MulLo,
            "div" => IntBinOp::Div,
            "rem" => IntBinOp::Rem,
            "min" => IntBinOp::Min,
            "max" => IntBinOp::Max,
            "and" => IntBinOp::And,
            "or" => IntBinOp::Or,
            "xor" => IntBinOp::Xor,
            "shl" => IntBinOp::Shl,
            "shr" => IntBinOp::Shr,
            _ => return Err(bad(format!("{} on an integer type", i.opcode), line)),
        };
        if m.has("cc") {
            return Ok(Op::Unsupported {
                what: format!("{}.cc (carry chains)", i.opcode),
            });
        }
        Ok(Op::IntBin { op, ty, d, a, b })
    }

    /// `min`/`max` of packed 16-bit pairs (`.s16x2`, `.u16x2`, optionally `.relu`).
    fn binary_16x2(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let op = match i.opcode.as_str() {
            "min" => IntBinOp::Min,
            "max" => IntBinOp::Max,
            other => {
                return Ok(Op::Unsupported {
                    what: format!("{other}.{}", i.mods.join(".")),
                });
            }
        };
        let ty = if m.has("s16x2") { Ty::S16 } else { Ty::U16 };
        let [d, a, b] = operands::<3>(i)?;
        Ok(Op::IntBin16x2 {
            op,
            ty,
            relu: m.has("relu"),
            d: self.dst(d, line)?,
            a: self.src(a, Ty::B32, line)?,
            b: self.src(b, Ty::B32, line)?,
        })
    }

    /// The carry-chain forms; the carry flag is one hidden register per function.
    fn carry(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let ty = self.ty1(i)?;
        let kind = match i.opcode.as_str() {
            "add" | "addc" => CarryKind::Add,
            "sub" | "subc" => CarryKind::Sub,
            _ if m.has("hi") => CarryKind::MadHi,
            _ => CarryKind::MadLo,
        };
        let use_cf = i.opcode.ends_with('c');
        let set_cf = m.has("cc");
        let ops = &i.operands;
        let want = if matches!(kind, CarryKind::MadLo | CarryKind::MadHi) {
            4
        } else {
            3
        };
        if ops.len() != want || !matches!(ty.bits(), 32 | 64) {
            return Err(bad(
                format!("{} needs {want} operands of 32 or 64 bits", i.opcode),
                line,
            ));
        }
        let cf = match self.carry_flag {
            Some(s) => s,
            None => {
                let s = self.new_slot();
                self.carry_flag = Some(s);
                s
            }
        };
        let c = if want == 4 {
            self.src(&ops[3], ty, line)?
        } else {
            self.konst(0)
        };
        Ok(Op::Carry {
            kind,
            use_cf,
            set_cf,
            ty,
            d: self.dst(&ops[0], line)?,
            a: self.src(&ops[1], ty, line)?,
            b: self.src(&ops[2], ty, line)?,
            c,
            cf,
        })
    }

    fn unary(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let ty = self.ty1(i)?;
        let [d, a] = operands::<2>(i)?;
        let d = self.dst(d, line)?;
        if ty == Ty::Pred {
            let a = self.src(a, ty, line)?;
            return match i.opcode.as_str() {
                "not" => Ok(Op::IntUn {
                    op: IntUnOp::Cnot,
                    ty: Ty::U32,
                    d,
                    a,
                }),
                _ => Err(bad("bad predicate instruction", line)),
            };
        }
        let a = self.src(a, ty, line)?;
        let approx = m.has("approx");
        if ty.is_float() {
            let op = match i.opcode.as_str() {
                "abs" => FUnOp::Abs,
                "neg" => FUnOp::Neg,
                "rcp" if approx => FUnOp::RcpApprox,
                "rcp" => FUnOp::Rcp,
                "sqrt" if approx => FUnOp::SqrtApprox,
                "sqrt" => FUnOp::Sqrt,
                "rsqrt" => FUnOp::Rsqrt,
                "sin" => FUnOp::Sin,
                "cos" => FUnOp::Cos,
                "ex2" => FUnOp::Ex2,
                "lg2" => FUnOp::Lg2,
                "tanh" => FUnOp::Tanh,
                _ => return Err(bad(format!("{} on a float type", i.opcode), line)),
            };
            return Ok(Op::FUn {
                op,
                ty,
                m: m.fmods(),
                d,
                a,
            });
        }
        let op = match i.opcode.as_str() {
            "abs" => IntUnOp::Abs,
            "neg" => IntUnOp::Neg,
            "not" => IntUnOp::Not,
            "cnot" => IntUnOp::Cnot,
            "popc" => IntUnOp::Popc,
            "clz" => IntUnOp::Clz,
            "brev" => IntUnOp::Brev,
            "bfind" if m.has("shiftamt") => IntUnOp::BfindShift,
            "bfind" => IntUnOp::Bfind,
            _ => return Err(bad(format!("{} on an integer type", i.opcode), line)),
        };
        Ok(Op::IntUn { op, ty, d, a })
    }

    fn setp(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let cmp = i
            .mods
            .first()
            .and_then(|c| parse_cmp(c))
            .ok_or_else(|| bad(format!("{} needs a comparison", i.opcode), line))?;
        let bool_op = i.mods.get(1).and_then(|b| match b.as_str() {
            "and" => Some(BoolOp::And),
            "or" => Some(BoolOp::Or),
            "xor" => Some(BoolOp::Xor),
            _ => None,
        });
        let tys = m.types();
        let ops = &i.operands;
        if ops.len() < 3 {
            return Err(bad(format!("{} needs 3 operands", i.opcode), line));
        }
        let combine = match (bool_op, ops.get(3)) {
            (Some(op), Some(c)) => {
                let (c, neg) = self.pred(c, line)?;
                Some((op, c, neg))
            }
            (None, None) => None,
            _ => {
                return Err(bad(
                    "boolean operation and its predicate must come together",
                    line,
                ));
            }
        };
        if i.opcode == "setp" {
            let ty = *tys.last().ok_or_else(|| bad("setp without a type", line))?;
            let (p, q) = match &ops[0] {
                Operand::Pair(p, q) => (self.dst(p, line)?, Some(self.dst(q, line)?)),
                p => (self.dst(p, line)?, None),
            };
            let a = self.src(&ops[1], ty, line)?;
            let b = self.src(&ops[2], ty, line)?;
            Ok(Op::Setp {
                cmp,
                ty,
                ftz: m.has("ftz"),
                p,
                q,
                a,
                b,
                combine,
            })
        } else {
            let (Some(&dty), Some(&sty)) = (tys.first(), tys.get(1)) else {
                return Err(bad("set needs two types", line));
            };
            let d = self.dst(&ops[0], line)?;
            let a = self.src(&ops[1], sty, line)?;
            let b = self.src(&ops[2], sty, line)?;
            Ok(Op::Set {
                cmp,
                dty,
                sty,
                d,
                a,
                b,
                combine,
            })
        }
    }

    fn atom(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let ty = self.ty1(i)?;
        let op = i
            .mods
            .iter()
            .find_map(|x| {
                Some(match x.as_str() {
                    "add" => AtomOp::Add,
                    "min" => AtomOp::Min,
                    "max" => AtomOp::Max,
                    "inc" => AtomOp::Inc,
                    "dec" => AtomOp::Dec,
                    "and" => AtomOp::And,
                    "or" => AtomOp::Or,
                    "xor" => AtomOp::Xor,
                    "exch" => AtomOp::Exch,
                    "cas" => AtomOp::Cas,
                    _ => return None,
                })
            })
            .ok_or_else(|| bad(format!("{} needs an operation", i.opcode), line))?;
        let full = format!("{}.{}", i.opcode, i.mods.join("."));
        if m.vector() != 1 || ty == Ty::B128 {
            return Ok(Op::Unsupported { what: full });
        }
        let is_red = i.opcode == "red";
        let ops = &i.operands;
        let (d, rest) = if is_red {
            (None, &ops[..])
        } else {
            let Some(d) = ops.first() else {
                return Err(bad("atom needs operands", line));
            };
            (Some(self.dst(d, line)?), &ops[1..])
        };
        if rest.len() < 2 || (op == AtomOp::Cas && rest.len() < 3) {
            return Err(bad(format!("{} has too few operands", i.opcode), line));
        }
        let (addr, space) = self.addr(&rest[0], m.space(), line)?;
        if matches!(space, MemSpace::KernelParam) {
            return Err(bad("atomics on parameters", line));
        }
        let b = self.src(&rest[1], ty, line)?;
        let c = match rest.get(2) {
            Some(c) => self.src(c, ty, line)?,
            None => b,
        };
        Ok(Op::Atom {
            space,
            op,
            ty,
            d,
            addr,
            b,
            c,
        })
    }

    fn bar(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let m = Mods(&i.mods);
        let full = format!("{}.{}", i.opcode, i.mods.join("."));
        if m.has("warp") {
            return Ok(Op::Nop);
        }
        if m.has("cluster") {
            return Ok(Op::Unsupported { what: full });
        }
        let ops = &i.operands;
        if m.has("red") {
            let kind = match () {
                _ if m.has("popc") => BarKind::RedPopc,
                _ if m.has("and") => BarKind::RedAnd,
                _ if m.has("or") => BarKind::RedOr,
                _ => return Ok(Op::Unsupported { what: full }),
            };
            if ops.len() < 3 {
                return Err(bad("bar.red needs 3 or 4 operands", line));
            }
            let d = self.dst(&ops[0], line)?;
            let id = self.src(&ops[1], Ty::U32, line)?;
            let count = if ops.len() == 4 {
                Some(self.src(&ops[2], Ty::U32, line)?)
            } else {
                None
            };
            let c = self.pred(&ops[ops.len() - 1], line)?;
            return Ok(Op::Bar {
                kind,
                id,
                count,
                d: Some(d),
                c: Some(c),
            });
        }
        let kind = if m.has("arrive") {
            BarKind::Arrive
        } else {
            BarKind::Sync
        };
        let id = match ops.first() {
            Some(o) => self.src(o, Ty::U32, line)?,
            None => self.konst(0),
        };
        let count = match ops.get(1) {
            Some(o) => Some(self.src(o, Ty::U32, line)?),
            None => None,
        };
        Ok(Op::Bar {
            kind,
            id,
            count,
            d: None,
            c: None,
        })
    }

    fn frame_param(&self, op: &Operand, line: u32) -> Result<u32, LoadError> {
        match op {
            Operand::Name(n) => match self.lookup(n) {
                Some(Sym::Frame { off }) => Ok(off),
                _ => Err(unsupported(
                    format!("call argument {n} that is not a .param variable"),
                    line,
                )),
            },
            other => Err(unsupported(format!("call argument {other:?}"), line)),
        }
    }

    fn call(&mut self, i: &ast::Instr) -> Result<Op, LoadError> {
        let line = i.line;
        let ops = &i.operands;
        let (rets, rest): (&[Operand], &[Operand]) = match ops.first() {
            Some(Operand::List(r)) => (r, &ops[1..]),
            _ => (&[], &ops[..]),
        };
        let name = match rest.first() {
            Some(Operand::Name(n)) => n.clone(),
            _ => return Err(bad("call needs a function name", line)),
        };
        let args: &[Operand] = match rest.get(1) {
            Some(Operand::List(a)) => a,
            None => &[],
            Some(_) => {
                return Err(unsupported("indirect calls through a prototype", line));
            }
        };
        if rest.len() > 2 {
            return Err(unsupported("indirect calls through a prototype", line));
        }
        if let Some(Sym::Reg { .. }) = self.lookup(&name) {
            return Err(unsupported("indirect calls through a register", line));
        }
        let arg_offs = args
            .iter()
            .map(|a| self.frame_param(a, line))
            .collect::<Result<Vec<_>, _>>()?;
        let ret_offs = rets
            .iter()
            .map(|a| self.frame_param(a, line))
            .collect::<Result<Vec<_>, _>>()?;
        match name.as_str() {
            "vprintf" => {
                if arg_offs.len() != 2 {
                    return Err(bad("vprintf takes two arguments", line));
                }
                return Ok(Op::Printf {
                    fmt: arg_offs[0],
                    args: arg_offs[1],
                    ret: ret_offs.first().copied(),
                });
            }
            "__assertfail" => {
                if arg_offs.len() < 4 {
                    return Err(bad("__assertfail takes five arguments", line));
                }
                return Ok(Op::AssertFail {
                    message: arg_offs[0],
                    file: arg_offs[1],
                    line: arg_offs[2],
                    function: arg_offs[3],
                });
            }
            _ => {}
        }
        let Some(&func) = self.env.functions.get(&name) else {
            return Err(bad(format!("call to undeclared function {name}"), line));
        };
        let sig = &self.env.signatures[func as usize];
        let copies = |offs: &[u32], lay: &[ParamLayout]| -> Result<Vec<FrameCopy>, LoadError> {
            if offs.len() != lay.len() {
                return Err(bad(
                    format!(
                        "call to {name} with {} values, expected {}",
                        offs.len(),
                        lay.len()
                    ),
                    line,
                ));
            }
            Ok(offs
                .iter()
                .zip(lay)
                .map(|(&caller_offset, p)| FrameCopy {
                    caller_offset,
                    callee_offset: p.offset,
                    size: p.size,
                })
                .collect())
        };
        let args = copies(&arg_offs, &sig.params)?;
        let rets = copies(&ret_offs, &sig.returns)?;
        let _ = self.func_index;
        // The caller's frame size is only known once it is compiled; patched by the executor
        // through `FuncCode::frame_size`, so 0 here means "use the caller's frame size".
        Ok(Op::Call {
            func,
            args,
            rets,
            caller_frame: 0,
        })
    }
}

fn double_ty(ty: Ty) -> Ty {
    match ty {
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::B32 => Ty::B64,
        Ty::B16 => Ty::B32,
        t => t,
    }
}

fn parse_cmp(s: &str) -> Option<Cmp> {
    Some(match s {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}
