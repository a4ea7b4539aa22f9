//! End-to-end tests of the example functions in `functions/examples/`: each is compiled with
//! nvcc (`-arch=sm_90`, static cudart) and run unmodified through `gpufn run` on the `cpu`
//! backend, fed real inputs, and its output is checked against a Rust reference computed
//! here: exactly for integer results (vadd's float32 sums, blur, lab) and within a stated
//! tolerance for matmul's float64 dot products. Bad inputs must fail with exit code 1 and a
//! message naming the problem.
//!
//! The stub (`libgpufn_stub.so`) is a separate cdylib that `gpufn run` expects next to the
//! `gpufn` executable; the tests build it once with `cargo build -p gpufn-stub` in the same
//! profile as the `gpufn` binary under test.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::cuda::{Toolchain, describe, output_text, toolchain};

/// Longest a program may take before the test calls it hung (a guard, not a measurement).
const HANG_GUARD: Duration = Duration::from_secs(300);

/// Exit code of every example for bad input.
const EXIT_BAD_INPUT: i32 = 1;

fn gpufn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpufn"))
}

/// `target/<profile>/`, where `gpufn` and the stub live.
fn profile_dir() -> PathBuf {
    gpufn().parent().expect("gpufn has a folder").to_path_buf()
}

/// The stub library, built once per test process with the profile of `gpufn`.
fn build_stub() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = profile_dir()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_string();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command.current_dir(support::cuda::repo_root()).args([
            "build",
            "--quiet",
            "-p",
            "gpufn-stub",
        ]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                command.arg("--release");
            }
            other => {
                command.args(["--profile", other]);
            }
        }
        let output = command.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building the stub failed: {}\n{}",
            describe(&command),
            output_text(&output)
        );
    });
    let library = profile_dir().join("libgpufn_stub.so");
    assert!(library.is_file(), "{} was not built", library.display());
}

/// Compiles `functions/examples/<name>/<name>.cu` the way its README says, once per test
/// process (tests of the same example share the executable).
fn build_example(tc: &Toolchain, name: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let source = support::cuda::repo_root()
        .join("functions/examples")
        .join(name)
        .join(format!("{name}.cu"));
    let path = tc
        .compile(&source, &format!("example-{name}"), &["-arch=sm_90"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// `gpufn run --backend cpu -- program args`.
fn gpufn_run(tc: &Toolchain, program: &Path, args: &[&str]) -> Command {
    build_stub();
    let mut command = tc.command(gpufn());
    command
        .args(["run", "--backend", "cpu", "--"])
        .arg(program)
        .args(args);
    command
}

/// Runs `command` with `input` on stdin to completion, failing the test if it hangs.
fn run_with_input(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(&command)));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A separate writer so a program that stops reading early cannot deadlock the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = wait_guarded(child, &describe(&command));
    writer.join().expect("stdin writer");
    output
}

fn wait_guarded(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    // Drain both pipes while waiting so a large output cannot block the program.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stdout.read_to_end(&mut data);
        data
    });
    let err = std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = stderr.read_to_end(&mut data);
        data
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n{}",
        output.status,
        output_text(output)
    );
}

/// Asserts exit code 1 and a stderr message containing `message`.
fn assert_bad_input(output: &Output, message: &str) {
    assert_eq!(
        output.status.code(),
        Some(EXIT_BAD_INPUT),
        "{}",
        output_text(output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(message),
        "stderr lacks {message:?}:\n{stderr}"
    );
}

/// A small deterministic generator for test inputs (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-scale, scale).
    fn float(&mut self, scale: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (unit * 2.0 - 1.0) * scale
    }
}

// ---------------------------------------------------------------------------------------
// vadd

