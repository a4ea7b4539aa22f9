//! Executes compiled kernels: blocks in parallel across host threads, the warps of a block
//! cooperatively on one thread (switching at barriers), each warp's 32 lanes in lockstep
//! with an active mask. Divergent lanes wait in groups keyed by program counter; the group
//! with the lowest PC runs first, so lanes reconverge where their paths meet.

use crate::alu;
use crate::compile::{FuncCode, LOCAL_WINDOW, SHARED_WINDOW, WINDOW_SIZE};
use crate::error::{FaultSite, LaunchError};
use crate::ir::*;
use crate::memory::MemView;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const FULL: u32 = u32::MAX;
/// Local memory (stack) limit per thread, as on CUDA devices; deeper recursion fails the launch.
const MAX_LOCAL: usize = 512 * 1024;
const BARRIERS: usize = 16;

/// Launch geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

pub(crate) struct Program {
    pub funcs: Vec<FuncCode>,
    pub static_shared: u32,
}

/// A fault inside a warp, before it is placed in a block/thread.
#[derive(Debug)]
enum Fault {
    Illegal {
        lane: u32,
        address: u64,
        space: &'static str,
    },
    Misaligned {
        lane: u32,
        address: u64,
    },
    Trap {
        lane: u32,
        what: String,
    },
    Unsupported {
        lane: u32,
        what: String,
    },
    Failed {
        lane: u32,
        what: String,
    },
    Cancelled {
        lane: u32,
    },
}

impl Fault {
    fn lane(&self) -> u32 {
        match self {
            Fault::Illegal { lane, .. }
            | Fault::Misaligned { lane, .. }
            | Fault::Trap { lane, .. }
            | Fault::Unsupported { lane, .. }
            | Fault::Failed { lane, .. }
            | Fault::Cancelled { lane } => *lane,
        }
    }
}

#[derive(Debug, Clone)]
struct Group {
    pc: u32,
    mask: u32,
    barrier: Option<u32>,
    red_dst: Option<Slot>,
}

struct Frame {
    func: u32,
    pc: u32,
    active: u32,
    waiting: Vec<Group>,
    min_wait: u32,
    reg_base: usize,
    frame_base: u32,
    call_mask: u32,
    /// Backward branches taken while other lanes of this frame wait ahead (spin detection).
    spins: u32,
}

/// After this many backward branches taken while other lanes wait further on, the waiting
/// lanes get to run (like Volta's independent thread scheduling), so spin-locks between
/// lanes of one warp make progress.
const SPIN_LIMIT: u32 = 256;

impl Frame {
    /// Lets the nearest group waiting ahead of `pc` run alone while the looping group waits
    /// at `target`. Waiting groups are hidden from the min-PC check until the next
    /// rescheduling. Returns the new (pc, active).
    fn escape_spin(&mut self, pc: u32, target: u32, looping: u32) -> Option<(u32, u32)> {
        let i = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, g)| g.barrier.is_none() && g.pc > pc)
            .min_by_key(|(_, g)| g.pc)
            .map(|(i, _)| i)?;
        let g = self.waiting.remove(i);
        self.park(target, looping);
        self.min_wait = u32::MAX;
        self.spins = 0;
        Some((g.pc, g.mask))
    }

    /// Before a warp-synchronous instruction: if lanes are hidden behind an escaped group,
    /// wait for them instead of running the instruction with part of the warp.
    fn join_hidden(&mut self, pc: u32, active: u32) -> Option<(u32, u32)> {
        if self.min_wait != u32::MAX || self.waiting.iter().all(|g| g.barrier.is_some()) {
            return None;
        }
        self.recompute_min();
        if self.min_wait >= pc {
            return None;
        }
        self.park(pc, active);
        self.schedule();
        Some((self.pc, self.active))
    }

    fn recompute_min(&mut self) {
        self.min_wait = self
            .waiting
            .iter()
            .filter(|g| g.barrier.is_none())
            .map(|g| g.pc)
            .min()
            .unwrap_or(u32::MAX);
    }

    fn park(&mut self, pc: u32, mask: u32) {
        if mask == 0 {
            return;
        }
        if let Some(g) = self
            .waiting
            .iter_mut()
            .find(|g| g.pc == pc && g.barrier.is_none())
        {
            g.mask |= mask;
        } else {
            self.waiting.push(Group {
                pc,
                mask,
                barrier: None,
                red_dst: None,
            });
        }
        self.min_wait = self.min_wait.min(pc);
    }

    /// Makes the lowest-PC runnable group active. False if none is runnable.
    fn schedule(&mut self) -> bool {
        self.recompute_min();
        let pc = self.min_wait;
        if pc == u32::MAX {
            return false;
        }
        let mut mask = 0;
        self.waiting.retain(|g| {
            if g.barrier.is_none() && g.pc == pc {
                mask |= g.mask;
                false
            } else {
                true
            }
        });
        self.pc = pc;
        self.active = mask;
        self.recompute_min();
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WarpState {
    Runnable,
    Blocked,
    Done,
}

struct Warp {
    regs: Vec<u64>,
    frames: Vec<Frame>,
    local: Vec<Vec<u8>>,
    exited: u32,
    valid: u32,
    index: u32,
    tid: [[u32; 3]; 32],
    state: WarpState,
}

#[derive(Clone, Copy)]
struct Barrier {
    arrived: u32,
    expected: Option<u32>,
    /// `bar.red`: how many arriving threads had a true / false predicate.
    popc: u32,
    falses: u32,
    kind: BarKind,
}

impl Default for Barrier {
    fn default() -> Barrier {
        Barrier {
            arrived: 0,
            expected: None,
            popc: 0,
            falses: 0,
            kind: BarKind::Sync,
        }
    }
}

/// Everything one block's warps share.
struct BlockEnv<'a> {
    prog: &'a Program,
    mem: &'a MemView,
    params: &'a [u8],
    cfg: LaunchConfig,
    ctaid: [u32; 3],
    nwarps: u32,
    shared: &'a mut Vec<u8>,
    printf: &'a mut Vec<u8>,
    hint: usize,
    lane_instructions: u64,
    barriers: [Barrier; BARRIERS],
    clock: u64,
    /// Set by the caller to cancel the launch, or internally when another block faulted.
    cancel: &'a AtomicBool,
    abort: &'a AtomicBool,
}

/// Output of a successful launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOutput {
    /// Text the kernel printed with `printf`, in block order and lane order.
    pub printf: Vec<u8>,
    /// Instructions executed, counted once per active lane.
    pub lane_instructions: u64,
}

