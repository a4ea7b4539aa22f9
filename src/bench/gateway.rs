//! `gpufn bench gateway`: attach latency through the gateway next to opening a session on a
//! worker directly; authenticated small-request throughput next to a bare hyper server in
//! the same run; placement decision time for 1,000 workers × 10,000 sessions.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gpufn_gateway::auth::Scope;
use gpufn_proto::frame::{FrameLimits, FrameReader, FrameWriter};
use gpufn_proto::message::{Channel, Credentials, Hello, Qos, ResourceRequest, Role};
use gpufn_proto::transport::{Address, ClientOptions, connect};
use gpufn_proto::{FrameKind, PROTOCOL_VERSION, Reply, Request};
use gpufn_worker::gateway_client::{GatewayOptions, register};
use gpufn_worker::{BackendChoice, Worker, WorkerConfig};
use http_body_util::Full;

pub struct Options {
    pub attaches: usize,
    pub requests: usize,
    pub concurrency: usize,
    pub placement_samples: usize,
    /// A CUDA program to time through `gpufn run` (start to exit), each way.
    pub program: Option<std::path::PathBuf>,
    pub program_runs: usize,
}

pub struct Report {
    attach_direct: (Duration, Duration),
    attach_gateway: (Duration, Duration),
    program: Option<ProgramTimes>,
    throughput: Throughput,
    placement: (Duration, Duration),
    cores: usize,
    load_average: String,
}

/// `gpufn run -- PROGRAM`, start to exit: the program's name, then p50/p99 direct to the
/// worker and through the gateway.
type ProgramTimes = (String, (Duration, Duration), (Duration, Duration));

/// Requests per second (median of the rounds), each server measured alternately.
struct Throughput {
    bare: f64,
    healthz: f64,
    tenant: f64,
    pool: f64,
    pool_bytes: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gateway benchmark ({} cores, load average {}, loopback, cpu-backend worker)",
            self.cores, self.load_average
        )?;
        writeln!(
            f,
            "attach (p50 / p99): direct to the worker {:?} / {:?}; through the gateway (attach + open with ticket) {:?} / {:?}",
            self.attach_direct.0,
            self.attach_direct.1,
            self.attach_gateway.0,
            self.attach_gateway.1
        )?;
        if let Some((name, direct, through)) = &self.program {
            writeln!(
                f,
                "program start to exit after its first kernel's result ({name} via gpufn run, p50 / p99): direct to the worker {:?} / {:?}; through the gateway {:?} / {:?}",
                direct.0, direct.1, through.0, through.1
            )?;
        }
        let t = &self.throughput;
        let per_core = |rps: f64| rps / self.cores as f64;
        writeln!(
            f,
            "small requests, baseline: bare hyper answering 28 B of JSON {:.0} req/s ({:.0} per core)",
            t.bare,
            per_core(t.bare)
        )?;
        for (what, rps) in [
            ("GET /healthz (no token)", t.healthz),
            (
                "GET /v1/tenants/bench with JWT (authenticated small request)",
                t.tenant,
            ),
            (
                &format!("GET /v1/pool with JWT ({} B answer)", t.pool_bytes) as &str,
                t.pool,
            ),
        ] {
            writeln!(
                f,
                "  gateway {what}: {rps:.0} req/s ({:.0} per core): {:.0}% of bare",
                per_core(rps),
                100.0 * rps / t.bare
            )?;
        }
        write!(
            f,
            "placement decision, 1,000 workers × 10,000 sessions: p50 {:?}, p99 {:?}",
            self.placement.0, self.placement.1
        )
    }
}

fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

async fn open_session(address: &Address, credentials: Credentials) -> anyhow::Result<()> {
    let connection = connect(address, &ClientOptions::default()).await?;
    let (send, recv) = connection.open_stream().await?;
    let mut w = FrameWriter::new(send);
    let mut r = FrameReader::new(recv, FrameLimits::default());
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Stub,
        channel: Channel::Calls,
        credentials,
        session: None,
        client: "bench".into(),
    });
    w.write_request(FrameKind::Call, 1, &hello, &[]).await?;
    w.flush().await?;
    r.next_frame().await?;
    if let Err(e) = r.reply()?.result {
        anyhow::bail!("session refused: {}", e.message);
    }
    connection.close();
    Ok(())
}

