//! Functions: deployed programs invoked over HTTP, run as processes with the stub injected.
//!
//! - [`registry`]: the deploy request, the bundle on disk, the durable record (SQLite);
//! - [`admission`]: which instance serves a request, queueing and refusal (pure);
//! - [`runner`]: starting, capturing and stopping instance processes;
//! - [`invoke`]: one invocation end to end (queue, cold start, prewarm, exec or proxy);
//! - [`api`]: the `/v1/functions` routes; [`logs`]: the per-function log buffer;
//! - [`client`]: a client for the routes (the CLI and benchmarks use it).
//!
//! [`Functions`] owns the live state: for every function in use, its manifest, its
//! instances and its queue ([`LiveFunction`]). The store is the truth for what is deployed;
//! live state is built from it on first use, so deployed functions survive a restart.

pub mod admission;
pub mod api;
pub mod client;
pub mod invoke;
pub mod logs;
pub mod registry;
pub mod runner;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{Notify, oneshot, watch};

use crate::auth::{Principal, Scope};
use crate::core::{Gateway, unix_ms};
use crate::error::ApiError;
use crate::manifest::{FunctionManifest, Prewarm, Protocol};
use admission::{Capacity, Dispatch};
use logs::{LogBuffer, Tail};
use registry::FunctionRecord;

/// How the gateway runs functions.
#[derive(Clone, Debug, Default)]
pub struct FunctionsConfig {
    /// The folder holding the stub as `libcuda.so.1`. Without one, invokes are refused with
    /// a message saying how to provide it (`gpufn up` and `gpufn gateway` set it).
    pub stub_dir: Option<PathBuf>,
}

/// Largest request body on `/v1/functions` routes (deploy bundles and invoke inputs).
pub const MAX_BODY_BYTES: usize = 256 << 20;

/// A function's identity: names are unique per tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FunctionKey {
    pub tenant: String,
    pub name: String,
}

/// The functions runtime of a gateway.
pub struct Functions {
    root: PathBuf,
    stub_dir: Option<PathBuf>,
    live: Mutex<HashMap<FunctionKey, Arc<LiveFunction>>>,
    next_instance: AtomicU64,
    pub(crate) http: Client<HttpConnector, Full<Bytes>>,
}

/// A function in use: its manifest, instances, queue and logs.
pub struct LiveFunction {
    pub record: FunctionRecord,
    pub manifest: FunctionManifest,
    pub bundle_dir: PathBuf,
    dispatch: Mutex<Dispatch>,
    /// Signalled whenever a slot frees up, an instance becomes ready or goes away.
    changed: Notify,
    instances: Mutex<HashMap<u64, Arc<Instance>>>,
    pub logs: Arc<LogBuffer>,
}

/// A running long-lived (`http`) instance.
pub struct Instance {
    pub id: u64,
    pub session: u64,
    pub port: u16,
    pub pid: Option<u32>,
    pub stderr_tail: Arc<Mutex<Tail>>,
    /// Set once the process is gone: how it ended.
    pub exit: watch::Receiver<Option<String>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Instance {
    /// Asks the instance to stop; the monitor task ends it and cleans up.
    pub fn request_stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .text()
    }

    /// Waits until the process is gone.
    pub async fn exited(&self) -> String {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(e) => e.clone().unwrap_or_default(),
            Err(_) => "ended".to_owned(),
        }
    }
}

/// The session principal instances attach as: the function's tenant.
fn tenant_principal(tenant: &str) -> Principal {
    Principal {
        tenant: tenant.to_owned(),
        scopes: vec![Scope::Session],
        expires_at: u64::MAX,
    }
}

