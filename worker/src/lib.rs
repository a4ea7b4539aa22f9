//! `gpufn-worker`: the session server that executes forwarded CUDA calls on a device.
//!
//! The session server and its `cpu`/`cuda` backends are built in later issues; until then
//! this crate holds nothing.