pub(crate) fn launch(
    prog: &Program,
    kernel: usize,
    cfg: LaunchConfig,
    params: &[u8],
    mem: &MemView,
    threads: usize,
    cancel: &AtomicBool,
) -> Result<LaunchOutput, LaunchError> {
    let name = &prog.funcs[kernel].name;
    let nblocks = cfg.grid.iter().map(|&g| g as u64).product::<u64>();
    let nthreads = cfg.block.iter().map(|&b| b as u64).product::<u64>();
    if nblocks == 0 || nthreads == 0 || nthreads > 1024 {
        return Err(LaunchError::InvalidValue(format!(
            "grid {:?} block {:?}: every dimension must be at least 1 and a block at most 1024 threads",
            cfg.grid, cfg.block
        )));
    }
    let shared_size = prog.static_shared as u64 + cfg.dynamic_shared as u64;
    if shared_size > 228 * 1024 {
        return Err(LaunchError::InvalidValue(format!(
            "{shared_size} bytes of shared memory per block requested; the limit is 228 KiB"
        )));
    }
    let next = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    let results: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<(u64, LaunchError)>> = Mutex::new(None);
    let total = AtomicU64::new(0);
    let worker = || {
        let mut shared = vec![0u8; shared_size as usize];
        let mut warps = Vec::new();
        let mut count = 0u64;
        loop {
            if abort.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                break;
            }
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= nblocks {
                break;
            }
            let ctaid = [
                (b % cfg.grid[0] as u64) as u32,
                ((b / cfg.grid[0] as u64) % cfg.grid[1] as u64) as u32,
                (b / (cfg.grid[0] as u64 * cfg.grid[1] as u64)) as u32,
            ];
            shared.fill(0);
            let mut out = Vec::new();
            let mut env = BlockEnv {
                prog,
                mem,
                params,
                cfg,
                ctaid,
                nwarps: nthreads.div_ceil(32) as u32,
                shared: &mut shared,
                printf: &mut out,
                hint: 0,
                lane_instructions: 0,
                barriers: [Barrier::default(); BARRIERS],
                clock: 0,
                cancel,
                abort: &abort,
            };
            let r = run_block(&mut env, kernel, nthreads as u32, &mut warps);
            count += env.lane_instructions;
            match r {
                Ok(()) => {
                    if !out.is_empty() {
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((b, out));
                    }
                }
                Err((warp, tid, fault)) => {
                    if !out.is_empty() {
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((b, out));
                    }
                    let _ = warp;
                    let site = FaultSite {
                        kernel: name.clone(),
                        block: ctaid,
                        thread: tid,
                    };
                    let err = to_launch_error(site, fault);
                    let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    // A block stopped because another one failed must not hide that failure.
                    let secondary = matches!(err, LaunchError::Cancelled { .. });
                    let replace = match slot.as_ref() {
                        None => true,
                        Some((_, LaunchError::Cancelled { .. })) => !secondary,
                        Some((fb, _)) => !secondary && b < *fb,
                    };
                    if replace {
                        *slot = Some((b, err));
                    }
                    abort.store(true, Ordering::Relaxed);
                }
            }
        }
        total.fetch_add(count, Ordering::Relaxed);
    };
    let threads = threads.clamp(1, nblocks.min(256) as usize);
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(worker);
            }
        });
    }
    let mut outputs = results.into_inner().unwrap_or_else(|e| e.into_inner());
    outputs.sort_by_key(|(b, _)| *b);
    let printf: Vec<u8> = outputs.into_iter().flat_map(|(_, o)| o).collect();
    if let Some((_, err)) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(err);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(LaunchError::Cancelled {
            site: FaultSite {
                kernel: name.clone(),
                block: [0; 3],
                thread: [0; 3],
            },
        });
    }
    Ok(LaunchOutput {
        printf,
        lane_instructions: total.into_inner(),
    })
}

fn to_launch_error(site: FaultSite, fault: Fault) -> LaunchError {
    match fault {
        Fault::Illegal { address, space, .. } => LaunchError::IllegalAddress {
            site,
            address,
            space,
        },
        Fault::Misaligned { address, .. } => LaunchError::MisalignedAddress { site, address },
        Fault::Trap { what, .. } => LaunchError::Trap { site, what },
        Fault::Unsupported { what, .. } => LaunchError::NotSupported { site, what },
        Fault::Failed { what, .. } => LaunchError::Failed { site, what },
        Fault::Cancelled { .. } => LaunchError::Cancelled { site },
    }
}

type BlockFault = (u32, [u32; 3], Fault);

/// Runs one block. `warps` is scratch reused across the blocks one host thread runs, so
/// register files and local memory are allocated once per thread rather than per block.
fn run_block(
    env: &mut BlockEnv,
    kernel: usize,
    nthreads: u32,
    warps: &mut Vec<Warp>,
) -> Result<(), BlockFault> {
    let b = env.cfg.block;
    warps.truncate(env.nwarps as usize);
    for w in warps.len() as u32..env.nwarps {
        warps.push(Warp {
            regs: Vec::new(),
            frames: Vec::new(),
            local: vec![Vec::new(); 32],
            exited: 0,
            valid: 0,
            index: w,
            tid: [[0; 3]; 32],
            state: WarpState::Runnable,
        });
    }
    for (wi, w) in warps.iter_mut().enumerate() {
        let mut valid = 0u32;
        for (lane, t) in w.tid.iter_mut().enumerate() {
            let linear = wi as u32 * 32 + lane as u32;
            if linear < nthreads {
                valid |= 1 << lane;
                *t = [
                    linear % b[0],
                    (linear / b[0]) % b[1],
                    linear / (b[0] * b[1]),
                ];
            }
        }
        w.frames.clear();
        w.exited = !valid;
        w.valid = valid;
        w.state = WarpState::Runnable;
    }
    for w in warps.iter_mut() {
        let valid = w.valid;
        push_frame(env, w, kernel as u32, valid, 0, 0).map_err(|f| fault_site(w, f))?;
    }
    loop {
        let mut ran = false;
        for wi in 0..warps.len() {
            if warps[wi].state != WarpState::Runnable {
                continue;
            }
            ran = true;
            let w = &mut warps[wi];
            let state = run_warp(env, w).map_err(|f| fault_site(w, f))?;
            w.state = state;
            release_barriers(env, warps);
        }
        if warps.iter().all(|w| w.state == WarpState::Done) {
            return Ok(());
        }
        if !ran {
            let w = warps
                .iter()
                .find(|w| w.state == WarpState::Blocked)
                .unwrap_or(&warps[0]);
            let lane = w.frames.last().map_or(0, |f| {
                f.waiting
                    .iter()
                    .map(|g| g.mask.trailing_zeros())
                    .min()
                    .unwrap_or(0)
            });
            return Err(fault_site(
                w,
                Fault::Failed {
                    lane,
                    what: "barrier deadlock: threads wait at a barrier that the other threads of the block never reach".into(),
                },
            ));
        }
    }
}

fn fault_site(w: &Warp, f: Fault) -> BlockFault {
    let lane = f.lane().min(31) as usize;
    (w.index, w.tid[lane], f)
}

fn release_barriers(env: &mut BlockEnv, warps: &mut [Warp]) {
    let live: u32 = warps
        .iter()
        .map(|w| (w.valid & !w.exited).count_ones())
        .sum();
    for id in 0..BARRIERS {
        let bar = env.barriers[id];
        if bar.arrived == 0 {
            continue;
        }
        let expected = bar.expected.unwrap_or(live);
        if bar.arrived < expected {
            continue;
        }
        for w in warps.iter_mut() {
            let Some(frame) = w.frames.last_mut() else {
                continue;
            };
            let mut released = false;
            for g in frame.waiting.iter_mut() {
                if g.barrier == Some(id as u32) {
                    g.barrier = None;
                    released = true;
                    if let Some(d) = g.red_dst {
                        let v = match bar.kind {
                            BarKind::RedAnd => (bar.falses == 0) as u64,
                            BarKind::RedOr => (bar.popc > 0) as u64,
                            _ => bar.popc as u64,
                        };
                        let base = frame.reg_base + d as usize * 32;
                        for lane in lanes_of(g.mask) {
                            w.regs[base + lane as usize] = v;
                        }
                    }
                }
            }
            if released {
                frame.recompute_min();
                if w.state == WarpState::Blocked {
                    w.state = WarpState::Runnable;
                }
            }
        }
        env.barriers[id] = Barrier::default();
    }
}

/// Starts a frame for `func` on the lanes in `mask`.
fn push_frame(
    env: &BlockEnv,
    w: &mut Warp,
    func: u32,
    mask: u32,
    reg_base: usize,
    frame_base: u32,
) -> Result<(), Fault> {
    let f = &env.prog.funcs[func as usize];
    let need_regs = reg_base + f.nslots as usize * 32;
    if w.regs.len() < need_regs {
        w.regs.resize(need_regs, 0);
    }
    let need_local = frame_base as usize + f.frame_size as usize;
    if need_local > MAX_LOCAL {
        return Err(Fault::Failed {
            lane: mask.trailing_zeros(),
            what: format!(
                "stack overflow calling {} (more than {} KiB of local memory per thread; recursion too deep?)",
                f.name,
                MAX_LOCAL / 1024
            ),
        });
    }
    for lane in 0..32 {
        if mask >> lane & 1 == 1 && w.local[lane].len() < need_local {
            w.local[lane].resize(
                need_local
                    .next_power_of_two()
                    .min(MAX_LOCAL)
                    .max(need_local),
                0,
            );
        }
    }
    for &(slot, v) in &f.consts {
        let b = reg_base + slot as usize * 32;
        w.regs[b..b + 32].fill(v);
    }
    for &(slot, sp) in &f.specials {
        let b = reg_base + slot as usize * 32;
        for lane in 0..32u32 {
            w.regs[b + lane as usize] = special_value(env, w, sp, lane);
        }
    }
    w.frames.push(Frame {
        func,
        pc: 0,
        active: mask,
        waiting: Vec::new(),
        min_wait: u32::MAX,
        reg_base,
        frame_base,
        call_mask: mask,
        spins: 0,
    });
    Ok(())
}

