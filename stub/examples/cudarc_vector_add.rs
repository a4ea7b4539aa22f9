//! A Rust program using cudarc, run through the stub by the end-to-end tests
//! (`tests/stub_programs.rs`): loads PTX text from the file named by its first argument,
//! adds two vectors on the device and checks the result. Prints `cudarc ok`.
//!
//! Build: `cargo build -p gpufn-stub --example cudarc_vector_add`.

use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: cudarc_vector_add KERNELS.ptx")?;
    let ptx = std::fs::read_to_string(&path)?;
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let module = ctx.load_module(Ptx::from_src(ptx))?;
    let add = module.load_function("vector_add")?;

    let n = 3000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
    let da = stream.clone_htod(&a)?;
    let db = stream.clone_htod(&b)?;
    let mut dc = stream.alloc_zeros::<f32>(n)?;
    let count = n as i32;
    let mut launch = stream.launch_builder(&add);
    launch.arg(&da).arg(&db).arg(&mut dc).arg(&count);
    // SAFETY: the kernel takes (const float*, const float*, float*, int) and reads/writes
    // `n` elements of buffers holding `n` elements.
    unsafe { launch.launch(LaunchConfig::for_num_elems(n as u32)) }?;
    let c = stream.clone_dtoh(&dc)?;
    for (i, value) in c.iter().enumerate() {
        if *value != 3.0 * i as f32 {
            return Err(format!("mismatch at {i}: {value}").into());
        }
    }
    println!("cudarc ok");
    Ok(())
}
