//! The compact internal form a kernel is translated into once at load time: instructions
//! with resolved register slots and decoded operands.

/// Index of a register within a function's register file (one `u64` per lane).
pub type Slot = u32;

/// A PTX scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    B128,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "b128" => Ty::B128,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::B128 => 128,
            Ty::Pred => 1,
        }
    }

    pub fn bytes(self) -> u32 {
        match self {
            Ty::Pred => 1,
            t => t.bits() / 8,
        }
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::F32 | Ty::F64
        )
    }
}

/// Floating-point rounding modifiers (`.rn .rz .rm .rp`, and the integer-rounding `.rni` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Nearest,
    Zero,
    Down,
    Up,
}

/// Modifiers of floating-point arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FMods {
    pub round: Round,
    pub ftz: bool,
    pub sat: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntBinOp {
    Add,
    Sub,
    AddSat,
    SubSat,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntUnOp {
    Not,
    Cnot,
    Neg,
    Abs,
    Popc,
    Clz,
    Brev,
    Bfind,
    BfindShift,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FBinOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    MinNan,
    MaxNan,
    CopySign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FUnOp {
    Neg,
    Abs,
    Rcp,
    RcpApprox,
    Sqrt,
    SqrtApprox,
    Rsqrt,
    Sin,
    Cos,
    Ex2,
    Lg2,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestpOp {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

/// Memory spaces as the interpreter sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemSpace {
    /// Device memory (global and const variables live here too).
    Global,
    Shared,
    /// Per-thread local memory (also holds `.func` parameters).
    Local,
    /// The kernel's parameter buffer (read-only).
    KernelParam,
    /// A generic address, resolved through the shared and local windows.
    Generic,
}

/// A memory operand: `[base + offset]`. With `frame`, the offset is relative to the current
/// function's frame in local memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub base: Option<Slot>,
    pub offset: i64,
    pub frame: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarryKind {
    Add,
    Sub,
    MadLo,
    MadHi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Sync,
    Arrive,
    RedPopc,
    RedAnd,
    RedOr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduxOp {
    Add,
    Min,
    Max,
    And,
    Or,
    Xor,
}

/// Per-warp values filled into a function's register file when a frame starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    DynamicSmemSize,
    TotalSmemSize,
    Zero,
}

/// Bytes copied between a caller's and a callee's frames on `call` and return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCopy {
    pub caller_offset: u32,
    pub callee_offset: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Nop,
    Mov {
        d: Slot,
        a: Slot,
    },
    /// `mov.b64 %rd, {%r1, %r2}`: little-endian concatenation of `parts` of `part_bits` each.
    Pack {
        d: Slot,
        parts: Vec<Slot>,
        part_bits: u32,
    },
    /// `mov.b64 {%r1, %r2}, %rd`
    Unpack {
        ds: Vec<Slot>,
        a: Slot,
        part_bits: u32,
    },
    /// Address of a frame-relative local variable (a local-space address).
    FrameAddr {
        d: Slot,
        offset: u32,
    },
    IntBin {
        op: IntBinOp,
        ty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    /// `min`/`max` on two 16-bit integers packed in a 32-bit register (`.s16x2`, `.u16x2`),
    /// each half on its own; `relu` clamps negative results to zero.
    IntBin16x2 {
        op: IntBinOp,
        ty: Ty,
        relu: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    IntUn {
        op: IntUnOp,
        ty: Ty,
        d: Slot,
        a: Slot,
    },
    /// `mad.lo/hi/wide`; `sat` only with `.hi.s32`.
    Mad {
        mode: IntBinOp,
        ty: Ty,
        sat: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Bfe {
        ty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Bfi {
        ty: Ty,
        d: Slot,
        f: Slot,
        b: Slot,
        c: Slot,
        e: Slot,
    },
    Prmt {
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// Funnel shift: `shf.{l,r}.{wrap,clamp}.b32`.
    Shf {
        left: bool,
        clamp: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Sad {
        ty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    FBin {
        op: FBinOp,
        ty: Ty,
        m: FMods,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    FUn {
        op: FUnOp,
        ty: Ty,
        m: FMods,
        d: Slot,
        a: Slot,
    },
    Fma {
        ty: Ty,
        m: FMods,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Testp {
        op: TestpOp,
        ty: Ty,
        d: Slot,
        a: Slot,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        ftz: bool,
        p: Slot,
        q: Option<Slot>,
        a: Slot,
        b: Slot,
        combine: Option<(BoolOp, Slot, bool)>,
    },
    Set {
        cmp: Cmp,
        dty: Ty,
        sty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
        combine: Option<(BoolOp, Slot, bool)>,
    },
    Selp {
        ty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Slct {
        cty: Ty,
        ftz: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// Predicate logic: `and/or/xor/not.pred` with optional negated inputs.
    PredLogic {
        op: IntBinOp,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    Cvt {
        dty: Ty,
        sty: Ty,
        round: Option<Round>,
        int_round: bool,
        ftz: bool,
        sat: bool,
        d: Slot,
        a: Slot,
    },
    /// `cvt.rn{.relu}.f16x2.f32 d, a, b`: a into the upper half, b into the lower.
    CvtPack {
        dty: Ty,
        round: Round,
        relu: bool,
        d: Slot,
        a: Slot,
        b: Slot,
    },
    /// `cvta` (to generic: `to_generic`) for shared/local; global/const are identity.
    Cvta {
        space: MemSpace,
        to_generic: bool,
        d: Slot,
        a: Slot,
    },
    Ld {
        space: MemSpace,
        ty: Ty,
        sign_to: u32,
        ds: Vec<Slot>,
        addr: Addr,
    },
    St {
        space: MemSpace,
        ty: Ty,
        srcs: Vec<Slot>,
        addr: Addr,
    },
    Atom {
        space: MemSpace,
        op: AtomOp,
        ty: Ty,
        d: Option<Slot>,
        addr: Addr,
        b: Slot,
        c: Slot,
    },
    Bra {
        target: u32,
    },
    Call {
        func: u32,
        args: Vec<FrameCopy>,
        rets: Vec<FrameCopy>,
        caller_frame: u32,
    },
    Printf {
        fmt: u32,
        args: u32,
        ret: Option<u32>,
    },
    AssertFail {
        message: u32,
        file: u32,
        line: u32,
        function: u32,
    },
    Ret,
    Exit,
    Trap {
        what: &'static str,
    },
    Bar {
        kind: BarKind,
        id: Slot,
        count: Option<Slot>,
        d: Option<Slot>,
        c: Option<(Slot, bool)>,
    },
    Shfl {
        mode: ShflMode,
        d: Slot,
        p: Option<Slot>,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    Vote {
        mode: VoteMode,
        d: Slot,
        a: Slot,
        negate: bool,
    },
    Match {
        all: bool,
        ty: Ty,
        d: Slot,
        p: Option<Slot>,
        a: Slot,
    },
    Activemask {
        d: Slot,
    },
    Redux {
        op: ReduxOp,
        ty: Ty,
        d: Slot,
        a: Slot,
    },
    Clock {
        d: Slot,
    },
    /// `lop3.b32 d, a, b, c, lut`: any three-input bitwise function.
    Lop3 {
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
        lut: u8,
    },
    /// `mul24`/`mad24` (`c` is the addend; a constant zero for mul24).
    Mul24 {
        hi: bool,
        signed: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// `dp4a` (four byte products) or `dp2a.lo/.hi` (two 16-bit x byte products), plus `c`.
    Dot {
        two: bool,
        hi: bool,
        a_signed: bool,
        b_signed: bool,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
    },
    /// Extended-precision arithmetic with the carry flag `cf` (a hidden per-lane register):
    /// `add.cc addc sub.cc subc mad.lo/hi.cc madc.lo/hi`.
    Carry {
        kind: CarryKind,
        use_cf: bool,
        set_cf: bool,
        ty: Ty,
        d: Slot,
        a: Slot,
        b: Slot,
        c: Slot,
        cf: Slot,
    },
    /// `isspacep.space p, a`
    IsSpace {
        space: MemSpace,
        d: Slot,
        a: Slot,
    },
    /// `cp.async` from global to shared memory, performed synchronously (so the matching
    /// commit/wait instructions have nothing left to wait for).
    CopyAsync {
        dst: Addr,
        src: Addr,
        size: u32,
        src_size: Option<Slot>,
    },
    /// Known instruction form the interpreter cannot execute: fails the launch if reached.
    Unsupported {
        what: String,
    },
}

/// A guarded instruction: executes on the lanes where `guard` (a predicate slot, negated when
/// the flag is set) holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Inst {
    pub guard: Option<(Slot, bool)>,
    pub op: Op,
    pub line: u32,
}
