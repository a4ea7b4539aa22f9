//! One invocation: wait for a slot (bounded queue), start an instance if none is free (a
//! cold start), prewarm the instance's GPU session as the request arrives, then run the
//! request — an `exec` process fed the body, or the body proxied to an `http` instance —
//! within the function's timeout. The answer carries the time spent in each step.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use tokio::sync::{oneshot, watch};

use super::admission::Admit;
use super::logs::Tail;
use super::runner::{self, Launch};
use super::{Instance, LiveFunction, tenant_principal};
use crate::core::{Attached, Gateway};
use crate::error::ApiError;
use crate::manifest::{Prewarm, Protocol};
use gpufn_pool::IdleOverride;
use gpufn_proto::message::{Qos, ResourceRequest};

/// What the client sent, to pass on to the function.
pub struct InvokeRequest {
    pub method: Method,
    /// For `http` functions: the path (and query) after `/invoke`, e.g. `/generate`.
    pub path: String,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Where the time of one invocation went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Waiting for a free slot.
    pub queue: Duration,
    /// Starting an instance for this request (exec: attach and spawn; http: until healthy).
    pub cold_start: Duration,
    /// Swapping the instance's GPU memory back in (prewarm), when it was swapped out.
    pub swap_in: Duration,
    /// Running the request on the instance.
    pub exec: Duration,
}

impl Timings {
    fn headers(&self, response: &mut Response<Full<Bytes>>, instance: Option<u64>) {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        let h = response.headers_mut();
        for (name, value) in [
            ("x-gpufn-queue-ms", ms(self.queue)),
            ("x-gpufn-cold-start-ms", ms(self.cold_start)),
            ("x-gpufn-swap-in-ms", ms(self.swap_in)),
            ("x-gpufn-exec-ms", ms(self.exec)),
            (
                "server-timing",
                format!(
                    "queue;dur={}, cold-start;dur={}, swap-in;dur={}, exec;dur={}",
                    ms(self.queue),
                    ms(self.cold_start),
                    ms(self.swap_in),
                    ms(self.exec)
                ),
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        if let Some(id) = instance
            && let Ok(v) = HeaderValue::from_str(&id.to_string())
        {
            h.insert("x-gpufn-instance", v);
        }
    }
}

/// Holds a place in the queue; leaving (or being dropped, when the client goes away) frees
/// it.
struct QueuePlace<'a> {
    function: &'a LiveFunction,
    ticket: Option<u64>,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.function.dispatch().leave_queue(t);
            self.function.changed.notify_waiters();
        }
    }
}

/// Holds a slot on an instance; dropping it releases the slot.
struct SlotGuard {
    function: Arc<LiveFunction>,
    instance: u64,
    since: Instant,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.function
            .dispatch()
            .release(self.instance, self.since.elapsed(), Instant::now());
        self.function.changed.notify_waiters();
    }
}

/// Runs one invocation of `function`.
pub async fn invoke(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    request: InvokeRequest,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let arrived = Instant::now();
    let mut timings = Timings::default();
    let stub_dir = gateway.functions.stub_dir()?.to_path_buf();
    let timeout = function.manifest.limits.timeout;
    let (admit, slot) = acquire(gateway, function, arrived + timeout).await?;
    let mut slot = Some(slot);
    timings.queue = arrived.elapsed();
    let result = match (&function.manifest.protocol, admit) {
        (Protocol::Exec, Admit::Start(id)) => {
            // The process's slot stays taken until its session has ended (after the answer).
            let slot = slot.take();
            run_exec(
                gateway,
                function,
                id,
                &stub_dir,
                request,
                slot,
                &mut timings,
            )
            .await
        }
        (Protocol::Http { .. }, Admit::Start(id)) => {
            let started = Instant::now();
            // The start runs on its own task: if this request goes away (client gone, gateway
            // timeout), the instance still becomes ready, or is cleaned up, for the next one.
            let start = tokio::spawn({
                let gateway = gateway.clone();
                let function = function.clone();
                async move { start_instance(&gateway, &function, id).await }
            });
            let instance = start
                .await
                .map_err(|e| ApiError::internal(format!("starting an instance failed: {e}")))??;
            timings.cold_start = started.elapsed();
            proxy(gateway, function, &instance, request, &mut timings).await
        }
        (Protocol::Http { .. }, Admit::Use(id)) => match function.instance(id) {
            Some(instance) => proxy(gateway, function, &instance, request, &mut timings).await,
            None => Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "instance_gone",
                "the instance chosen for this request stopped just before it ran; retry",
            )),
        },
        (_, other) => Err(ApiError::internal(format!(
            "unexpected admission {other:?} for this protocol"
        ))),
    };
    drop(slot);
    let (mut response, instance) = result?;
    timings.headers(&mut response, Some(instance));
    Ok(response)
}

