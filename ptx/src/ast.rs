//! Syntax tree of a PTX module, as written (names unresolved).

/// A whole PTX module.
#[derive(Debug, Clone, Default)]
pub struct PtxModule {
    pub version: Option<(u32, u32)>,
    pub target: Vec<String>,
    pub address_size: u32,
    pub vars: Vec<VarDecl>,
    pub functions: Vec<Function>,
}

/// State space of a variable or memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Reg,
    Global,
    Const,
    Shared,
    Local,
    Param,
}

/// A variable declaration (module scope or inside a function).
#[derive(Debug, Clone)]
pub struct VarDecl {
    pub space: Space,
    pub name: String,
    /// Element type, e.g. "b8", "f32", "u64".
    pub ty: String,
    /// `.v2`/`.v4` vector width, 1 for scalars.
    pub vector: u32,
    pub align: Option<u32>,
    /// Array dimensions; `None` marks an unsized `[]` dimension (extern shared arrays).
    pub dims: Vec<Option<u64>>,
    /// `%r<10>`: a range of registers `%r0..%r9`.
    pub range: Option<u32>,
    pub init: Option<Init>,
    pub is_extern: bool,
    pub line: u32,
}

/// A variable initialiser.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    List(Vec<Init>),
    Int(i128),
    Float(f64),
    F32Bits(u32),
    F64Bits(u64),
    /// Address of a symbol plus an offset (`sym`, `sym+8`, `generic(sym)`).
    Symbol {
        name: String,
        offset: i64,
    },
}

/// An `.entry` kernel or a `.func` device function.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<VarDecl>,
    pub returns: Vec<VarDecl>,
    /// `None` for a declaration without body.
    pub body: Option<Vec<Stmt>>,
    pub line: u32,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    Label(String, u32),
    Instr(Instr),
    Decl(VarDecl),
    Block(Vec<Stmt>),
}

/// One instruction: `@!%p1 add.s32 %r1, %r2, 4;`
#[derive(Debug, Clone)]
pub struct Instr {
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub mods: Vec<String>,
    pub operands: Vec<Operand>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// Register, variable, label or function name (`%tid.x` included).
    Name(String),
    Int(i128),
    Float(f64),
    F32Bits(u32),
    F64Bits(u64),
    /// `[base+offset]`; base is a name or absent (absolute address).
    Addr {
        base: Option<String>,
        offset: i64,
    },
    /// `name+offset` outside brackets (address of a variable plus an offset).
    SymOffset {
        name: String,
        offset: i64,
    },
    /// `{a, b, c, d}`
    Vector(Vec<Operand>),
    /// `!%p`
    Not(Box<Operand>),
    /// `%r|%p` (two destinations, e.g. setp and shfl)
    Pair(Box<Operand>, Box<Operand>),
    /// `(a, b)` argument lists of `call`.
    List(Vec<Operand>),
    /// `_` sink operand.
    Sink,
}
