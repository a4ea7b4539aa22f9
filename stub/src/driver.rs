//! Who drives the connection's runtime: the thread making a call, or a background thread
//! while no call is made.
//!
//! The runtime is a current-thread tokio runtime, so whichever thread is inside
//! `Runtime::block_on` runs the transport's tasks and waits on its sockets. During a call
//! that is the calling thread: the reply wakes it directly, with no hand-off between threads
//! (a dedicated I/O thread costs two thread wake-ups per round trip: the caller waking it to
//! send, and it waking the caller with the reply).
//!
//! A QUIC connection also needs driving between calls: keep-alives, ACKs, retransmissions,
//! and sending posted data that is still queued when a post returns. For that a background
//! thread ([`Background`]) enters the runtime whenever no caller holds a [`Turn`], and
//! leaves it as soon as one takes a turn ([`Driver::enter`] wakes it out). So that
//! back-to-back calls do not pay for waking it out every time, it waits [`IDLE_DELAY`] after
//! the last turn before entering, unless data was queued for sending since
//! ([`Driver::queued`]); then it enters at once.
//!
//! Work that needs no reply (writing posts) does not take a turn: [`Driver::block_on`] lets
//! whichever thread is driving run it, so a program posting in a loop never wakes the
//! background thread out.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// How long the connection must go without a turn before the background thread drives it.
/// It delays only timers and the processing of packets that arrive between calls (queued
/// posts are sent at once), and stays below the 25 ms a QUIC peer allows for ACKs. While
/// callers hold turns the background thread checks back at this interval.
pub const IDLE_DELAY: Duration = Duration::from_millis(10);

/// The connection's runtime and, for transports that need it, the background thread.
pub struct Driver {
    runtime: Arc<Runtime>,
    background: Option<Arc<Shared>>,
}

/// What callers and the background thread share.
struct Shared {
    /// Callers holding a turn; the background thread stays out of the runtime while there
    /// are any.
    callers: AtomicUsize,
    /// Wakes the background thread out of the runtime.
    leave: Notify,
    state: Mutex<State>,
    /// Wakes the background thread when data was queued for sending or a turn ended.
    changed: Condvar,
}

struct State {
    /// When the last turn ended.
    released: Instant,
    /// Data was queued for sending: drive as soon as no caller holds a turn, instead of
    /// after [`IDLE_DELAY`].
    queued: bool,
    /// The background thread waits on `changed` (a notification costs a system call, so it
    /// is only sent when someone waits).
    waiting: bool,
}

/// A caller's exclusive use of the runtime; the background thread stays out of the runtime
/// until it is dropped.
pub struct Turn<'a> {
    shared: Option<&'a Shared>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared {
            let mut state = shared.lock();
            state.released = Instant::now();
            shared.callers.fetch_sub(1, Ordering::SeqCst);
            shared.wake_if(&state, state.queued);
        }
    }
}