#[test]
fn vadd_adds_two_vectors_exactly() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "vadd");
    let mut rng = Rng(7);
    let n = 5000;
    let a: Vec<f32> = (0..n).map(|_| rng.float(1e6) as f32).collect();
    let b: Vec<f32> = (0..n).map(|_| rng.float(1e3) as f32).collect();
    let line = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(" ");
    let input = format!("{}\n{}\n", line(&a), line(&b));

    let output = run_with_input(gpufn_run(tc, &program, &[]), input.as_bytes());
    assert_success(&output, "vadd");
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    let sums: Vec<f32> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("not a number: {s}")))
        .collect();
    assert_eq!(sums.len(), n);
    for i in 0..n {
        // float32 addition is exactly rounded on every device: no tolerance.
        assert_eq!(sums[i], a[i] + b[i], "element {i}: {} + {}", a[i], b[i]);
    }
}

#[test]
fn vadd_refuses_bad_input_with_a_clear_message() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "vadd");
    let cases: [(&str, &str); 4] = [
        (
            "1 2 3\n4 5\n",
            "the vectors differ in length: 3 and 2 numbers",
        ),
        ("1 two 3\n4 5 6\n", "line 1, number 2 is not a number"),
        ("1 2 3\n", "expected 2 lines, found 1"),
        (
            "1 2\n1e39 0\n",
            "line 2, number 1 is not a finite 32-bit float",
        ),
    ];
    for (input, message) in cases {
        let output = run_with_input(gpufn_run(tc, &program, &[]), input.as_bytes());
        assert_bad_input(&output, message);
    }
}

// ---------------------------------------------------------------------------------------
// blur

struct Image {
    width: usize,
    height: usize,
    maxval: u8,
    rgb: Vec<u8>,
}

impl Image {
    fn ppm(&self) -> Vec<u8> {
        let mut data = format!(
            "P6\n# made by the gpufn tests\n{} {}\n{}\n",
            self.width, self.height, self.maxval
        )
        .into_bytes();
        data.extend_from_slice(&self.rgb);
        data
    }

    /// Reads the P6 layout the blur example writes: `P6\n<w> <h>\n<maxval>\n` + pixels.
    fn from_ppm(data: &[u8]) -> Image {
        let mut fields = Vec::new();
        let mut pos = 0;
        while fields.len() < 4 {
            let end = pos
                + data[pos..]
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .expect("complete header");
            fields.push(std::str::from_utf8(&data[pos..end]).unwrap().to_owned());
            pos = end + 1;
        }
        assert_eq!(fields[0], "P6");
        let width: usize = fields[1].parse().unwrap();
        let height: usize = fields[2].parse().unwrap();
        Image {
            width,
            height,
            maxval: fields[3].parse().unwrap(),
            rgb: data[pos..].to_vec(),
        }
    }

    fn sample(&self, x: isize, y: isize, c: usize) -> i32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        i32::from(self.rgb[(y * self.width + x) * 3 + c])
    }

    fn luma(&self, x: isize, y: isize) -> i32 {
        (77 * self.sample(x, y, 0) + 150 * self.sample(x, y, 1) + 29 * self.sample(x, y, 2)) >> 8
    }
}

/// The blur example's filters, as its README defines them.
fn reference_filter(image: &Image, edge: bool) -> Vec<u8> {
    const GAUSS: [[i32; 3]; 3] = [[1, 2, 1], [2, 4, 2], [1, 2, 1]];
    const SOBEL_X: [[i32; 3]; 3] = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]];
    const SOBEL_Y: [[i32; 3]; 3] = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]];
    let mut out = Vec::with_capacity(image.rgb.len());
    for y in 0..image.height as isize {
        for x in 0..image.width as isize {
            let taps = (0..3).flat_map(|dy| (0..3).map(move |dx| (dx, dy)));
            if edge {
                let (mut gx, mut gy) = (0, 0);
                for (dx, dy) in taps {
                    let l = image.luma(x + dx as isize - 1, y + dy as isize - 1);
                    gx += SOBEL_X[dy][dx] * l;
                    gy += SOBEL_Y[dy][dx] * l;
                }
                let value = (gx.abs() + gy.abs()).min(i32::from(image.maxval)) as u8;
                out.extend_from_slice(&[value; 3]);
            } else {
                for c in 0..3 {
                    let sum: i32 = taps
                        .clone()
                        .map(|(dx, dy)| {
                            GAUSS[dy][dx]
                                * image.sample(x + dx as isize - 1, y + dy as isize - 1, c)
                        })
                        .sum();
                    out.push(((sum + 8) / 16) as u8);
                }
            }
        }
    }
    out
}