/// Waits for a slot until `deadline`. Returns the admission and the guard that frees it.
async fn acquire(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    deadline: Instant,
) -> Result<(Admit, SlotGuard), ApiError> {
    let mut place = QueuePlace {
        function,
        ticket: None,
    };
    loop {
        let notified = function.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let new_id = gateway.functions.next_instance_id();
        let admit = function
            .dispatch()
            .admit(place.ticket, new_id, Instant::now());
        match admit {
            Admit::Use(id) | Admit::Start(id) => {
                place.ticket = None;
                // The next in line may be admissible too.
                function.changed.notify_waiters();
                let slot = SlotGuard {
                    function: function.clone(),
                    instance: id,
                    since: Instant::now(),
                };
                return Ok((admit, slot));
            }
            Admit::Wait(ticket) => place.ticket = Some(ticket),
            Admit::Reject { retry_after_s } => {
                let m = &function.manifest;
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "function_busy",
                    format!(
                        "function {} is at its limit ({} instances × {} requests, {} waiting); retry after {retry_after_s} s or raise scaling.max_instances / limits.queue",
                        m.name, m.scaling.max_instances, m.scaling.concurrency, m.limits.queue
                    ),
                );
                e.retry_after_s = Some(retry_after_s);
                return Err(e);
            }
            Admit::Draining => {
                place.ticket = None;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "function_draining",
                    format!(
                        "function {} is being deleted or replaced; retry to reach the new version",
                        function.manifest.name
                    ),
                ));
            }
        }
        if tokio::time::timeout_at(deadline.into(), notified)
            .await
            .is_err()
        {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "queue_timeout",
                format!(
                    "no instance of {} became free within its timeout ({}); retry later or raise scaling.max_instances",
                    function.manifest.name,
                    crate::manifest::format_duration(function.manifest.limits.timeout)
                ),
            ));
        }
    }
}

/// How often a start waiting for device capacity asks again.
const ATTACH_RETRY: Duration = Duration::from_millis(25);

/// Places a GPU session for one instance of `function`.
async fn attach(gateway: &Arc<Gateway>, function: &LiveFunction) -> Result<Attached, ApiError> {
    let r = &function.manifest.resources;
    let request = ResourceRequest {
        vram_bytes: r.vram,
        compute_percent: (r.compute_share * 100.0).round().clamp(0.0, 100.0) as u8,
        qos: proto_qos(r.qos),
        function: Some(function.manifest.name.clone()),
    };
    let principal = tenant_principal(&function.record.tenant);
    // Other instances' sessions free the device as they end: a function's own instances
    // wait for room (up to its timeout) rather than fail the request.
    let deadline = Instant::now() + function.manifest.limits.timeout;
    // The pool and the worker both keep the session as long as the manifest says: swapped out
    // after `gpu_idle_timeout`, ended with its instance after `instance_idle_timeout`.
    let idle = IdleOverride {
        swap_out_after: Some(function.manifest.scaling.gpu_idle_timeout),
        end_after: Some(function.manifest.scaling.instance_idle_timeout),
    };
    let attached = loop {
        match gateway
            .attach_with_idle(&principal, &request, Some(idle))
            .await
        {
            Err(e) if e.code == "no_capacity" && Instant::now() < deadline => {
                tokio::time::sleep(ATTACH_RETRY).await;
            }
            other => break other?,
        }
    };
    Ok(attached)
}

