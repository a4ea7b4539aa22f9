//! The data movements between the device and the tiers, and down the tiers.

use std::io::ErrorKind;

use super::SwapStore;
use crate::buffer::ChunkBuf;
use crate::checksum::chunk_checksum;
use crate::device::DeviceIo;
use crate::error::{Result, SwapError};
use crate::layout::ChunkPlan;
use crate::manifest::Manifest;
use crate::pipeline;
use crate::tier::disk::DiskReader;
use crate::transfer::{drain_to_device, fill_from_device, missing, verify};
use crate::types::Tier;

/// Device → host buffers. With host checksums a helper thread checksums chunk N while the
/// device copies N+1; without, the manifest's checksums stay empty until demotion.
pub fn device_to_host(
    store: &SwapStore,
    skeleton: &Manifest,
    chunks: &[ChunkPlan],
    device: &mut dyn DeviceIo,
) -> Result<(Manifest, Vec<ChunkBuf>)> {
    let mut kept = Vec::with_capacity(chunks.len());
    let mut checksums = Vec::with_capacity(chunks.len());
    let copied = pipeline::caller_produces(
        chunks.len(),
        store.depth,
        |i| read_device_chunk(store, skeleton, &chunks[i], device),
        |i, buf: ChunkBuf| {
            if store.host_checksums {
                checksums.push(chunk_checksum(i as u32, buf.data()));
            }
            kept.push(buf);
            Ok(())
        },
    );
    if let Err(e) = copied {
        kept.into_iter().for_each(|buf| store.pool.give(buf));
        return Err(e);
    }
    let manifest = Manifest {
        checksums,
        ..skeleton.clone()
    };
    Ok((manifest, kept))
}

/// Device → disk file. The calling thread copies and checksums chunk N+1 while a helper thread
/// writes chunk N, so the disk does not wait for the CPU. Returns after the file and the manifest
/// are fsynced.
pub fn device_to_disk(
    store: &SwapStore,
    skeleton: &Manifest,
    chunks: &[ChunkPlan],
    device: &mut dyn DeviceIo,
) -> Result<Manifest> {
    let disk = store.disk()?;
    let session = skeleton.session;
    let mut checksums = Vec::with_capacity(chunks.len());
    let written = (|| {
        // The helper creates (and preallocates) the file while the device copies chunk 0.
        let mut writer = None;
        let create = || disk.create(session, skeleton.total_bytes());
        pipeline::caller_produces(
            chunks.len(),
            store.depth,
            |i| {
                let buf = read_device_chunk(store, skeleton, &chunks[i], device)?;
                checksums.push(chunk_checksum(i as u32, buf.data()));
                Ok(buf)
            },
            |i, mut buf: ChunkBuf| {
                if writer.is_none() {
                    writer = Some(create()?);
                }
                let file = writer.as_ref().expect("created above");
                let written = file.write_chunk(i as u32, store.chunk_size, &mut buf);
                store.pool.give(buf);
                written
            },
        )?;
        let writer = match writer {
            Some(writer) => writer,
            None => create()?, // a session without data still gets its (empty) file
        };
        writer.finish()?;
        let manifest = Manifest {
            checksums: std::mem::take(&mut checksums),
            ..skeleton.clone()
        };
        disk.write_manifest(&manifest)?;
        Ok(manifest)
    })();
    if written.is_err() {
        let _ = disk.remove(session);
    }
    written
}

/// Host buffers → device; a helper thread verifies chunk N+1 while chunk N is copied.
pub fn host_to_device(
    store: &SwapStore,
    manifest: &Manifest,
    host_chunks: &[ChunkBuf],
    device: &mut dyn DeviceIo,
) -> Result<()> {
    let chunks = manifest.chunks();
    if host_chunks.len() != chunks.len() {
        return Err(SwapError::Internal(format!(
            "session {} has {} host chunks, expected {}",
            manifest.session,
            host_chunks.len(),
            chunks.len()
        )));
    }
    let checksummed = !manifest.checksums.is_empty();
    pipeline::helper_produces(
        chunks.len(),
        store.depth,
        |i| {
            if checksummed {
                verify(manifest, Tier::Host, &chunks[i], host_chunks[i].data())?;
            }
            Ok(i)
        },
        |i, _| {
            drain_to_device(
                device,
                manifest.session,
                &manifest.allocations,
                &chunks[i],
                host_chunks[i].data(),
            )
        },
    )
}