/// A 67 x 45 test picture (not a multiple of the 16 x 16 thread blocks): gradients, a bright
/// disc with sharp edges, and noise.
fn test_image() -> Image {
    let (width, height) = (67, 45);
    let mut rng = Rng(3);
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let inside = (x as i32 - 30).pow(2) + (y as i32 - 20).pow(2) < 144;
            let noise = (rng.next_u64() % 32) as usize;
            let base = if inside { 200 } else { 0 };
            rgb.push(((x * 255 / width + noise) / 2 + base / 2) as u8);
            rgb.push(((y * 255 / height + noise) / 2 + base / 2) as u8);
            rgb.push(if inside { 250 } else { (noise * 4) as u8 });
        }
    }
    Image {
        width,
        height,
        maxval: 255,
        rgb,
    }
}

#[test]
fn blur_blurs_and_finds_edges_exactly() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "blur");
    let image = test_image();

    let blurred = run_with_input(gpufn_run(tc, &program, &[]), &image.ppm());
    assert_success(&blurred, "blur");
    let blurred = Image::from_ppm(&blurred.stdout);
    assert_eq!(
        (blurred.width, blurred.height, blurred.maxval),
        (67, 45, 255)
    );
    assert!(
        blurred.rgb == reference_filter(&image, false),
        "blurred pixels differ from the reference"
    );

    // The mode from the environment, as the manifest sets it.
    let mut command = gpufn_run(tc, &program, &[]);
    command.env("BLUR_MODE", "edge");
    let edges = run_with_input(command, &image.ppm());
    assert_success(&edges, "blur (BLUR_MODE=edge)");
    let edges = Image::from_ppm(&edges.stdout);
    let expected = reference_filter(&image, true);
    assert!(
        edges.rgb == expected,
        "edge pixels differ from the reference"
    );
    // The disc's rim is a strong edge.
    let at = |x: usize, y: usize| edges.rgb[(y * 67 + x) * 3];
    assert_eq!(at(42, 20), 255);

    // The mode as an argument wins over the environment.
    let mut command = gpufn_run(tc, &program, &["blur"]);
    command.env("BLUR_MODE", "edge");
    let output = run_with_input(command, &image.ppm());
    assert_success(&output, "blur blur");
    assert!(Image::from_ppm(&output.stdout).rgb == blurred.rgb);
}

#[test]
fn blur_keeps_a_small_maxval() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "blur");
    let mut image = test_image();
    image.maxval = 15;
    for value in &mut image.rgb {
        *value /= 17;
    }
    let mut command = gpufn_run(tc, &program, &["edge"]);
    command.env_remove("BLUR_MODE");
    let output = run_with_input(command, &image.ppm());
    assert_success(&output, "blur edge, maxval 15");
    let edges = Image::from_ppm(&output.stdout);
    assert_eq!(edges.maxval, 15);
    assert!(edges.rgb == reference_filter(&image, true));
    assert!(edges.rgb.iter().all(|&v| v <= 15));
}

#[test]
fn blur_refuses_bad_input_with_a_clear_message() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "blur");
    let image = test_image();
    let mut truncated = image.ppm();
    truncated.truncate(truncated.len() - 10);
    let sixteen_bit = b"P6\n1 1\n65535\n\0\0\0\0\0\0".to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"P3\n1 1\n255\n0 0 0\n".to_vec(), "plain-text PPM (P3)"),
        (b"\x89PNG\r\n\x1a\n".to_vec(), "this is a PNG"),
        (
            truncated,
            "a 67x45 image needs 9045 bytes of pixels, found 9035",
        ),
        (sixteen_bit, "maxval 65535 is not supported"),
        (b"P6\n0 5\n255\n".to_vec(), "no pixels"),
        (b"P6\n4".to_vec(), "the header ends before its height"),
    ];
    for (input, message) in cases {
        let output = run_with_input(gpufn_run(tc, &program, &[]), &input);
        assert_bad_input(&output, message);
    }
    let output = run_with_input(gpufn_run(tc, &program, &["sharpen"]), &image.ppm());
    assert_bad_input(&output, "unknown mode \"sharpen\"");
}

