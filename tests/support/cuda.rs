//! The CUDA toolchain for end-to-end tests: installs it through `scripts/cuda-toolchain.sh`
//! (a no-op when the cache is complete), compiles `.cu` programs with nvcc, inspects and runs
//! the results.
//!
//! Use from an integration test with `mod support;` and `support::cuda::toolchain()`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};

/// First bytes of every fatbin container in a `.nv_fatbin` section.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;

/// Exit code of `tests/cuda/hello.cu` when a CUDA call failed.
pub const HELLO_EXIT_CUDA_ERROR: i32 = 2;

/// An installed CUDA toolchain and the environment the install script printed for it.
#[derive(Debug)]
pub struct Toolchain {
    cuda_home: PathBuf,
    env: Vec<(String, String)>,
}

/// The toolchain for this test process, installed on first use.
///
/// The install script runs once per process; parallel processes are serialised by the
/// script's own lock.
pub fn toolchain() -> Result<&'static Toolchain> {
    static TOOLCHAIN: OnceLock<std::result::Result<Toolchain, String>> = OnceLock::new();
    TOOLCHAIN
        .get_or_init(|| Toolchain::install().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Toolchain {
    /// Runs the install script and reads the environment it prints.
    fn install() -> Result<Toolchain> {
        let script = repo_root().join("scripts/cuda-toolchain.sh");
        // stderr is inherited so the script's progress and pip's errors are visible.
        let output = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("could not start bash to run {}", script.display()))?;
        ensure!(
            output.status.success(),
            "{} failed ({}); its messages are above. Run it by hand to see what is wrong.",
            script.display(),
            output.status
        );
        let stdout = String::from_utf8(output.stdout)
            .with_context(|| format!("{} printed output that is not UTF-8", script.display()))?;
        let env = parse_exports(&stdout).with_context(|| {
            format!(
                "could not read the environment {} printed",
                script.display()
            )
        })?;
        let cuda_home = env
            .iter()
            .find(|(name, _)| name == "CUDA_HOME")
            .map(|(_, value)| PathBuf::from(value))
            .with_context(|| format!("{} printed no CUDA_HOME:\n{stdout}", script.display()))?;
        let toolchain = Toolchain { cuda_home, env };
        ensure!(
            toolchain.nvcc().is_file(),
            "the toolchain at {} has no bin/nvcc; delete that folder and run {} again",
            toolchain.cuda_home.display(),
            script.display()
        );
        Ok(toolchain)
    }

    pub fn cuda_home(&self) -> &Path {
        &self.cuda_home
    }

    pub fn nvcc(&self) -> PathBuf {
        self.cuda_home.join("bin/nvcc")
    }

    /// The folder holding `libcudart.so.13`, which programs built with `-cudart shared` load.
    pub fn runtime_library_dir(&self) -> PathBuf {
        self.cuda_home.join("lib")
    }

    /// A command for `program` with the toolchain's environment (`CUDA_HOME`, `PATH`,
    /// `LD_LIBRARY_PATH`) applied.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }

    /// Compiles `source` with nvcc and `flags` into a fresh folder named `name` under Cargo's
    /// temporary folder for integration tests, and returns the executable's path.
    ///
    /// `name` must be unique among tests that run at the same time.
    pub fn compile(&self, source: &Path, name: &str, flags: &[&str]) -> Result<PathBuf> {
        ensure!(
            source.is_file(),
            "CUDA source {} does not exist",
            source.display()
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("cuda-build")
            .join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("could not clear the build folder {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("could not create the build folder {}", dir.display()))?;
        let executable = dir.join(name);

        let mut command = self.command(self.nvcc());
        command.args(flags).arg(source).arg("-o").arg(&executable);
        let output = command
            .output()
            .with_context(|| format!("could not start {}", self.nvcc().display()))?;
        if !output.status.success() {
            bail!(
                "nvcc failed ({}):\n  command: {}\n{}",
                output.status,
                describe(&command),
                output_text(&output)
            );
        }
        ensure!(
            executable.is_file(),
            "nvcc reported success but wrote no {}\n  command: {}",
            executable.display(),
            describe(&command)
        );
        Ok(executable)
    }
}

/// Reads `export NAME='value'` lines, as `scripts/cuda-toolchain.sh` prints them, into
/// name/value pairs. Values are single-quoted shell words (`'\''` stands for a quote).
pub fn parse_exports(text: &str) -> Result<Vec<(String, String)>> {
    let mut exports = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let assignment = line
            .strip_prefix("export ")
            .with_context(|| format!("expected `export NAME='value'`, found: {line}"))?;
        let (name, quoted) = assignment
            .split_once('=')
            .with_context(|| format!("expected NAME=value after `export`, found: {line}"))?;
        let value = unquote_single(quoted)
            .with_context(|| format!("expected a single-quoted value, found: {line}"))?;
        exports.push((name.to_owned(), value));
    }
    Ok(exports)
}

/// `'it'\''s'` → `it's`; `None` for anything that is not such a sequence of quoted parts.
fn unquote_single(word: &str) -> Option<String> {
    let inner = word.strip_prefix('\'')?.strip_suffix('\'')?;
    let parts: Vec<&str> = inner.split(r"'\''").collect();
    if parts.iter().any(|part| part.contains('\'')) {
        return None;
    }
    Some(parts.join("'"))
}

/// Whether `data` is an ELF executable (plain or position-independent) with an entry point.
pub fn is_elf_executable(data: &[u8]) -> Result<bool> {
    use object::{Object, ObjectKind};
    let file = object::File::parse(data).context("not an ELF file")?;
    let executable_kind = matches!(file.kind(), ObjectKind::Executable | ObjectKind::Dynamic);
    Ok(file.format() == object::BinaryFormat::Elf && executable_kind && file.entry() != 0)
}

/// The contents of the `.nv_fatbin` section that nvcc embeds in the binaries it builds, if
/// there is one.
pub fn fatbin_section(data: &[u8]) -> Result<Option<Vec<u8>>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).context("not an ELF file")?;
    let Some(section) = file.section_by_name(".nv_fatbin") else {
        return Ok(None);
    };
    let contents = section
        .data()
        .context("the .nv_fatbin section cannot be read")?;
    Ok(Some(contents.to_vec()))
}

/// Whether a CUDA driver (`libcuda.so.1`) can be loaded on this machine: listed in the
/// dynamic loader's cache or present in a folder on `LD_LIBRARY_PATH`.
pub fn system_has_cuda_driver() -> bool {
    const DRIVER: &str = "libcuda.so.1";
    let in_loader_cache = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|ldconfig| Command::new(ldconfig).arg("-p").output().ok())
        .is_some_and(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{DRIVER} ")))
        });
    let on_library_path = std::env::var_os("LD_LIBRARY_PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(DRIVER).exists()));
    in_loader_cache || on_library_path
}

/// The repository root: the root package's manifest folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command line for error messages.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// stdout and stderr of a finished process, for error messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