async fn attach(gateway: &Address, token: &str) -> anyhow::Result<(Address, String)> {
    let connection = connect(gateway, &ClientOptions::default()).await?;
    let (send, recv) = connection.open_stream().await?;
    let mut w = FrameWriter::new(send);
    let mut r = FrameReader::new(recv, FrameLimits::default());
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Stub,
        channel: Channel::Calls,
        credentials: Credentials::Token(token.to_owned()),
        session: None,
        client: "bench".into(),
    });
    let attach = Request::Attach(ResourceRequest {
        vram_bytes: 1 << 20,
        compute_percent: 0,
        qos: Qos::Medium,
        function: None,
    });
    let mut out = None;
    for (id, m) in [(1u64, &hello), (2, &attach)] {
        w.write_request(FrameKind::Call, id, m, &[]).await?;
        w.flush().await?;
        r.next_frame().await?;
        match r.reply()?.result {
            Ok(Reply::Attached {
                worker_address,
                ticket,
                ..
            }) => out = Some((worker_address.parse()?, ticket)),
            Ok(_) => {}
            Err(e) => anyhow::bail!("attach refused: {}", e.message),
        }
    }
    connection.close();
    out.ok_or_else(|| anyhow::anyhow!("no Attached reply"))
}

/// `requests` GETs over `concurrency` keep-alive connections; successful (2xx) requests per
/// second. Any other answer fails the benchmark: a refused request is not throughput.
async fn load(
    url: String,
    path: &'static str,
    token: Option<String>,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let per_task = requests / concurrency;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("{url}{path}").parse()?;
    let authorization = token.map(|t| format!("Bearer {t}"));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (uri, authorization, client) = (uri.clone(), authorization.clone(), client.clone());
            tokio::spawn(async move {
                for _ in 0..per_task {
                    let mut request = http::Request::get(uri.clone());
                    if let Some(a) = &authorization {
                        request = request.header("authorization", a);
                    }
                    let response = client
                        .request(request.body(Full::<Bytes>::default())?)
                        .await?;
                    let status = response.status();
                    http_body_util::BodyExt::collect(response.into_body()).await?;
                    anyhow::ensure!(status.is_success(), "GET {uri} answered {status}");
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((per_task * concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// A bare hyper server answering a small JSON body, for the baseline.
async fn bare_server() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                    Bytes::from_static(br#"{"workers":[],"sessions":[]}"#),
                )))
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Ok(addr)
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let dir = tempfile_dir()?;
    let mut config = gpufn_gateway::GatewayConfig::new(&dir);
    config.http_addr = "127.0.0.1:0".parse()?;
    config.control_addr = "tcp://127.0.0.1:0".into();
    config.limits.tenant_rate_per_second = u32::MAX / 2;
    config.limits.tenant_burst = u32::MAX / 2;
    config.limits.max_concurrent = 100_000;
    let g = gpufn_gateway::start(config).await?;

    // A gateway-registered worker and a standalone one, both cpu backend on TCP.
    let make_worker = || {
        Worker::new(WorkerConfig {
            backend: BackendChoice::Cpu,
            launch_threads: 1,
            ..WorkerConfig::default()
        })
    };
    let placed = make_worker()?;
    let l1 = placed
        .bind(&"tcp://127.0.0.1:0".parse()?, Some(&dir))
        .await?;
    let placed_address = l1.local_address().to_string();
    let p = placed.clone();
    tokio::spawn(async move { p.serve(l1).await });
    let _heartbeats = register(
        &placed,
        GatewayOptions {
            gateway: g.control_addr.clone(),
            token: g
                .gateway
                .minter
                .mint("bench", &[Scope::Worker], Duration::from_secs(3600)),
            worker_id: "bench".into(),
            data_address: placed_address,
            device_memory: Some(1 << 40),
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let standalone = make_worker()?;
    let l2 = standalone
        .bind(&"tcp://127.0.0.1:0".parse()?, Some(&dir))
        .await?;
    let direct_address = l2.local_address().clone();
    let s = standalone.clone();
    tokio::spawn(async move { s.serve(l2).await });

    let token = g
        .gateway
        .minter
        .mint("bench", &[Scope::Session], Duration::from_secs(3600));
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..options.attaches {
        let t = Instant::now();
        open_session(&direct_address, Credentials::None).await?;
        direct.push(t.elapsed());
        let t = Instant::now();
        let (address, ticket) = attach(&g.control_addr, &token).await?;
        open_session(&address, Credentials::Ticket(ticket)).await?;
        through.push(t.elapsed());
    }

    let program = match &options.program {
        Some(path) => Some(
            time_program(
                path,
                options.program_runs,
                &direct_address.to_string(),
                &g.control_addr.to_string(),
                &token,
            )
            .await?,
        ),
        None => None,
    };

    // The attached sessions end once the worker's heartbeat reports them closed; measure
    // against the steady pool (one worker, no sessions).
    let gateway_url = format!("http://{}", g.http_addr);
    for _ in 0..100 {
        if g.gateway.live_sessions(None).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool_bytes = gpufn_gateway::client::get_json(&gateway_url, "/v1/pool", Some(&token))
        .await?
        .to_string()
        .len();
    let throughput = throughput(&gateway_url, &token, options).await?;

    let placement = tokio::task::spawn_blocking({
        let samples = options.placement_samples;
        move || gpufn_pool::bench::placement_latency(1000, 10_000, samples)
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report {
        attach_direct: percentiles(direct),
        attach_gateway: percentiles(through),
        program,
        throughput: Throughput {
            pool_bytes,
            ..throughput
        },
        placement,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Times `gpufn run -- PROGRAM` from start to exit, alternately direct to `worker` and
/// placed through the gateway at `control` (GPUFN_GATEWAY, GPUFN_TOKEN). The program must
/// succeed every time.
async fn time_program(
    program: &std::path::Path,
    runs: usize,
    worker: &str,
    control: &str,
    token: &str,
) -> anyhow::Result<ProgramTimes> {
    let gpufn = std::env::current_exe()?;
    let run = |through_gateway: bool| {
        let mut command = tokio::process::Command::new(&gpufn);
        command.arg("run");
        if through_gateway {
            command
                .env("GPUFN_GATEWAY", control)
                .env("GPUFN_TOKEN", token);
        } else {
            command
                .args(["--worker", worker])
                .env_remove("GPUFN_GATEWAY");
        }
        command
            .arg("--")
            .arg(program)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    };
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (through_gateway, times) in [(false, &mut direct), (true, &mut through)] {
            let started = Instant::now();
            let output = run(through_gateway).output().await?;
            times.push(started.elapsed());
            anyhow::ensure!(
                output.status.success(),
                "{} failed ({}): {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((name, percentiles(direct), percentiles(through)))
}

/// Measures the bare server and the gateway's routes alternately, `ROUNDS` times each; the
/// median of each.
async fn throughput(
    gateway_url: &str,
    token: &str,
    options: &Options,
) -> anyhow::Result<Throughput> {
    const ROUNDS: usize = 3;
    let bare_url = format!("http://{}", bare_server().await?);
    let targets: [(&str, &'static str, Option<String>); 4] = [
        (&bare_url, "/", None),
        (gateway_url, "/healthz", None),
        (gateway_url, "/v1/tenants/bench", Some(token.to_owned())),
        (gateway_url, "/v1/pool", Some(token.to_owned())),
    ];
    // Warm up every connection pool and cache.
    for (url, path, token) in &targets {
        load(url.to_string(), path, token.clone(), 200, 4).await?;
    }
    let mut rates = vec![Vec::new(); targets.len()];
    for _ in 0..ROUNDS {
        for ((url, path, token), rates) in targets.iter().zip(&mut rates) {
            rates.push(
                load(
                    url.to_string(),
                    path,
                    token.clone(),
                    options.requests,
                    options.concurrency,
                )
                .await?,
            );
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut rates = rates.into_iter().map(median);
    let mut next = || rates.next().unwrap_or(0.0);
    Ok(Throughput {
        bare: next(),
        healthz: next(),
        tenant: next(),
        pool: next(),
        pool_bytes: 0,
    })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gpufn-bench-gateway-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
