//! The public face of the crate: load a module image into a session's device memory, list
//! its kernels and variables, launch kernels.

use crate::ast::{Function, Init, Space, Stmt, VarDecl};
use crate::compile::{self, FuncCode, ModuleEnv, ParamLayout, align_up, decl_size_align};
use crate::error::{LaunchError, LoadError};
use crate::exec::{self, LaunchConfig, LaunchOutput, Program};
use crate::fatbin;
use crate::ir::{Inst, Op, Ty};
use crate::memory::DeviceMemory;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

/// A kernel's name and the layout of its parameter buffer (what `cuLaunchKernel`'s
/// `kernelParams` must be packed into).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub name: String,
    pub params: Vec<ParamLayout>,
    /// Bytes of the packed parameter buffer.
    pub param_size: u32,
    func: u32,
}

/// A module-scope `.global` or `.const` variable, placed in device memory
/// (what `cuModuleGetGlobal` returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    pub name: String,
    pub address: u64,
    pub size: u64,
    pub is_const: bool,
}

/// A loaded module: compiled kernels plus the variables it placed in device memory.
pub struct Module {
    program: Program,
    kernels: Vec<KernelInfo>,
    globals: Vec<GlobalInfo>,
    ptx_version: Option<(u32, u32)>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("kernels", &self.kernels)
            .field("globals", &self.globals)
            .finish()
    }
}

impl Module {
    /// Loads what a program passed to `cuModuleLoadData`/`cuLibraryLoadData`: a fatbin (with
    /// or without its wrapper), PTX text, or a cubin (rejected: the CPU device needs PTX).
    /// `compute_capability` is e.g. 90 for 9.0; the best PTX not above it is used. Module
    /// variables are allocated and initialised in `memory`.
    pub fn load(
        image: &[u8],
        compute_capability: u32,
        memory: &DeviceMemory,
    ) -> Result<Module, LoadError> {
        let image = fatbin::read_image(image)?;
        let ptx = fatbin::select_ptx(&image, compute_capability)?;
        Module::from_ptx(&ptx, memory)
    }

    /// Loads PTX text.
    pub fn from_ptx(text: &str, memory: &DeviceMemory) -> Result<Module, LoadError> {
        let ast = crate::parser::parse(text)?;
        let mut placed: Vec<GlobalInfo> = Vec::new();
        let result = build(&ast, memory, &mut placed);
        if result.is_err() {
            for g in &placed {
                let _ = memory.free(g.address);
            }
        }
        let (program, kernels) = result?;
        Ok(Module {
            program,
            kernels,
            globals: placed,
            ptx_version: ast.version,
        })
    }

    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    pub fn kernel(&self, name: &str) -> Option<&KernelInfo> {
        self.kernels.iter().find(|k| k.name == name)
    }

    pub fn globals(&self) -> &[GlobalInfo] {
        &self.globals
    }

    pub fn global(&self, name: &str) -> Option<&GlobalInfo> {
        self.globals.iter().find(|g| g.name == name)
    }

    /// The `.version` of the PTX that was loaded.
    pub fn ptx_version(&self) -> Option<(u32, u32)> {
        self.ptx_version
    }

    /// Bytes of static shared memory every block of this module's kernels uses.
    pub fn static_shared_bytes(&self) -> u32 {
        self.program.static_shared
    }

    /// Runs `kernel` to completion on up to `threads` host threads. `params` is the packed
    /// parameter buffer laid out as [`KernelInfo::params`] says.
    pub fn launch(
        &self,
        kernel: &str,
        config: LaunchConfig,
        params: &[u8],
        memory: &DeviceMemory,
        threads: usize,
    ) -> Result<LaunchOutput, LaunchError> {
        self.launch_cancellable(
            kernel,
            config,
            params,
            memory,
            threads,
            &AtomicBool::new(false),
        )
    }

