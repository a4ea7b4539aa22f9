//! How the worker picks its backend when the `libcuda` it finds is not a usable GPU driver.
//!
//! cudarc loads the driver library once per process, so every case runs this test binary
//! again as a child process (the ignored `detection_child` test) with `LD_LIBRARY_PATH`
//! pointing at a small `libcuda` built here with gcc: gpufn's stub marker, a driver without
//! devices, a failing driver, a driver too old, and a "driver" with a device that lacks the
//! calls the cuda backend makes. None of them is a GPU, so the worker must serve sessions on
//! the cpu device (with `--backend auto`) or refuse to start (with `--backend cuda`), with a
//! message that names the problem, and never panic.

use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "GPUFN_TEST_DETECTION_CHILD";

/// Builds a fake driver library into `dir` as `libcuda.so` and `libcuda.so.1`.
fn fake_driver(dir: &Path, defines: &[&str]) {
    let source = dir.join("fake_cuda.c");
    std::fs::write(
        &source,
        r#"
#ifdef STUB
int gpufn_stub_version = 1;
#endif
int cuInit(unsigned flags) { (void)flags; return INIT_RESULT; }
int cuDriverGetVersion(int *version) { *version = VERSION; return 0; }
int cuDeviceGetCount(int *count) { *count = COUNT; return 0; }
int cuGetErrorString(int error, const char **text) { (void)error; *text = "fake driver error"; return 0; }
"#,
    )
    .unwrap();
    let library = dir.join("libcuda.so");
    let mut gcc = Command::new("gcc");
    gcc.args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source);
    for define in defines {
        gcc.arg(format!("-D{define}"));
    }
    let status = gcc
        .status()
        .expect("gcc is needed to build the fake driver libraries of this test");
    assert!(status.success(), "gcc failed to build the fake driver");
    std::fs::copy(&library, dir.join("libcuda.so.1")).unwrap();
}

/// Runs detection and both selections in a child process with the fake driver first on the
/// library path; returns its report lines.
fn detect_with(defines: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    fake_driver(dir.path(), defines);
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "detection_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("LD_LIBRARY_PATH", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn line<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.split_once(key).map(|(_, value)| value))
        .unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
#[ignore = "run by the other tests of this file in a child process"]
fn detection_child() {
    use gpufn_worker::BackendChoice;
    use gpufn_worker::device::{backend_name, cuda, select};
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    println!("DETECTION={:?}", cuda::detect());
    match select(BackendChoice::Auto, 1) {
        Ok(device) => println!("AUTO={}", backend_name(&*device)),
        Err(e) => println!("AUTO=error {e}"),
    }
    match select(BackendChoice::Cuda, 1) {
        Ok(device) => println!("CUDA={}", backend_name(&*device)),
        Err(e) => println!("CUDA=error {e}"),
    }
}

const WORKING: [&str; 3] = ["INIT_RESULT=0", "VERSION=13000", "COUNT=1"];

#[test]
fn gpufn_stub_is_never_taken_for_a_driver() {
    let report = detect_with(&["STUB", "INIT_RESULT=0", "VERSION=13000", "COUNT=1"]);
    assert_eq!(line(&report, "DETECTION="), "StubLibrary");
    assert_eq!(line(&report, "AUTO="), "cpu");
    let refused = line(&report, "CUDA=");
    assert!(
        refused.starts_with("error")
            && refused.contains("gpufn's own stub")
            && refused.contains("LD_LIBRARY_PATH"),
        "{refused}"
    );
}

#[test]
fn a_driver_without_devices_means_the_cpu_device() {
    for defines in [
        ["INIT_RESULT=100", "VERSION=13000", "COUNT=0"], // CUDA_ERROR_NO_DEVICE from cuInit
        ["INIT_RESULT=0", "VERSION=13000", "COUNT=0"],
    ] {
        let report = detect_with(&defines);
        assert_eq!(line(&report, "DETECTION="), "NoDevice", "{defines:?}");
        assert_eq!(line(&report, "AUTO="), "cpu");
        let refused = line(&report, "CUDA=");
        assert!(
            refused.contains("reports no device") && refused.contains("--backend cpu"),
            "{refused}"
        );
    }
}

#[test]
fn a_failing_driver_is_reported_with_its_error() {
    let report = detect_with(&["INIT_RESULT=999", "VERSION=13000", "COUNT=1"]);
    let detection = line(&report, "DETECTION=");
    assert!(
        detection.starts_with("DriverError") && detection.contains("CUDA_ERROR_UNKNOWN"),
        "{detection}"
    );
    assert_eq!(line(&report, "AUTO="), "cpu");
    assert!(line(&report, "CUDA=").contains("CUDA_ERROR_UNKNOWN"));
}

#[test]
fn a_driver_too_old_for_the_backend_is_refused_with_its_version() {
    let report = detect_with(&["INIT_RESULT=0", "VERSION=12020", "COUNT=1"]);
    assert_eq!(
        line(&report, "DETECTION="),
        "UnsupportedDriver { version: 12020 }"
    );
    assert_eq!(line(&report, "AUTO="), "cpu");
    let refused = line(&report, "CUDA=");
    assert!(
        refused.contains("CUDA 12.2") && refused.contains("update the NVIDIA driver"),
        "{refused}"
    );
}

#[test]
fn a_driver_lacking_the_backends_calls_fails_to_open_without_panicking() {
    let report = detect_with(&WORKING);
    assert_eq!(
        line(&report, "DETECTION="),
        "Devices { count: 1, driver_version: 13000 }"
    );
    // Opening the GPU needs cuDeviceGet, cuMemCreate, …: the fake has none of them.
    assert_eq!(line(&report, "AUTO="), "cpu");
    let refused = line(&report, "CUDA=");
    assert!(
        refused.contains("lacks functions the cuda backend calls")
            && refused.contains("cuMemAddressReserve"),
        "{refused}"
    );
}
