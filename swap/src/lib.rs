//! `gpufn-swap`: a tiered store for swapped-out device memory, keyed by session.
//!
//! A worker swaps a session out as a list of [`Allocation`]s: [`SwapStore::swap_out`] reads them
//! chunk by chunk through the worker's [`DeviceIo`] and stores them in host RAM (within a
//! budget) or, when that is full, in a file on local disk; it returns once the data is
//! durable, and only then may the device memory be released. [`SwapStore::tick`] demotes idle
//! sessions host → disk → cold (`object_store`) by age and pressure ([`policy`], pure
//! functions). [`SwapStore::swap_in`] verifies every chunk's checksum and writes the data back
//! to the same device addresses, from whichever tier holds it. Device copies and tier I/O are
//! pipelined ([`pipeline`]). [`SwapStore::open`] removes what a dead previous instance of the
//! same worker left behind ([`tier::disk`] describes the rule).

pub mod bench;
pub mod buffer;
pub mod checksum;
pub mod device;
pub mod error;
pub mod event;
pub mod layout;
pub mod manifest;
pub mod pipeline;
pub mod policy;
pub mod store;
pub mod tier;
mod transfer;
pub mod types;

pub use device::{DeviceIo, MemoryDevice};
pub use error::{DeviceIoError, SwapError};
pub use event::{EventKind, SwapEvent};
pub use policy::DemotionPolicy;
pub use store::{
    ColdConfig, DiskConfig, OpenReport, SessionStatus, StoreStatus, SwapConfig, SwapInReceipt,
    SwapOutReceipt, SwapStore, TickReport,
};
pub use types::{Allocation, Place, SessionId, Tier};