    /// Like [`Module::launch`]; setting `cancel` from another thread stops the launch at the
    /// next block or loop iteration with [`LaunchError::Cancelled`] (a kernel that never ends
    /// must not hold a worker thread forever).
    pub fn launch_cancellable(
        &self,
        kernel: &str,
        config: LaunchConfig,
        params: &[u8],
        memory: &DeviceMemory,
        threads: usize,
        cancel: &AtomicBool,
    ) -> Result<LaunchOutput, LaunchError> {
        let k = self
            .kernel(kernel)
            .ok_or_else(|| LaunchError::NotFound(kernel.to_string()))?;
        if params.len() < k.param_size as usize {
            return Err(LaunchError::InvalidValue(format!(
                "kernel {kernel} takes {} bytes of parameters, {} given",
                k.param_size,
                params.len()
            )));
        }
        let view = memory.view();
        exec::launch(
            &self.program,
            k.func as usize,
            config,
            params,
            &view,
            threads,
            cancel,
        )
    }

    /// Frees the module's variables from `memory` (cuModuleUnload).
    pub fn unload(self, memory: &DeviceMemory) {
        for g in &self.globals {
            let _ = memory.free(g.address);
        }
    }
}

fn build(
    ast: &crate::ast::PtxModule,
    memory: &DeviceMemory,
    placed: &mut Vec<GlobalInfo>,
) -> Result<(Program, Vec<KernelInfo>), LoadError> {
    // Functions: the definition wins over forward declarations.
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut funcs: Vec<&Function> = Vec::new();
    for f in &ast.functions {
        match index.get(&f.name) {
            Some(&i) if f.body.is_some() => funcs[i as usize] = f,
            Some(_) => {}
            None => {
                index.insert(f.name.clone(), funcs.len() as u32);
                funcs.push(f);
            }
        }
    }
    // Module variables in device memory.
    let mut globals: HashMap<String, u64> = HashMap::new();
    let mut shared: HashMap<String, u32> = HashMap::new();
    let mut shared_next = 0u64;
    let mut externs_shared = Vec::new();
    for v in &ast.vars {
        match v.space {
            Space::Global | Space::Const => {
                if v.is_extern {
                    return Err(LoadError::NotSupported {
                        what: format!(
                            "extern variable {} (separate compilation with -rdc is not supported)",
                            v.name
                        ),
                        line: v.line,
                    });
                }
                let (size, _) = decl_size_align(v);
                let address = memory
                    .allocate(size.max(1))
                    .map_err(|e| LoadError::OutOfMemory(e.to_string()))?;
                placed.push(GlobalInfo {
                    name: v.name.clone(),
                    address,
                    size,
                    is_const: v.space == Space::Const,
                });
                globals.insert(v.name.clone(), address);
            }
            Space::Shared => {
                if v.is_extern || v.dims.iter().any(|d| d.is_none()) {
                    externs_shared.push(v.name.clone());
                } else {
                    let (size, align) = decl_size_align(v);
                    let off = align_up(shared_next, align as u64);
                    shared_next = off.saturating_add(size);
                    shared.insert(v.name.clone(), off as u32);
                }
            }
            _ => {}
        }
    }
    for v in &ast.vars {
        if let (Space::Global | Space::Const, Some(init)) = (v.space, &v.init) {
            let bytes = init_bytes(v, init, &globals)?;
            let addr = globals[&v.name];
            memory
                .write(addr, &bytes)
                .map_err(|e| LoadError::OutOfMemory(e.to_string()))?;
        }
    }
    // A kernel's own shared variables follow the module's. Only one kernel runs in a block,
    // so every kernel's start at the same offset. (Libraries such as CUB hold dozens of
    // kernels, each with kilobytes of its own shared storage: laid end to end they would
    // exceed any block's shared memory.) Shared variables of device functions, which any
    // kernel may call, follow the largest kernel's; dynamic shared memory comes last.
    let module_shared = shared_next;
    let mut largest_kernel = module_shared;
    for f in funcs.iter().filter(|f| f.is_entry) {
        if let Some(body) = &f.body {
            let mut end = module_shared;
            prescan_shared(body, &mut end);
            largest_kernel = largest_kernel.max(end);
        }
    }
    let mut end = largest_kernel;
    for f in funcs.iter().filter(|f| !f.is_entry) {
        if let Some(body) = &f.body {
            prescan_shared(body, &mut end);
        }
    }
    let dynamic_base = align_up(end, 16);
    if dynamic_base > 228 * 1024 {
        return Err(LoadError::NotSupported {
            what: format!("{dynamic_base} bytes of static shared memory (limit 228 KiB)"),
            line: 0,
        });
    }
    for name in externs_shared {
        shared.insert(name, dynamic_base as u32);
    }
    let signatures = funcs.iter().map(|f| compile::signature(f)).collect();
    let env = ModuleEnv {
        globals,
        shared,
        functions: index,
        signatures,
    };
    let mut code = Vec::new();
    let mut kernels = Vec::new();
    let mut function_shared = largest_kernel as u32;
    for (i, f) in funcs.iter().enumerate() {
        let mut kernel_shared = module_shared as u32;
        let shared_counter = if f.is_entry {
            &mut kernel_shared
        } else {
            &mut function_shared
        };
        let fc = match &f.body {
            Some(body) => compile::compile_function(&env, i as u32, f, body, shared_counter)?,
            None => FuncCode {
                name: f.name.clone(),
                is_entry: f.is_entry,
                code: vec![Inst {
                    guard: None,
                    op: Op::Unsupported {
                        what: format!(
                            "call to external function {} (not defined in this module)",
                            f.name
                        ),
                    },
                    line: f.line,
                }],
                nslots: 0,
                consts: Vec::new(),
                specials: Vec::new(),
                frame_size: 0,
            },
        };
        if f.is_entry && f.body.is_some() {
            let sig = &env.signatures[i];
            kernels.push(KernelInfo {
                name: f.name.clone(),
                params: sig.params.clone(),
                param_size: sig.params.last().map_or(0, |p| p.offset + p.size),
                func: i as u32,
            });
        }
        code.push(fc);
    }
    Ok((
        Program {
            funcs: code,
            static_shared: dynamic_base as u32,
        },
        kernels,
    ))
}

