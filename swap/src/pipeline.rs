//! Two-stage pipelines: the device copy of one chunk overlaps the tier I/O of another.
//!
//! The device stage always runs on the calling thread (a device context is usually bound to
//! it); the tier stage runs on a scoped helper thread. A bounded channel of `depth` chunks joins
//! them, which also bounds the staging memory. When either stage fails the other stops at its
//! next chunk, and the first error is returned.

use std::sync::mpsc::sync_channel;
use std::thread;

use crate::error::{Result, SwapError};

/// Swap-out direction: `produce` (device → buffer) runs on the calling thread, `consume`
/// (buffer → tier) on a helper thread. Chunks are handed over in index order.
pub fn caller_produces<T: Send>(
    count: usize,
    depth: usize,
    mut produce: impl FnMut(usize) -> Result<T>,
    mut consume: impl FnMut(usize, T) -> Result<()> + Send,
) -> Result<()> {
    let (tx, rx) = sync_channel::<(usize, T)>(depth.max(1));
    thread::scope(|scope| {
        let helper = scope.spawn(move || -> Result<()> {
            for (index, buf) in rx {
                consume(index, buf)?;
            }
            Ok(())
        });
        let mut produced = Ok(());
        for index in 0..count {
            match produce(index) {
                Ok(buf) => {
                    if tx.send((index, buf)).is_err() {
                        break; // The consumer failed; its error is reported below.
                    }
                }
                Err(e) => {
                    produced = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let consumed = join(helper);
        produced.and(consumed)
    })
}

/// Swap-in direction: `produce` (tier → verified buffer) runs on a helper thread, `consume`
/// (buffer → device) on the calling thread.
pub fn helper_produces<T: Send>(
    count: usize,
    depth: usize,
    mut produce: impl FnMut(usize) -> Result<T> + Send,
    mut consume: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = sync_channel::<(usize, T)>(depth.max(1));
    thread::scope(|scope| {
        let helper = scope.spawn(move || -> Result<()> {
            for index in 0..count {
                let buf = produce(index)?;
                if tx.send((index, buf)).is_err() {
                    break; // The consumer failed; its error is reported by the caller.
                }
            }
            Ok(())
        });
        let mut consumed = Ok(());
        for (index, buf) in &rx {
            if let Err(e) = consume(index, buf) {
                consumed = Err(e);
                break;
            }
        }
        drop(rx);
        let produced = join(helper);
        // A producer error (e.g. a corrupted chunk) explains why consumption stopped early.
        produced.and(consumed)
    })
}

fn join(helper: thread::ScopedJoinHandle<'_, Result<()>>) -> Result<()> {
    helper.join().unwrap_or_else(|panic| {
        Err(SwapError::Internal(format!(
            "swap pipeline helper thread panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic")
        )))
    })
}