// ---------------------------------------------------------------------------------------
// matmul

fn matrix_json(rows: &[Vec<f64>]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
            format!("[{}]", cells.join(", "))
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

fn run_matmul(tc: &Toolchain, program: &Path, input: &str) -> Vec<Vec<f64>> {
    let output = run_with_input(gpufn_run(tc, program, &[]), input.as_bytes());
    assert_success(&output, "matmul");
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("matmul writes JSON");
    let object = value.as_object().expect("a JSON object");
    assert_eq!(object.len(), 1, "only \"c\": {value}");
    serde_json::from_value(object["c"].clone()).expect("c is an array of rows of numbers")
}

#[test]
fn matmul_multiplies_matrices() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "matmul");

    // Small integers: every product and sum is exact.
    let c = run_matmul(
        tc,
        &program,
        r#"{"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, 8]]}"#,
    );
    assert_eq!(c, vec![vec![19.0, 22.0], vec![43.0, 50.0]]);
    let c = run_matmul(
        tc,
        &program,
        r#"{"b": [[2], [-1], [0.5]], "a": [[4, 6, 8]]}"#,
    );
    assert_eq!(c, vec![vec![6.0]]);

    // Random doubles, shapes that do not fill the 16 x 16 tiles.
    let (m, k, n) = (37, 29, 23);
    let mut rng = Rng(11);
    let a: Vec<Vec<f64>> = (0..m)
        .map(|_| (0..k).map(|_| rng.float(100.0)).collect())
        .collect();
    let b: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..n).map(|_| rng.float(1.0)).collect())
        .collect();
    let input = format!("{{\"a\": {}, \"b\": {}}}", matrix_json(&a), matrix_json(&b));
    let c = run_matmul(tc, &program, &input);
    assert_eq!(c.len(), m);
    for i in 0..m {
        assert_eq!(c[i].len(), n);
        for j in 0..n {
            let exact: f64 = (0..k).map(|p| a[i][p] * b[p][j]).sum();
            let magnitude: f64 = (0..k).map(|p| (a[i][p] * b[p][j]).abs()).sum();
            // Tolerance: k rounding steps of at most one ulp each of the largest partial sum;
            // 1e-13 relative to the sum of magnitudes is far above that, and far below any
            // real indexing mistake.
            assert!(
                (c[i][j] - exact).abs() <= 1e-13 * magnitude.max(1.0),
                "c[{i}][{j}] = {} but expected {exact}",
                c[i][j]
            );
        }
    }
}

