//! Helpers for the ptx integration tests: device buffers, parameter packing, and the CUDA
//! toolchain (installed by `scripts/cuda-toolchain.sh`) to compile the `.cu` corpus.
#![allow(dead_code)]

use gpufn_ptx::{DeviceMemory, LaunchConfig, LaunchOutput, Module};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn memory() -> DeviceMemory {
    DeviceMemory::new(1 << 30)
}

pub fn upload<T: Copy>(mem: &DeviceMemory, data: &[T]) -> u64 {
    let bytes = as_bytes(data);
    let addr = mem.allocate(bytes.len().max(1) as u64).expect("allocate");
    mem.write(addr, &bytes).expect("write");
    addr
}

pub fn as_bytes<T: Copy>(data: &[T]) -> Vec<u8> {
    let n = std::mem::size_of_val(data);
    // SAFETY: T is a plain Copy value type (f32, u32, ...) without padding; we only read its
    // bytes.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, n) }.to_vec()
}

pub fn download_f32(mem: &DeviceMemory, addr: u64, n: usize) -> Vec<f32> {
    let mut b = vec![0u8; n * 4];
    mem.read(addr, &mut b).expect("read");
    b.chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn download_u32(mem: &DeviceMemory, addr: u64, n: usize) -> Vec<u32> {
    let mut b = vec![0u8; n * 4];
    mem.read(addr, &mut b).expect("read");
    b.chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

pub fn download_u16(mem: &DeviceMemory, addr: u64, n: usize) -> Vec<u16> {
    let mut b = vec![0u8; n * 2];
    mem.read(addr, &mut b).expect("read");
    b.chunks(2)
        .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A kernel argument.
#[derive(Clone, Copy)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
}

/// Packs arguments the way the kernel's parameter layout says.
pub fn pack(module: &Module, kernel: &str, args: &[Arg]) -> Vec<u8> {
    let k = module
        .kernel(kernel)
        .unwrap_or_else(|| panic!("no kernel {kernel}"));
    assert_eq!(k.params.len(), args.len(), "argument count of {kernel}");
    let mut buf = vec![0u8; k.param_size as usize];
    for (p, a) in k.params.iter().zip(args) {
        let bytes: Vec<u8> = match a {
            Arg::Ptr(v) => v.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::U32(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
        };
        assert_eq!(bytes.len(), p.size as usize, "size of parameter {}", p.name);
        buf[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
    }
    buf
}

pub fn cfg(grid: [u32; 3], block: [u32; 3], dynamic_shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid,
        block,
        dynamic_shared,
    }
}

/// Launches `kernel` with 2 host threads and panics with the error on failure.
pub fn run(
    module: &Module,
    mem: &DeviceMemory,
    kernel: &str,
    c: LaunchConfig,
    args: &[Arg],
) -> LaunchOutput {
    let params = pack(module, kernel, args);
    module
        .launch(kernel, c, &params, mem, 2)
        .unwrap_or_else(|e| panic!("launch of {kernel} failed: {e}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `CUDA_HOME` of the project's toolchain, installed on first use by
/// `scripts/cuda-toolchain.sh` (a no-op once cached under `.cache/`).
pub fn cuda_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let script = repo_root().join("scripts/cuda-toolchain.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/cuda-toolchain.sh");
        assert!(
            out.status.success(),
            "scripts/cuda-toolchain.sh failed; see its messages above"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export CUDA_HOME="))
            .expect("the toolchain script prints CUDA_HOME");
        PathBuf::from(line.trim_matches('\''))
    })
}

/// Compiles `ptx/tests/kernels/<name>.cu` with `nvcc -fatbin <flags>` and returns the image.
pub fn compile(name: &str, flags: &[&str]) -> Vec<u8> {
    let home = cuda_home();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kernels")
        .join(format!("{name}.cu"));
    let dir = std::env::temp_dir().join(format!("gpufn-ptx-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tag: String = flags
        .join("_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let out = dir.join(format!("{name}-{tag}.fatbin"));
    let status = Command::new(home.join("bin/nvcc"))
        .arg("-fatbin")
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .env(
            "PATH",
            format!(
                "{}:{}",
                home.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .status()
        .expect("run nvcc");
    assert!(status.success(), "nvcc failed on {}", src.display());
    std::fs::read(&out).expect("read fatbin")
}

/// The two builds every corpus kernel is tested with.
pub const BUILDS: [&[&str]; 2] = [&["-arch=sm_90"], &["-arch=compute_80"]];

/// Loads every build of a corpus file.
pub fn load_builds(name: &str, mem: &DeviceMemory) -> Vec<Module> {
    BUILDS
        .iter()
        .map(|flags| {
            let image = compile(name, flags);
            Module::load(&image, 90, mem).unwrap_or_else(|e| panic!("{name} {flags:?}: {e}"))
        })
        .collect()
}
