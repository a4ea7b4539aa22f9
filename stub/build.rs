//! Gives the cdylib the SONAME `libcuda.so.1`, so programs linked against it (`-lcuda`) and
//! the dynamic loader treat it as the CUDA driver.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