#[test]
fn matmul_refuses_bad_input_with_a_clear_message() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "matmul");
    let cases = [
        (
            r#"{"a": [[1, 2, 3]], "b": [[1], [2]]}"#,
            "cannot multiply a 1x3 matrix by a 2x1 matrix",
        ),
        (
            r#"{"a": [[1, 2], [3]], "b": [[1], [2]]}"#,
            "row a[1] has 1 elements but row a[0] has 2",
        ),
        (r#"{"a": [[1]]}"#, "missing matrix \"b\""),
        (r#"{"a": [[1]], "b": [["x"]]}"#, "b[0][0] is not a number"),
        (r#"{"a": [], "b": [[1]]}"#, "matrix \"a\" has no rows"),
        (r#"{"a": [[1]], "b": [[1]], "c": 2}"#, "unknown key \"c\""),
        (r#"{"a": [[1e999]], "b": [[1]]}"#, "a[0][0] is too large"),
        (r#"[[1]]"#, "expected '{' at the start of the document"),
    ];
    for (input, message) in cases {
        let output = run_with_input(gpufn_run(tc, &program, &[]), input.as_bytes());
        assert_bad_input(&output, message);
    }
}

// ---------------------------------------------------------------------------------------
// lab

const LAB_COLS: u32 = 1024;
const LAB_TOKENS: u32 = 16;

fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What `POST /generate` must answer for `prompt` on a model of `rows` rows, computed from
/// the definition in the lab example's README.
fn lab_reference(prompt: &[u8], rows: u32) -> serde_json::Value {
    let seed = fnv1a64(prompt);
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let mut row_ids = Vec::new();
    let mut tokens = Vec::new();
    for t in 0..LAB_TOKENS {
        let row = mix32(lo ^ mix32(hi.wrapping_add(t))) % rows;
        let token = (0..LAB_COLS).fold(0u32, |sum, c| {
            let weight = mix32(row * LAB_COLS + c);
            sum.wrapping_add(weight.wrapping_mul(mix32(hi ^ (t * LAB_COLS + c))))
        });
        row_ids.push(row);
        tokens.push(token);
    }
    serde_json::json!({ "seed": format!("{seed:016x}"), "row_ids": row_ids, "tokens": tokens })
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to lab");
    stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&response[..split]).expect("ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let body = response[split + 4..].to_vec();
    assert_eq!(body.len(), length, "body length matches Content-Length");
    (status, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Longest the swap tests wait for the worker to swap an idle session out (its default idle
/// timeout is 10 s; a guard, not a measurement).
const SWAP_GUARD: Duration = Duration::from_secs(120);

/// The lab server running under `gpufn run`; killed (server first) if the test fails.
struct LabServer {
    run: Option<Child>,
    server_pid: u32,
    port: u16,
    /// Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    /// Lines of `gpufn run`'s stderr (the private worker's log and the server's messages).
    stderr: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl LabServer {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.server_pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", self.server_pid);
    }

    /// Waits for a stderr line that `matches`; fails the test after `guard`.
    fn wait_for_stderr(
        &mut self,
        what: &str,
        guard: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + guard;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let line = strip_ansi(&line);
                    self.stderr_seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{what} did not happen within {guard:?}; stderr so far:\n{}",
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM to the server; waits for `gpufn run` to end and returns its status and stderr.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        let mut run = self.run.take().expect("running");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = run.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > HANG_GUARD {
                let _ = run.kill();
                panic!("lab did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at end of file, once every writer has exited.
        self.stderr_seen
            .extend(self.stderr.iter().map(|l| strip_ansi(&l)));
        (status, self.stderr_seen.join("\n"))
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.server_pid.to_string()])
                .status();
            let _ = run.kill();
            let _ = run.wait();
        }
    }
}

/// `text` without terminal colour sequences (`ESC [ … letter`), which log lines may carry.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts the lab server with `PORT=0` and `env`, and reads its port and pid from its first
/// line.
fn start_lab(tc: &Toolchain, program: &Path, model_mib: u32, env: &[(&str, &str)]) -> LabServer {
    let mut command = gpufn_run(tc, program, &[]);
    command
        .env("PORT", "0")
        .env("LAB_MODEL_MIB", model_mib.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = command.spawn().expect("gpufn run starts");
    let stderr = run.stderr.take().expect("stderr");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdout = BufReader::new(run.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read lab's first line");
    // "lab: listening on http://127.0.0.1:PORT (pid PID, model N MiB, R rows)"
    let parsed = line
        .strip_prefix("lab: listening on http://127.0.0.1:")
        .and_then(|rest| {
            let (port, rest) = rest.split_once(" (pid ")?;
            let (pid, _) = rest.split_once(',')?;
            Some((port.parse().ok()?, pid.parse().ok()?))
        });
    let Some((port, server_pid)) = parsed else {
        let _ = run.kill();
        let _ = run.wait();
        let stderr: Vec<String> = receiver.iter().collect();
        panic!(
            "lab did not start: first line {line:?}\n--- stderr ---\n{}",
            stderr.join("\n")
        );
    };
    LabServer {
        run: Some(run),
        server_pid,
        port,
        _stdout: stdout,
        stderr: receiver,
        stderr_seen: Vec::new(),
    }
}

#[test]
fn lab_loads_its_model_once_and_answers_requests_exactly() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "lab");
    let model_mib = 64;
    let rows = model_mib * 1024 * 1024 / (LAB_COLS * 4);
    let mut lab = start_lab(tc, &program, model_mib, &[]);

    let (status, body) = http(lab.port, "GET", "/healthz", b"");
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"status": "ok", "model_bytes": 64 << 20, "rows": rows, "cols": LAB_COLS})
    );

    let prompts: [&[u8]; 4] = [
        b"a watercolor fox in the snow",
        b"",
        b"a watercolor fox in the snow!",
        &[0, 255, 13, 10, 0],
    ];
    let mut answers = Vec::new();
    for prompt in prompts {
        let (status, body) = http(lab.port, "POST", "/generate", prompt);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer = json(&body);
        assert_eq!(answer, lab_reference(prompt, rows), "prompt {prompt:?}");
        answers.push(answer);
    }
    assert_ne!(
        answers[0]["tokens"], answers[2]["tokens"],
        "a changed prompt changes the answer"
    );
    // The model stays loaded: the same prompt later gives the same answer.
    let (_, again) = http(lab.port, "POST", "/generate", prompts[0]);
    assert_eq!(json(&again), answers[0]);

    let (status, body) = http(lab.port, "GET", "/generate", b"");
    assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
    let (status, _) = http(lab.port, "GET", "/nowhere", b"");
    assert_eq!(status, 404);

    // SIGTERM: the server frees its model and exits 0, and so does `gpufn run`.
    let (status, stderr) = lab.stop();
    assert!(status.success(), "gpufn run ended with {status}\n{stderr}");
    assert!(stderr.contains("lab: stopped"), "{stderr}");
}

/// The number after `name=` in a log line.
fn log_field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn lab_answers_exactly_after_its_idle_model_was_swapped_out_and_back() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "lab");
    let model_mib = 64;
    let rows = model_mib * 1024 * 1024 / (LAB_COLS * 4);
    // The private worker logs every swap event at info level (the stub traces only at debug).
    let mut lab = start_lab(
        tc,
        &program,
        model_mib,
        &[("GPUFN_LOG", "gpufn_worker=info")],
    );

    let prompt: &[u8] = b"an astronaut riding a horse";
    let (status, body) = http(lab.port, "POST", "/generate", prompt);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body), lab_reference(prompt, rows));

    // Idle past the worker's idle timeout, the session's device memory leaves the device.
    let swapped_out = lab.wait_for_stderr(
        "the idle swap-out of the lab's device memory",
        SWAP_GUARD,
        |line| line.contains("kind=SwapOut"),
    );
    let bytes = log_field(&swapped_out, "bytes").unwrap_or(0);
    assert!(
        bytes >= u64::from(model_mib) << 20,
        "the whole model is swapped out: {swapped_out}"
    );

    // The next request brings it back, at the same addresses, and the answers are exact.
    for prompt in [prompt, b"a second prompt after the swap".as_slice()] {
        let (status, body) = http(lab.port, "POST", "/generate", prompt);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            json(&body),
            lab_reference(prompt, rows),
            "prompt {prompt:?}"
        );
    }
    let swapped_in =
        lab.wait_for_stderr("the swap-in before the next request", SWAP_GUARD, |line| {
            line.contains("kind=SwapIn")
        });
    assert_eq!(log_field(&swapped_in, "bytes"), Some(bytes), "{swapped_in}");

    let (status, stderr) = lab.stop();
    assert!(status.success(), "gpufn run ended with {status}\n{stderr}");
}

#[test]
fn lab_refuses_a_missing_port_with_a_clear_message() {
    let tc = toolchain().unwrap();
    let program = build_example(tc, "lab");
    let mut command = gpufn_run(tc, &program, &[]);
    command.env_remove("PORT");
    let output = run_with_input(command, b"");
    assert_bad_input(&output, "PORT is not set");
    let mut command = gpufn_run(tc, &program, &[]);
    command.env("PORT", "0").env("LAB_MODEL_MIB", "lots");
    let output = run_with_input(command, b"");
    assert_bad_input(&output, "LAB_MODEL_MIB=\"lots\" is invalid");
}
