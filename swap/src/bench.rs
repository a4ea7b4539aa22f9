//! Benchmark (to come).