fn proto_qos(q: gpufn_pool::Qos) -> Qos {
    match q {
        gpufn_pool::Qos::Low => Qos::Low,
        gpufn_pool::Qos::Medium => Qos::Medium,
        gpufn_pool::Qos::High => Qos::High,
        gpufn_pool::Qos::Critical => Qos::Critical,
    }
}

fn work_dir(function: &LiveFunction, instance: u64) -> std::path::PathBuf {
    function
        .bundle_dir
        .with_file_name("runs")
        .join(format!("i{instance}"))
}

fn spawn_failed(e: runner::SpawnError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "function_start_failed",
        format!(
            "{e}; check the manifest's command and that the artifact is an executable for this machine"
        ),
    )
}

/// One `exec` request: attach, start the process with the body on stdin, answer its stdout.
async fn run_exec(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    id: u64,
    stub_dir: &std::path::Path,
    request: InvokeRequest,
    slot: Option<SlotGuard>,
    timings: &mut Timings,
) -> Result<(Response<Full<Bytes>>, u64), ApiError> {
    let started = Instant::now();
    let attached = attach(gateway, function).await?;
    let dir = work_dir(function, id);
    let spawned = runner::spawn(&Launch {
        manifest: &function.manifest,
        bundle_dir: &function.bundle_dir,
        work_dir: &dir,
        stub_dir,
        instance: id,
        worker_address: &attached.worker_address,
        ticket: &attached.ticket,
        port: None,
    });
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            gateway.session_closed(attached.session, "the function's process did not start");
            let _ = std::fs::remove_dir_all(&dir);
            return Err(spawn_failed(e));
        }
    };
    timings.cold_start = started.elapsed();
    let running = Instant::now();
    let output = runner::run_exec(
        child,
        request.body,
        function.manifest.limits.timeout,
        function.logs.clone(),
        id,
    )
    .await;
    timings.exec = running.elapsed();
    // Recording the session's end (a durable write) and removing the working folder need
    // not hold up the answer.
    let cleanup = gateway.clone();
    tokio::task::spawn_blocking(move || {
        cleanup.session_closed(attached.session, "the function's request ended");
        let _ = std::fs::remove_dir_all(&dir);
        // Only now may the next request place its session in the memory this one held.
        drop(slot);
    });
    let name = &function.manifest.name;
    let details =
        |exit: &str| json!({"instance": id, "exit": exit, "stderr_tail": output.stderr_tail});
    let Some(status) = output.status else {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!(
                "function {name} did not finish within limits.timeout ({}) and was stopped; stderr ends with: {}",
                crate::manifest::format_duration(function.manifest.limits.timeout),
                last_line(&output.stderr_tail)
            ),
        )
        .with_details(details("timeout")));
    };
    let exit = runner::describe_exit(status);
    match status.code() {
        Some(0) if output.stdout_truncated => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "function_output_too_large",
            format!(
                "function {name} wrote more than {} MiB to stdout",
                runner::MAX_OUTPUT_BYTES >> 20
            ),
        )),
        Some(0) => {
            let mut response = Response::new(Full::new(Bytes::from(output.stdout)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok((response, id))
        }
        // The examples' convention: 1 means the input was refused.
        Some(1) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "function_rejected_input",
            format!(
                "function {name} refused the input: {}",
                last_line(&output.stderr_tail)
            ),
        )
        .with_details(details(&exit))),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "function_failed",
            format!(
                "function {name} failed ({exit}): {}",
                last_line(&output.stderr_tail)
            ),
        )
        .with_details(details(&exit))),
        None => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "function_crashed",
            format!(
                "function {name} crashed ({exit}): {}",
                last_line(&output.stderr_tail)
            ),
        )
        .with_details(details(&exit))),
    }
}