impl Driver {
    /// A runtime driven by calling threads only, until [`Driver::start_background`].
    pub fn new() -> std::io::Result<Driver> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Driver {
            runtime: Arc::new(runtime),
            background: None,
        })
    }

    /// Starts the background thread, named `thread_name`, that drives the runtime between
    /// calls.
    pub fn start_background(&mut self, thread_name: &str) -> std::io::Result<()> {
        let shared = Arc::new(Shared {
            callers: AtomicUsize::new(0),
            leave: Notify::new(),
            state: Mutex::new(State {
                released: Instant::now(),
                queued: true,
                waiting: false,
            }),
            changed: Condvar::new(),
        });
        let background = Background {
            runtime: self.runtime.clone(),
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || background.run())?;
        self.background = Some(shared);
        Ok(())
    }

    /// Starts a caller's turn: from now until the turn is dropped only callers drive the
    /// runtime, so a reply wakes the thread waiting for it directly.
    pub fn enter(&self) -> Turn<'_> {
        if let Some(shared) = &self.background {
            shared.callers.fetch_add(1, Ordering::SeqCst);
            shared.leave.notify_waiters();
        }
        Turn {
            shared: self.background.as_deref(),
        }
    }

    /// Runs `future` to completion. The calling thread drives the runtime if no other thread
    /// does; if the background thread does (no turn was taken), it goes on driving and
    /// wakes this thread once `future` can finish.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Notes that data was queued for sending, so that the background thread drives the
    /// connection as soon as no caller holds a turn.
    pub fn queued(&self) {
        if let Some(shared) = &self.background {
            let mut state = shared.lock();
            state.queued = true;
            let free = shared.callers.load(Ordering::SeqCst) == 0;
            shared.wake_if(&state, free);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is three plain values, consistent after any panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the background thread if `needed` and it is waiting.
    fn wake_if(&self, state: &State, needed: bool) {
        if needed && state.waiting {
            self.changed.notify_one();
        }
    }
}

/// The background thread's side.
struct Background {
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
}

impl Background {
    fn run(self) {
        loop {
            self.wait_until_needed();
            self.runtime.block_on(self.until_a_caller_comes());
        }
    }

    /// Waits outside the runtime until no caller holds a turn and either data was queued
    /// for sending or the last turn ended [`IDLE_DELAY`] ago.
    fn wait_until_needed(&self) {
        let mut state = self.shared.lock();
        loop {
            let mut timeout = IDLE_DELAY;
            if self.shared.callers.load(Ordering::SeqCst) == 0 {
                let idle = state.released.elapsed();
                if state.queued || idle >= IDLE_DELAY {
                    state.queued = false;
                    return;
                }
                timeout = IDLE_DELAY - idle;
            }
            state.waiting = true;
            state = match self.shared.changed.wait_timeout(state, timeout) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.waiting = false;
        }
    }

    /// Completes when a caller wants the runtime (at once if one already does).
    async fn until_a_caller_comes(&self) {
        // `notify_waiters` reaches every `Notified` created before it, so creating this one
        // before checking the count cannot miss a caller that arrives in between.
        let leave = self.shared.leave.notified();
        if self.shared.callers.load(Ordering::SeqCst) > 0 {
            return;
        }
        leave.await;
        // Run what is ready before leaving, above all the connection's task that sends the
        // request the caller just wrote, so it goes out while the caller takes over.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Longest a test waits before it calls the driver stuck (a guard, not a measurement).
    const HANG_GUARD: Duration = Duration::from_secs(60);

    #[test]
    fn the_background_thread_runs_tasks_while_no_caller_does() {
        let mut driver = Driver::new().unwrap();
        driver.start_background("test-driver").unwrap();
        let (tx, rx) = mpsc::channel();
        // The task needs its timer fired after block_on has returned: only the background
        // thread can do that.
        driver.block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = tx.send(());
            });
        });
        assert_eq!(rx.recv_timeout(HANG_GUARD), Ok(()));
    }

    #[test]
    fn threads_with_and_without_turns_all_finish() {
        let mut driver = Driver::new().unwrap();
        driver.start_background("test-driver").unwrap();
        let driver = &driver;
        let (done, finished) = mpsc::channel();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let done = done.clone();
                scope.spawn(move || {
                    for i in 0..300 {
                        // Timers need a driver: the caller with a turn, otherwise whichever
                        // thread is in the runtime.
                        let sleep = async { tokio::time::sleep(Duration::from_micros(100)).await };
                        if (thread + i) % 3 == 0 {
                            driver.queued();
                            driver.block_on(sleep);
                        } else {
                            let _turn = driver.enter();
                            driver.block_on(sleep);
                        }
                    }
                    let _ = done.send(());
                });
            }
            for _ in 0..4 {
                assert_eq!(finished.recv_timeout(HANG_GUARD), Ok(()));
            }
        });
    }
}
