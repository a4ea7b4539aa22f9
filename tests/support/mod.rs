//! Helpers shared by the end-to-end tests in `tests/`. Each test binary includes this module
//! with `mod support;`.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

pub mod cuda;