fn last_line(text: &str) -> &str {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if line.is_empty() {
        "(nothing on stderr)"
    } else {
        line
    }
}

/// Starts an `http` instance with id `id` (its slot is already reserved) and waits until it
/// answers its health check. On failure the slot is given up and the error says why.
pub async fn start_instance(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    id: u64,
) -> Result<Arc<Instance>, ApiError> {
    let result = launch_http(gateway, function, id).await;
    {
        let mut d = function.dispatch();
        match &result {
            Ok(_) => d.ready(id),
            Err(_) => d.remove(id),
        }
    }
    function.changed.notify_waiters();
    result
}

async fn launch_http(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    id: u64,
) -> Result<Arc<Instance>, ApiError> {
    let Protocol::Http { port, health_path } = &function.manifest.protocol else {
        return Err(ApiError::internal(
            "only http functions have long-lived instances",
        ));
    };
    let stub_dir = gateway.functions.stub_dir()?.to_path_buf();
    let port = match port {
        Some(p) => *p,
        None => runner::free_port().map_err(|e| {
            ApiError::internal(format!("cannot find a free port for the instance: {e}"))
        })?,
    };
    let attached = attach(gateway, function).await?;
    let dir = work_dir(function, id);
    let spawned = runner::spawn(&Launch {
        manifest: &function.manifest,
        bundle_dir: &function.bundle_dir,
        work_dir: &dir,
        stub_dir: &stub_dir,
        instance: id,
        worker_address: &attached.worker_address,
        ticket: &attached.ticket,
        port: Some(port),
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            gateway.session_closed(attached.session, "the function's process did not start");
            let _ = std::fs::remove_dir_all(&dir);
            return Err(spawn_failed(e));
        }
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    if let Some(out) = child.stdout.take() {
        runner::capture(out, function.logs.clone(), id, "stdout", None);
    }
    if let Some(err) = child.stderr.take() {
        runner::capture(err, function.logs.clone(), id, "stderr", Some(tail.clone()));
    }
    let (exit_tx, exit_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = oneshot::channel();
    let instance = Arc::new(Instance {
        id,
        session: attached.session,
        port,
        pid: child.id(),
        stderr_tail: tail,
        exit: exit_rx,
        stop: Mutex::new(Some(stop_tx)),
    });
    function.instances_map().insert(id, instance.clone());
    tokio::spawn(monitor(
        gateway.clone(),
        function.clone(),
        id,
        attached.session,
        child,
        stop_rx,
        exit_tx,
        dir,
    ));
    tracing::info!(function = %function.record.name, instance = id, session = attached.session, port, "instance started");
    match wait_healthy(gateway, function, &instance, health_path).await {
        Ok(()) => Ok(instance),
        Err(e) => {
            instance.request_stop();
            Err(e)
        }
    }
}

/// Owns an instance's process until it exits or is told to stop, then cleans up: the slot,
/// the session, the working folder.
#[allow(clippy::too_many_arguments)]
async fn monitor(
    gateway: Arc<Gateway>,
    function: Arc<LiveFunction>,
    id: u64,
    session: u64,
    mut child: tokio::process::Child,
    stop: oneshot::Receiver<()>,
    exit: watch::Sender<Option<String>>,
    dir: std::path::PathBuf,
) {
    let how = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => runner::describe_exit(s),
            Err(e) => format!("lost ({e})"),
        },
        _ = stop => {
            runner::stop(&mut child).await;
            "stopped".to_owned()
        }
    };
    tracing::info!(function = %function.record.name, instance = id, "instance ended: {how}");
    function.logs.push(
        id,
        "stderr",
        format!("[gpufn] instance {id} ended: {how}").as_bytes(),
    );
    function.instances_map().remove(&id);
    function.dispatch().remove(id);
    function.changed.notify_waiters();
    gateway.session_closed(session, "the function's instance ended");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = exit.send(Some(how));
}

