//! The disk tier: one data file and one manifest file per session in the worker's directory.
//!
//! Layout under the configured directory `base`:
//! - `base/<worker_id>.lock`: held (flock, exclusive) by the running worker instance.
//! - `base/<worker_id>/`: that instance's files: `<session>.data`, `<session>.manifest` and an
//!   `instance` file (pid, start time) for operators.
//!
//! Stale-file rule: sessions do not survive their worker process, so whoever acquires the lock
//! of a worker id owns everything in `base/<worker_id>/` and deletes it: it was written by a
//! previous instance that has died (a live one would still hold the lock, and `open` fails
//! instead). Directories of other worker ids sharing `base` are left alone.
//!
//! Data files are preallocated (`fallocate`), written with large sequential writes at chunk
//! offsets, fsynced before the swap-out is reported durable (which also surfaces write errors
//! of buffered I/O) and then dropped from the page cache, so swapped-out memory does not stay
//! resident twice. With `direct_io` files are opened
//! with O_DIRECT (page-aligned buffers, chunk-aligned offsets, the tail padded with zeros).
//!
//! Buffered writes stream: each chunk's writeback starts as soon as it is written, and a chunk
//! [`WRITE_BEHIND`] chunks back is waited for and dropped from the page cache, so the page
//! cache holds a few chunks of the file instead of all of it. Without this, a swap-out needs
//! as much fresh page-cache memory as the session holds, and where fresh memory is slow to get
//! (VMs whose freed memory goes back to the host, memory pressure) the writes crawl: 0.2 GB/s
//! instead of 1.6-2 GB/s for 1 GiB on the dev VM; the final fsync then has little left to do.
//!
//! Removing a session's files renames them into `trash/` and a background thread unlinks them:
//! unlinking a large file can take hundreds of milliseconds (e.g. on filesystems mounted with
//! `discard`), which must not delay a swap-in.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};

use crate::buffer::ChunkBuf;
use crate::error::{Result, SwapError};
use crate::layout::align_up;
use crate::manifest::Manifest;
use crate::types::SessionId;

pub struct DiskTier {
    dir: PathBuf,
    trash: PathBuf,
    trash_seq: AtomicU64,
    /// Files renamed into `trash/`, for the background thread to unlink.
    unlinker: Mutex<Sender<Unlink>>,
    direct_io: bool,
    /// Holding the open file holds the flock; it is released when the process exits.
    _lock: File,
}

impl DiskTier {
    /// Locks `base/<worker_id>.lock`, removes the stale files of a previous instance and
    /// prepares the directory. Returns the tier and the number of stale files removed.
    pub fn open(base: &Path, worker_id: &str, direct_io: bool) -> Result<(Self, usize)> {
        fs::create_dir_all(base).map_err(|e| SwapError::io("creating directory", base, e))?;
        let lock_path = base.join(format!("{worker_id}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SwapError::io("opening lock file", &lock_path, e))?;
        try_lock_exclusive(&lock).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                SwapError::WorkerDirInUse {
                    dir: base.to_path_buf(),
                    worker_id: worker_id.to_string(),
                    lock: lock_path.clone(),
                }
            } else {
                SwapError::io("locking", &lock_path, e)
            }
        })?;

        let dir = base.join(worker_id);
        let removed = remove_stale(&dir)?;
        fs::create_dir_all(&dir).map_err(|e| SwapError::io("creating directory", &dir, e))?;
        let instance = dir.join("instance");
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        fs::write(
            &instance,
            format!("pid={}\nstarted_unix={started}\n", std::process::id()),
        )
        .map_err(|e| SwapError::io("writing", &instance, e))?;