fn special_value(env: &BlockEnv, w: &Warp, sp: Special, lane: u32) -> u64 {
    let c = &env.cfg;
    (match sp {
        Special::Tid(d) => w.tid[lane as usize][d as usize],
        Special::Ntid(d) => c.block[d as usize],
        Special::Ctaid(d) => env.ctaid[d as usize],
        Special::Nctaid(d) => c.grid[d as usize],
        Special::LaneId => lane,
        Special::WarpId => w.index,
        Special::NWarpId => env.nwarps,
        Special::SmId | Special::GridId | Special::Zero => 0,
        Special::NSmId => 1,
        Special::LaneMaskEq => 1 << lane,
        Special::LaneMaskLt => (1u32 << lane) - 1,
        Special::LaneMaskLe => ((1u64 << (lane + 1)) - 1) as u32,
        Special::LaneMaskGt => !(((1u64 << (lane + 1)) - 1) as u32),
        Special::LaneMaskGe => !((1u32 << lane) - 1),
        Special::DynamicSmemSize => c.dynamic_shared,
        Special::TotalSmemSize => env.prog.static_shared + c.dynamic_shared,
    }) as u64
}

#[inline(always)]
fn row(regs: &[u64], base: usize, s: Slot) -> [u64; 32] {
    let o = base + s as usize * 32;
    regs[o..o + 32].try_into().expect("32 lanes")
}

#[inline(always)]
fn write_lanes(regs: &mut [u64], base: usize, d: Slot, mask: u32, f: impl Fn(usize) -> u64) {
    let o = base + d as usize * 32;
    let dst = &mut regs[o..o + 32];
    if mask == FULL {
        for (l, x) in dst.iter_mut().enumerate() {
            *x = f(l);
        }
    } else {
        let mut m = mask;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            dst[l] = f(l);
        }
    }
}

fn lanes_of(mask: u32) -> impl Iterator<Item = u32> {
    let mut m = mask;
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros();
            m &= m - 1;
            Some(l)
        }
    })
}

/// Where a resolved address points.
enum Target {
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
}

fn resolve(space: MemSpace, addr: u64) -> Target {
    match space {
        MemSpace::Global => Target::Global(addr),
        MemSpace::Shared => Target::Shared(addr & 0xffff_ffff),
        MemSpace::Local => Target::Local(addr & 0xffff_ffff),
        MemSpace::KernelParam => Target::Param(addr),
        MemSpace::Generic => {
            if addr.wrapping_sub(SHARED_WINDOW) < WINDOW_SIZE {
                Target::Shared(addr - SHARED_WINDOW)
            } else if addr.wrapping_sub(LOCAL_WINDOW) < WINDOW_SIZE {
                Target::Local(addr - LOCAL_WINDOW)
            } else {
                Target::Global(addr)
            }
        }
    }
}

fn read_le(bytes: &[u8], off: u64, size: u32) -> Option<u64> {
    let s = bytes.get(off as usize..(off as usize).checked_add(size as usize)?)?;
    let mut v = [0u8; 8];
    v[..size as usize].copy_from_slice(s);
    Some(u64::from_le_bytes(v))
}

fn write_le(bytes: &mut [u8], off: u64, size: u32, v: u64) -> Option<()> {
    let s = bytes.get_mut(off as usize..(off as usize).checked_add(size as usize)?)?;
    s.copy_from_slice(&v.to_le_bytes()[..size as usize]);
    Some(())
}

fn space_name(t: &Target) -> &'static str {
    match t {
        Target::Global(_) => "global",
        Target::Shared(_) => "shared",
        Target::Local(_) => "local",
        Target::Param(_) => "param",
    }
}