async fn wait_healthy(
    gateway: &Arc<Gateway>,
    function: &LiveFunction,
    instance: &Instance,
    health_path: &str,
) -> Result<(), ApiError> {
    let deadline = Instant::now() + function.manifest.limits.startup_timeout;
    let uri = format!("http://127.0.0.1:{}{health_path}", instance.port);
    loop {
        if let Some(how) = instance.exit.borrow().clone() {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "function_crashed",
                format!(
                    "an instance of {} ended during start-up ({how}): {}",
                    function.manifest.name,
                    last_line(&instance.stderr_tail())
                ),
            )
            .with_details(json!({"instance": instance.id, "exit": how, "stderr_tail": instance.stderr_tail()})));
        }
        let request = http::Request::get(&uri).body(Full::<Bytes>::default());
        if let Ok(request) = request {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                gateway.functions.http.request(request),
            )
            .await;
            if let Ok(Ok(response)) = answer
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "startup_timeout",
                format!(
                    "an instance of {} did not answer GET {health_path} with 200 within limits.startup_timeout ({}); stderr ends with: {}",
                    function.manifest.name,
                    crate::manifest::format_duration(function.manifest.limits.startup_timeout),
                    last_line(&instance.stderr_tail())
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Forwards the request to an `http` instance (prewarming its session first if the policy
/// says so) and answers what it answers.
async fn proxy(
    gateway: &Arc<Gateway>,
    function: &Arc<LiveFunction>,
    instance: &Arc<Instance>,
    request: InvokeRequest,
    timings: &mut Timings,
) -> Result<(Response<Full<Bytes>>, u64), ApiError> {
    // Swap-in overlaps the request: the prewarm runs while the request is on its way.
    let prewarm = (function.manifest.scaling.prewarm != Prewarm::Never).then(|| {
        let gateway = gateway.clone();
        let session = instance.session;
        tokio::spawn(async move { gateway.prewarm_session(session).await })
    });
    let started = Instant::now();
    let uri = format!("http://127.0.0.1:{}{}", instance.port, request.path);
    let mut builder = http::Request::builder().method(request.method).uri(&uri);
    if let Some(ct) = request.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    let forwarded = builder
        .body(Full::new(request.body))
        .map_err(|e| ApiError::bad_request(format!("cannot forward this request: {e}")))?;
    let timeout = function.manifest.limits.timeout;
    let answer = tokio::time::timeout(timeout, async {
        let response = gateway
            .functions
            .http
            .request(forwarded)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, runner::MAX_OUTPUT_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((parts, body.to_bytes()))
    })
    .await;
    timings.exec = started.elapsed();
    if let Some(prewarm) = prewarm
        && let Ok(Some(swap_in)) = prewarm.await
    {
        timings.swap_in = swap_in;
    }
    let name = &function.manifest.name;
    match answer {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!(
                "function {name} did not answer within limits.timeout ({}); stderr ends with: {}",
                crate::manifest::format_duration(timeout),
                last_line(&instance.stderr_tail())
            ),
        )
        .with_details(json!({"instance": instance.id, "stderr_tail": instance.stderr_tail()}))),
        Ok(Ok((parts, body))) => {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = parts.status;
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, ct.clone());
            }
            Ok((response, instance.id))
        }
        Ok(Err(e)) => {
            // Give the monitor a moment to see whether the process died.
            let exited = tokio::time::timeout(Duration::from_millis(500), instance.exited()).await;
            let tail = instance.stderr_tail();
            match exited {
                Ok(how) => Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "function_crashed",
                    format!(
                        "the instance of {name} ended while answering ({how}): {}",
                        last_line(&tail)
                    ),
                )
                .with_details(json!({"instance": instance.id, "exit": how, "stderr_tail": tail}))),
                Err(_) => Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "function_unreachable",
                    format!("the instance of {name} did not answer properly: {e}"),
                )
                .with_details(json!({"instance": instance.id, "stderr_tail": tail}))),
            }
        }
    }
}
