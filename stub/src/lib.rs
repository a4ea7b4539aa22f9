//! `gpufn-stub`: the replacement `libcuda.so.1`.
//!
//! It will export the CUDA driver API and forward calls to a worker over `gpufn-proto`.
//! The driver surface is built in the stub issue; until then this crate holds nothing.