/// Disk file → device. A helper thread reads chunk N+1 while the calling thread verifies chunk
/// N and, only if it is intact, copies it to the device.
pub fn disk_to_device(
    store: &SwapStore,
    manifest: &Manifest,
    device: &mut dyn DeviceIo,
) -> Result<()> {
    check_disk_manifest(store, manifest)?;
    let chunks = manifest.chunks();
    let reader = open_disk_reader(store, manifest, &chunks)?;
    pipeline::helper_produces(
        chunks.len(),
        store.depth,
        |i| read_disk_chunk(store, manifest, &reader, &chunks[i]),
        |i, buf: ChunkBuf| {
            let written = verify(manifest, Tier::Disk, &chunks[i], buf.data()).and_then(|()| {
                drain_to_device(
                    device,
                    manifest.session,
                    &manifest.allocations,
                    &chunks[i],
                    buf.data(),
                )
            });
            store.pool.give(buf);
            written
        },
    )
}

/// Cold objects → device; downloads run ahead while chunks are verified and copied.
pub fn cold_to_device(
    store: &SwapStore,
    manifest: &Manifest,
    device: &mut dyn DeviceIo,
) -> Result<()> {
    let cold = store.cold()?;
    let stored = match cold.read_manifest(manifest) {
        Ok(bytes) => Manifest::decode(&bytes).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    check_same_manifest(manifest, Tier::Cold, stored)?;
    let chunks = manifest.chunks();
    let mut downloads = cold.download(manifest, chunks.len());
    pipeline::helper_produces(
        chunks.len(),
        store.depth,
        |i| {
            let chunk = &chunks[i];
            let bytes = match downloads.blocking_recv() {
                Some((_, Ok(bytes))) => bytes,
                Some((_, Err(object_store::Error::NotFound { path, .. }))) => {
                    return Err(missing(
                        manifest,
                        Tier::Cold,
                        chunk,
                        format!("object {path} not found"),
                    ));
                }
                Some((_, Err(e))) => {
                    return Err(crate::tier::cold::cold_error(
                        "get",
                        &cold.chunk_path(manifest, chunk.index),
                        e,
                    ));
                }
                None => return Err(SwapError::Internal("cold download stopped early".into())),
            };
            verify(manifest, Tier::Cold, chunk, &bytes)?;
            let mut buf = store.pool.take(chunk.len).map_err(alloc_error)?;
            buf.as_mut_slice()[..chunk.len].copy_from_slice(&bytes);
            buf.set_len(chunk.len);
            Ok(buf)
        },
        |i, buf: ChunkBuf| {
            let written = drain_to_device(
                device,
                manifest.session,
                &manifest.allocations,
                &chunks[i],
                buf.data(),
            );
            store.pool.give(buf);
            written
        },
    )
}

/// Host buffers → disk file (demotion), checksumming chunks that are not yet. Returns the
/// complete manifest. On failure the partial file is removed and the session stays in the host
/// tier.
pub fn host_to_disk(
    store: &SwapStore,
    manifest: &Manifest,
    host_chunks: &mut [ChunkBuf],
) -> Result<Manifest> {
    let disk = store.disk()?;
    let mut manifest = manifest.clone();
    if manifest.checksums.is_empty() {
        manifest.checksums = host_chunks
            .iter()
            .enumerate()
            .map(|(i, buf)| chunk_checksum(i as u32, buf.data()))
            .collect();
    }
    let written = (|| {
        let writer = disk.create(manifest.session, manifest.total_bytes())?;
        for (i, buf) in host_chunks.iter_mut().enumerate() {
            writer.write_chunk(i as u32, store.chunk_size, buf)?;
        }
        writer.finish()?;
        disk.write_manifest(&manifest)
    })();
    if written.is_err() {
        let _ = disk.remove(manifest.session);
    }
    written.map(|()| manifest)
}

/// Disk file → cold objects (demotion), verifying each chunk on the way; the disk files are
/// deleted once the objects and the manifest are stored.
pub fn disk_to_cold(store: &SwapStore, manifest: &Manifest) -> Result<()> {
    let cold = store.cold()?;
    check_disk_manifest(store, manifest)?;
    let chunks = manifest.chunks();
    let reader = open_disk_reader(store, manifest, &chunks)?;
    let uploaded = cold.upload(manifest, chunks.len(), |i| {
        let buf = read_disk_chunk(store, manifest, &reader, &chunks[i])?;
        verify(manifest, Tier::Disk, &chunks[i], buf.data())?;
        let data = buf.data().to_vec();
        store.pool.give(buf);
        Ok(data)
    });
    if uploaded.is_err() {
        let _ = cold.remove(manifest);
    }
    uploaded?;
    store.disk()?.remove(manifest.session)
}

fn read_device_chunk(
    store: &SwapStore,
    skeleton: &Manifest,
    chunk: &ChunkPlan,
    device: &mut dyn DeviceIo,
) -> Result<ChunkBuf> {
    let mut buf = store.pool.take(chunk.len).map_err(alloc_error)?;
    fill_from_device(
        device,
        skeleton.session,
        &skeleton.allocations,
        chunk,
        &mut buf,
    )?;
    Ok(buf)
}

fn read_disk_chunk(
    store: &SwapStore,
    manifest: &Manifest,
    reader: &DiskReader,
    chunk: &ChunkPlan,
) -> Result<ChunkBuf> {
    let mut buf = store.pool.take(chunk.len).map_err(alloc_error)?;
    match reader.read_chunk(chunk.index, store.chunk_size, chunk.len, &mut buf) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            let detail = format!("{} ends before it", reader.path().display());
            return Err(missing(manifest, Tier::Disk, chunk, detail));
        }
        Err(e) => return Err(SwapError::io("reading swap file", reader.path(), e)),
    }
    Ok(buf)
}