        let trash = dir.join("trash");
        fs::create_dir_all(&trash).map_err(|e| SwapError::io("creating directory", &trash, e))?;
        let (unlinker, requests) = channel::<Unlink>();
        std::thread::Builder::new()
            .name("gpufn-swap-unlink".into())
            .spawn(move || {
                // Ends when the tier is dropped; anything left is removed at the next open.
                for request in requests {
                    match request {
                        Unlink::File(path) => {
                            let _ = fs::remove_file(path);
                        }
                        Unlink::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| SwapError::Internal(format!("cannot start the unlink thread: {e}")))?;
        let tier = Self {
            dir,
            trash,
            trash_seq: AtomicU64::new(0),
            unlinker: Mutex::new(unlinker),
            direct_io,
            _lock: lock,
        };
        if direct_io {
            tier.probe_direct_io()?;
        }
        Ok((tier, removed))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_path(&self, session: SessionId) -> PathBuf {
        self.dir.join(format!("{session}.data"))
    }

    pub fn manifest_path(&self, session: SessionId) -> PathBuf {
        self.dir.join(format!("{session}.manifest"))
    }

    /// Disk space a session of `total` bytes occupies (the data file is padded for direct I/O).
    pub fn file_bytes(total: u64) -> u64 {
        align_up(total)
    }

    /// Creates the (preallocated) data file of a session.
    pub fn create(&self, session: SessionId, total: u64) -> Result<DiskWriter> {
        let path = self.data_path(session);
        let file = self
            .options()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| SwapError::io("creating swap file", &path, e))?;
        preallocate(&file, Self::file_bytes(total))
            .map_err(|e| SwapError::io("preallocating swap file", &path, e))?;
        Ok(DiskWriter {
            file,
            path,
            direct_io: self.direct_io,
        })
    }

    /// Opens the data file of a session for reading.
    pub fn open_reader(&self, session: SessionId) -> std::io::Result<DiskReader> {
        let path = self.data_path(session);
        let file = self.options().read(true).open(&path)?;
        if !self.direct_io {
            advise_sequential(&file);
        }
        Ok(DiskReader {
            file,
            path,
            direct_io: self.direct_io,
        })
    }

    /// Writes the manifest of a session, after its data file is durable. It is not fsynced
    /// itself (nor is the directory): swap files never outlive the worker process (the next
    /// start deletes them), so only the data needs to be on the disk before the device memory
    /// goes, and the manifest is read back from the page cache at worst.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = self.manifest_path(manifest.session);
        fs::write(&path, manifest.encode()).map_err(|e| SwapError::io("writing", &path, e))
    }

    pub fn read_manifest(&self, session: SessionId) -> std::io::Result<Vec<u8>> {
        fs::read(self.manifest_path(session))
    }

    /// Removes a session's files (missing files are fine): they are renamed out of the way at
    /// once and unlinked in the background.
    pub fn remove(&self, session: SessionId) -> Result<()> {
        for path in [self.manifest_path(session), self.data_path(session)] {
            let seq = self.trash_seq.fetch_add(1, Ordering::Relaxed);
            let doomed = self.trash.join(seq.to_string());
            match fs::rename(&path, &doomed) {
                Ok(()) => {
                    if self.send(Unlink::File(doomed.clone())).is_err() {
                        let _ = fs::remove_file(&doomed);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SwapError::io("removing", &path, e)),
            }
        }
        Ok(())
    }

    /// Waits until the files removed so far are unlinked.
    pub fn wait_for_cleanup(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.send(Unlink::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn send(&self, request: Unlink) -> std::result::Result<(), ()> {
        let unlinker = self.unlinker.lock().unwrap_or_else(|e| e.into_inner());
        unlinker.send(request).map_err(|_| ())
    }

    fn options(&self) -> OpenOptions {
        let mut options = OpenOptions::new();
        if self.direct_io {
            options.custom_flags(libc::O_DIRECT);
        }
        options
    }

    fn probe_direct_io(&self) -> Result<()> {
        let probe = self.dir.join("direct-io-probe");
        let result = self
            .options()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&probe)
            .and_then(|file| {
                let mut buf = ChunkBuf::with_capacity(4096)?;
                buf.set_len(4096);
                file.write_all_at(buf.data(), 0)
            });
        let _ = fs::remove_file(&probe);
        result.map_err(|e| {
            SwapError::Config(format!(
                "direct I/O (O_DIRECT) does not work in {}: {e}; set direct_io to false or use a \
                 directory on a filesystem that supports it (ext4, xfs; not tmpfs)",
                self.dir.display()
            ))
        })
    }
}

/// Requests to the background unlink thread.
enum Unlink {
    File(PathBuf),
    /// Answered once every earlier request is done.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Buffered writes: chunks written but not yet waited for and dropped from the page cache.
const WRITE_BEHIND: u32 = 4;

/// An open data file being written.
pub struct DiskWriter {
    file: File,
    path: PathBuf,
    direct_io: bool,
}

impl DiskWriter {
    /// Writes chunk `index` at its offset (padded with zeros to the alignment). Chunks are
    /// written in index order.
    pub fn write_chunk(&self, index: u32, chunk_size: usize, buf: &mut ChunkBuf) -> Result<()> {
        let chunk = chunk_size as u64;
        let offset = u64::from(index) * chunk;
        self.file
            .write_all_at(buf.padded(), offset)
            .map_err(|e| SwapError::io("writing swap file", &self.path, e))?;
        if !self.direct_io {
            start_writeback(&self.file, offset, chunk);
            if let Some(behind) = index.checked_sub(WRITE_BEHIND) {
                let offset = u64::from(behind) * chunk;
                finish_writeback(&self.file, offset, chunk);
                drop_pages(&self.file, offset, chunk);
            }
        }
        Ok(())
    }

    /// Makes the data durable and drops it from the page cache.
    pub fn finish(self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| SwapError::io("syncing swap file", &self.path, e))?;
        drop_pages(&self.file, 0, 0);
        Ok(())
    }
}

/// An open data file being read.
pub struct DiskReader {
    file: File,
    path: PathBuf,
    direct_io: bool,
}

impl DiskReader {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads chunk `index` of `len` bytes into `buf`. A file too short for it reports
    /// `UnexpectedEof`.
    pub fn read_chunk(
        &self,
        index: u32,
        chunk_size: usize,
        len: usize,
        buf: &mut ChunkBuf,
    ) -> std::io::Result<()> {
        let offset = u64::from(index) * chunk_size as u64;
        let padded = align_up(len as u64) as usize;
        self.file
            .read_exact_at(&mut buf.as_mut_slice()[..padded], offset)?;
        if !self.direct_io {
            // The chunk is in `buf` now; its pages are reused for the next read (see the
            // module docs on fresh page-cache memory).
            drop_pages(&self.file, offset, padded as u64);
        }
        buf.set_len(len);
        Ok(())
    }
}

/// Deletes `dir` and everything in it, returning how many files there were.
fn remove_stale(dir: &Path) -> Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(SwapError::io("listing", dir, e)),
    };
    let count = entries.count();
    fs::remove_dir_all(dir).map_err(|e| SwapError::io("removing stale swap files in", dir, e))?;
    Ok(count)
}

fn try_lock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a valid, open file descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reserves `len` bytes of disk for the file, so large sequential writes do not fragment or
/// run out of space half-way. Falls back to `set_len` where `fallocate` is not supported.
fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: fallocate on a valid, open file descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        file.set_len(len)
    } else {
        Err(err)
    }
}

/// Drops `len` bytes (0: to the end) of a file's clean pages from the page cache; only
/// advice, errors ignored.
fn drop_pages(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise on a valid, open file descriptor owned by `file`; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED);
    }
}

/// Doubles readahead for a file read front to back; only advice.
fn advise_sequential(file: &File) {
    // SAFETY: posix_fadvise on a valid, open file descriptor owned by `file`; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Starts writeback of a written range without waiting for it. Only a hint: errors are
/// ignored here because the fsync in [`DiskWriter::finish`] reports any write error.
fn start_writeback(file: &File, offset: u64, len: u64) {
    sync_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE);
}

/// Waits until a range is written back, so its pages are clean and can be dropped (errors:
/// see [`start_writeback`]).
fn finish_writeback(file: &File, offset: u64, len: u64) {
    sync_range(
        file,
        offset,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    );
}

fn sync_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: sync_file_range on a valid, open file descriptor owned by `file`; no memory is
    // passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}