impl Functions {
    pub fn new(data_dir: &Path, config: &FunctionsConfig) -> Functions {
        Functions {
            root: data_dir.join("functions"),
            stub_dir: config.stub_dir.clone(),
            live: Mutex::new(HashMap::new()),
            next_instance: AtomicU64::new(1),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }

    fn live_map(&self) -> MutexGuard<'_, HashMap<FunctionKey, Arc<LiveFunction>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_instance_id(&self) -> u64 {
        self.next_instance.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stub_dir(&self) -> Result<&Path, ApiError> {
        self.stub_dir.as_deref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_stub",
                "this gateway was started without the gpufn stub, so it cannot run functions; start it with `gpufn gateway` or `gpufn up` next to a built libgpufn_stub.so, or set GPUFN_STUB_DIR",
            )
        })
    }

    /// The live state of `tenant/name`, built from the store on first use.
    pub fn get(&self, gateway: &Gateway, key: &FunctionKey) -> Result<Arc<LiveFunction>, ApiError> {
        let mut live = self.live_map();
        if let Some(f) = live.get(key) {
            return Ok(f.clone());
        }
        let record = gateway
            .store
            .function(&key.tenant, &key.name)?
            .ok_or_else(|| not_found(key))?;
        let function = Arc::new(self.build(record)?);
        live.insert(key.clone(), function.clone());
        Ok(function)
    }

    fn build(&self, record: FunctionRecord) -> Result<LiveFunction, ApiError> {
        let manifest = FunctionManifest::from_toml_str(&record.manifest).map_err(|e| {
            ApiError::internal(format!(
                "the stored manifest of {} no longer validates ({e}); deploy it again",
                record.name
            ))
        })?;
        let bundle_dir =
            registry::bundle_dir(&self.root, &record.tenant, &record.name, record.version);
        let capacity = Capacity {
            max_instances: manifest.scaling.max_instances,
            concurrency: manifest.scaling.concurrency,
            queue: manifest.limits.queue,
            persistent: matches!(manifest.protocol, Protocol::Http { .. }),
        };
        Ok(LiveFunction {
            record,
            manifest,
            bundle_dir,
            dispatch: Mutex::new(Dispatch::new(capacity)),
            changed: Notify::new(),
            instances: Mutex::new(HashMap::new()),
            logs: Arc::new(LogBuffer::default()),
        })
    }

    /// Deploys (or redeploys) a function for `tenant` from a `POST /v1/functions` body. A
    /// previous version drains in the background: its running requests finish.
    pub fn deploy(
        &self,
        gateway: &Arc<Gateway>,
        tenant: &str,
        body: &[u8],
    ) -> Result<Arc<LiveFunction>, ApiError> {
        let deploy = registry::check_deploy(body)?;
        let name = deploy.manifest.name.clone();
        let key = FunctionKey {
            tenant: tenant.to_owned(),
            name: name.clone(),
        };
        let next_version = gateway
            .store
            .function(tenant, &name)?
            .map_or(1, |r| r.version + 1);
        let dir = registry::bundle_dir(&self.root, tenant, &name, next_version);
        registry::write_bundle(&dir, deploy.artifact.as_ref()).map_err(|e| {
            ApiError::internal(format!(
                "cannot write the function's files under {}: {e}; check the gateway's data directory",
                dir.display()
            ))
        })?;
        let record = gateway.store.put_function(
            tenant,
            &name,
            &deploy.manifest_text,
            deploy.artifact.as_ref().map(|(_, _, hash)| hash.as_str()),
            unix_ms(),
        )?;
        let function = Arc::new(self.build(record)?);
        let previous = self.live_map().insert(key, function.clone());
        if let Some(old) = previous {
            tokio::spawn(async move {
                drain(&old).await;
                let _ = std::fs::remove_dir_all(&old.bundle_dir);
            });
        }
        if function.manifest.scaling.prewarm == Prewarm::OnDeploy {
            self.start_spares(gateway, &function, 1);
        }
        Ok(function)
    }

    /// Deletes a function: new requests are refused at once, running ones finish (up to the
    /// function's timeout), then its instances stop and its files are removed. Returns the
    /// requests that were drained.
    pub async fn delete(&self, gateway: &Arc<Gateway>, key: &FunctionKey) -> Result<u32, ApiError> {
        let function = self.get(gateway, key)?;
        if !gateway.store.delete_function(&key.tenant, &key.name)? {
            return Err(not_found(key));
        }
        self.live_map().remove(key);
        let drained = drain(&function).await;
        let _ = std::fs::remove_dir_all(registry::function_dir(&self.root, &key.tenant, &key.name));
        Ok(drained)
    }

    /// Deployed functions of `tenant` (all with `None`) with their live instance counts.
    pub fn list(
        &self,
        gateway: &Gateway,
        tenant: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, ApiError> {
        let records = gateway.store.functions(tenant)?;
        let live = self.live_map();
        Ok(records
            .into_iter()
            .map(|r| {
                let key = FunctionKey {
                    tenant: r.tenant.clone(),
                    name: r.name.clone(),
                };
                match live.get(&key) {
                    Some(f) => f.describe(),
                    None => summary(&r, None),
                }
            })
            .collect())
    }

    /// Once a second: stops instances idle past `instance_idle_timeout` (keeping
    /// `min_instances`) and starts instances up to `min_instances`.
    pub fn tick(&self, gateway: &Arc<Gateway>) {
        let functions: Vec<Arc<LiveFunction>> = self.live_map().values().cloned().collect();
        let now = Instant::now();
        for f in functions {
            if !matches!(f.manifest.protocol, Protocol::Http { .. }) {
                continue;
            }
            let scaling = f.manifest.scaling;
            let (stop, missing) = {
                let mut d = f.dispatch();
                let stop =
                    d.idle_to_stop(scaling.instance_idle_timeout, scaling.min_instances, now);
                (stop, d.missing_instances(scaling.min_instances))
            };
            for id in stop {
                if let Some(instance) = f.instance(id) {
                    tracing::info!(function = %f.record.name, instance = id, "instance idle: stopping it (scale to zero)");
                    instance.request_stop();
                }
            }
            // The pool ended an idle instance's session (its own scale-to-zero, or its
            // worker was lost): the process can no longer use the GPU, so it stops now and
            // the next request starts a fresh one instead of failing on it.
            let instances: Vec<Arc<Instance>> = f.instances_map().values().cloned().collect();
            for instance in instances {
                if gateway.session_state(instance.session).is_none()
                    && f.dispatch().stop_if_idle(instance.id)
                {
                    tracing::info!(function = %f.record.name, instance = instance.id, "instance's session ended: stopping it");
                    instance.request_stop();
                }
            }
            if missing > 0 {
                self.start_spares(gateway, &f, missing);
            }
        }
    }

    /// Starts `count` instances ahead of need (prewarm on deploy, `min_instances`).
    fn start_spares(&self, gateway: &Arc<Gateway>, function: &Arc<LiveFunction>, count: u32) {
        if !matches!(function.manifest.protocol, Protocol::Http { .. }) {
            return;
        }
        for _ in 0..count {
            let id = self.next_instance_id();
            function.dispatch().start_spare(id, Instant::now());
            let gateway = gateway.clone();
            let function = function.clone();
            tokio::spawn(async move {
                if let Err(e) = invoke::start_instance(&gateway, &function, id).await {
                    tracing::warn!(function = %function.record.name, "starting a spare instance failed: {}", e.message);
                }
            });
        }
    }

    /// Stops every instance (the gateway is shutting down); waits for them to exit.
    pub async fn shutdown(&self) {
        let functions: Vec<Arc<LiveFunction>> = self.live_map().drain().map(|(_, f)| f).collect();
        for f in functions {
            f.dispatch().drain();
            f.changed.notify_waiters();
            f.stop_all().await;
        }
    }
}