fn open_disk_reader(
    store: &SwapStore,
    manifest: &Manifest,
    chunks: &[ChunkPlan],
) -> Result<DiskReader> {
    let disk = store.disk()?;
    disk.open_reader(manifest.session).map_err(|e| {
        let path = disk.data_path(manifest.session);
        match (e.kind(), chunks.first()) {
            (ErrorKind::NotFound, Some(first)) => missing(
                manifest,
                Tier::Disk,
                first,
                format!("swap file {} does not exist", path.display()),
            ),
            _ => SwapError::io("opening swap file", path, e),
        }
    })
}

/// The manifest next to the data must be intact and describe the same session and checksums.
fn check_disk_manifest(store: &SwapStore, manifest: &Manifest) -> Result<()> {
    let disk = store.disk()?;
    let stored = match disk.read_manifest(manifest.session) {
        Ok(bytes) => Manifest::decode(&bytes).map_err(|e| e.to_string()),
        Err(e) => Err(format!(
            "{}: {e}",
            disk.manifest_path(manifest.session).display()
        )),
    };
    check_same_manifest(manifest, Tier::Disk, stored)
}

fn check_same_manifest(
    expected: &Manifest,
    tier: Tier,
    stored: std::result::Result<Manifest, String>,
) -> Result<()> {
    let detail = match stored {
        Ok(stored) if stored == *expected => return Ok(()),
        Ok(_) => "it describes different data than this worker stored".to_string(),
        Err(e) => e,
    };
    Err(SwapError::ManifestInvalid {
        session: expected.session,
        tier,
        detail,
    })
}

fn alloc_error(e: std::io::Error) -> SwapError {
    SwapError::Internal(format!("cannot allocate a chunk buffer: {e}"))
}
