//! Recursive-descent parser from tokens to [`PtxModule`]. Bad input gives
//! [`LoadError::InvalidPtx`] with a line number; the parser never panics.

use crate::ast::*;
use crate::error::LoadError;
use crate::lexer::{Tok, Token, tokenize};

pub fn parse(text: &str) -> Result<PtxModule, LoadError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        toks: tokens,
        pos: 0,
    };
    p.module()
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

type PResult<T> = Result<T, LoadError>;

/// Nesting limit for blocks, vectors and initialisers: deeper input is rejected rather than
/// risking the host stack.
const MAX_DEPTH: u32 = 64;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.tok)
    }

    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map_or(0, |t| t.line)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(LoadError::InvalidPtx {
            line: self.line(),
            message: message.into(),
        })
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected '{c}', found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of text".into(),
            Some(Tok::Ident(s)) => format!("'{s}'"),
            Some(Tok::Dot(s)) => format!("'.{s}'"),
            Some(Tok::Punct(c)) => format!("'{c}'"),
            Some(Tok::Str(s)) => format!("\"{s}\""),
            Some(t) => format!("{t:?}"),
        }
    }

    fn ident(&mut self) -> PResult<String> {
        match self.next() {
            Some(Tok::Ident(s)) => Ok(s),
            _ => {
                self.pos = self.pos.saturating_sub(1);
                self.err(format!("expected a name, found {}", self.describe()))
            }
        }
    }

    fn int(&mut self) -> PResult<u64> {
        match self.next() {
            Some(Tok::Int(v)) => Ok(v),
            _ => {
                self.pos = self.pos.saturating_sub(1);
                self.err(format!("expected an integer, found {}", self.describe()))
            }
        }
    }

    /// Skips the remaining tokens on the current line (directives without `;`).
    fn skip_line(&mut self, line: u32) {
        while self.toks.get(self.pos).is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn skip_balanced_braces(&mut self) -> PResult<()> {
        self.expect_punct('{')?;
        let mut depth = 1;
        while depth > 0 {
            match self.next() {
                Some(Tok::Punct('{')) => depth += 1,
                Some(Tok::Punct('}')) => depth -= 1,
                Some(_) => {}
                None => return self.err("unterminated '{'"),
            }
        }
        Ok(())
    }

    fn module(&mut self) -> PResult<PtxModule> {
        let mut m = PtxModule {
            address_size: 64,
            ..Default::default()
        };
        while let Some(tok) = self.peek().cloned() {
            let line = self.line();
            match tok {
                Tok::Dot(d) => match d.as_str() {
                    "version" => {
                        self.pos += 1;
                        m.version = match self.next() {
                            Some(Tok::Float(f)) => {
                                let s = format!("{f}");
                                let mut it = s.split('.');
                                let major = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                                let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
                                Some((major, minor))
                            }
                            Some(Tok::Int(v)) => Some((v.min(u32::MAX as u64) as u32, 0)),
                            _ => return self.err("expected a version number after .version"),
                        };
                        self.skip_line(line);
                    }
                    "target" => {
                        self.pos += 1;
                        while self.toks.get(self.pos).is_some_and(|t| t.line == line) {
                            if let Some(Tok::Ident(s)) = self.next() {
                                m.target.push(s);
                            }
                        }
                    }
                    "address_size" => {
                        self.pos += 1;
                        m.address_size = self.int()?.min(64) as u32;
                    }
                    "file" | "loc" => {
                        self.pos += 1;
                        self.skip_line(line);
                    }
                    "section" => {
                        self.pos += 1;
                        while !self.is_punct('{') && self.peek().is_some() {
                            self.pos += 1;
                        }
                        self.skip_balanced_braces()?;
                    }
                    "pragma" => {
                        self.pos += 1;
                        self.skip_statement()?;
                    }
                    _ => self.module_item(&mut m)?,
                },
                _ => return self.err(format!("unexpected {} at module scope", self.describe())),
            }
        }
        Ok(m)
    }

    fn skip_statement(&mut self) -> PResult<()> {
        loop {
            match self.next() {
                Some(Tok::Punct(';')) => return Ok(()),
                Some(_) => {}
                None => return self.err("missing ';'"),
            }
        }
    }

    /// A linkage prefix followed by a function or variable.
    fn module_item(&mut self, m: &mut PtxModule) -> PResult<()> {
        let mut is_extern = false;
        loop {
            match self.peek() {
                Some(Tok::Dot(d)) if matches!(d.as_str(), "visible" | "weak" | "common") => {
                    self.pos += 1
                }
                Some(Tok::Dot(d)) if d == "extern" => {
                    is_extern = true;
                    self.pos += 1
                }
                _ => break,
            }
        }
        match self.peek().cloned() {
            Some(Tok::Dot(d)) if d == "entry" || d == "func" => {
                self.pos += 1;
                let f = self.function(d == "entry")?;
                m.functions.push(f);
                Ok(())
            }
            Some(Tok::Dot(d)) if matches!(d.as_str(), "global" | "const" | "shared") => {
                let mut vars = self.var_decl()?;
                for v in &mut vars {
                    v.is_extern = is_extern;
                }
                m.vars.extend(vars);
                Ok(())
            }
            Some(Tok::Dot(d)) => Err(LoadError::NotSupported {
                what: format!("module directive .{d}"),
                line: self.line(),
            }),
            _ => self.err(format!("unexpected {} at module scope", self.describe())),
        }
    }

    fn function(&mut self, is_entry: bool) -> PResult<Function> {
        let line = self.line();
        let mut returns = Vec::new();
        if !is_entry && self.is_punct('(') {
            returns = self.param_list()?;
        }
        let name = self.ident()?;
        let params = if self.is_punct('(') {
            self.param_list()?
        } else {
            Vec::new()
        };
        // Performance directives: .maxntid 256, 1, 1 / .reqntid / .minnctapersm / .noreturn ...
        while let Some(Tok::Dot(_)) = self.peek() {
            self.pos += 1;
            while matches!(self.peek(), Some(Tok::Int(_))) {
                self.pos += 1;
                self.eat_punct(',');
            }
        }
        let body = if self.eat_punct(';') {
            None
        } else if self.is_punct('{') {
            self.pos += 1;
            Some(self.block_body(0)?)
        } else {
            return self.err(format!(
                "expected function body or ';', found {}",
                self.describe()
            ));
        };
        Ok(Function {
            name,
            is_entry,
            params,
            returns,
            body,
            line,
        })
    }

    fn param_list(&mut self) -> PResult<Vec<VarDecl>> {
        self.expect_punct('(')?;
        let mut out = Vec::new();
        if self.eat_punct(')') {
            return Ok(out);
        }
        loop {
            match self.peek() {
                Some(Tok::Dot(d)) if d == "param" || d == "reg" => {}
                _ => return self.err(format!("expected .param, found {}", self.describe())),
            }
            out.extend(self.var_decl_no_semicolon()?);
            if self.eat_punct(')') {
                return Ok(out);
            }
            self.expect_punct(',')?;
        }
    }

    fn var_decl(&mut self) -> PResult<Vec<VarDecl>> {
        let v = self.var_decl_no_semicolon()?;
        self.expect_punct(';')?;
        Ok(v)
    }

    /// `.space [.align N] [.vN] .type name[<N>][dims] [= init] {, name ...}`
    fn var_decl_no_semicolon(&mut self) -> PResult<Vec<VarDecl>> {
        let line = self.line();
        let space = match self.next() {
            Some(Tok::Dot(d)) => match d.as_str() {
                "reg" => Space::Reg,
                "global" => Space::Global,
                "const" => Space::Const,
                "shared" => Space::Shared,
                "local" => Space::Local,
                "param" => Space::Param,
                _ => return self.err(format!("unknown state space .{d}")),
            },
            _ => return self.err("expected a state space"),
        };
        let mut ty = None;
        let mut vector = 1;
        let mut align = None;
        while let Some(Tok::Dot(d)) = self.peek().cloned() {
            self.pos += 1;
            match d.as_str() {
                "align" => align = Some(self.int()?.min(1 << 20) as u32),
                "v2" => vector = 2,
                "v4" => vector = 4,
                "v8" => vector = 8,
                "ptr" | "global" | "const" | "shared" | "local" | "shared::cta" => {}
                t if is_type_name(t) => ty = Some(t.to_string()),
                other => {
                    return Err(LoadError::NotSupported {
                        what: format!("variable attribute .{other}"),
                        line: self.line(),
                    });
                }
            }
        }
        let Some(ty) = ty else {
            return self.err("variable declaration without a type");
        };
        let mut out = Vec::new();
        loop {
            let name = self.ident()?;
            let mut range = None;
            if self.eat_punct('<') {
                range = Some(self.int()?.min(1 << 20) as u32);
                self.expect_punct('>')?;
            }
            let mut dims = Vec::new();
            while self.eat_punct('[') {
                if self.eat_punct(']') {
                    dims.push(None);
                } else {
                    dims.push(Some(self.int()?));
                    self.expect_punct(']')?;
                }
            }
            let init = if self.eat_punct('=') {
                Some(self.init(0)?)
            } else {
                None
            };
            out.push(VarDecl {
                space,
                name,
                ty: ty.clone(),
                vector,
                align,
                dims,
                range,
                init,
                is_extern: false,
                line,
            });
            if space == Space::Param || !self.eat_punct(',') {
                return Ok(out);
            }
        }
    }

    fn init(&mut self, depth: u32) -> PResult<Init> {
        if depth > MAX_DEPTH {
            return self.err("initialiser nested too deeply");
        }
        if self.eat_punct('{') {
            let mut items = Vec::new();
            if self.eat_punct('}') {
                return Ok(Init::List(items));
            }
            loop {
                items.push(self.init(depth + 1)?);
                if self.eat_punct('}') {
                    return Ok(Init::List(items));
                }
                self.expect_punct(',')?;
            }
        }
        let negative = self.eat_punct('-');
        let sign = if negative { -1 } else { 1 };
        match self.next() {
            Some(Tok::Int(v)) => Ok(Init::Int(v as i128 * sign as i128)),
            Some(Tok::Float(f)) => Ok(Init::Float(f * sign as f64)),
            Some(Tok::F32Bits(b)) => Ok(Init::F32Bits(if negative { b ^ 0x8000_0000 } else { b })),
            Some(Tok::F64Bits(b)) => Ok(Init::F64Bits(if negative { b ^ (1 << 63) } else { b })),
            Some(Tok::Ident(name)) if !negative => {
                let name = if (name == "generic" || name == "global") && self.eat_punct('(') {
                    let inner = self.ident()?;
                    self.expect_punct(')')?;
                    inner
                } else {
                    name
                };
                let offset = self.opt_offset()?;
                Ok(Init::Symbol { name, offset })
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                self.err(format!("bad initialiser {}", self.describe()))
            }
        }
    }

    /// Optional `+N` / `+-N` / `-N` after a name.
    fn opt_offset(&mut self) -> PResult<i64> {
        if self.eat_punct('+') {
            let neg = self.eat_punct('-');
            let v = self.int()? as i64;
            Ok(if neg { v.wrapping_neg() } else { v })
        } else if self.is_punct('-') && matches!(self.peek_at(1), Some(Tok::Int(_))) {
            self.pos += 1;
            Ok((self.int()? as i64).wrapping_neg())
        } else {
            Ok(0)
        }
    }

    fn block_body(&mut self, depth: u32) -> PResult<Vec<Stmt>> {
        if depth > MAX_DEPTH {
            return self.err("blocks nested too deeply");
        }
        let mut stmts = Vec::new();
        loop {
            let line = self.line();
            match self.peek().cloned() {
                None => return self.err("missing '}' at end of function"),
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    return Ok(stmts);
                }
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    stmts.push(Stmt::Block(self.block_body(depth + 1)?));
                }
                Some(Tok::Dot(d)) => match d.as_str() {
                    "reg" | "local" | "shared" | "param" | "const" | "global" => {
                        for v in self.var_decl()? {
                            stmts.push(Stmt::Decl(v));
                        }
                    }
                    "loc" | "file" => {
                        self.pos += 1;
                        self.skip_line(line);
                    }
                    "pragma" => {
                        self.pos += 1;
                        self.skip_statement()?;
                    }
                    other => {
                        return Err(LoadError::NotSupported {
                            what: format!("directive .{other} in a function body"),
                            line,
                        });
                    }
                },
                Some(Tok::Ident(name)) if self.peek_at(1) == Some(&Tok::Punct(':')) => {
                    self.pos += 2;
                    stmts.push(Stmt::Label(name, line));
                }
                Some(_) => stmts.push(Stmt::Instr(self.instruction()?)),
            }
        }
    }

    fn instruction(&mut self) -> PResult<Instr> {
        let line = self.line();
        let guard = if self.eat_punct('@') {
            let neg = self.eat_punct('!');
            Some((self.ident()?, neg))
        } else {
            None
        };
        let opcode = self.ident()?;
        let mut mods = Vec::new();
        while let Some(Tok::Dot(d)) = self.peek() {
            mods.push(d.clone());
            self.pos += 1;
        }
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                operands.push(self.operand(0)?);
                if self.eat_punct(';') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        Ok(Instr {
            guard,
            opcode,
            mods,
            operands,
            line,
        })
    }

    fn operand(&mut self, depth: u32) -> PResult<Operand> {
        if depth > MAX_DEPTH {
            return self.err("operand nested too deeply");
        }
        let first = self.simple_operand(depth)?;
        if self.eat_punct('|') {
            let second = self.simple_operand(depth)?;
            return Ok(Operand::Pair(Box::new(first), Box::new(second)));
        }
        Ok(first)
    }

    fn name_with_component(&mut self, name: String) -> String {
        // `%tid.x`, `%ntid.y`: special registers with a component.
        if let Some(Tok::Dot(c)) = self.peek()
            && matches!(c.as_str(), "x" | "y" | "z" | "w")
        {
            let full = format!("{name}.{c}");
            self.pos += 1;
            return full;
        }
        name
    }

    fn simple_operand(&mut self, depth: u32) -> PResult<Operand> {
        match self.next() {
            Some(Tok::Punct('!')) => Ok(Operand::Not(Box::new(self.simple_operand(depth + 1)?))),
            Some(Tok::Punct('-')) => match self.next() {
                Some(Tok::Int(v)) => Ok(Operand::Int(-(v as i128))),
                Some(Tok::Float(f)) => Ok(Operand::Float(-f)),
                Some(Tok::F32Bits(b)) => Ok(Operand::F32Bits(b ^ 0x8000_0000)),
                Some(Tok::F64Bits(b)) => Ok(Operand::F64Bits(b ^ (1 << 63))),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    self.err(format!(
                        "expected a number after '-', found {}",
                        self.describe()
                    ))
                }
            },
            Some(Tok::Int(v)) => Ok(Operand::Int(v as i128)),
            Some(Tok::Float(f)) => Ok(Operand::Float(f)),
            Some(Tok::F32Bits(b)) => Ok(Operand::F32Bits(b)),
            Some(Tok::F64Bits(b)) => Ok(Operand::F64Bits(b)),
            Some(Tok::Ident(name)) if name == "_" => Ok(Operand::Sink),
            Some(Tok::Ident(name)) => {
                let name = self.name_with_component(name);
                if self.is_punct('+')
                    || (self.is_punct('-') && matches!(self.peek_at(1), Some(Tok::Int(_))))
                {
                    let offset = self.opt_offset()?;
                    return Ok(Operand::SymOffset { name, offset });
                }
                Ok(Operand::Name(name))
            }
            Some(Tok::Punct('[')) => {
                let (base, offset) = match self.peek().cloned() {
                    Some(Tok::Ident(name)) => {
                        self.pos += 1;
                        let name = self.name_with_component(name);
                        (Some(name), self.opt_offset()?)
                    }
                    Some(Tok::Int(v)) => {
                        self.pos += 1;
                        (None, v as i64)
                    }
                    _ => return self.err(format!("bad address {}", self.describe())),
                };
                self.expect_punct(']')?;
                Ok(Operand::Addr { base, offset })
            }
            Some(Tok::Punct('{')) => {
                let mut items = Vec::new();
                loop {
                    items.push(self.operand(depth + 1)?);
                    if self.eat_punct('}') {
                        return Ok(Operand::Vector(items));
                    }
                    self.expect_punct(',')?;
                }
            }
            Some(Tok::Punct('(')) => {
                let mut items = Vec::new();
                if self.eat_punct(')') {
                    return Ok(Operand::List(items));
                }
                loop {
                    items.push(self.operand(depth + 1)?);
                    if self.eat_punct(')') {
                        return Ok(Operand::List(items));
                    }
                    self.expect_punct(',')?;
                }
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                self.err(format!("expected an operand, found {}", self.describe()))
            }
        }
    }
}

pub fn is_type_name(t: &str) -> bool {
    matches!(
        t,
        "b8" | "b16"
            | "b32"
            | "b64"
            | "b128"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "s8"
            | "s16"
            | "s32"
            | "s64"
            | "f16"
            | "f16x2"
            | "bf16"
            | "bf16x2"
            | "f32"
            | "f64"
            | "pred"
    )
}