/// Refuses new requests, waits for running ones (bounded by the function's timeout plus a
/// grace period), then stops every instance. Returns how many requests were running.
async fn drain(function: &LiveFunction) -> u32 {
    let running = {
        let mut d = function.dispatch();
        d.drain();
        d.in_flight()
    };
    function.changed.notify_waiters();
    let deadline = Instant::now() + function.manifest.limits.timeout + Duration::from_secs(5);
    loop {
        let notified = function.changed.notified();
        if function.dispatch().in_flight() == 0 || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
    function.stop_all().await;
    running
}

fn not_found(key: &FunctionKey) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "function_not_found",
        format!(
            "tenant {} has no function {}; list yours with `gpufn functions` (GET /v1/functions)",
            key.tenant, key.name
        ),
    )
}

fn summary(r: &FunctionRecord, live: Option<serde_json::Value>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": r.name,
        "tenant": r.tenant,
        "version": r.version,
        "deployed_at_ms": r.deployed_at_ms,
        "artifact_sha256": r.artifact_sha256,
        "instances": [],
        "in_flight": 0,
        "queued": 0,
    });
    if let Some(live) = live {
        for (k, value) in live.as_object().into_iter().flatten() {
            v[k] = value.clone();
        }
    }
    v
}

impl LiveFunction {
    pub(crate) fn dispatch(&self) -> MutexGuard<'_, Dispatch> {
        self.dispatch.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn instances_map(&self) -> MutexGuard<'_, HashMap<u64, Arc<Instance>>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance(&self, id: u64) -> Option<Arc<Instance>> {
        self.instances_map().get(&id).cloned()
    }

    /// The function as the API shows it.
    pub fn describe(&self) -> serde_json::Value {
        let d = self.dispatch();
        let instances = self.instances_map();
        let list: Vec<serde_json::Value> = d
            .instances()
            .iter()
            .map(|(id, slot)| {
                let instance = instances.get(id);
                serde_json::json!({
                    "id": id,
                    "state": format!("{:?}", slot.state).to_lowercase(),
                    "in_flight": slot.in_flight,
                    "session": instance.map(|i| i.session),
                    "pid": instance.and_then(|i| i.pid),
                })
            })
            .collect();
        let m = &self.manifest;
        summary(
            &self.record,
            Some(serde_json::json!({
                "protocol": match m.protocol { Protocol::Exec => "exec", Protocol::Http { .. } => "http" },
                "instances": list,
                "in_flight": d.in_flight(),
                "queued": d.waiting(),
                "manifest": self.record.manifest,
                "max_instances": m.scaling.max_instances,
                "concurrency": m.scaling.concurrency,
                "queue": m.limits.queue,
                "timeout_ms": m.limits.timeout.as_millis() as u64,
            })),
        )
    }

    /// Stops every running instance and waits for each to exit.
    async fn stop_all(&self) {
        let instances: Vec<Arc<Instance>> = self.instances_map().values().cloned().collect();
        for i in &instances {
            i.request_stop();
        }
        for i in instances {
            let _ = tokio::time::timeout(runner::STOP_GRACE * 2, i.exited()).await;
        }
    }
}
