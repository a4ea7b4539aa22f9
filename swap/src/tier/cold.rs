//! The cold tier: chunk objects in an `object_store` (local filesystem, S3-compatible,
//! in-memory), for sessions idle a long time.
//!
//! Objects of a session live under `<prefix>/<worker_id>/<session>-<generation>/`: `chunk-000000`,
//! `chunk-000001`, ... (exact chunk bytes, no padding) and `manifest`. One object per chunk
//! keeps uploads and downloads streaming and makes a lost chunk a precise "missing" error.
//! Like the disk tier, everything under `<prefix>/<worker_id>/` belongs to the running
//! instance of that worker and is deleted when it opens (see `tier::disk` for the rule).
//!
//! `object_store` is async; the tier owns a small tokio runtime and blocks on it, so the store's
//! API stays synchronous. Call the store from blocking threads (e.g. `spawn_blocking`), never
//! from inside an async task.

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::{Result, SwapError};
use crate::manifest::Manifest;

/// How many chunk uploads or downloads are in flight at once.
pub const CONCURRENCY: usize = 4;

pub struct ColdTier {
    store: Arc<dyn ObjectStore>,
    root: Path,
    runtime: Option<Runtime>,
    cleanups: Mutex<Vec<JoinHandle<Result<usize>>>>,
}

impl ColdTier {
    /// Opens the tier under `<prefix>/<worker_id>/` and deletes what a previous instance of the
    /// worker left there. Returns the tier and the number of stale objects removed.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        worker_id: &str,
    ) -> Result<(Self, usize)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gpufn-swap-cold")
            .enable_all()
            .build()
            .map_err(|e| SwapError::Internal(format!("cannot start the cold-tier runtime: {e}")))?;
        let root = Path::from(prefix).clone().join(worker_id);
        let tier = Self {
            store,
            root,
            runtime: Some(runtime),
            cleanups: Mutex::new(Vec::new()),
        };
        let removed = tier.block_on(delete_under(Arc::clone(&tier.store), tier.root.clone()))?;
        Ok((tier, removed))
    }

    /// The directory of one stored copy of a session.
    pub fn session_dir(&self, manifest: &Manifest) -> Path {
        self.root
            .clone()
            .join(format!("{}-{}", manifest.session, manifest.generation))
    }

    pub fn chunk_path(&self, manifest: &Manifest, index: u32) -> Path {
        self.session_dir(manifest).join(format!("chunk-{index:06}"))
    }

    pub fn manifest_path(&self, manifest: &Manifest) -> Path {
        self.session_dir(manifest).join("manifest")
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Runs a future on the tier's runtime, blocking the calling thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime().block_on(future)
    }

    /// Uploads chunks produced by `next_chunk` (called in index order, on the calling thread)
    /// with up to [`CONCURRENCY`] uploads in flight, then the manifest.
    pub fn upload(
        &self,
        manifest: &Manifest,
        count: usize,
        mut next_chunk: impl FnMut(usize) -> Result<Vec<u8>>,
    ) -> Result<()> {
        self.block_on(async {
            let mut in_flight = tokio::task::JoinSet::new();
            for index in 0..count {
                let data = next_chunk(index)?;
                let path = self.chunk_path(manifest, index as u32);
                let store = Arc::clone(&self.store);
                in_flight.spawn(async move {
                    let result = store.put(&path, PutPayload::from(data)).await;
                    result.map(|_| ()).map_err(|e| cold_error("put", &path, e))
                });
                if in_flight.len() >= CONCURRENCY {
                    join_next(&mut in_flight).await?;
                }
            }
            while !in_flight.is_empty() {
                join_next(&mut in_flight).await?;
            }
            let path = self.manifest_path(manifest);
            self.store
                .put(&path, PutPayload::from(manifest.encode()))
                .await
                .map_err(|e| cold_error("put", &path, e))?;
            Ok(())
        })
    }

    /// Starts downloading chunks `0..count` in order, up to [`CONCURRENCY`] ahead; returns a
    /// receiver yielding each chunk's result in index order.
    pub fn download(
        &self,
        manifest: &Manifest,
        count: usize,
    ) -> tokio::sync::mpsc::Receiver<(u32, object_store::Result<bytes::Bytes>)> {
        let (tx, rx) = tokio::sync::mpsc::channel(CONCURRENCY);
        let store = Arc::clone(&self.store);
        let paths: Vec<Path> = (0..count)
            .map(|i| self.chunk_path(manifest, i as u32))
            .collect();
        self.runtime().spawn(async move {
            let mut chunks = futures::stream::iter(paths.into_iter().enumerate())
                .map(|(index, path)| {
                    let store = Arc::clone(&store);
                    async move {
                        let result = match store.get(&path).await {
                            Ok(got) => got.bytes().await,
                            Err(e) => Err(e),
                        };
                        (index as u32, result)
                    }
                })
                .buffered(CONCURRENCY);
            while let Some(item) = chunks.next().await {
                if tx.send(item).await.is_err() {
                    break; // The reader stopped (e.g. after a corrupted chunk).
                }
            }
        });
        rx
    }

    pub fn read_manifest(&self, manifest: &Manifest) -> object_store::Result<bytes::Bytes> {
        let path = self.manifest_path(manifest);
        self.block_on(async { self.store.get(&path).await?.bytes().await })
    }

    /// Deletes the objects of one stored copy of a session.
    pub fn remove(&self, manifest: &Manifest) -> Result<usize> {
        self.block_on(delete_under(
            Arc::clone(&self.store),
            self.session_dir(manifest),
        ))
    }

    /// Deletes the objects of one stored copy of a session in the background (a swap-in should
    /// not wait for it); [`Self::wait_for_cleanup`] waits for such deletions.
    pub fn remove_in_background(&self, manifest: &Manifest) {
        let task = self.runtime().spawn(delete_under(
            Arc::clone(&self.store),
            self.session_dir(manifest),
        ));
        self.cleanups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Waits for background deletions; a failed one is logged (the next start removes leftovers).
    pub fn wait_for_cleanup(&self) {
        let tasks = std::mem::take(&mut *self.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
        self.block_on(async {
            for task in tasks {
                match task.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cold-tier cleanup failed"),
                    Err(e) => tracing::warn!(error = %e, "cold-tier cleanup task failed"),
                }
            }
        });
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("runtime lives until drop")
    }
}