fn prescan_shared(body: &[Stmt], next: &mut u64) {
    for s in body {
        match s {
            Stmt::Decl(v) if v.space == Space::Shared => {
                let (size, align) = decl_size_align(v);
                *next = align_up(*next, align as u64).saturating_add(size);
            }
            Stmt::Block(inner) => prescan_shared(inner, next),
            _ => {}
        }
    }
}

/// Serialises an initialiser into the variable's bytes.
fn init_bytes(
    v: &VarDecl,
    init: &Init,
    globals: &HashMap<String, u64>,
) -> Result<Vec<u8>, LoadError> {
    let (size, _) = decl_size_align(v);
    let ty = Ty::parse(&v.ty).unwrap_or(Ty::B8);
    let elem = ty.bytes() as usize;
    let mut out = Vec::new();
    flatten(init, ty, elem, globals, &mut out, v.line, 0)?;
    if out.len() as u64 > size.max(elem as u64) {
        return Err(LoadError::InvalidPtx {
            line: v.line,
            message: format!("initialiser of {} is larger than the variable", v.name),
        });
    }
    out.resize(size as usize, 0);
    Ok(out)
}

fn flatten(
    init: &Init,
    ty: Ty,
    elem: usize,
    globals: &HashMap<String, u64>,
    out: &mut Vec<u8>,
    line: u32,
    depth: u32,
) -> Result<(), LoadError> {
    if out.len() > 1 << 28 || depth > 64 {
        return Err(LoadError::InvalidPtx {
            line,
            message: "initialiser too large".into(),
        });
    }
    let bits: u64 = match init {
        Init::List(items) => {
            for i in items {
                flatten(i, ty, elem, globals, out, line, depth + 1)?;
            }
            return Ok(());
        }
        Init::Int(v) => match ty {
            Ty::F32 => (*v as f32).to_bits() as u64,
            Ty::F64 => (*v as f64).to_bits(),
            _ => *v as u64,
        },
        Init::Float(f) => match ty {
            Ty::F32 => (*f as f32).to_bits() as u64,
            _ => f.to_bits(),
        },
        Init::F32Bits(b) => match ty {
            Ty::F64 => (f32::from_bits(*b) as f64).to_bits(),
            _ => *b as u64,
        },
        Init::F64Bits(b) => match ty {
            Ty::F32 => (f64::from_bits(*b) as f32).to_bits() as u64,
            _ => *b,
        },
        Init::Symbol { name, offset } => match globals.get(name) {
            Some(a) => a.wrapping_add(*offset as u64),
            None => {
                return Err(LoadError::NotSupported {
                    what: format!(
                        "initialiser with the address of {name} (only module variables can be referenced)"
                    ),
                    line,
                });
            }
        },
    };
    out.extend_from_slice(&bits.to_le_bytes()[..elem.min(8)]);
    Ok(())
}
