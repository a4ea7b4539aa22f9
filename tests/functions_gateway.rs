//! Functions through a real `gpufn up` (gateway + local `cpu` worker in one process), over
//! HTTP: the examples (vadd, matmul, blur, lab) deploy (with `gpufn deploy`) and answer
//! correctly; scale to zero (swap-out, swap-in on the next request, instance stop, cold
//! start); 50 concurrent invokes over 2 instances; a full queue answered 429 with
//! Retry-After; timeouts 504 and crashes 502 with the stderr tail while the gateway keeps
//! serving; tenant isolation; delete drains running requests; deployed functions survive a
//! restart.
//!
//! Small functions that need no GPU are shell scripts deployed as artifacts: they still get
//! a placed session and the stub's environment, and show the runner's behaviour exactly.
//! The CUDA examples are compiled with the toolchain from `scripts/cuda-toolchain.sh`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gpufn_gateway::functions::client::{Answer, FunctionsClient};
use http::StatusCode;
use serde_json::{Value, json};
use support::cuda::{describe, output_text, toolchain};

/// Longest a wait for the system may take before the test calls it stuck (a guard, not a
/// measurement).
const GUARD: Duration = Duration::from_secs(120);

fn gpufn() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gpufn"))
}

/// The stub library next to `gpufn`, built once per test process in the same profile.
fn build_stub() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = gpufn()
            .parent()
            .and_then(|d| d.file_name())
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
}

/// An example compiled once per test process.
fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let tc = toolchain().unwrap_or_else(|e| panic!("{e:#}"));
    let source = support::cuda::repo_root()
        .join("functions/examples")
        .join(name)
        .join(format!("{name}.cu"));
    let path = tc
        .compile(&source, &format!("fngw-{name}"), &["-arch=sm_90"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    built.push((name.to_owned(), path.clone()));
    path
}

/// A fresh folder under Cargo's temporary folder for integration tests, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("functions-gateway-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `gpufn up` on free ports with its data in a temporary folder. Dropping it
/// stops it (Ctrl-C, then kill).
struct Up {
    child: Option<Child>,
    api: String,
    admin: String,
    data: PathBuf,
    _dir: Option<TempDir>,
}

impl Up {
    fn start() -> Up {
        let dir = TempDir::new();
        let data = dir.path().join("data");
        let mut up = Up::start_in(&data);
        up._dir = Some(dir);
        up
    }

    fn start_in(data: &Path) -> Up {
        build_stub();
        let mut child = Command::new(gpufn())
            .args(["up", "--backend", "cpu", "--http", "127.0.0.1:0"])
            .args(["--control", "quic://127.0.0.1:0"])
            .args(["--worker-listen", "tcp://127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gpufn up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut api = None;
            let mut admin = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.trim().strip_prefix("HTTP API:") {
                    api = Some(a.trim().to_owned());
                }
                if let Some(t) = line.trim().strip_prefix("admin token (24 h):") {
                    admin = Some(t.trim().to_owned());
                }
                if line.contains("gpufn run -- ./PROGRAM") {
                    let _ = tx.send((api.take(), admin.take()));
                }
            }
        });
        let (api, admin) = rx
            .recv_timeout(GUARD)
            .expect("gpufn up prints its addresses");
        Up {
            child: Some(child),
            api: api.expect("the HTTP address"),
            admin: admin.expect("an admin token"),
            data: data.to_path_buf(),
            _dir: None,
        }
    }

    /// Stops the process (as Ctrl-C does) and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGINT);
            }
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.wait();
        }
    }

    /// A client for `tenant` with `scopes`, its token minted by the admin.
    async fn tenant(&self, tenant: &str, scopes: &[&str]) -> FunctionsClient {
        let admin = FunctionsClient::new(&self.api, &self.admin);
        let body = json!({"tenant": tenant, "scopes": scopes, "ttl_seconds": 3600});
        let answer = admin
            .send(
                http::Method::POST,
                "/v1/tokens",
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await
            .expect("mint a token");
        let token = answer.ok().expect("minted").json()["token"]
            .as_str()
            .expect("a token")
            .to_owned();
        FunctionsClient::new(&self.api, &token)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A function whose program is a shell script.
fn script_manifest(name: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = \"./run.sh\"\n[artifact]\npath = \"run.sh\"\n[protocol]\ntype = \"exec\"\n{extra}\n"
    )
}

async fn deploy_script(client: &FunctionsClient, name: &str, script: &str, extra: &str) {
    let answer = client
        .deploy(&script_manifest(name, extra), Some(script.as_bytes()))
        .await
        .expect("deploy request");
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

async fn invoke(client: &FunctionsClient, name: &str, body: &str) -> Answer {
    client
        .invoke(name, "", Bytes::from(body.to_owned()))
        .await
        .expect("invoke request")
}

fn error_code(answer: &Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&answer.body)))
        .to_owned()
}