impl Drop for ColdTier {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; don't wait for it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Deletes every object under `prefix`, returning how many there were.
async fn delete_under(store: Arc<dyn ObjectStore>, prefix: Path) -> Result<usize> {
    let locations: Vec<Path> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| cold_error("list", &prefix, e))?;
    for location in &locations {
        match store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(cold_error("delete", location, e)),
        }
    }
    Ok(locations.len())
}

pub fn cold_error(op: &'static str, location: &Path, source: object_store::Error) -> SwapError {
    SwapError::Cold {
        op,
        location: location.to_string(),
        source,
    }
}

async fn join_next(set: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    match set.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(SwapError::Internal(format!(
            "cold-tier upload task failed: {e}"
        ))),
        None => Ok(()),
    }
}

/// Builds a cold-tier object store from a URL: `file:///path`, `memory://`, and with the `s3`
/// feature `s3://bucket/prefix` (configured from `AWS_*` environment variables). Returns the
/// store and the path prefix inside it.
pub fn store_from_url(url: &str) -> Result<(Arc<dyn ObjectStore>, String)> {
    let parsed = url::Url::parse(url).map_err(|e| {
        SwapError::Config(format!(
            "cold tier URL {url:?} is invalid ({e}); use file:///dir, memory:// or s3://bucket/prefix"
        ))
    })?;
    let options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let (store, path) = object_store::parse_url_opts(&parsed, options).map_err(|e| {
        SwapError::Config(format!(
            "cold tier URL {url:?} is not usable ({e}); supported: file:///dir, memory://{}",
            if cfg!(feature = "s3") {
                ", s3://bucket/prefix"
            } else {
                " (s3:// needs the `s3` cargo feature)"
            }
        ))
    })?;
    Ok((Arc::from(store), path.to_string()))
}
