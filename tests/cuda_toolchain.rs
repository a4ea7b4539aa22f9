//! The CUDA toolchain from `scripts/cuda-toolchain.sh` builds real CUDA programs on a machine
//! without a GPU, and those programs stop with the driver-missing error until a driver (later:
//! the gpufn stub) is there.
//!
//! Installs the toolchain on first run (about 130 MB from PyPI), then uses the cache.

mod support;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use support::cuda::{self, FATBIN_MAGIC, HELLO_EXIT_CUDA_ERROR, Toolchain};

fn hello_source() -> PathBuf {
    cuda::repo_root().join("tests/cuda/hello.cu")
}

/// The built file is an ELF executable whose `.nv_fatbin` section starts with a fatbin.
fn assert_executable_with_fatbin(executable: &Path) -> Result<()> {
    let data = std::fs::read(executable)
        .with_context(|| format!("cannot read {}", executable.display()))?;
    ensure!(
        cuda::is_elf_executable(&data)?,
        "{} is not an ELF executable",
        executable.display()
    );
    let fatbin = cuda::fatbin_section(&data)?
        .with_context(|| format!("{} has no .nv_fatbin section", executable.display()))?;
    let magic = fatbin
        .get(..4)
        .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    ensure!(
        magic == Some(FATBIN_MAGIC),
        "the .nv_fatbin section of {} does not start with the fatbin magic {FATBIN_MAGIC:#x} \
         (found {magic:x?})",
        executable.display()
    );
    Ok(())
}

/// Without a CUDA driver the program must report `cudaErrorInsufficientDriver` and exit with
/// its CUDA-error code (not crash); with one, its vector add must be correct.
fn assert_hello_runs_as_far_as_the_driver_allows(
    toolchain: &Toolchain,
    executable: &Path,
) -> Result<()> {
    let mut command = toolchain.command(executable);
    let output = command
        .output()
        .with_context(|| format!("could not start {}", executable.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = || {
        format!(
            "{}\n{}",
            cuda::describe(&command),
            cuda::output_text(&output)
        )
    };

    if cuda::system_has_cuda_driver() {
        ensure!(
            output.status.success()
                && String::from_utf8_lossy(&output.stdout)
                    .contains("vector add of 1000 elements correct"),
            "with a CUDA driver present, hello should compute a correct vector add ({}):\n{}",
            output.status,
            report()
        );
    } else {
        ensure!(
            output.status.code() == Some(HELLO_EXIT_CUDA_ERROR),
            "without a CUDA driver, hello should exit with code {HELLO_EXIT_CUDA_ERROR} after a \
             failed CUDA call, not crash or succeed ({}):\n{}",
            output.status,
            report()
        );
        ensure!(
            stderr.contains("cudaErrorInsufficientDriver"),
            "without a CUDA driver, hello should report cudaErrorInsufficientDriver:\n{}",
            report()
        );
    }
    Ok(())
}

#[test]
fn static_cudart_build_embeds_a_fatbin_and_needs_a_driver() -> Result<()> {
    let toolchain = cuda::toolchain()?;
    let executable = toolchain.compile(&hello_source(), "hello-static", &["-arch=sm_90"])?;
    assert_executable_with_fatbin(&executable)?;
    assert_hello_runs_as_far_as_the_driver_allows(toolchain, &executable)
}

#[test]
fn shared_cudart_build_loads_libcudart_from_the_toolchain() -> Result<()> {
    let toolchain = cuda::toolchain()?;
    let executable = toolchain.compile(
        &hello_source(),
        "hello-shared",
        &["-arch=sm_90", "-cudart", "shared"],
    )?;
    assert_executable_with_fatbin(&executable)?;

    // Proof that cudart really is a shared library here: without the toolchain's library
    // folder the loader cannot start the program.
    let mut bare = toolchain.command(&executable);
    bare.env_remove("LD_LIBRARY_PATH");
    let output = bare.output()?;
    ensure!(
        !output.status.success()
            && String::from_utf8_lossy(&output.stderr).contains("libcudart.so.13"),
        "without LD_LIBRARY_PATH the loader should fail to find libcudart.so.13:\n{}",
        cuda::output_text(&output)
    );

    assert_hello_runs_as_far_as_the_driver_allows(toolchain, &executable)
}

#[test]
fn ptx_only_build_embeds_a_fatbin_and_needs_a_driver() -> Result<()> {
    // PTX without machine code is what the CPU device runs.
    let toolchain = cuda::toolchain()?;
    let executable = toolchain.compile(&hello_source(), "hello-ptx", &["-arch=compute_80"])?;
    assert_executable_with_fatbin(&executable)?;
    assert_hello_runs_as_far_as_the_driver_allows(toolchain, &executable)
}

#[test]
fn compile_errors_name_the_command_and_show_nvcc_output() -> Result<()> {
    let toolchain = cuda::toolchain()?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-src");
    std::fs::create_dir_all(&dir)?;
    let source = dir.join("broken.cu");
    std::fs::write(&source, "__global__ void k() { undeclared_name = 1; }\n")?;

    let error = toolchain
        .compile(&source, "broken", &["-arch=sm_90"])
        .expect_err("a source with an undeclared name must not compile");
    let message = format!("{error:#}");
    assert!(message.contains("nvcc failed"), "{message}");
    assert!(message.contains("broken.cu"), "{message}");
    assert!(message.contains("undeclared_name"), "{message}");
    Ok(())
}

#[test]
fn script_exports_are_parsed_with_shell_quoting() -> Result<()> {
    let exports = cuda::parse_exports(
        "export CUDA_HOME='/opt/cuda home'\nexport NOTE='it'\\''s'\n\nexport EMPTY=''\n",
    )?;
    assert_eq!(
        exports,
        [
            ("CUDA_HOME".to_owned(), "/opt/cuda home".to_owned()),
            ("NOTE".to_owned(), "it's".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]
    );
    Ok(())
}

#[test]
fn script_output_other_than_exports_is_rejected() {
    for text in [
        "installing...\n",
        "export CUDA_HOME=/unquoted\n",
        "export CUDA_HOME='open\n",
        "export CUDA_HOME='a'b'\n",
    ] {
        assert!(
            cuda::parse_exports(text).is_err(),
            "should be rejected: {text:?}"
        );
    }
}