impl BlockEnv<'_> {
    #[inline]
    fn load(
        &mut self,
        local: &[Vec<u8>],
        lane: u32,
        space: MemSpace,
        addr: u64,
        size: u32,
    ) -> Result<u64, Fault> {
        if addr & (size as u64 - 1) != 0 {
            return Err(Fault::Misaligned {
                lane,
                address: addr,
            });
        }
        let t = resolve(space, addr);
        let v = match t {
            Target::Global(a) => self
                .mem
                .find(a, size, &mut self.hint)
                .map(|(al, off)| al.load(off, size)),
            Target::Shared(o) => read_le(self.shared, o, size),
            Target::Local(o) => read_le(&local[lane as usize], o, size),
            Target::Param(o) => read_le(self.params, o, size),
        };
        v.ok_or(Fault::Illegal {
            lane,
            address: addr,
            space: space_name(&t),
        })
    }

    #[inline]
    fn store(
        &mut self,
        local: &mut [Vec<u8>],
        lane: u32,
        space: MemSpace,
        addr: u64,
        size: u32,
        v: u64,
    ) -> Result<(), Fault> {
        if addr & (size as u64 - 1) != 0 {
            return Err(Fault::Misaligned {
                lane,
                address: addr,
            });
        }
        let t = resolve(space, addr);
        let ok = match t {
            Target::Global(a) => self
                .mem
                .find(a, size, &mut self.hint)
                .map(|(al, off)| al.store(off, size, v)),
            Target::Shared(o) => write_le(self.shared, o, size, v),
            Target::Local(o) => write_le(&mut local[lane as usize], o, size, v),
            Target::Param(_) => None,
        };
        ok.ok_or(Fault::Illegal {
            lane,
            address: addr,
            space: space_name(&t),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn atomic(
        &mut self,
        local: &mut [Vec<u8>],
        lane: u32,
        space: MemSpace,
        addr: u64,
        op: AtomOp,
        ty: Ty,
        b: u64,
        c: u64,
    ) -> Result<u64, Fault> {
        let size = ty.bytes();
        if size == 2 {
            return self.atomic16(local, lane, space, addr, op, ty, b, c);
        }
        if size != 4 && size != 8 {
            return Err(Fault::Unsupported {
                lane,
                what: format!("atomics on {}-byte values", size),
            });
        }
        if addr & (size as u64 - 1) != 0 {
            return Err(Fault::Misaligned {
                lane,
                address: addr,
            });
        }
        let t = resolve(space, addr);
        let f = |old: u64| alu::atom_apply(op, ty, old, b, c);
        let r = match t {
            Target::Global(a) => self
                .mem
                .find(a, size, &mut self.hint)
                .map(|(al, off)| al.update(off, size, f)),
            // Shared and local memory belong to this host thread alone: a plain
            // read-modify-write is atomic with respect to the block's other warps.
            Target::Shared(o) => read_le(self.shared, o, size)
                .and_then(|old| write_le(self.shared, o, size, f(old)).map(|_| old)),
            Target::Local(o) => {
                let l = &mut local[lane as usize];
                read_le(l, o, size).and_then(|old| write_le(l, o, size, f(old)).map(|_| old))
            }
            Target::Param(_) => None,
        };
        r.ok_or(Fault::Illegal {
            lane,
            address: addr,
            space: space_name(&t),
        })
    }

    /// A 2-byte atomic as a compare-and-swap on the aligned 4-byte word holding it.
    #[allow(clippy::too_many_arguments)]
    fn atomic16(
        &mut self,
        local: &mut [Vec<u8>],
        lane: u32,
        space: MemSpace,
        addr: u64,
        op: AtomOp,
        ty: Ty,
        b: u64,
        c: u64,
    ) -> Result<u64, Fault> {
        if addr & 1 != 0 {
            return Err(Fault::Misaligned {
                lane,
                address: addr,
            });
        }
        let shift = (addr & 2) * 8;
        let f = |word: u64| {
            let old = (word >> shift) & 0xffff;
            let new = alu::atom_apply(op, ty, old, b, c) & 0xffff;
            (word & !(0xffff << shift)) | (new << shift)
        };
        let t = resolve(space, addr);
        let word = match t {
            Target::Global(a) => self.mem.find(a, 2, &mut self.hint).map(|(al, off)| {
                // Storage is whole 8-byte words, so the aligned word around an in-bounds
                // 2-byte value always exists.
                al.update(off & !3, 4, f)
            }),
            Target::Shared(o) => read_le(self.shared, o & !3, 4)
                .and_then(|w| write_le(self.shared, o & !3, 4, f(w)).map(|_| w)),
            Target::Local(o) => {
                let l = &mut local[lane as usize];
                read_le(l, o & !3, 4).and_then(|w| write_le(l, o & !3, 4, f(w)).map(|_| w))
            }
            Target::Param(_) => None,
        };
        word.map(|w| (w >> shift) & 0xffff).ok_or(Fault::Illegal {
            lane,
            address: addr,
            space: space_name(&t),
        })
    }

    fn read_cstring(&mut self, local: &[Vec<u8>], lane: u32, addr: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..4096 {
            match self.load(local, lane, MemSpace::Generic, addr.wrapping_add(i), 1) {
                Ok(0) | Err(_) => break,
                Ok(b) => out.push(b as u8),
            }
        }
        out
    }
}

/// Loads one scalar per active lane from `[base[lane] + offset]` in shared or global memory:
/// the common case of `ld`, without per-lane dispatch on the state space.
#[inline]
fn load_row(
    env: &mut BlockEnv,
    space: MemSpace,
    base: [u64; 32],
    offset: i64,
    size: u32,
    mask: u32,
) -> Result<[u64; 32], Fault> {
    let mut out = [0u64; 32];
    let align = size as u64 - 1;
    for lane in lanes_of(mask) {
        let a = base[lane as usize].wrapping_add(offset as u64);
        if a & align != 0 {
            return Err(Fault::Misaligned { lane, address: a });
        }
        let v = if space == MemSpace::Shared {
            let o = (a & 0xffff_ffff) as usize;
            match (size, env.shared.get(o..o + size as usize)) {
                (4, Some(b)) => Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64),
                (_, Some(_)) => read_le(env.shared, o as u64, size),
                (_, None) => None,
            }
        } else {
            env.mem
                .find(a, size, &mut env.hint)
                .map(|(al, off)| al.load(off, size))
        };
        out[lane as usize] = v.ok_or(Fault::Illegal {
            lane,
            address: a,
            space: if space == MemSpace::Shared {
                "shared"
            } else {
                "global"
            },
        })?;
    }
    Ok(out)
}

/// Pops finished frames, copying return values to callers, until a frame has lanes to run
/// (None) or the warp is done or blocked.
fn finish_frames(prog: &Program, w: &mut Warp) -> Option<WarpState> {
    loop {
        let done = w.frames.pop()?;
        let Some(caller) = w.frames.last_mut() else {
            return Some(WarpState::Done);
        };
        let cfunc = &prog.funcs[caller.func as usize];
        if let Some(Inst {
            op: Op::Call { rets, .. },
            ..
        }) = cfunc.code.get(caller.pc as usize)
        {
            for lane in lanes_of(done.call_mask & !w.exited) {
                let lm = &mut w.local[lane as usize];
                for r in rets {
                    let src = done.frame_base as usize + r.callee_offset as usize;
                    let dst = caller.frame_base as usize + r.caller_offset as usize;
                    if src + r.size as usize <= lm.len() && dst + r.size as usize <= lm.len() {
                        lm.copy_within(src..src + r.size as usize, dst);
                    }
                }
            }
        }
        caller.pc += 1;
        caller.active = done.call_mask & !w.exited;
        if caller.active != 0 && caller.pc < caller.min_wait {
            return None;
        }
        let (pc, active) = (caller.pc, caller.active);
        caller.park(pc, active);
        if caller.schedule() {
            return None;
        }
        if !caller.waiting.is_empty() {
            return Some(WarpState::Blocked);
        }
    }
}

/// Runs a warp until it finishes or waits at a barrier.
fn run_warp(env: &mut BlockEnv, w: &mut Warp) -> Result<WarpState, Fault> {
    if let Some(f) = w.frames.last_mut()
        && f.active == 0
        && !f.schedule()
    {
        return Ok(WarpState::Blocked);
    }
    let prog: &Program = env.prog;
    'frames: loop {
        let Some(frame) = w.frames.last_mut() else {
            return Ok(WarpState::Done);
        };
        let func = &prog.funcs[frame.func as usize];
        let code = &func.code[..];
        let base = frame.reg_base;
        let fbase = frame.frame_base as u64;
        let mut pc = frame.pc;
        let mut active = frame.active & !w.exited;
        loop {
            let Some(inst) = code.get(pc as usize) else {
                return Err(Fault::Failed {
                    lane: active.trailing_zeros(),
                    what: "ran past the end of a function".into(),
                });
            };
            let mask = match inst.guard {
                None => active,
                Some((p, neg)) => {
                    let o = base + p as usize * 32;
                    let mut m = 0u32;
                    for (l, &v) in w.regs[o..o + 32].iter().enumerate() {
                        m |= (((v != 0) ^ neg) as u32) << l;
                    }
                    m & active
                }
            };
            env.lane_instructions += mask.count_ones() as u64;
            let regs = &mut w.regs[..];
            match &inst.op {
                Op::Nop => {}
                Op::Mov { d, a } => {
                    let a = row(regs, base, *a);
                    write_lanes(regs, base, *d, mask, |l| a[l]);
                }
                Op::IntBin { op, ty, d, a, b } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    match (op, ty.bits()) {
                        (IntBinOp::Add, 32) => write_lanes(regs, base, *d, mask, |l| {
                            (a[l] as u32).wrapping_add(b[l] as u32) as u64
                        }),
                        (IntBinOp::Add, 64) => {
                            write_lanes(regs, base, *d, mask, |l| a[l].wrapping_add(b[l]))
                        }
                        (IntBinOp::Sub, 32) => write_lanes(regs, base, *d, mask, |l| {
                            (a[l] as u32).wrapping_sub(b[l] as u32) as u64
                        }),
                        (IntBinOp::MulLo, 32) => write_lanes(regs, base, *d, mask, |l| {
                            (a[l] as u32).wrapping_mul(b[l] as u32) as u64
                        }),
                        (IntBinOp::Shl, 32) => write_lanes(regs, base, *d, mask, |l| {
                            if (b[l] as u32) < 32 {
                                ((a[l] as u32) << b[l] as u32) as u64
                            } else {
                                0
                            }
                        }),
                        (IntBinOp::And, 32) => {
                            write_lanes(regs, base, *d, mask, |l| (a[l] & b[l]) & 0xffff_ffff)
                        }
                        (IntBinOp::MulWide, 32) if ty.is_signed() => {
                            write_lanes(regs, base, *d, mask, |l| {
                                ((a[l] as i32 as i64) * (b[l] as i32 as i64)) as u64
                            })
                        }
                        (IntBinOp::MulWide, 32) => write_lanes(regs, base, *d, mask, |l| {
                            (a[l] as u32 as u64) * (b[l] as u32 as u64)
                        }),
                        _ => {
                            let (op, ty) = (*op, *ty);
                            write_lanes(regs, base, *d, mask, |l| alu::int_bin(op, ty, a[l], b[l]))
                        }
                    }
                }
                Op::IntBin16x2 {
                    op,
                    ty,
                    relu,
                    d,
                    a,
                    b,
                } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let (op, ty, relu) = (*op, *ty, *relu);
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::int_bin_16x2(op, ty, relu, a[l], b[l])
                    });
                }
                Op::IntUn { op, ty, d, a } => {
                    let a = row(regs, base, *a);
                    let (op, ty) = (*op, *ty);
                    write_lanes(regs, base, *d, mask, |l| alu::int_un(op, ty, a[l]));
                }
                Op::Mad {
                    mode,
                    ty,
                    sat,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let ty = *ty;
                    match (mode, ty) {
                        (IntBinOp::MulLo, Ty::S32 | Ty::U32 | Ty::B32) => {
                            write_lanes(regs, base, *d, mask, |l| {
                                (a[l] as u32)
                                    .wrapping_mul(b[l] as u32)
                                    .wrapping_add(c[l] as u32)
                                    as u64
                            })
                        }
                        (IntBinOp::MulWide, _) => {
                            let wide = match ty {
                                Ty::S32 => Ty::S64,
                                Ty::U32 | Ty::B32 => Ty::U64,
                                Ty::S16 => Ty::S32,
                                _ => Ty::U32,
                            };
                            write_lanes(regs, base, *d, mask, |l| {
                                alu::int_bin(
                                    IntBinOp::Add,
                                    wide,
                                    alu::int_bin(IntBinOp::MulWide, ty, a[l], b[l]),
                                    c[l],
                                )
                            })
                        }
                        (IntBinOp::MulHi, _) if *sat => write_lanes(regs, base, *d, mask, |l| {
                            let p =
                                (alu::sext(a[l], 32) as i128 * alu::sext(b[l], 32) as i128) >> 32;
                            let s = p + alu::sext(c[l], 32) as i128;
                            (s.clamp(i32::MIN as i128, i32::MAX as i128) as i32 as u32) as u64
                        }),
                        (m, _) => {
                            let m = *m;
                            write_lanes(regs, base, *d, mask, |l| {
                                alu::int_bin(
                                    IntBinOp::Add,
                                    ty,
                                    alu::int_bin(m, ty, a[l], b[l]),
                                    c[l],
                                )
                            })
                        }
                    }
                }
                Op::Bfe { ty, d, a, b, c } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let ty = *ty;
                    write_lanes(regs, base, *d, mask, |l| alu::bfe(ty, a[l], b[l], c[l]));
                }
                Op::Bfi { ty, d, f, b, c, e } => {
                    let (f, b, c, e) = (
                        row(regs, base, *f),
                        row(regs, base, *b),
                        row(regs, base, *c),
                        row(regs, base, *e),
                    );
                    let ty = *ty;
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::bfi(ty, f[l], b[l], c[l], e[l])
                    });
                }
                Op::Prmt { d, a, b, c } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    write_lanes(regs, base, *d, mask, |l| alu::prmt(a[l], b[l], c[l]));
                }
                Op::Shf {
                    left,
                    clamp,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let (left, clamp) = (*left, *clamp);
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::shf(left, clamp, a[l], b[l], c[l])
                    });
                }
                Op::Sad { ty, d, a, b, c } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let ty = *ty;
                    write_lanes(regs, base, *d, mask, |l| {
                        let diff = alu::int_bin(IntBinOp::Max, ty, a[l], b[l])
                            .wrapping_sub(alu::int_bin(IntBinOp::Min, ty, a[l], b[l]));
                        alu::int_bin(IntBinOp::Add, ty, c[l], diff)
                    });
                }
                Op::FBin { op, ty, m, d, a, b } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let plain = m.round == Round::Nearest && !m.ftz && !m.sat;
                    match (op, ty) {
                        (FBinOp::Add, Ty::F32) if plain => write_lanes(regs, base, *d, mask, |l| {
                            (f32::from_bits(a[l] as u32) + f32::from_bits(b[l] as u32)).to_bits()
                                as u64
                        }),
                        (FBinOp::Sub, Ty::F32) if plain => write_lanes(regs, base, *d, mask, |l| {
                            (f32::from_bits(a[l] as u32) - f32::from_bits(b[l] as u32)).to_bits()
                                as u64
                        }),
                        (FBinOp::Mul, Ty::F32) if plain => write_lanes(regs, base, *d, mask, |l| {
                            (f32::from_bits(a[l] as u32) * f32::from_bits(b[l] as u32)).to_bits()
                                as u64
                        }),
                        _ => {
                            let (op, ty, m) = (*op, *ty, *m);
                            write_lanes(regs, base, *d, mask, |l| alu::fbin(op, ty, m, a[l], b[l]))
                        }
                    }
                }
                Op::FUn { op, ty, m, d, a } => {
                    let a = row(regs, base, *a);
                    let (op, ty, m) = (*op, *ty, *m);
                    write_lanes(regs, base, *d, mask, |l| alu::fun(op, ty, m, a[l]));
                }
                Op::Fma { ty, m, d, a, b, c } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    if *ty == Ty::F32 && m.round == Round::Nearest && !m.ftz && !m.sat {
                        write_lanes(regs, base, *d, mask, |l| {
                            f32::from_bits(a[l] as u32)
                                .mul_add(f32::from_bits(b[l] as u32), f32::from_bits(c[l] as u32))
                                .to_bits() as u64
                        });
                    } else {
                        let (ty, m) = (*ty, *m);
                        write_lanes(regs, base, *d, mask, |l| alu::fma(ty, m, a[l], b[l], c[l]));
                    }
                }
                Op::Testp { op, ty, d, a } => {
                    let a = row(regs, base, *a);
                    let (op, ty) = (*op, *ty);
                    write_lanes(regs, base, *d, mask, |l| alu::testp(op, ty, a[l]));
                }
                Op::Setp {
                    cmp,
                    ty,
                    ftz,
                    p,
                    q,
                    a,
                    b,
                    combine,
                } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let (cmp, ty, ftz) = (*cmp, *ty, *ftz);
                    let mut res = [false; 32];
                    match (cmp, ty) {
                        (Cmp::Lt, Ty::S32) => res
                            .iter_mut()
                            .enumerate()
                            .for_each(|(l, r)| *r = (a[l] as i32) < (b[l] as i32)),
                        (Cmp::Ge, Ty::S32) => res
                            .iter_mut()
                            .enumerate()
                            .for_each(|(l, r)| *r = (a[l] as i32) >= (b[l] as i32)),
                        _ => res
                            .iter_mut()
                            .enumerate()
                            .for_each(|(l, r)| *r = alu::compare(cmp, ty, ftz, a[l], b[l])),
                    }
                    let cv = combine.map(|(op, c, neg)| (op, row(regs, base, c), neg));
                    let val = |l: usize, x: bool| match &cv {
                        None => x,
                        Some((op, c, neg)) => alu::combine(*op, x, (c[l] != 0) ^ neg),
                    };
                    write_lanes(regs, base, *p, mask, |l| val(l, res[l]) as u64);
                    if let Some(q) = q {
                        write_lanes(regs, base, *q, mask, |l| val(l, !res[l]) as u64);
                    }
                }
                Op::Set {
                    cmp,
                    dty,
                    sty,
                    d,
                    a,
                    b,
                    combine,
                } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let cv = combine.map(|(op, c, neg)| (op, row(regs, base, c), neg));
                    let (cmp, sty, dty) = (*cmp, *sty, *dty);
                    write_lanes(regs, base, *d, mask, |l| {
                        let mut x = alu::compare(cmp, sty, false, a[l], b[l]);
                        if let Some((op, c, neg)) = &cv {
                            x = alu::combine(*op, x, (c[l] != 0) ^ neg);
                        }
                        match (x, dty) {
                            (false, _) => 0,
                            (true, Ty::F32) => 1.0f32.to_bits() as u64,
                            (true, _) => 0xffff_ffff,
                        }
                    });
                }
                Op::Selp { d, a, b, c, .. } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    write_lanes(
                        regs,
                        base,
                        *d,
                        mask,
                        |l| if c[l] != 0 { a[l] } else { b[l] },
                    );
                }
                Op::Slct {
                    cty,
                    ftz,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let (cty, ftz) = (*cty, *ftz);
                    write_lanes(regs, base, *d, mask, |l| {
                        let ge = if cty == Ty::F32 {
                            let x = f32::from_bits(c[l] as u32);
                            let x = if ftz { crate::float::ftz32(x) } else { x };
                            x >= 0.0
                        } else {
                            (c[l] as i32) >= 0
                        };
                        if ge { a[l] } else { b[l] }
                    });
                }
                Op::PredLogic { op, d, a, b } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let op = *op;
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::int_bin(op, Ty::B32, (a[l] != 0) as u64, (b[l] != 0) as u64)
                    });
                }
                Op::Cvt {
                    dty,
                    sty,
                    round,
                    int_round,
                    ftz,
                    sat,
                    d,
                    a,
                } => {
                    let a = row(regs, base, *a);
                    let (dty, sty, round, int_round, ftz, sat) =
                        (*dty, *sty, *round, *int_round, *ftz, *sat);
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::cvt(dty, sty, round, int_round, ftz, sat, a[l])
                    });
                }
                Op::CvtPack {
                    dty,
                    round,
                    relu,
                    d,
                    a,
                    b,
                } => {
                    let (a, b) = (row(regs, base, *a), row(regs, base, *b));
                    let (half, round, relu) = (
                        if *dty == Ty::F16x2 { Ty::F16 } else { Ty::Bf16 },
                        *round,
                        *relu,
                    );
                    let conv = move |x: u64| {
                        let x = if relu && f32::from_bits(x as u32) < 0.0 {
                            0
                        } else {
                            x
                        };
                        alu::cvt(half, Ty::F32, Some(round), false, false, false, x)
                    };
                    write_lanes(regs, base, *d, mask, |l| (conv(a[l]) << 16) | conv(b[l]));
                }
                Op::Cvta {
                    space,
                    to_generic,
                    d,
                    a,
                } => {
                    let a = row(regs, base, *a);
                    let window = match space {
                        MemSpace::Shared => SHARED_WINDOW,
                        MemSpace::Local => LOCAL_WINDOW,
                        _ => 0,
                    };
                    let to = *to_generic;
                    write_lanes(regs, base, *d, mask, |l| {
                        if window == 0 {
                            a[l]
                        } else if to {
                            (a[l] & 0xffff_ffff) + window
                        } else {
                            a[l].wrapping_sub(window) & 0xffff_ffff
                        }
                    });
                }
                Op::Pack {
                    d,
                    parts,
                    part_bits,
                } => {
                    let pb = *part_bits;
                    let rows: Vec<[u64; 32]> = parts.iter().map(|p| row(regs, base, *p)).collect();
                    write_lanes(regs, base, *d, mask, |l| {
                        rows.iter().enumerate().fold(0u64, |acc, (i, r)| {
                            acc | ((r[l] & alu::mask(pb)) << (i as u32 * pb))
                        })
                    });
                }
                Op::Unpack { ds, a, part_bits } => {
                    let a = row(regs, base, *a);
                    let pb = *part_bits;
                    for (i, d) in ds.iter().enumerate() {
                        write_lanes(regs, base, *d, mask, |l| {
                            (a[l] >> (i as u32 * pb)) & alu::mask(pb)
                        });
                    }
                }
                Op::FrameAddr { d, offset } => {
                    let v = fbase + *offset as u64;
                    write_lanes(regs, base, *d, mask, |_| v);
                }
                Op::Ld {
                    space,
                    ty,
                    sign_to,
                    ds,
                    addr,
                } => {
                    let size = ty.bytes();
                    if *space == MemSpace::KernelParam && addr.base.is_none() && mask != 0 {
                        // A kernel parameter is the same for every lane: read it once.
                        let lane = mask.trailing_zeros();
                        for (i, d) in ds.iter().enumerate() {
                            let at = (addr.offset as u64).wrapping_add(i as u64 * size as u64);
                            let mut v = env.load(&w.local, lane, *space, at, size)?;
                            if *sign_to > 0 {
                                v = (alu::sext(v, ty.bits()) as u64) & alu::mask(*sign_to);
                            }
                            write_lanes(&mut w.regs, base, *d, mask, |_| v);
                        }
                        pc += 1;
                        let frame = w.frames.last_mut().expect("frame");
                        if pc >= frame.min_wait {
                            frame.park(pc, active);
                            frame.schedule();
                            pc = frame.pc;
                            active = frame.active;
                        }
                        continue;
                    }
                    if let (MemSpace::Shared | MemSpace::Global, Some(b), false, [d], 0) =
                        (*space, addr.base, addr.frame, &ds[..], *sign_to)
                    {
                        let out =
                            load_row(env, *space, row(regs, base, b), addr.offset, size, mask)?;
                        write_lanes(&mut w.regs, base, *d, mask, |l| out[l]);
                        pc += 1;
                        let frame = w.frames.last_mut().expect("frame");
                        if pc >= frame.min_wait {
                            frame.park(pc, active);
                            frame.schedule();
                            pc = frame.pc;
                            active = frame.active;
                        }
                        continue;
                    }
                    let baserow = addr.base.map(|b| row(regs, base, b));
                    for lane in lanes_of(mask) {
                        let mut a = baserow
                            .map_or(0, |r| r[lane as usize])
                            .wrapping_add(addr.offset as u64);
                        if addr.frame {
                            a = a.wrapping_add(fbase);
                        }
                        for (i, d) in ds.iter().enumerate() {
                            let mut v = env.load(
                                &w.local,
                                lane,
                                *space,
                                a.wrapping_add(i as u64 * size as u64),
                                size,
                            )?;
                            if *sign_to > 0 {
                                v = (alu::sext(v, ty.bits()) as u64) & alu::mask(*sign_to);
                            }
                            w.regs[base + *d as usize * 32 + lane as usize] = v;
                        }
                    }
                }
                Op::St {
                    space,
                    ty,
                    srcs,
                    addr,
                } => {
                    let size = ty.bytes();
                    let baserow = addr.base.map(|b| row(regs, base, b));
                    for lane in lanes_of(mask) {
                        let mut a = baserow
                            .map_or(0, |r| r[lane as usize])
                            .wrapping_add(addr.offset as u64);
                        if addr.frame {
                            a = a.wrapping_add(fbase);
                        }
                        for (i, s) in srcs.iter().enumerate() {
                            let v = w.regs[base + *s as usize * 32 + lane as usize];
                            env.store(
                                &mut w.local,
                                lane,
                                *space,
                                a.wrapping_add(i as u64 * size as u64),
                                size,
                                v,
                            )?;
                        }
                    }
                }
                Op::Atom {
                    space,
                    op,
                    ty,
                    d,
                    addr,
                    b,
                    c,
                } => {
                    let baserow = addr.base.map(|x| row(regs, base, x));
                    let (bv, cv) = (row(regs, base, *b), row(regs, base, *c));
                    for lane in lanes_of(mask) {
                        let l = lane as usize;
                        let mut a = baserow.map_or(0, |r| r[l]).wrapping_add(addr.offset as u64);
                        if addr.frame {
                            a = a.wrapping_add(fbase);
                        }
                        let old =
                            env.atomic(&mut w.local, lane, *space, a, *op, *ty, bv[l], cv[l])?;
                        if let Some(d) = d {
                            w.regs[base + *d as usize * 32 + l] = old;
                        }
                    }
                }
                Op::Lop3 { d, a, b, c, lut } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let lut = *lut;
                    write_lanes(regs, base, *d, mask, |l| alu::lop3(a[l], b[l], c[l], lut));
                }
                Op::Mul24 {
                    hi,
                    signed,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let (hi, signed) = (*hi, *signed);
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::mul24(hi, signed, a[l], b[l], c[l])
                    });
                }
                Op::Dot {
                    two,
                    hi,
                    a_signed,
                    b_signed,
                    d,
                    a,
                    b,
                    c,
                } => {
                    let (a, b, c) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let (two, hi, sa, sb) = (*two, *hi, *a_signed, *b_signed);
                    write_lanes(regs, base, *d, mask, |l| {
                        alu::dot(two, hi, sa, sb, a[l], b[l], c[l])
                    });
                }
                Op::Carry {
                    kind,
                    use_cf,
                    set_cf,
                    ty,
                    d,
                    a,
                    b,
                    c,
                    cf,
                } => {
                    let (av, bv, cv, fv) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                        row(regs, base, *cf),
                    );
                    let (kind, ty, use_cf) = (*kind, *ty, *use_cf);
                    let step = |l: usize| {
                        alu::carry(
                            kind,
                            ty,
                            av[l],
                            bv[l],
                            cv[l],
                            if use_cf { fv[l] } else { 0 },
                        )
                    };
                    write_lanes(regs, base, *d, mask, |l| step(l).0);
                    if *set_cf {
                        write_lanes(regs, base, *cf, mask, |l| step(l).1);
                    }
                }
                Op::IsSpace { space, d, a } => {
                    let a = row(regs, base, *a);
                    let space = *space;
                    write_lanes(regs, base, *d, mask, |l| {
                        let t = resolve(MemSpace::Generic, a[l]);
                        matches!(
                            (space, t),
                            (MemSpace::Global, Target::Global(_))
                                | (MemSpace::Shared, Target::Shared(_))
                                | (MemSpace::Local, Target::Local(_))
                        ) as u64
                    });
                }
                Op::CopyAsync {
                    dst,
                    src,
                    size,
                    src_size,
                } => {
                    let drow = dst.base.map(|b| row(regs, base, b));
                    let srow = src.base.map(|b| row(regs, base, b));
                    let nrow = src_size.map(|s| row(regs, base, s));
                    for lane in lanes_of(mask) {
                        let l = lane as usize;
                        let da = drow.map_or(0, |r| r[l]).wrapping_add(dst.offset as u64);
                        let sa = srow.map_or(0, |r| r[l]).wrapping_add(src.offset as u64);
                        let n = nrow.map_or(*size, |r| (r[l] as u32).min(*size));
                        for k in 0..*size as u64 / 4 {
                            let v = if (k * 4) < n as u64 {
                                env.load(
                                    &w.local,
                                    lane,
                                    MemSpace::Global,
                                    sa.wrapping_add(k * 4),
                                    4,
                                )?
                            } else {
                                0
                            };
                            env.store(
                                &mut w.local,
                                lane,
                                MemSpace::Shared,
                                da.wrapping_add(k * 4),
                                4,
                                v,
                            )?;
                        }
                    }
                }
                Op::Clock { d } => {
                    env.clock += 1;
                    let v = env.lane_instructions + env.clock;
                    write_lanes(regs, base, *d, mask, |_| v);
                }
                Op::Activemask { d } => {
                    write_lanes(regs, base, *d, mask, |_| active as u64);
                }
                Op::Vote { mode, d, a, negate } => {
                    if let Some((p, a)) =
                        w.frames.last_mut().expect("frame").join_hidden(pc, active)
                    {
                        pc = p;
                        active = a;
                        continue;
                    }
                    let a = row(regs, base, *a);
                    let mut ballot = 0u32;
                    for l in lanes_of(mask) {
                        ballot |= (((a[l as usize] != 0) ^ negate) as u32) << l;
                    }
                    let v = match mode {
                        VoteMode::All => (ballot == mask) as u64,
                        VoteMode::Any => (ballot != 0) as u64,
                        VoteMode::Uni => (ballot == 0 || ballot == mask) as u64,
                        VoteMode::Ballot => ballot as u64,
                    };
                    write_lanes(regs, base, *d, mask, |_| v);
                }
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a,
                    b,
                    c,
                } => {
                    if let Some((p, a)) =
                        w.frames.last_mut().expect("frame").join_hidden(pc, active)
                    {
                        pc = p;
                        active = a;
                        continue;
                    }
                    let (av, bv, cv) = (
                        row(regs, base, *a),
                        row(regs, base, *b),
                        row(regs, base, *c),
                    );
                    let mut out = [0u64; 32];
                    let mut ok = [0u64; 32];
                    for lane in lanes_of(mask) {
                        let l = lane as usize;
                        let bval = (bv[l] & 0x1f) as u32;
                        let cval = (cv[l] & 0x1f) as u32;
                        let segmask = ((cv[l] >> 8) & 0x1f) as u32;
                        let max_lane = (lane & segmask) | (cval & !segmask);
                        let min_lane = lane & segmask;
                        let (j, pval) = match mode {
                            ShflMode::Up => {
                                let j = lane as i32 - bval as i32;
                                (j, j >= max_lane as i32)
                            }
                            ShflMode::Down => {
                                let j = (lane + bval) as i32;
                                (j, j <= max_lane as i32)
                            }
                            ShflMode::Bfly => {
                                let j = (lane ^ bval) as i32;
                                (j, j <= max_lane as i32)
                            }
                            ShflMode::Idx => {
                                let j = (min_lane | (bval & !segmask)) as i32;
                                (j, j <= max_lane as i32)
                            }
                        };
                        let src = if pval && (0..32).contains(&j) {
                            j as usize
                        } else {
                            l
                        };
                        out[l] = av[src];
                        ok[l] = pval as u64;
                    }
                    write_lanes(regs, base, *d, mask, |l| out[l]);
                    if let Some(p) = p {
                        write_lanes(regs, base, *p, mask, |l| ok[l]);
                    }
                }
                Op::Match { all, ty, d, p, a } => {
                    if let Some((p, a)) =
                        w.frames.last_mut().expect("frame").join_hidden(pc, active)
                    {
                        pc = p;
                        active = a;
                        continue;
                    }
                    let a = row(regs, base, *a);
                    let m = alu::mask(ty.bits());
                    let mut out = [0u64; 32];
                    let mut pred = [0u64; 32];
                    for lane in lanes_of(mask) {
                        let l = lane as usize;
                        let same = lanes_of(mask)
                            .filter(|&o| a[o as usize] & m == a[l] & m)
                            .fold(0u32, |acc, o| acc | 1 << o);
                        if *all {
                            let eq = same == mask;
                            out[l] = if eq { mask as u64 } else { 0 };
                            pred[l] = eq as u64;
                        } else {
                            out[l] = same as u64;
                        }
                    }
                    write_lanes(regs, base, *d, mask, |l| out[l]);
                    if let Some(p) = p {
                        write_lanes(regs, base, *p, mask, |l| pred[l]);
                    }
                }
                Op::Redux { op, ty, d, a } => {
                    if let Some((p, a)) =
                        w.frames.last_mut().expect("frame").join_hidden(pc, active)
                    {
                        pc = p;
                        active = a;
                        continue;
                    }
                    let a = row(regs, base, *a);
                    let ty = *ty;
                    let mut acc: Option<u64> = None;
                    for lane in lanes_of(mask) {
                        let v = a[lane as usize] & 0xffff_ffff;
                        acc = Some(match acc {
                            None => v,
                            Some(x) => match op {
                                ReduxOp::Add => alu::int_bin(IntBinOp::Add, ty, x, v),
                                ReduxOp::Min => alu::int_bin(IntBinOp::Min, ty, x, v),
                                ReduxOp::Max => alu::int_bin(IntBinOp::Max, ty, x, v),
                                ReduxOp::And => x & v,
                                ReduxOp::Or => x | v,
                                ReduxOp::Xor => x ^ v,
                            },
                        });
                    }
                    let v = acc.unwrap_or(0);
                    write_lanes(regs, base, *d, mask, |_| v);
                }
                Op::Printf { fmt, args, ret } => {
                    for lane in lanes_of(mask) {
                        let l = lane as usize;
                        let fmt_addr = read_le(&w.local[l], fbase + *fmt as u64, 8).unwrap_or(0);
                        let mut arg_addr =
                            read_le(&w.local[l], fbase + *args as u64, 8).unwrap_or(0);
                        let fmt_bytes = env.read_cstring(&w.local, lane, fmt_addr);
                        let local = &w.local;
                        let text = {
                            let env_cell = std::cell::RefCell::new(&mut *env);
                            crate::printf::format(
                                &fmt_bytes,
                                |size| {
                                    if arg_addr == 0 {
                                        return None;
                                    }
                                    arg_addr =
                                        arg_addr.div_ceil(size as u64).wrapping_mul(size as u64);
                                    let v = env_cell
                                        .borrow_mut()
                                        .load(local, lane, MemSpace::Generic, arg_addr, size)
                                        .ok();
                                    arg_addr = arg_addr.wrapping_add(size as u64);
                                    v
                                },
                                |addr| env_cell.borrow_mut().read_cstring(local, lane, addr),
                            )
                        };
                        env.printf.extend_from_slice(&text);
                        if let Some(r) = ret {
                            write_le(&mut w.local[l], fbase + *r as u64, 4, text.len() as u64);
                        }
                    }
                }
                Op::AssertFail {
                    message,
                    file,
                    line,
                    function,
                } => {
                    if let Some(lane) = lanes_of(mask).next() {
                        let l = lane as usize;
                        let rd = |off: u32, size| {
                            read_le(&w.local[l], fbase + off as u64, size).unwrap_or(0)
                        };
                        let (ma, fa, ln, fna) = (
                            rd(*message, 8),
                            rd(*file, 8),
                            rd(*line, 4),
                            rd(*function, 8),
                        );
                        let msg = String::from_utf8_lossy(&env.read_cstring(&w.local, lane, ma))
                            .into_owned();
                        let file = String::from_utf8_lossy(&env.read_cstring(&w.local, lane, fa))
                            .into_owned();
                        let func = String::from_utf8_lossy(&env.read_cstring(&w.local, lane, fna))
                            .into_owned();
                        return Err(Fault::Trap {
                            lane,
                            what: format!("assertion `{msg}` failed in {func} at {file}:{ln}"),
                        });
                    }
                }
                Op::Trap { what } => {
                    if mask != 0 {
                        return Err(Fault::Trap {
                            lane: mask.trailing_zeros(),
                            what: what.to_string(),
                        });
                    }
                }
                Op::Unsupported { what } => {
                    if mask != 0 {
                        return Err(Fault::Unsupported {
                            lane: mask.trailing_zeros(),
                            what: what.clone(),
                        });
                    }
                }
                // ---- control flow: these update pc/active and may switch groups or frames.
                Op::Bra { target } => {
                    let taken = mask;
                    let not_taken = active & !taken;
                    let frame = w.frames.last_mut().expect("frame");
                    if taken != 0
                        && *target <= pc
                        && (env.cancel.load(Ordering::Relaxed) || env.abort.load(Ordering::Relaxed))
                    {
                        return Err(Fault::Cancelled {
                            lane: taken.trailing_zeros(),
                        });
                    }
                    if taken != 0 && *target <= pc && frame.min_wait != u32::MAX {
                        frame.spins += 1;
                        if frame.spins > SPIN_LIMIT {
                            if not_taken != 0 {
                                frame.park(pc + 1, not_taken);
                            }
                            if let Some((p, a)) = frame.escape_spin(pc, *target, taken) {
                                pc = p;
                                active = a;
                                continue;
                            }
                        }
                    }
                    if not_taken == 0 {
                        pc = *target;
                    } else if taken == 0 {
                        pc += 1;
                    } else {
                        frame.park(pc + 1, not_taken);
                        pc = *target;
                        active = taken;
                    }
                    if pc >= frame.min_wait {
                        frame.park(pc, active);
                        frame.schedule();
                        pc = frame.pc;
                        active = frame.active;
                    }
                    continue;
                }
                Op::Exit | Op::Ret => {
                    let frame = w.frames.last_mut().expect("frame");
                    let is_exit = matches!(inst.op, Op::Exit) || func.is_entry;
                    if is_exit {
                        w.exited |= mask;
                    }
                    let rest = active & !mask;
                    if rest != 0 {
                        // Only some lanes leave; the others continue.
                        pc += 1;
                        active = rest;
                        if pc >= frame.min_wait {
                            frame.park(pc, active);
                            frame.schedule();
                            pc = frame.pc;
                            active = frame.active;
                        }
                        continue;
                    }
                    frame.active = 0;
                    if frame.schedule() {
                        pc = frame.pc;
                        active = frame.active & !w.exited;
                        continue;
                    }
                    if !frame.waiting.is_empty() {
                        frame.pc = pc;
                        frame.active = 0;
                        return Ok(WarpState::Blocked);
                    }
                    match finish_frames(prog, w) {
                        None => continue 'frames,
                        Some(state) => return Ok(state),
                    }
                }
                Op::Call {
                    func: callee, args, ..
                } => {
                    let frame = w.frames.last_mut().expect("frame");
                    let skip = active & !mask;
                    if mask == 0 {
                        pc += 1;
                        if pc >= frame.min_wait {
                            frame.park(pc, active);
                            frame.schedule();
                            pc = frame.pc;
                            active = frame.active;
                        }
                        continue;
                    }
                    if skip != 0 {
                        frame.park(pc + 1, skip);
                    }
                    frame.pc = pc;
                    frame.active = mask;
                    let new_base = frame.frame_base + func.frame_size;
                    let reg_base = frame.reg_base + func.nslots as usize * 32;
                    let caller_base = frame.frame_base as usize;
                    push_frame(env, w, *callee, mask, reg_base, new_base)?;
                    for lane in lanes_of(mask) {
                        let lm = &mut w.local[lane as usize];
                        for a in args {
                            let src = caller_base + a.caller_offset as usize;
                            let dst = new_base as usize + a.callee_offset as usize;
                            if src + a.size as usize <= lm.len()
                                && dst + a.size as usize <= lm.len()
                            {
                                lm.copy_within(src..src + a.size as usize, dst);
                            }
                        }
                    }
                    continue 'frames;
                }
                Op::Bar {
                    kind,
                    id,
                    count,
                    d,
                    c,
                } if mask != 0 => {
                    let idv = row(regs, base, *id)[mask.trailing_zeros() as usize] as usize;
                    if idv >= BARRIERS {
                        return Err(Fault::Failed {
                            lane: mask.trailing_zeros(),
                            what: format!("barrier id {idv} out of range 0..15"),
                        });
                    }
                    let cnt = count
                        .map(|c| row(regs, base, c)[mask.trailing_zeros().min(31) as usize] as u32);
                    let bar = &mut env.barriers[idv];
                    bar.arrived += mask.count_ones();
                    if cnt.is_some() {
                        bar.expected = cnt;
                    }
                    if let Some((cs, neg)) = c {
                        let cv = row(regs, base, *cs);
                        bar.kind = *kind;
                        for lane in lanes_of(mask) {
                            if (cv[lane as usize] != 0) ^ neg {
                                bar.popc += 1;
                            } else {
                                bar.falses += 1;
                            }
                        }
                    }
                    // bar.arrive just counts; the common tail below moves past it.
                    if *kind != BarKind::Arrive {
                        let frame = w.frames.last_mut().expect("frame");
                        frame.waiting.push(Group {
                            pc: pc + 1,
                            mask: active,
                            barrier: Some(idv as u32),
                            red_dst: *d,
                        });
                        // Return to the block scheduler so the barrier can be released before
                        // this warp's other lanes (if any) go on; they resume on the next turn.
                        frame.active = 0;
                        frame.pc = pc;
                        frame.recompute_min();
                        return Ok(if frame.min_wait == u32::MAX {
                            WarpState::Blocked
                        } else {
                            WarpState::Runnable
                        });
                    }
                }
                // A barrier whose guard is false for every lane does nothing.
                Op::Bar { .. } => {}
            }
            pc += 1;
            let frame = w.frames.last_mut().expect("frame");
            if pc >= frame.min_wait {
                frame.park(pc, active);
                frame.schedule();
                pc = frame.pc;
                active = frame.active;
            }
        }
    }
}