/// Copies an example into a bundle folder laid out as its manifest expects, with
/// `replace` applied to the manifest's text.
fn example_bundle(dir: &Path, name: &str, replace: &[(&str, &str)]) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(folder.join("build")).unwrap();
    std::fs::copy(example(name), folder.join("build").join(name)).unwrap();
    let mut manifest = std::fs::read_to_string(
        support::cuda::repo_root()
            .join("functions/examples")
            .join(name)
            .join("function.toml"),
    )
    .unwrap();
    for (from, to) in replace {
        assert!(manifest.contains(from), "{name}'s manifest has {from}");
        manifest = manifest.replace(from, to);
    }
    let path = folder.join("function.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

fn vadd_input(i: usize) -> (String, String) {
    let a: Vec<i64> = (0..8).map(|k| (i * 10 + k) as i64).collect();
    let b: Vec<i64> = (0..8).map(|k| (k * 1000) as i64 - i as i64).collect();
    let line = |v: &[i64]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let sum: Vec<i64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    (format!("{}\n{}\n", line(&a), line(&b)), line(&sum))
}

// ---------------------------------------------------------------------------------------
// lab reference (the definition in functions/examples/lab/README.md)

fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

fn lab_reference(prompt: &[u8], rows: u32) -> Value {
    let seed = prompt.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let (mut row_ids, mut tokens) = (Vec::new(), Vec::new());
    for t in 0..16u32 {
        let row = mix32(lo ^ mix32(hi.wrapping_add(t))) % rows;
        let token = (0..1024u32).fold(0u32, |sum, c| {
            let weight = mix32(row * 1024 + c);
            sum.wrapping_add(weight.wrapping_mul(mix32(hi ^ (t * 1024 + c))))
        });
        row_ids.push(row);
        tokens.push(token);
    }
    json!({ "seed": format!("{seed:016x}"), "row_ids": row_ids, "tokens": tokens })
}

/// The lab with a 2 MiB model (512 rows) so start-up on the CPU backend stays short.
const LAB_ROWS: u32 = 512;

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < GUARD, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_deploy_with_the_cli_and_answer_correctly() {
    let up = Up::start();
    let dir = TempDir::new();
    let vadd = example_bundle(dir.path(), "vadd", &[]);
    let matmul = example_bundle(dir.path(), "matmul", &[]);
    let admin = FunctionsClient::new(&up.api, &up.admin);
    let token_answer = admin
        .send(
            http::Method::POST,
            "/v1/tokens",
            Some("application/json"),
            Bytes::from(json!({"tenant": "cli", "scopes": ["deploy", "invoke"]}).to_string()),
        )
        .await
        .unwrap();
    let token = token_answer.json()["token"].as_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let output = Command::new(gpufn())
            .args(args)
            .env("GPUFN_API", &up.api)
            .env("GPUFN_TOKEN", &token)
            .output()
            .expect("gpufn runs");
        assert!(
            output.status.success(),
            "gpufn {args:?} failed:\n{}",
            output_text(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    for manifest in [&vadd, &matmul] {
        let out = cli(&["deploy", manifest.to_str().unwrap()]);
        assert!(out.starts_with("deployed "), "{out}");
    }
    let (input, sum) = vadd_input(3);
    let out = cli(&["invoke", "vadd", "--data", &input]);
    assert_eq!(out.trim(), sum);

    let client = up.tenant("cli", &["invoke"]).await;
    let product = client
        .invoke(
            "matmul",
            "",
            Bytes::from(r#"{"a": [[1, 2], [3, 4]], "b": [[5, 6], [7, 8]]}"#),
        )
        .await
        .unwrap();
    assert_eq!(product.status, StatusCode::OK);
    let c: Vec<Vec<f64>> = serde_json::from_value(product.json()["c"].clone()).unwrap();
    assert_eq!(c, [[19.0, 22.0], [43.0, 50.0]]);
    // Bad input: the function's exit code 1 becomes 400 with its message.
    let refused = invoke(&client, "vadd", "1 2 x\n").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&refused), "function_rejected_input");

    let listed = cli(&["functions"]);
    assert!(
        listed.contains("vadd") && listed.contains("matmul"),
        "{listed}"
    );
    // The refusal went to stderr, which the logs keep.
    let logs = cli(&["logs", "vadd"]);
    assert!(logs.contains("stderr"), "{logs}");

    // blur: a binary image in and out. One bright pixel spreads as the README's 3x3 Gaussian
    // (1 2 1 / 2 4 2 / 1 2 1, /16 rounded): 160 -> 40 at the centre, 20 beside, 10 diagonally.
    let blur = example_bundle(
        dir.path(),
        "blur",
        &[("vram = \"1GiB\"", "vram = \"64MiB\"")],
    );
    cli(&["deploy", blur.to_str().unwrap()]);
    let mut image = b"P6\n5 5\n255\n".to_vec();
    let mut pixels = vec![0u8; 5 * 5 * 3];
    pixels[(2 * 5 + 2) * 3..(2 * 5 + 2) * 3 + 3].copy_from_slice(&[160; 3]);
    image.extend_from_slice(&pixels);
    let blurred = client.invoke("blur", "", Bytes::from(image)).await.unwrap();
    assert_eq!(
        blurred.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&blurred.body)
    );
    let header = b"P6\n5 5\n255\n";
    assert_eq!(&blurred.body[..header.len()], header);
    let expected_row = |row: usize| -> [u8; 5] {
        match row {
            1 | 3 => [0, 10, 20, 10, 0],
            2 => [0, 20, 40, 20, 0],
            _ => [0; 5],
        }
    };
    let expected: Vec<u8> = (0..5)
        .flat_map(|y| expected_row(y).into_iter().flat_map(|v| [v; 3]))
        .collect();
    assert_eq!(&blurred.body[header.len()..], &expected[..]);

    // lab: an http function; its answer is exact after a cold start and when warm.
    let lab = example_bundle(
        dir.path(),
        "lab",
        &[("LAB_MODEL_MIB = \"64\"", "LAB_MODEL_MIB = \"2\"")],
    );
    cli(&["deploy", lab.to_str().unwrap()]);
    for prompt in ["a watercolor fox", "a second prompt"] {
        let answer = client
            .invoke("lab", "/generate", Bytes::from(prompt))
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json(), lab_reference(prompt.as_bytes(), LAB_ROWS));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_swaps_out_then_stops_and_each_step_shows_in_the_timings() {
    let up = Up::start();
    let dir = TempDir::new();
    let lab = example_bundle(
        dir.path(),
        "lab",
        &[
            ("LAB_MODEL_MIB = \"64\"", "LAB_MODEL_MIB = \"2\""),
            (
                "instance_idle_timeout = \"30m\"",
                "instance_idle_timeout = \"20s\"",
            ),
        ],
    );
    let (text, artifact) = read(&lab);
    let client = up.tenant("scale", &["deploy", "invoke", "session"]).await;
    assert_eq!(
        client
            .deploy(&text, artifact.as_deref())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    let generate = |prompt: &'static str| {
        let client = client.clone();
        async move {
            let answer = client
                .invoke("lab", "/generate", Bytes::from(prompt))
                .await
                .unwrap();
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            assert_eq!(answer.json(), lab_reference(prompt.as_bytes(), LAB_ROWS));
            answer
        }
    };
    let first = generate("cold").await;
    assert!(first.timing_ms("x-gpufn-cold-start-ms").unwrap() > 0.0);
    let warm = generate("warm").await;
    assert_eq!(warm.timing_ms("x-gpufn-cold-start-ms"), Some(0.0));
    let function = client.get("/v1/functions/lab").await.unwrap().json();
    let session = function["instances"][0]["session"].as_u64().unwrap();
    let pid = function["instances"][0]["pid"].as_u64().unwrap();

    // Idle past the GPU idle timeout: the pool shows the session swapped out.
    wait_until("the instance's session is swapped out", || {
        let client = client.clone();
        async move {
            let pool = client.get("/v1/pool").await.unwrap().json();
            pool["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["id"] == session && s["state"] == "swapped_out")
        }
    })
    .await;
    let woken = generate("after the swap").await;
    assert!(
        woken.timing_ms("x-gpufn-swap-in-ms").unwrap() > 0.0,
        "the prewarm swapped the model back in: {:?}",
        woken.headers
    );
    assert_eq!(woken.timing_ms("x-gpufn-cold-start-ms"), Some(0.0));

    // Idle past the instance idle timeout: the process is gone.
    wait_until("the idle instance stops", || {
        let client = client.clone();
        async move {
            let f = client.get("/v1/functions/lab").await.unwrap().json();
            f["instances"].as_array().is_some_and(Vec::is_empty)
        }
    })
    .await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} has exited"
    );
    let cold_again = generate("scaled from zero").await;
    assert!(cold_again.timing_ms("x-gpufn-cold-start-ms").unwrap() > 0.0);
}

fn read(manifest: &Path) -> (String, Option<Vec<u8>>) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let artifact = std::fs::read(
        manifest.parent().unwrap().join("build").join(
            manifest
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
        ),
    )
    .ok();
    (text, artifact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_invokes_over_two_instances_all_answer_correctly() {
    let up = Up::start();
    let dir = TempDir::new();
    let vadd = example_bundle(
        dir.path(),
        "vadd",
        &[
            ("max_instances = 8", "max_instances = 2"),
            (
                "prewarm = \"on-request\"",
                "prewarm = \"on-request\"\n[limits]\nqueue = 64\ntimeout = \"2m\"",
            ),
        ],
    );
    let (text, artifact) = read(&vadd);
    let client = up.tenant("many", &["deploy", "invoke"]).await;
    assert_eq!(
        client
            .deploy(&text, artifact.as_deref())
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );
    let inputs: Vec<(String, String)> = (0..50).map(vadd_input).collect();
    let bodies: Vec<String> = inputs.iter().map(|(input, _)| input.clone()).collect();
    let answers = invoke_all(&client, "vadd", bodies).await;
    for (answer, (_, sum)) in answers.into_iter().zip(inputs) {
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(String::from_utf8_lossy(&answer.body).trim(), sum);
    }
}

/// Invokes `name` once per body, all at once; the answers come back in the bodies' order.
async fn invoke_all(client: &FunctionsClient, name: &str, bodies: Vec<String>) -> Vec<Answer> {
    let requests: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (client, name) = (client.clone(), name.to_owned());
            tokio::spawn(async move { invoke(&client, &name, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("invoke task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_bound_clients_get_429_with_retry_after() {
    let up = Up::start();
    let client = up.tenant("busy", &["deploy", "invoke"]).await;
    deploy_script(
        &client,
        "slow",
        "#!/bin/sh\nsleep 1\ncat\n",
        "[scaling]\nmax_instances = 1\n[limits]\nqueue = 2",
    )
    .await;
    let bodies = (0..8).map(|i| format!("request {i}")).collect();
    let answers: Vec<(usize, Answer)> = invoke_all(&client, "slow", bodies)
        .await
        .into_iter()
        .enumerate()
        .collect();
    let ok: Vec<_> = answers
        .iter()
        .filter(|(_, a)| a.status == StatusCode::OK)
        .collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, a)| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let others: Vec<String> = answers
        .iter()
        .filter(|(_, a)| a.status != StatusCode::OK && a.status != StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, a)| format!("{} {}", a.status, String::from_utf8_lossy(&a.body)))
        .collect();
    assert!(others.is_empty(), "only 200 and 429, got {others:?}");
    // One runs, two wait: at least those three succeed; most of the rest are refused.
    assert!(ok.len() >= 3, "{} succeeded", ok.len());
    assert!(!refused.is_empty(), "some were refused");
    for (i, answer) in &ok {
        assert_eq!(answer.body, format!("request {i}").as_bytes());
    }
    for (_, answer) in &refused {
        assert_eq!(error_code(answer), "function_busy");
        let retry: u64 = answer.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_crashes_answer_504_and_502_with_stderr_and_the_gateway_keeps_serving() {
    let up = Up::start();
    let client = up.tenant("faults", &["deploy", "invoke"]).await;
    deploy_script(
        &client,
        "hang",
        "#!/bin/sh\necho 'loading a model that never finishes' >&2\nexec sleep 600\n",
        "[limits]\ntimeout = \"1s\"",
    )
    .await;
    deploy_script(
        &client,
        "crash",
        "#!/bin/sh\necho 'fatal: weights file is corrupt' >&2\nkill -SEGV $$\n",
        "",
    )
    .await;
    deploy_script(&client, "echo", "#!/bin/sh\ncat\n", "").await;
    // An http function whose server dies at start.
    let server = "#!/bin/sh\necho \"cannot bind port $PORT: permission denied\" >&2\nexit 3\n";
    let manifest = "name = \"broken-server\"\ncommand = \"./run.sh\"\n[artifact]\npath = \"run.sh\"\n[protocol]\ntype = \"http\"\n";
    assert_eq!(
        client
            .deploy(manifest, Some(server.as_bytes()))
            .await
            .unwrap()
            .status,
        StatusCode::CREATED
    );

    let timed_out = invoke(&client, "hang", "").await;
    assert_eq!(timed_out.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&timed_out), "function_timeout");
    let details = &timed_out.json()["error"]["details"];
    assert!(
        details["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("never finishes"),
        "{details}"
    );

    let crashed = invoke(&client, "crash", "").await;
    assert_eq!(crashed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&crashed), "function_crashed");
    let error = &crashed.json()["error"];
    assert!(
        error["message"].as_str().unwrap().contains("SIGSEGV"),
        "{error}"
    );
    assert!(
        error["details"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("weights file is corrupt"),
        "{error}"
    );

    let broken = client
        .invoke("broken-server", "/", Bytes::new())
        .await
        .unwrap();
    assert_eq!(broken.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&broken), "function_crashed");
    assert!(
        broken.json()["error"]["details"]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("cannot bind port"),
        "{}",
        String::from_utf8_lossy(&broken.body)
    );

    let fine = invoke(&client, "echo", "still serving").await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.body, "still serving".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_see_invoke_or_delete_each_others_functions() {
    let up = Up::start();
    let alice = up.tenant("alice", &["deploy", "invoke"]).await;
    let bob = up.tenant("bob", &["deploy", "invoke"]).await;
    deploy_script(&alice, "secret", "#!/bin/sh\necho alice-only\n", "").await;

    assert_eq!(
        invoke(&bob, "secret", "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.get("/v1/functions/secret").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.delete("/v1/functions/secret").await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    let listed = bob.get("/v1/functions").await.unwrap().json();
    assert_eq!(listed["functions"], json!([]));
    let other = bob.get("/v1/functions/secret?tenant=alice").await.unwrap();
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&other), "other_tenant");

    // The same name is a different function per tenant.
    deploy_script(&bob, "secret", "#!/bin/sh\necho bob-only\n", "").await;
    assert_eq!(
        invoke(&alice, "secret", "").await.body,
        "alice-only\n".as_bytes()
    );
    assert_eq!(
        invoke(&bob, "secret", "").await.body,
        "bob-only\n".as_bytes()
    );

    // Scopes: invoking needs `invoke`, deploying and deleting need `deploy`.
    let deployer = up.tenant("alice", &["deploy"]).await;
    let refused = invoke(&deployer, "secret", "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&refused), "missing_scope");
    let invoker = up.tenant("alice", &["invoke"]).await;
    let refused = invoker.delete("/v1/functions/secret").await.unwrap();
    assert_eq!(error_code(&refused), "missing_scope");
    assert_eq!(invoke(&alice, "secret", "").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_lets_running_requests_finish_then_removes_the_function() {
    let up = Up::start();
    let client = up.tenant("drain", &["deploy", "invoke"]).await;
    deploy_script(&client, "slow", "#!/bin/sh\nsleep 3\ncat\n", "").await;
    let running = {
        let client = client.clone();
        tokio::spawn(async move { invoke(&client, "slow", "finished anyway").await })
    };
    wait_until("the request is running", || {
        let client = client.clone();
        async move { client.get("/v1/functions/slow").await.unwrap().json()["in_flight"] == 1 }
    })
    .await;
    let deleted = client.delete("/v1/functions/slow").await.unwrap();
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json()["drained_requests"], 1);
    // The delete answered only after the running request was done, and that one succeeded.
    assert!(running.is_finished(), "the delete waited for the request");
    let answer = running.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "finished anyway".as_bytes());
    assert_eq!(
        invoke(&client, "slow", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_functions_survive_a_restart() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    {
        let up = Up::start_in(&data);
        let client = up.tenant("durable", &["deploy", "invoke"]).await;
        deploy_script(&client, "upper", "#!/bin/sh\ntr a-z A-Z\n", "").await;
        assert_eq!(invoke(&client, "upper", "abc").await.body, "ABC".as_bytes());
    }
    let up = Up::start_in(&data);
    assert_eq!(up.data, data);
    let client = up.tenant("durable", &["deploy", "invoke"]).await;
    let answer = invoke(&client, "upper", "still here").await;
    assert_eq!(answer.body, "STILL HERE".as_bytes());
    let function = client.get("/v1/functions/upper").await.unwrap().json();
    assert_eq!(function["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_wait_for_device_capacity_instead_of_failing() {
    let up = Up::start();
    let client = up.tenant("whole-gpu", &["deploy", "invoke"]).await;
    // Each process reserves the whole device (compute_share 1), so only one runs at a time
    // although three may: the others wait for the device rather than fail.
    deploy_script(
        &client,
        "exclusive",
        "#!/bin/sh\nsleep 1\ncat\n",
        "[resources]\ncompute_share = 1.0\n[scaling]\nmax_instances = 3",
    )
    .await;
    let bodies = (0..3).map(|i| format!("job {i}")).collect();
    for (i, answer) in invoke_all(&client, "exclusive", bodies)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.body, format!("job {i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_serves_the_new_version() {
    let up = Up::start();
    let client = up.tenant("versions", &["deploy", "invoke"]).await;
    deploy_script(&client, "greet", "#!/bin/sh\necho one\n", "").await;
    assert_eq!(invoke(&client, "greet", "").await.body, "one\n".as_bytes());
    deploy_script(&client, "greet", "#!/bin/sh\necho two\n", "").await;
    assert_eq!(invoke(&client, "greet", "").await.body, "two\n".as_bytes());
    let function = client.get("/v1/functions/greet").await.unwrap().json();
    assert_eq!(function["version"], 2);
    // A manifest with problems is refused with every field named; the function stays.
    let refused = client
        .deploy(
            "name = \"greet\"\ncommand = \"\"\n[protocol]\ntype = \"exec\"\n[scaling]\nmax_instances = 0\n",
            None,
        )
        .await
        .unwrap();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&refused), "invalid_manifest");
    let fields: Vec<String> = refused.json()["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["command", "scaling.max_instances"]);
    assert_eq!(invoke(&client, "greet", "").await.body, "two\n".as_bytes());
}
